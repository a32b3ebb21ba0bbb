"""Formula text -> an immutable :class:`ModelSpec` (X, random-effect terms, names).

:func:`build_spec` builds the specification from all the rows in memory; the design builder that
``bayeslmm.suff`` applies chunk by chunk shares its binding of a formula to the data's columns
(:class:`FormulaUses`), its evaluation of formulas and response, and its checks of the design
(``check_*``, :func:`drop_rank_deficient`), exported here with the centres
(:func:`intercept_column`, :func:`column_centres`) that the rank check and the engines' working
columns share.
"""

from ._builder import (
    FIXED_PART,
    RANK_TOL,
    FormulaUses,
    bar_label,
    check_fixed_finite,
    check_grouping,
    check_has_rows,
    check_term_columns,
    check_term_finite,
    coef_names,
    drop_rank_deficient,
    model_matrix,
    no_complete_row,
    response_vector,
)
from ._centres import column_centres, intercept_column, lower_median
from ._columns import as_pandas, check_no_infinities, text_as_object
from ._design import build_spec, grouping_codes, level_labels, num_label
from ._formula import Bar, ParsedFormula, parse_formula
from ._residual import ResidualProcess, ResidualSpec, check_terms, parse_residual
from ._safe import ALLOWED_FUNCTIONS, FORMULA_HELPERS, evaluation_context
from ._spec import ModelSpec, ReTerm

__all__ = [
    "ALLOWED_FUNCTIONS",
    "FIXED_PART",
    "FORMULA_HELPERS",
    "RANK_TOL",
    "Bar",
    "FormulaUses",
    "ModelSpec",
    "ParsedFormula",
    "ReTerm",
    "ResidualProcess",
    "ResidualSpec",
    "as_pandas",
    "bar_label",
    "build_spec",
    "check_fixed_finite",
    "check_grouping",
    "check_has_rows",
    "check_no_infinities",
    "check_term_columns",
    "check_term_finite",
    "check_terms",
    "coef_names",
    "column_centres",
    "drop_rank_deficient",
    "evaluation_context",
    "grouping_codes",
    "intercept_column",
    "level_labels",
    "lower_median",
    "model_matrix",
    "no_complete_row",
    "num_label",
    "parse_formula",
    "parse_residual",
    "response_vector",
    "text_as_object",
]
