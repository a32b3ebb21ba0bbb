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
