"""The errors a stage raises for what a user can fix: light (no torch), so the command line can catch them.

Every message says what was wrong, where (file and line, or field), and what is accepted; the CLI prints it and
exits 2.
"""

from __future__ import annotations


class StageError(ValueError):
    """A stage cannot run as asked: bad input, a missing earlier stage, a setting it does not accept."""


class StageExistsError(StageError):
    """The stage's folder exists and may not be replaced as asked."""


class DataError(StageError):
    """Bad input data: the message names the file (and line or field) and what is accepted."""
