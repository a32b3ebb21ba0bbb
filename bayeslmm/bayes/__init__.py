"""The Bayesian path. Importing it loads no PyMC: models are built (and PyMC imported) on demand.

``reml_limit`` shows that with ``beta ~ N(0, beta_prior_var I)`` integrated out, the posterior
mode of the variance parameters (flat prior) tends to the REML estimate as beta_prior_var grows.
"""

from ._marginal import LimitPath, log_marginal, neg2_log_marginal, reml_limit
from ._model import build_model, default_priors, process_labels, set_response, varcorr_labels
from ._priors import Prior, parse_prior
from ._sample import SAMPLERS, sample, sample_summary

__all__ = [
    "SAMPLERS",
    "LimitPath",
    "Prior",
    "build_model",
    "default_priors",
    "log_marginal",
    "neg2_log_marginal",
    "parse_prior",
    "process_labels",
    "reml_limit",
    "sample",
    "sample_summary",
    "set_response",
    "varcorr_labels",
]
