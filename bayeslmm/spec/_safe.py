"""A formula is data: validate every Python expression in it before evaluation.

formulaic evaluates the Python code inside a formula (``I(...)``, ``np.log(...)``,
``{...}``) as it stands, so ``I(__import__('os').system('...'))`` would run. Every
expression that formulaic would evaluate is parsed here with :mod:`ast` and
accepted only if it is built from

* column names of the data,
* numbers (and strings, only as arguments of ``C`` and contrast functions),
* the constants in :data:`ALLOWED_CONSTANTS` (``pi``, ``e``), bare or as ``np.pi``;
  a data column of the same name takes precedence (as a column shadows a global in R),
* arithmetic and comparison operators,
* calls of the functions in :data:`ALLOWED_FUNCTIONS`, written either bare
  (``log(x)``) or with the ``np.``/``numpy.`` prefix (``np.log(x)``), and the
  formulaic helpers in :data:`FORMULA_HELPERS`.

The evaluation context handed to formulaic holds only these names, so even an
expression that passed validation cannot reach anything else.
"""

from __future__ import annotations

import ast
import unicodedata
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import numpy as np

from .._errors import FormulaError

#: Element-wise numeric functions allowed in a formula (bare or as ``np.name``).
ALLOWED_FUNCTIONS: dict[str, Any] = {
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "log1p": np.log1p,
    "exp": np.exp,
    "expm1": np.expm1,
    "sqrt": np.sqrt,
    "square": np.square,
    "abs": np.abs,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "arcsin": np.arcsin,
    "arctan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,
    "sign": np.sign,
}

#: Constants allowed in a formula (bare or as ``np.name``); a column of that name wins.
ALLOWED_CONSTANTS: dict[str, float] = {"pi": float(np.pi), "e": float(np.e)}

#: formulaic's own helpers: identity, categorical coding, stateful transforms, contrasts.
FORMULA_HELPERS = frozenset(
    {
        "I",
        "C",
        "center",
        "scale",
        "standardize",
        "poly",
        "bs",
        "cs",
        "cr",
        "cc",
        "hashed",
        "Treatment",
        "Sum",
        "Helmert",
        "Diff",
        "Poly",
        "contr",
    }
)

_NUMPY_PREFIXES = frozenset({"np", "numpy"})
_BIN_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.FloorDiv, ast.Mod)
_CMP_OPS = (ast.Gt, ast.GtE, ast.Lt, ast.LtE, ast.Eq, ast.NotEq)
_STRING_CALLS = frozenset({"C", "Treatment", "Sum", "Helmert", "Diff", "Poly"})


class _Validator(ast.NodeVisitor):
    """Walk an expression tree and raise FormulaError at the first disallowed node."""

    def __init__(self, columns: Iterable[str], source: str) -> None:
        self.columns = set(columns)
        self.source = source
        self.used: set[str] = set()
        self._string_ok = 0

    def fail(self, what: str) -> None:
        raise FormulaError(
            f"{what} in formula term {self.source!r} is not allowed: a formula may use column "
            "names, numbers, the constants pi and e, arithmetic, and the functions listed in "
            "bayeslmm.ALLOWED_FUNCTIONS (bare or as np.<name>) and I(), C(), center(), scale(), "
            "poly(), bs()"
        )

    def generic_visit(self, node: ast.AST) -> None:
        self.fail(f"'{type(node).__name__}' syntax")

    def visit_Expression(self, node: ast.Expression) -> None:
        self.visit(node.body)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, bool) or isinstance(node.value, (int, float)):
            return
        if isinstance(node.value, str) and self._string_ok:
            return
        self.fail(f"the constant {node.value!r}")

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name.startswith("__"):
            self.fail(f"the name {name!r}")
        if name in self.columns:  # a column shadows a constant of the same name
            self.used.add(name)
            return
        if name in ALLOWED_CONSTANTS:
            return
        same = [c for c in self.columns if c != name and unicodedata.normalize("NFKC", c) == name]
        if same:
            raise FormulaError(
                f"column {ascii(same[0])} in formula term {self.source!r} is not in Unicode normal "
                f"form (NFKC), and Python expressions read it as {ascii(name)}: rename the column "
                "to unicodedata.normalize('NFKC', name) before fitting"
            )
        self.fail(f"the name {name!r} (no such column, and not an allowed function or constant)")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        # np.pi, numpy.e: the only attributes allowed outside function position
        if isinstance(node.value, ast.Name) and node.value.id in _NUMPY_PREFIXES and node.attr in ALLOWED_CONSTANTS:
            return
        self.fail(f"the attribute {ast.unparse(node)!r}")

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if not isinstance(node.op, _BIN_OPS):
            self.fail(f"the operator '{type(node.op).__name__}'")
        self.visit(node.left)
        self.visit(node.right)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            self.fail(f"the operator '{type(node.op).__name__}'")
        self.visit(node.operand)

    def visit_Compare(self, node: ast.Compare) -> None:
        if not all(isinstance(op, _CMP_OPS) for op in node.ops):
            self.fail("this comparison")
        self.visit(node.left)
        for c in node.comparators:
            self.visit(c)

    def _function_name(self, func: ast.expr) -> str:
        if isinstance(func, ast.Name):
            if func.id in ALLOWED_FUNCTIONS or func.id in FORMULA_HELPERS:
                return func.id
            self.fail(f"the function {func.id!r}")
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in _NUMPY_PREFIXES
            and func.attr in ALLOWED_FUNCTIONS
        ):
            return func.attr
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "contr"
            and not func.attr.startswith("_")
        ):
            return "contr." + func.attr
        self.fail(f"the call of {ast.unparse(func)!r}")
        raise AssertionError  # unreachable: fail() raises

    def visit_Call(self, node: ast.Call) -> None:
        name = self._function_name(node.func)
        strings = name in _STRING_CALLS or name.startswith("contr.")
        self._string_ok += strings
        try:
            for a in node.args:
                self._visit_arg(a)
            for k in node.keywords:
                if k.arg is None or k.arg.startswith("_"):
                    self.fail("a ** argument")
                self._visit_arg(k.value)
        finally:
            self._string_ok -= strings

    def _visit_arg(self, a: ast.expr) -> None:
        # contrast objects may be passed bare: C(g, contr.sum), C(g, Sum)
        if isinstance(a, ast.Attribute) and isinstance(a.value, ast.Name) and a.value.id == "contr":
            if a.attr.startswith("_"):
                self.fail(f"the attribute {a.attr!r}")
            return
        if isinstance(a, ast.Name) and a.id in FORMULA_HELPERS:
            return
        if isinstance(a, (ast.List, ast.Tuple)):
            for e in a.elts:
                self._visit_arg(e)
            return
        self.visit(a)


def validate_expression(expr: str, columns: Iterable[str]) -> set[str]:
    """Check one Python expression of a formula and return the columns it uses.

    Raises
    ------
    FormulaError
        If the expression is not valid Python or uses anything not allowed.
    """
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise FormulaError(f"cannot parse formula term {expr!r}: {e.msg}") from None
    v = _Validator(columns, expr)
    v.visit(tree)
    return v.used


def evaluation_context() -> dict[str, Any]:
    """The only names formulaic may see when it evaluates a validated formula."""
    # np.<name> gives only the allowed functions and constants
    ns = SimpleNamespace(**ALLOWED_FUNCTIONS, **ALLOWED_CONSTANTS)
    ctx: dict[str, Any] = {**ALLOWED_FUNCTIONS, **ALLOWED_CONSTANTS}
    ctx["np"] = ns
    ctx["numpy"] = ns
    return ctx
