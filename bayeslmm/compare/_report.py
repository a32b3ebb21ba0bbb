"""REML and Bayes side by side, end to end: terminal text, JSON, figures and a self-contained HTML report.

:func:`side_by_side` is what ``bayeslmm compare`` and ``bayeslmm demo`` run: the lme4-style
summary, the REML-vs-posterior table, BLUPs vs posterior means of the random effects, sampler
diagnostics, optionally the REML-limit path, and the figures (shrinkage or caterpillar, residuals,
QQ, trace, posterior predictive check, the limit). Figures are written as PNG files to ``out_dir``
and embedded (base64) in ``report.html`` there, so the report is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import functools
import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import OptionError
from .._paths import check_dir, check_file

#: the figures :func:`side_by_side` may write (``<name>.png``), and the report
FIGURES = ("shrinkage", "caterpillar", "residuals", "qq", "trace", "ppc", "limit")
REPORT = "report.html"


@dataclass
class Report:
    """An HTML document built section by section; figures embedded as PNG."""

    title: str
    parts: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, obj: Any) -> None:
        """A :class:`Comparison`, a :class:`Diagnosis`, or a pandas DataFrame."""
        self.parts.append(
            obj._repr_html_()
            if hasattr(obj, "_repr_html_") and not hasattr(obj, "to_html")
            else obj.to_html(float_format=lambda v: f"{v:.5g}")
        )

    def figure(self, png: bytes, caption: str) -> None:
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(
            f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def html(self) -> str:
        style = (
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}"
            "td,th{padding:2px 8px;border-bottom:1px solid #ddd}caption{font-weight:bold;text-align:left}"
            "pre{background:#f6f6f6;padding:0.8em;overflow-x:auto}img{max-width:100%}"
        )
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(self.parts)}"
            "</body></html>"
        )


def _png(fig: Any) -> bytes:
    """PNG bytes of a matplotlib Figure or an ArviZ PlotCollection."""
    import tempfile

    from ._checks import save

    if hasattr(fig, "canvas"):  # a matplotlib Figure writes to memory
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return buf.getvalue()
    with tempfile.TemporaryDirectory() as tmp:  # an ArviZ PlotCollection saves to a path only
        path = Path(tmp) / "figure.png"
        save(fig, path, dpi=90)
        return path.read_bytes()


@dataclass
class SideBySide:
    """What :func:`side_by_side` produced: the text printed, the JSON object, the files written.

    With ``side_by_side(..., write=False)`` nothing is written yet and ``files`` lists the files
    :meth:`write` will write (also ``data["files"]``): a caller prints the results first, so that a
    failed write loses nothing.
    """

    text: str
    data: dict[str, Any]
    files: list[str]
    _writer: Callable[[], None] | None = field(default=None, repr=False)

    def write(self) -> list[str]:
        """Write the figures and the report not written yet; the files.

        Raises
        ------
        OptionError
            When the folder cannot be created or a file cannot be written.
        """
        writer, self._writer = self._writer, None
        if writer is not None:
            writer()
        return self.files


def side_by_side(
    fit: Any,
    idata: Any,
    *,
    limit: Any = None,
    out_dir: str | Path | None = None,
    html_path: str | Path | None = None,
    title: str | None = None,
    ranef_rows: int = 10,
    write: bool = True,
) -> SideBySide:
    """The REML fit and the posterior side by side (see the module docstring).

    Parameters
    ----------
    fit
        An :class:`~bayeslmm.LMMFit` (or serial fit).
    idata
        Its posterior from :func:`bayeslmm.bayes.sample` on ``fit.spec``.
    limit
        A :class:`~bayeslmm.bayes.LimitPath` to show, or ``None``.
    out_dir
        Folder for the PNG figures and ``report.html``; ``None`` writes no figures unless ``html_path``.
    html_path
        Where to write the HTML report (default ``out_dir/report.html`` when ``out_dir`` is given).
    write
        Write the files now (default); ``False`` leaves it to :meth:`SideBySide.write`. Either
        way the paths are checked first (:class:`~bayeslmm.OptionError` when one cannot be written).
    """
    from . import _plots
    from ._checks import diagnose, plot_trace
    from ._ppc import plot_ppc
    from ._table import compare, compare_ranef

    if out_dir is not None:
        check_dir(out_dir, "out_dir", tuple(f"{n}.png" for n in FIGURES) + ((REPORT,) if html_path is None else ()))
    if html_path is not None:
        check_file(html_path, "html_path", REPORT)
    title = title or f"bayeslmm: {fit.spec.formula}, REML and Bayes side by side"
    cmp = compare(fit, idata)
    ran = compare_ranef(fit, idata)
    diag = diagnose(idata)
    lines = [str(fit.summary()), "", str(cmp), "", _head(ran, ranef_rows), "", str(diag)]
    data: dict[str, Any] = {
        "formula": fit.spec.formula,
        "method": fit.method,
        "compare": cmp.to_dict(),
        "ranef": ran.to_dict(),
        "diagnostics": {"divergences": diag.divergences, "warnings": list(diag.warnings)},
    }
    if limit is not None:
        lines += [
            "",
            "REML as a Bayesian limit: posterior mode of the variance components, beta ~ N(0, "
            "beta_prior_var I) integrated out, flat prior (last row: REML)",
            limit.table().to_string(float_format=lambda v: f"{v:.6g}"),
        ]
        data["limit"] = limit.to_dict()
    rep = Report(title)
    rep.heading("REML fit")
    rep.pre(str(fit.summary()))
    rep.heading("REML vs posterior")
    rep.table(cmp)
    rep.heading("Random effects: BLUP vs posterior mean")
    rep.table(ran)
    rep.heading("Sampler diagnostics")
    rep.table(diag)
    if limit is not None:
        rep.heading("REML as a Bayesian limit")
        rep.table(limit.table())
    files: list[str] = []
    writer: Callable[[], None] | None = None
    folder = Path(out_dir) if out_dir is not None else None
    target = Path(html_path) if html_path is not None else folder / REPORT if folder is not None else None
    if target is not None:  # out_dir or html_path given
        figs: list[tuple[str, str, Any]] = []
        single_intercept = len(fit.spec.terms) == 1 and fit.spec.terms[0].q == 1 and fit.spec.residual is None
        if single_intercept:
            figs.append(
                (
                    "shrinkage",
                    "Shrinkage: raw mean residual, BLUP and posterior mean",
                    lambda: _plots.plot_shrinkage(fit, idata),
                )
            )
        if fit.spec.terms:
            figs.append(("caterpillar", "BLUPs with conditional intervals", lambda: _plots.plot_caterpillar(fit)))
        figs += [
            ("residuals", "Scaled residuals vs fitted values", lambda: _plots.plot_residuals(fit)),
            ("qq", "QQ plots of residuals and BLUPs", lambda: _plots.plot_qq(fit)),
            ("trace", "Trace plots", lambda: plot_trace(idata)),
        ]
        if "posterior_predictive" in idata.children:
            figs.append(("ppc", "Posterior predictive check", lambda: plot_ppc(idata)))
        if limit is not None:
            figs.append(
                ("limit", "Posterior mode of the variances vs beta_prior_var", lambda: _plots.plot_limit(limit))
            )
        if folder is not None:
            files += [str(folder / f"{name}.png") for name, _, _ in figs]
        files.append(str(target))
        writer = functools.partial(_write_files, rep, figs, folder, target)
    data["files"] = files
    out = SideBySide(text="\n".join(lines), data=data, files=files, _writer=writer)
    if write:
        out.write()
    return out


def _write_files(rep: Report, figs: list[tuple[str, str, Any]], folder: Path | None, target: Path) -> None:
    """Draw the figures, write them to ``folder`` (if any) and the report with them embedded to ``target``."""
    import matplotlib.pyplot as plt

    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OptionError(f"cannot create the output folder {str(folder)!r}: {e.strerror}") from None
    rep.heading("Figures")
    for name, caption, make in figs:
        fig = make()
        png = _png(fig)
        plt.close("all")
        rep.figure(png, caption)
        if folder is not None:
            path = folder / f"{name}.png"
            try:
                path.write_bytes(png)
            except OSError as e:
                raise OptionError(f"cannot write the figure {str(path)!r}: {e.strerror}") from None
    try:
        target.write_text(rep.html(), encoding="utf-8")
    except OSError as e:
        raise OptionError(f"cannot write the report {str(target)!r}: {e.strerror}") from None


def _head(cmp: Any, n: int) -> str:
    """The first ``n`` rows of a Comparison, as text."""
    from dataclasses import replace

    if len(cmp.table) <= n:
        return str(cmp)
    short = replace(cmp, table=cmp.table.head(n), notes=(*cmp.notes, f"(first {n} of {len(cmp.table)} rows)"))
    return str(short)
