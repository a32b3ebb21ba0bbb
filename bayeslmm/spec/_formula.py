"""Parse lme4 formula text: response, fixed part, and random-effect bars.

Only the random-effect bars ``(lhs | g)`` / ``(lhs || g)`` are parsed here;
the fixed part and the left-hand sides of the bars are handed to formulaic,
which knows Wilkinson notation (``a*b``, ``a:b``, ``I(x**2)``, ``C(g)``, ``0 +``).

Expansion rules (as lme4's ``findbars``/``expandDoubleVerts``):

* ``(1 | a/b)``   -> ``(1 | a) + (1 | a:b)``
* ``(1 | a:b)``   -> one grouping factor, the interaction of ``a`` and ``b``
* ``(1 + x || g)`` -> ``(1 | g) + (0 + x | g)`` (uncorrelated terms)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._errors import FormulaError

# a bare `.` (R's "all other columns"): not part of a name or a number such as .5 or 2.
_DOT_RE = re.compile(r"(?<![\w.])\.(?![\w.])")
_QUOTED_RE = re.compile(r"`[^`]*`|'[^']*'|\"[^\"]*\"")


def is_name(text: str) -> bool:
    """True for a column name that may be written without backticks.

    Python identifiers (Unicode letters included, as :meth:`str.isidentifier`) and R's
    names with dots (``log.dose``, ``.x``).
    """
    return bool(text) and text.replace(".", "_").isidentifier()


def column_name(text: str) -> str | None:
    """The column named by ``text`` (a bare name or a backticked one), or None."""
    text = text.strip()
    if len(text) > 2 and text.startswith("`") and text.endswith("`") and "`" not in text[1:-1]:
        return text[1:-1]
    return text if is_name(text) else None


@dataclass(frozen=True)
class Bar:
    """One random-effect term ``(lhs | g1:g2:...)`` after expansion."""

    lhs: str
    factors: tuple[str, ...]

    @property
    def group(self) -> str:
        """The grouping factor's name as lme4 prints it (``a:b`` for an interaction)."""
        return ":".join(self.factors)


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into response, fixed-effects formula and random-effect bars."""

    text: str
    response: str
    fixed: str
    bars: tuple[Bar, ...]


def _strip_backticks(name: str) -> str:
    name = name.strip()
    return name[1:-1] if name.startswith("`") and name.endswith("`") else name


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` where it is outside parentheses and backticks."""
    out, depth, tick, start, i = [], 0, False, 0, 0
    while i < len(text):
        c = text[i]
        if c == "`":
            tick = not tick
        elif not tick and c in "([{":
            depth += 1
        elif not tick and c in ")]}":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced ')' in formula {text!r}")
        elif not tick and depth == 0 and text.startswith(sep, i):
            out.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    if depth != 0 or tick:
        raise FormulaError(f"unbalanced parentheses or backticks in formula {text!r}")
    out.append(text[start:])
    return out


def _parse_group(text: str) -> list[tuple[str, ...]]:
    """``a/b:c`` -> [("a",), ("a", "b", "c")]; each tuple is one grouping factor."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    out: list[tuple[str, ...]] = []
    prefix: tuple[str, ...] = ()
    for part in _split_top(text, "/"):
        names = tuple(column_name(n) for n in _split_top(part, ":"))
        if not all(names):
            raise FormulaError(
                f"grouping factor {text!r} is not understood: write a column name, an interaction "
                "'a:b' or a nesting 'a/b' on the right of '|' (a name with spaces or symbols in "
                "backticks: `my group`)"
            )
        prefix = prefix + names  # type: ignore[operator]
        out.append(prefix)
    return out


def _expand_double_bar(lhs: str) -> list[str]:
    """``1 + x + z`` -> ["1", "0 + x", "0 + z"] (uncorrelated terms of ``||``)."""
    from formulaic import Formula

    try:
        terms = list(Formula(lhs))
    except Exception as e:  # formulaic raises several exception types for bad syntax
        raise FormulaError(f"cannot parse random-effect term {lhs!r}: {e}") from None
    out = []
    for t in terms:
        s = str(t)
        out.append("1" if s == "1" else f"0 + {s}")
    if not out:
        raise FormulaError(f"random-effect term ({lhs} || ...) has no columns")
    return out


def parse_formula(text: str) -> ParsedFormula:
    """Split an lme4-style formula into its parts (no data needed).

    Parameters
    ----------
    text
        e.g. ``"weight ~ num_weeks + (1 | id_num)"``.

    Raises
    ------
    FormulaError
        If the formula is malformed.
    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty: write it as 'response ~ predictors + (1 | group)'")
    if _DOT_RE.search(_QUOTED_RE.sub("", text)):
        raise FormulaError(
            f"formula {text!r} uses '.', which R reads as 'all other columns': bayeslmm does not "
            "support it; list the columns, e.g. 'y ~ x1 + x2 + (1 | g)'"
        )
    sides = _split_top(text, "~")
    if len(sides) != 2:
        raise FormulaError(
            f"formula {text!r} must contain exactly one '~' (response ~ predictors), found {len(sides) - 1}"
        )
    response, rhs = sides[0].strip(), sides[1].strip()
    if not response:
        raise FormulaError(f"formula {text!r} has no response on the left of '~'")
    if not rhs:
        raise FormulaError(f"formula {text!r} has nothing on the right of '~'; use '1' for an intercept only")
    fixed_parts: list[str] = []
    bars: list[Bar] = []
    for piece in _split_top(rhs, "+"):
        p = piece.strip()
        if not p:
            raise FormulaError(f"formula {text!r} has an empty term (two '+' in a row?)")
        inner = p[1:-1] if p.startswith("(") and p.endswith(")") and _balanced_outer(p) else None
        if inner is not None and len(_split_top(inner, "|")) > 1:
            double = _split_top(inner, "||")
            if len(double) == 2:
                lhs, grp = double
                lhss = _expand_double_bar(lhs.strip() or "1")
            else:
                single = _split_top(inner, "|")
                if len(single) != 2:
                    raise FormulaError(f"random-effect term {p!r} must have one '|' or '||'")
                lhs, grp = single
                lhss = [lhs.strip()]
            if not lhs.strip():
                raise FormulaError(f"random-effect term {p!r} has nothing left of '|'; use (1 | g)")
            for factors in _parse_group(grp):
                for one in lhss:
                    bars.append(Bar(lhs=one, factors=factors))
        elif "|" in p:
            raise FormulaError(
                f"random-effect term {p!r} must be written in its own parentheses and added with '+', "
                "e.g. 'y ~ x + (1 | g)'"
            )
        else:
            fixed_parts.append(p)
    fixed = " + ".join(fixed_parts) if fixed_parts else "1"
    return ParsedFormula(text=text.strip(), response=response, fixed=fixed, bars=tuple(bars))


def _balanced_outer(p: str) -> bool:
    """True when the first '(' of ``p`` closes at its last character."""
    depth = 0
    for i, c in enumerate(p):
        depth += c == "("
        depth -= c == ")"
        if depth == 0:
            return i == len(p) - 1
    return False
