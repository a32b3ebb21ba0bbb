"""The Bayesian path. Importing it loads no PyMC: models are built (and PyMC imported) on demand.

``reml_limit`` shows that with ``beta ~ N(0, beta_prior_var I)`` integrated out, the posterior
mode of the variance parameters (flat prior) tends to the REML estimate as beta_prior_var grows.
"""

from ._marginal import LimitPath, log_marginal, neg2_log_marginal, reml_limit

__all__ = ["LimitPath", "log_marginal", "neg2_log_marginal", "reml_limit"]
from ._model import build_model, default_priors, sample, sample_summary, varcorr_labels

__all__ += ["build_model", "default_priors", "sample", "sample_summary", "varcorr_labels"]
