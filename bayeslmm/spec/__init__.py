"""Formula text -> an immutable :class:`ModelSpec` (X, random-effect terms, names)."""

from ._design import build_spec
from ._formula import Bar, ParsedFormula, parse_formula
from ._safe import ALLOWED_FUNCTIONS, FORMULA_HELPERS
from ._spec import ModelSpec, ReTerm

__all__ = ["ALLOWED_FUNCTIONS", "FORMULA_HELPERS", "Bar", "ModelSpec", "ParsedFormula", "ReTerm",
           "build_spec", "parse_formula"]
