"""Exceptions raised for user errors.

Every error a user can cause (a bad formula, bad data, a bad option) is a
:class:`BayesLMMError`; its message says what is wrong and what to do. The
command line prints the message on one line and exits with status 2.
"""

from __future__ import annotations


class BayesLMMError(ValueError):
    """A user error: the message says what is wrong and what to do."""


class FormulaError(BayesLMMError):
    """The model formula cannot be parsed or uses something not allowed."""


class DataError(BayesLMMError):
    """The data cannot be used with the formula (missing columns, bad values...)."""


class OptionError(BayesLMMError):
    """An option has a value that is not allowed."""


class StructureError(DataError, OptionError):
    """Random-effect terms and a residual structure that cannot be combined in one model (raised by both
    estimation paths from the same check; a data error and an option error at once)."""


class MissingValuesWarning(UserWarning):
    """Rows were dropped because a column the model uses has missing values (lme4's ``na.omit``).

    Attributes
    ----------
    n_dropped, n_rows
        Rows dropped, and rows in the data.
    counts
        ``{column: number of missing values}`` for every used column with any.
    """

    def __init__(self, n_dropped: int, n_rows: int, counts: dict[str, int]) -> None:
        self.n_dropped, self.n_rows, self.counts = n_dropped, n_rows, dict(counts)
        super().__init__(self.describe())

    def describe(self, notes: dict[str, str] | None = None) -> str:
        """``dropped 18 of 72 rows with missing values: 18 in 'Date'``, with ``notes[column]`` in brackets."""
        notes = notes or {}
        cols = ", ".join(f"{k} in {c!r}" + (f" ({notes[c]})" if notes.get(c) else "") for c, k in self.counts.items())
        return f"dropped {self.n_dropped} of {self.n_rows} row{'s' * (self.n_rows != 1)} with missing values: {cols}"
