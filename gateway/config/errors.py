"""The configuration's one error type: every problem located by file, line and field."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigIssue"]


# --------------------------------------------------------------------------- errors

class ConfigError(Exception):
    """The configuration is unusable; ``issues`` holds one located message per problem."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    field: str  # e.g. "bus[0].device[1].address"; "" for the file as a whole
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}: {where}{self.message}"
