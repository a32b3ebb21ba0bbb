"""Where the two paths meet: REML against the posterior, plots of both, and model checking.

:func:`compare` and :func:`compare_ranef` put the fit's estimates, intervals and BLUPs next
to posterior summaries (a :class:`Comparison`: a pandas table that prints, and renders as
Markdown or HTML). The plot functions return matplotlib Figures: shrinkage of a random
intercept, the REML limit of the posterior mode, and frequentist diagnostics (residuals,
QQ plots, caterpillar plots of the BLUPs). Model checking through ArviZ: sampler diagnostics
in plain language (:func:`diagnose`), trace and rank plots, posterior and prior predictive
checks (overall and per group), LOO/WAIC with Pareto-k (:func:`model_fit`) and comparison of
competing structures (:func:`compare_models`). :func:`side_by_side` puts all of it in one
text, JSON-ready dictionary and HTML report with figures (the CLI's ``compare`` and ``demo``).
Importing this module loads neither PyMC nor matplotlib.
"""

from ._checks import Diagnosis, ModelFit, compare_models, diagnose, model_fit, plot_rank, plot_trace, save
from ._plots import plot_caterpillar, plot_limit, plot_qq, plot_residuals, plot_shrinkage
from ._ppc import GroupCheck, plot_ppc, plot_ppc_groups, plot_prior_predictive, ppc_group_stats
from ._report import FIGURES, REPORT, SideBySide, side_by_side
from ._table import Comparison, compare, compare_ranef

__all__ = [
    "FIGURES",
    "REPORT",
    "Comparison",
    "Diagnosis",
    "GroupCheck",
    "ModelFit",
    "SideBySide",
    "compare",
    "compare_models",
    "compare_ranef",
    "diagnose",
    "model_fit",
    "plot_caterpillar",
    "plot_limit",
    "plot_ppc",
    "plot_ppc_groups",
    "plot_qq",
    "plot_prior_predictive",
    "plot_rank",
    "plot_residuals",
    "plot_shrinkage",
    "plot_trace",
    "ppc_group_stats",
    "save",
    "side_by_side",
]
