"""The project's own errors: one class per kind of failure a user can fix, each message built
from what was found and what was expected.

The shell turns exactly these into exit code 1 and the service into 4xx answers; anything else
is a bug and is allowed to surface as one, instead of being mistaken for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass


class OppscoreError(Exception):
    """Base of every error that means "the input, the config or the state is not usable"."""


class InputInvalid(OppscoreError, ValueError):
    """An argument or a value given by the user does not fit; the message names it."""


class ConfigInvalid(OppscoreError, ValueError):
    """The config file cannot be read or does not fit the schema; the message says where."""


class BundleInvalid(OppscoreError, ValueError):
    """A folder that is not a complete model bundle; the message says what is missing."""


class ModelNotFound(OppscoreError, LookupError):
    """No model (or not the version asked for) in the registry or the export."""


class NotEnoughData(OppscoreError, ValueError):
    """The export cannot support even the fallback; the message says what is missing."""


class ClusterShort(OppscoreError, RuntimeError):
    """A cluster's worker was lost mid-run, most often past its memory limit; the message says
    what to change (more memory per worker, more partitions, more workers)."""


@dataclass(frozen=True)
class Problem:
    """One contract problem: where it is, what was found, what was expected."""

    table: str
    location: str | None  # "line 5" in a CSV (header = 1), "row 4" in Parquet, a field path in a request
    column: str | None
    found: str
    expected: str
    row: int | None = None  # 0-based position in the table as given

    def __str__(self) -> str:
        where = self.table + (f" {self.location}" if self.location else "") + (f", column {self.column}" if self.column else "")
        return f"{where}: found {self.found}, expected {self.expected}"


class ExportInvalid(OppscoreError, ValueError):
    """Raised with every problem at once, so one run lists all that must be fixed."""

    SHOWN = 50

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[: self.SHOWN])
        more = f"\n  … and {len(problems) - self.SHOWN} more" if len(problems) > self.SHOWN else ""
        super().__init__(f"{len(problems)} problem(s) in the export:\n{shown}{more}")
