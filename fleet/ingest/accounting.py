"""Delivery accounting per (device, epoch): the pure core that makes "nothing lost, nothing
doubled" provable.

The contract (``contracts.mqtt``) numbers every device message with a gap-free ``seq`` inside an
``epoch``; telemetry the gateway drops by its declared disk policy is reported on the ``drops``
channel as inclusive seq ranges. From that, for every (device, epoch)::

    produced = highest seq known (delivered or declared dropped)
    produced = received + declared_drops + gaps

``received`` counts distinct seqs, ``duplicates`` every further copy (a broker redelivery after a
crash, a gateway replay), ``declared_drops`` the declared seqs that never arrived, and ``gaps`` the
seqs that are neither: the loss nobody owned up to. A loss-proof path keeps ``gaps`` at 0 once the
gateway has caught up.

Seen seqs are kept as sorted, merged inclusive ranges (:class:`SeqSet`): in-order delivery stays
one range ``[[1, n]]`` whatever ``n`` is, so the state persists as a few bytes of JSON next to the
counters, in the same transaction as the message's own write. No I/O here; table tests in
``tests/fleet/test_ingest_accounting.py``.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["SeqSet", "StreamState", "StreamTotals"]

Range = tuple[int, int]


class SeqSet:
    """A set of positive ints held as sorted, disjoint, non-adjacent inclusive ranges."""

    __slots__ = ("_hi", "_lo")

    def __init__(self, ranges: Iterable[Range] = ()) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        for first, last in ranges:
            self.add_range(first, last)

    # -- queries ------------------------------------------------------------------------------
    def __contains__(self, seq: int) -> bool:
        i = bisect_right(self._lo, seq) - 1
        return i >= 0 and seq <= self._hi[i]

    def __len__(self) -> int:
        """How many seqs (not ranges) are in the set."""
        if len(self._lo) <= 1:
            return self._hi[0] - self._lo[0] + 1 if self._lo else 0
        return sum(hi - lo + 1 for lo, hi in zip(self._lo, self._hi, strict=True))

    def __iter__(self) -> Iterator[Range]:
        return iter(zip(self._lo, self._hi, strict=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeqSet) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"SeqSet({list(self)!r})"

    @property
    def max(self) -> int:
        """The highest seq in the set, 0 when empty."""
        return self._hi[-1] if self._hi else 0

    def overlap(self, other: SeqSet) -> int:
        """How many seqs are in both sets."""
        total, i, j = 0, 0, 0
        a, b = list(self), list(other)
        while i < len(a) and j < len(b):
            lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            if lo <= hi:
                total += hi - lo + 1
            if a[i][1] < b[j][1]:
                i += 1
            else:
                j += 1
        return total

    def missing(self, upto: int) -> list[Range]:
        """The ranges of ``1..upto`` not in the set."""
        out: list[Range] = []
        expect = 1
        for lo, hi in self:
            if lo > upto:
                break
            if lo > expect:
                out.append((expect, lo - 1))
            expect = hi + 1
        if expect <= upto:
            out.append((expect, upto))
        return out

    # -- updates ------------------------------------------------------------------------------
    def add(self, seq: int) -> bool:
        """Add one seq; False if it was already there. In-order arrival is O(1)."""
        if self._hi and seq == self._hi[-1] + 1:
            self._hi[-1] = seq
            return True
        if seq in self:
            return False
        self.add_range(seq, seq)
        return True

    def add_range(self, first: int, last: int) -> None:
        if first < 1 or last < first:
            raise ValueError(f"bad seq range [{first}, {last}]")
        # Ranges that touch or overlap [first, last] (adjacent ones merge too).
        i = bisect_right(self._hi, first - 2)
        j = bisect_right(self._lo, last + 1)
        if i < j:
            first = min(first, self._lo[i])
            last = max(last, self._hi[j - 1])
        self._lo[i:j] = [first]
        self._hi[i:j] = [last]

    # -- persistence --------------------------------------------------------------------------
    def to_json(self) -> str:
        if len(self._lo) <= 1:  # the common cases, written once per message: skip json
            return f"[[{self._lo[0]},{self._hi[0]}]]" if self._lo else "[]"
        return json.dumps([[lo, hi] for lo, hi in self], separators=(",", ":"))

    @classmethod
    def _of(cls, lo: list[int], hi: list[int]) -> SeqSet:
        """A set of already sorted, merged ranges (no checks: for :meth:`from_json`)."""
        out = cls.__new__(cls)
        out._lo, out._hi = lo, hi
        return out

    @classmethod
    def from_json(cls, text: str | None) -> SeqSet:
        if not text or text == "[]":  # read twice per message (seen, dropped): no __init__
            return cls._of([], [])
        if text.count("[") == 2:  # one range, as to_json writes it (the common case, per
            lo, _, hi = text.strip("[] ").partition(",")  # message): no json, no merging
            try:
                first, last = int(lo), int(hi)
            except ValueError:
                pass  # not a range pair: let json say what is wrong
            else:
                if 1 <= first <= last:
                    return cls._of([first], [last])
        return cls((int(lo), int(hi)) for lo, hi in json.loads(text))


@dataclass(frozen=True)
class StreamTotals:
    """What a (device, epoch) adds up to, as the API and the metrics show it."""

    produced: int
    received: int
    duplicates: int
    declared_drops: int
    gaps: int

    @property
    def balanced(self) -> bool:
        """delivered + declared drops = produced: nothing went missing unannounced."""
        return self.gaps == 0 and self.received + self.declared_drops == self.produced


@dataclass
class StreamState:
    """The accounting of one (device, epoch). Mutated by :meth:`receive` and :meth:`declare`."""

    seen: SeqSet = field(default_factory=SeqSet)
    dropped: SeqSet = field(default_factory=SeqSet)
    duplicates: int = 0

    def receive(self, seq: int) -> bool:
        """A message with ``seq`` arrived. True if it is new (write it), False for a duplicate
        (acknowledge it, write nothing)."""
        if seq < 1:
            raise ValueError(f"seq must be >= 1, got {seq}")
        if self.seen.add(seq):
            return True
        self.duplicates += 1
        return False

    def declare(self, ranges: Iterable[Range]) -> None:
        """The gateway declared ``ranges`` dropped by policy. Declaring a range twice, or one
        overlapping seqs that did arrive, changes nothing for those seqs: a seq that arrives is
        delivered, whatever was declared about it."""
        for first, last in ranges:
            self.dropped.add_range(first, last)

    def totals(self) -> StreamTotals:
        received = len(self.seen)
        produced = max(self.seen.max, self.dropped.max)
        declared = len(self.dropped) - self.dropped.overlap(self.seen) if self.dropped.max else 0
        return StreamTotals(produced=produced, received=received, duplicates=self.duplicates,
                            declared_drops=declared, gaps=produced - received - declared)

    def gap_ranges(self) -> list[Range]:
        """The seqs neither delivered nor declared dropped, as inclusive ranges."""
        known = SeqSet(self.seen)
        for first, last in self.dropped:
            known.add_range(first, last)
        return known.missing(max(self.seen.max, self.dropped.max))
