"""Where a field was set: a field path mapped to its line in the TOML text (tomllib keeps none)."""

from __future__ import annotations

import bisect
import contextlib
import re

__all__ = ["Loc", "TomlLocator"]

_TOKEN = re.compile(r'''
    (?P<ws>[ \t]+) | (?P<comment>\#[^\n]*) | (?P<nl>\r?\n)
  | (?P<str>"""[\s\S]*?"""(?!")|'\'\'[\s\S]*?\'\'\'(?!')|"(?:\\.|[^"\\\n])*"|'[^'\n]*')
  | (?P<punct>[\[\]{}=,.])
  | (?P<bare>[A-Za-z0-9_+:-]+)
  | (?P<other>.)
''', re.VERBOSE)

Loc = tuple[str | int, ...]


class TomlLocator:
    """Maps a field path (``("bus", 0, "device", 1, "address")``) to its line in the TOML text.

    A small scanner over *valid* TOML (tomllib has already accepted it): table headers, array of
    tables counted per parent instance, dotted keys, inline tables and arrays. Every table, key
    and array element is recorded with the line where it starts; :meth:`line_of` falls back to the
    nearest recorded ancestor (a missing key reports its table's header).
    """

    def __init__(self, text: str):
        self.lines: dict[Loc, int] = {}
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._tokens = [(m.lastgroup or "other", m.group(), m.start())
                        for m in _TOKEN.finditer(text) if m.lastgroup not in ("ws", "comment")]
        self._pos = 0
        self._arrays: dict[Loc, int] = {}
        with contextlib.suppress(IndexError):  # ran off the end: keep what was recorded
            self._document()

    def line_of(self, loc: Loc) -> int:
        for end in range(len(loc), 0, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return 1

    # -- scanner
    def _line(self, offset: int) -> int:
        return bisect.bisect_left(self._newlines, offset) + 1

    def _peek(self) -> tuple[str, str, int]:
        return self._tokens[self._pos]

    def _next(self) -> tuple[str, str, int]:
        token = self._tokens[self._pos]
        self._pos += 1
        return token

    def _skip_newlines(self) -> None:
        while self._pos < len(self._tokens) and self._peek()[0] == "nl":
            self._pos += 1

    def _key(self) -> list[str]:
        parts = []
        while True:
            kind, text, _ = self._next()
            parts.append(text[1:-1] if kind == "str" else text)
            if self._peek()[1] != ".":
                return parts
            self._next()

    def _document(self) -> None:
        table: Loc = ()
        while True:
            self._skip_newlines()
            if self._pos >= len(self._tokens):
                return
            _, text, offset = self._peek()
            if text == "[":
                self._next()
                is_array = self._peek()[1] == "[" and self._peek()[2] == offset + 1
                if is_array:
                    self._next()
                parts = self._key()
                self._next()
                if is_array:
                    self._next()
                table = self._table(parts, is_array)
                self.lines.setdefault(table, self._line(offset))
            else:
                parts = self._key()
                self._next()  # "="
                self._value((*table, *parts), self._line(offset))

    def _concrete(self, prefix: Loc, part: str) -> Loc:
        path = (*prefix, part)
        count = self._arrays.get(path)
        return (*path, count - 1) if count else path

    def _table(self, parts: list[str], is_array: bool) -> Loc:
        path: Loc = ()
        for part in parts[:-1]:
            path = self._concrete(path, part)
        if not is_array:
            return self._concrete(path, parts[-1])
        path = (*path, parts[-1])
        index = self._arrays.get(path, 0)
        self._arrays[path] = index + 1
        return (*path, index)

    def _value(self, path: Loc, line: int) -> None:
        self.lines.setdefault(path, line)
        text = self._next()[1]
        if text == "{":
            while True:
                self._skip_newlines()
                _, text, offset = self._peek()
                if text == "}":
                    self._next()
                    return
                if text == ",":
                    self._next()
                    continue
                parts = self._key()
                self._next()  # "="
                self._value((*path, *parts), self._line(offset))
        elif text == "[":
            index = 0
            while True:
                self._skip_newlines()
                _, text, offset = self._peek()
                if text == "]":
                    self._next()
                    return
                if text == ",":
                    self._next()
                    continue
                self._value((*path, index), self._line(offset))
                index += 1
        else:  # a scalar: may be several tokens (3.14, 1979-05-27 07:32:00)
            while self._pos < len(self._tokens) and self._peek()[1] not in {",", "]", "}"} \
                    and self._peek()[0] != "nl":
                self._next()
