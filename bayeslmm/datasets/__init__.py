"""Bundled example data.

========== ===================================================== ==========
name       content                                               source
========== ===================================================== ==========
pig_weights 48 pigs weighed weekly for 9 weeks (weight, num_weeks, id_num)  R package SemiPar (Diggle et al. 2002)
sleepstudy reaction time of 18 subjects over 10 days of sleep deprivation    R package lme4 (Belenky et al. 2003)
dyestuff   yield of dyestuff in 6 batches, 5 preparations each               R package lme4 (Davies 1947)
========== ===================================================== ==========
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from .._errors import DataError
from .._io import NA_TOKENS

_FILES = {"pig_weights": "pig_weights.csv", "sleepstudy": "sleepstudy.csv", "dyestuff": "dyestuff.csv"}
# grouping columns are identifiers: read them as strings so they are factors
_STRING_COLUMNS = {"sleepstudy": ["Subject"], "dyestuff": ["Batch"]}


def names() -> list[str]:
    """Names of the bundled datasets."""
    return sorted(_FILES)


def load(name: str) -> pd.DataFrame:
    """Load a bundled dataset as a new pandas DataFrame.

    Raises
    ------
    DataError
        For an unknown name (the message lists the known ones).
    """
    if name not in _FILES:
        raise DataError(f"unknown dataset {name!r}; bundled datasets: {', '.join(names())}")
    path = resources.files(__package__).joinpath("data", _FILES[name])
    with path.open("r") as fh:
        # as R's read.csv: only NA and empty fields are missing (pandas would also take 'None', 'nan'...)
        return pd.read_csv(
            fh, dtype={c: str for c in _STRING_COLUMNS.get(name, [])}, keep_default_na=False, na_values=list(NA_TOKENS)
        )
