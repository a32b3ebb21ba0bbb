# Profile-likelihood intervals from lme4 (confint(fit, method = "profile")) for the public examples.
# Run from this folder:  Rscript make_profile_reference.R   (Debian: r-base-core r-cran-lme4 r-cran-jsonlite)
# Writes profile_reference.json: per case the interval limits, named as lme4 names them
# (.sig01, ..., .sigma, then the fixed effects), with our names beside them.
suppressMessages({library(lme4); library(jsonlite)})
rd <- function(n) read.csv(file.path("..", "..", "bayeslmm", "datasets", "data", paste0(n, ".csv")), stringsAsFactors = TRUE)
one <- function(id, data, f, REML, ours) {
  d <- rd(data)
  for (nm in c("id_num", "Subject", "Batch")) if (nm %in% names(d)) d[[nm]] <- factor(d[[nm]])
  m <- lmer(as.formula(f), data = d, REML = REML)
  ci <- confint(m, method = "profile", level = 0.95, oldNames = TRUE)
  list(id = id, data = data, formula = f, method = ifelse(REML, "REML", "ML"),
       r_names = rownames(ci), names = ours, lower = unname(ci[, 1]), upper = unname(ci[, 2]),
       lme4_version = as.character(packageVersion("lme4")))
}
res <- list(
  one("pig_reml", "pig_weights", "weight ~ num_weeks + (1|id_num)", TRUE,
      c("sd_(Intercept)|id_num", "sigma", "(Intercept)", "num_weeks")),
  one("pig_ml", "pig_weights", "weight ~ num_weeks + (1|id_num)", FALSE,
      c("sd_(Intercept)|id_num", "sigma", "(Intercept)", "num_weeks")),
  one("dyestuff_reml", "dyestuff", "Yield ~ 1 + (1|Batch)", TRUE, c("sd_(Intercept)|Batch", "sigma", "(Intercept)")),
  one("sleep_uncorr_ml", "sleepstudy", "Reaction ~ Days + (Days||Subject)", FALSE,
      c("sd_(Intercept)|Subject", "sd_Days|Subject.1", "sigma", "(Intercept)", "Days")),
  one("sleep_corr_ml", "sleepstudy", "Reaction ~ Days + (Days|Subject)", FALSE,
      c("sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "sd_Days|Subject", "sigma", "(Intercept)", "Days"))
)
names(res) <- sapply(res, `[[`, "id")
write(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE), "profile_reference.json")
