"""Predictions for new data and simulation from a fitted model."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._errors import DataError
from ..spec import as_pandas, evaluation_context, level_labels, text_as_object

if TYPE_CHECKING:
    from ..spec import ModelSpec
    from ._fit import LMMFit


def apply_design(design: Any, df: pd.DataFrame, what: str) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return design.get_model_matrix(text_as_object(df), context=evaluation_context())
    except Exception as e:  # formulaic raises several types (missing column, unseen category)
        raise DataError(f"cannot build the {what} for the new data: {e}") from None


def fixed_matrix(spec: ModelSpec, df: pd.DataFrame) -> np.ndarray:
    """The fixed-effects matrix of new rows ``df``, columns as in the fit."""
    if spec.fixed_design is None:
        raise DataError(
            "the model specification holds no fixed-effects design (it was not built from a formula): "
            "predictions for new data need one"
        )
    fixed_design, _, names = spec.fixed_design
    mm = apply_design(fixed_design, df, "fixed-effects matrix")
    mm.columns = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.columns]
    return mm.loc[:, list(names)].to_numpy(dtype=float)


def codes_for(df: pd.DataFrame, factors: tuple[str, ...], levels: tuple[str, ...]) -> np.ndarray:
    """Index of each new row's level among the fitted ``levels`` (-1 when unseen)."""
    missing = [f for f in factors if f not in df.columns]
    if missing:
        raise DataError(f"new data lacks the grouping column(s) {', '.join(missing)}")
    labels = []
    for f in factors:
        codes, labs = level_labels(df[f])
        labels.append(np.asarray(labs, dtype=object)[codes])
    key = labels[0] if len(labels) == 1 else np.array([":".join(x) for x in zip(*labels)], dtype=object)
    lookup = {lev: i for i, lev in enumerate(levels)}
    return np.array([lookup.get(k, -1) for k in key], dtype=np.int64)


def predict(
    fit: LMMFit, newdata: Any = None, *, re_form: bool = True, allow_new_levels: bool = False, se_fit: bool = False
) -> Any:
    """Population-level or conditional predictions.

    Parameters
    ----------
    newdata
        Data frame with the predictor (and, for ``re_form``, grouping) columns;
        ``None`` predicts for the rows used in the fit.
    re_form
        ``True``: add the BLUPs of known levels (lme4's ``re.form = NULL``);
        ``False``: population level ``X beta_hat`` only (``re.form = NA``).
    allow_new_levels
        For levels not seen in the fit: ``False`` raises an error; ``True`` uses
        the population level (random effect 0), as lme4's ``allow.new.levels``.
    se_fit
        Also return the standard error of the population-level part,
        ``sqrt(diag(X cov(beta_hat) X'))``.

    Returns
    -------
    ``(n_new,)`` array, or a DataFrame with ``fit`` and ``se_fixed`` when ``se_fit``.
    """
    spec = fit.spec
    if newdata is None:
        X = spec.X
        pred = fit.fitted.copy() if re_form else X @ fit.fixef.to_numpy()
    else:
        df = as_pandas(newdata)
        X = fixed_matrix(spec, df)
        pred = X @ fit.fixef.to_numpy()
        if re_form:
            for t, b in zip(spec.terms, fit._b):
                what = f"random-effect columns of ({t.lhs} | {t.group})"
                Zn = apply_design(t.design, df, what).to_numpy(dtype=float)
                codes = codes_for(df, t.factors, t.levels)
                unseen = codes < 0
                if unseen.any() and not allow_new_levels:
                    bad = sorted({str(v) for v in df.loc[unseen, list(t.factors)].astype(str).agg(":".join, axis=1)})
                    raise DataError(
                        f"new level(s) of {t.group!r} not in the fit: {', '.join(bad[:5])}"
                        f"{' ...' if len(bad) > 5 else ''}; pass allow_new_levels=True to predict them at the "
                        "population level"
                    )
                contrib = np.einsum("nq,nq->n", Zn, b[np.where(unseen, 0, codes)])
                pred = pred + np.where(unseen, 0.0, contrib)
    if not se_fit:
        return pred
    basis, V = fit.vcov_working()  # in the working columns: a large constant in a covariate costs no digits
    X = basis.apply(X, None)[0]
    se = np.sqrt(np.einsum("np,pq,nq->n", X, V, X))
    return pd.DataFrame({"fit": pred, "se_fixed": se})
