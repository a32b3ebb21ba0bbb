"""Reading a CSV file as an R user expects (``read.csv``): only ``NA`` and empty fields are missing.

pandas' ``read_csv`` reads some twenty strings as missing by default (``None``, ``null``,
``nan``, ``N/A``...), so a factor level named ``None`` (nlme's ``Alfalfa``) would be lost.
Here a text column keeps every value but ``NA`` and the empty field; a column whose other
entries are all numbers is numeric, with ``NaN`` (any case, as R's ``type.convert``) and
pandas' usual markers (``None``, ``null``, ``N/A``, ...) missing in it. The separator
(``,``, ``;``, tab or ``|``) is read from the header line, and a ``;``-separated file may
use decimal commas (``1,5``: R's ``read.csv2``). :func:`read_table` reads a CSV or Parquet
file into memory as the command line does, with one-line errors.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._errors import DataError

#: what R's ``read.csv`` reads as missing (``na.strings = "NA"`` and empty fields)
NA_TOKENS = ("NA", "")
#: separators recognised in the header line, the first preferred on a tie
SEPARATORS = (",", ";", "\t", "|")
_SEP_NAMES = {",": "','", ";": "';'", "\t": "tabs", "|": "'|'"}
#: pandas' default missing-value markers: missing in an otherwise numeric column, values in a text column
NUMERIC_NA = frozenset(
    {
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
#: file name suffixes read as Parquet
PARQUET_SUFFIXES = (".parquet", ".pq")
_COMPRESSED = (".gz", ".bz2", ".xz", ".zip", ".zst", ".tar")
_SAMPLE = 200


def is_parquet(path: str) -> bool:
    """Whether the name of ``path`` ends in one of :data:`PARQUET_SUFFIXES` (any case)."""
    return path.lower().endswith(PARQUET_SUFFIXES)


def has_glob(path: str) -> bool:
    """Whether ``path`` has a glob character (``*``, ``?`` or ``[``)."""
    return any(ch in path for ch in "*?[")


def sep_name(sep: str) -> str:
    """``';'``, ``tabs``...: the separator as a message names it."""
    return _SEP_NAMES.get(sep, repr(sep))


def sniff_separator(path: str) -> str | None:
    """The most frequent of :data:`SEPARATORS` outside double quotes in the header line, or None.

    None for a header without any (one column) and for a compressed file.
    """
    if path.lower().endswith(_COMPRESSED):
        return None
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        line = fh.readline(1 << 20)
    counts = dict.fromkeys(SEPARATORS, 0)
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(SEPARATORS, key=lambda s: counts[s])
    return best if counts[best] else None


def _is_text(dtype: Any) -> bool:
    return pd.api.types.is_object_dtype(dtype) or (
        pd.api.types.is_string_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
    )


def _parse(values: pd.Series) -> pd.Series | None:
    try:
        return pd.to_numeric(values)
    except (ValueError, TypeError):
        return None


def as_numeric(col: pd.Series, decimal_comma: bool = False) -> tuple[pd.Series | None, bool]:
    """``col`` (text) as float when every entry is a number or a missing-value marker; else None.

    Markers are :data:`NUMERIC_NA` and ``NaN`` in any case. With ``decimal_comma``, entries
    such as ``1,5`` (and no ``.``) are numbers too. Returns the column (or None) and whether
    decimal commas were read.
    """
    text = col.dropna()
    if text.empty:
        return None, False
    text = text.astype(str).str.strip()
    na = text.isin(NUMERIC_NA) | text.str.lower().isin(("nan", "-nan", "+nan"))
    nums = text[~na]
    if nums.empty:  # markers only (a column of 'None'): text, as R reads it
        return None, False
    comma = False
    head = nums.iloc[:_SAMPLE]
    if _parse(head) is None:  # most text columns stop here, after a few values
        if not decimal_comma or head.str.contains(".", regex=False).any():
            return None, False
        if _parse(head.str.replace(",", ".", regex=False)) is None:
            return None, False
        if nums.str.contains(".", regex=False).any():
            return None, False
        nums, comma = nums.str.replace(",", ".", regex=False), True
    values = _parse(nums)
    if values is None:
        return None, False
    out = np.full(len(col), np.nan)
    out[col.index.get_indexer(nums.index)] = values.to_numpy(dtype=float)
    return pd.Series(out, index=col.index, name=col.name), comma


@dataclass
class ReadInfo:
    """How a table was read: what the command line says about missing values and separators.

    Attributes
    ----------
    frame
        The table as read.
    path, sep
        The CSV file and its separator (None for other sources).
    decimal_comma
        Columns read with decimal commas.
    masked
        ``{column: {token: count}}`` for tokens replaced by NaN after reading (Parquet, bundled data).
    null_note
        What a missing value not from a token is (``null in the Parquet file``), or None.
    """

    frame: pd.DataFrame
    path: str | None = None
    sep: str | None = None
    decimal_comma: tuple[str, ...] = ()
    masked: dict[str, dict[str, int]] = field(default_factory=dict)
    null_note: str | None = None

    def missing_tokens(self, columns: Iterable[str]) -> dict[str, dict[str, int]]:
        """``{column: {text read as missing: count}}`` for the columns with missing values, most frequent first.

        For a CSV file the columns are read again as text (only those); a failure gives ``{}``.
        """
        cols = [c for c in columns if c in self.frame.columns and bool(self.frame[c].isna().any())]
        if not cols:
            return {}
        if self.path is None or self.sep is None:
            out = {}
            for c in cols:
                tok = dict(self.masked.get(c, {}))
                rest = int(self.frame[c].isna().sum()) - sum(tok.values())
                if rest > 0 and self.null_note:
                    tok[self.null_note] = rest
                out[c] = tok
            return out
        try:
            raw = pd.read_csv(self.path, sep=self.sep, usecols=cols, dtype=str, keep_default_na=False, na_filter=False)
        except Exception:  # only a message depends on it
            return {}
        if len(raw) != len(self.frame):
            return {}
        return {
            c: dict(Counter(raw[c].to_numpy(dtype=object)[self.frame[c].isna().to_numpy()]).most_common()) for c in cols
        }

    def separator_note(self) -> str | None:
        """What to say when a CSV file's separator is not the one its name suggests (tabs for ``.tsv`` and
        ``.tab``, commas otherwise), naming the columns read with decimal commas; None when it is."""
        if self.sep is None or self.path is None:
            return None
        expected = "\t" if self.path.lower().endswith((".tsv", ".tab")) else ","
        if self.sep == expected:
            return None
        what = f"{os.path.basename(self.path)!r} is separated by {sep_name(self.sep)}, not "
        what += "tabs" if expected == "\t" else "commas"
        if self.decimal_comma:
            what += f"; read {', '.join(map(repr, self.decimal_comma))} with decimal commas"
        return what

    def describe_tokens(self, columns: Iterable[str]) -> dict[str, str]:
        """``{column: "read as missing: 'NA' 16, empty field 2"}`` for :meth:`MissingValuesWarning.describe`."""
        out = {}
        for c, tok in self.missing_tokens(columns).items():
            null = tok.pop(self.null_note, 0) if self.null_note else 0
            names = [repr(t) if t else "empty field" for t in tok]
            parts = []
            if len(tok) == 1 and not null:
                parts.append(f"read as missing: {names[0]}")
            elif tok:
                parts.append("read as missing: " + ", ".join(f"{n} {k}" for n, k in zip(names, tok.values())))
            if null:
                parts.append(f"{self.null_note}{f' {null}' if tok else ''}")
            if parts:
                out[c] = "; ".join(parts)
        return out


def read_csv(path: str, na_values: Sequence[str] = ()) -> ReadInfo:
    """Read a CSV file as R's ``read.csv``: ``NA``, empty fields and ``na_values`` are missing.

    The separator is the most frequent of ``, ; tab |`` in the header line. A text column
    keeps every other value (``None``, ``null``, ``nan``, ``N/A`` are levels); a column whose
    other entries are all numbers is numeric (see :func:`as_numeric`), with decimal commas
    in a ``;``-separated file.
    """
    sep = sniff_separator(path) or ","
    tokens = list(dict.fromkeys([*NA_TOKENS, *na_values]))
    df = pd.read_csv(path, sep=sep, keep_default_na=False, na_values=tokens)
    comma = []
    for c in df.columns:
        if not _is_text(df[c].dtype):
            continue
        num, dec = as_numeric(df[c], decimal_comma=sep == ";")
        if num is not None:
            df[c] = num
            if dec:
                comma.append(str(c))
    return ReadInfo(df, path=path, sep=sep, decimal_comma=tuple(comma))


def mask_tokens(df: pd.DataFrame, tokens: Sequence[str]) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """``df`` with ``tokens`` in its text and categorical columns replaced by missing values, and their counts."""
    tokens = [t for t in dict.fromkeys(tokens)]
    counts: dict[str, dict[str, int]] = {}
    if not tokens:
        return df, counts
    out = df
    for c in df.columns:
        col = df[c]
        cat = isinstance(col.dtype, pd.CategoricalDtype)
        if not (cat or _is_text(col.dtype)):
            continue
        hit = col.isin(tokens)
        if not hit.any():
            continue
        seen = col[hit].astype(str).value_counts()
        counts[str(c)] = {str(t): int(k) for t, k in seen.items()}
        if out is df:
            out = df.copy()
        if cat:
            out[c] = col.cat.remove_categories([t for t in tokens if t in col.cat.categories])
        else:
            out[c] = col.mask(hit)
    return out, counts


def read_table(path: str, na_values: Sequence[str] = ()) -> ReadInfo:
    """A CSV file (:func:`read_csv`) or a Parquet file (``na_values`` masked in its text columns) read into memory.

    Raises
    ------
    DataError
        For an empty or unreadable file, and for a compressed file read as one column whose name
        holds another separator (a compressed file is read as comma-separated).
    """
    try:
        if is_parquet(path):
            df, masked = mask_tokens(pd.read_parquet(path), na_values)
            info = ReadInfo(df, masked=masked, null_note="null in the Parquet file")
        else:
            info = read_csv(path, na_values)
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path!r} is empty") from None
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as e:
        raise DataError(f"cannot read {path!r} as a table: {str(e).splitlines()[0]}") from None
    if info.sep is not None:
        header = str(info.frame.columns[0]) if info.frame.shape[1] == 1 else ""
        other = next((c for c in SEPARATORS[1:] if c in header), None)
        if other is not None:  # not sniffed (a compressed file): one column named 'a;b;c'
            raise DataError(
                f"{path!r} has one column, {header!r}: it seems to be separated by {sep_name(other)}, "
                "and bayeslmm reads a compressed file as comma-separated; decompress it, or write it "
                "with commas"
            )
    return info
