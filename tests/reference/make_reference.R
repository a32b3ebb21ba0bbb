# Golden lme4 fits beyond the public ones, for tests/test_golden_lme4.py.
#
# Makes
#   ../data/<name>.csv   every data set used below, exported from the R packages lme4 and nlme
#                        (factors written as plain character columns, numeric columns kept numeric)
#   lme4_extra.json      one entry per case, in the format of public/lme4_public.json, plus
#                        `py_formula` (the same model in bayeslmm's formula syntax), `lme4_version`
#                        and `lmer_control` (the optimizer settings of the fit)
# The models are fitted to the data as read back from the CSV files, so that R sees exactly what
# Python sees: character columns become factors with levels sorted by code point (C collation), the
# first level being the reference of the treatment contrasts, as in bayeslmm.
# The estimates come from lme4's default optimizer (nloptwrap, BOBYQA) run to tight tolerances
# (`tight` below): with its default tolerances it stops short of the optimum on flat likelihoods
# (e.g. orthodont_slope_ml: logLik 2.7e-7 below the optimum, variances off by 5e-4 relative), which is
# too coarse for golden values. `seconds` is the median time of a fit with lme4's default settings.
# public/ holds verbatim copies of ../shared/reference/{lme4_public.json,make_reference.R}
# (the public cases, whose data are bundled in bayeslmm.datasets).
#
# Run from this folder:  Rscript make_reference.R
# R and the packages come from Debian:
#   apt-get install r-base-core r-cran-lme4 r-cran-nlme r-cran-lmertest r-cran-jsonlite
suppressMessages({library(lme4); library(nlme); library(jsonlite); library(lmerTest)})
invisible(Sys.setlocale("LC_COLLATE", "C"))

datadir <- file.path("..", "data")
dir.create(datadir, showWarnings = FALSE)

# Write a data frame to ../data/<name>.csv with every factor (ordered or not) as character.
export <- function(d, name) {
  d <- data.frame(lapply(d, function(v) if (is.factor(v)) as.character(v) else v), stringsAsFactors = FALSE)
  write.csv(d, file.path(datadir, paste0(name, ".csv")), row.names = FALSE)
}

# sleepstudy with missing values at fixed rows: Reaction at rows 5, 17, 40 and Days at row 90.
sleep_na <- lme4::sleepstudy
sleep_na$Reaction[c(5, 17, 40)] <- NA
sleep_na$Days[90] <- NA

export(lme4::Penicillin, "penicillin")
export(lme4::Pastes, "pastes")
export(nlme::Orthodont, "orthodont")
export(lme4::sleepstudy, "sleepstudy")
export(lme4::Dyestuff2, "dyestuff2")
export(sleep_na, "sleepstudy_na")
export(nlme::ergoStool, "ergostool")
export(nlme::Machines, "machines")

rd <- function(n) read.csv(file.path(datadir, paste0(n, ".csv")), stringsAsFactors = TRUE)
timeit <- function(expr_fun, reps = 5) { ts <- replicate(reps, system.time(expr_fun())[["elapsed"]]); median(ts) }
vc_list <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = ifelse(is.na(vc$var1[i]), "", vc$var1[i]),
                                             var2 = ifelse(is.na(vc$var2[i]), "", vc$var2[i]),
                                             vcov = vc$vcov[i], sdcor = vc$sdcor[i]))
}
tight_opt <- list(ftol_abs = 1e-15, ftol_rel = 1e-15, xtol_abs = 1e-14, xtol_rel = 1e-14, maxeval = 1e5)
tight <- lmerControl(optimizer = "nloptwrap", optCtrl = tight_opt)
# Fit one case with lme4 (estimates, BLUPs, timing) and lmerTest (Satterthwaite df).
# lmer turns the grouping variables into factors itself; fixed-effect columns keep their CSV type.
lmer_case <- function(id, dname, f, REML = TRUE, py_formula = f, reps = 3) {
  d <- rd(dname)
  t <- timeit(function() lme4::lmer(as.formula(f), data = d, REML = REML), reps)
  m <- lme4::lmer(as.formula(f), data = d, REML = REML, control = tight)
  fe <- fixef(m); se <- sqrt(diag(as.matrix(vcov(m))))
  re <- as.data.frame(ranef(m, condVar = TRUE))
  blups <- list(grpvar = as.character(re$grpvar), term = as.character(re$term), grp = as.character(re$grp),
                condval = re$condval, condsd = re$condsd)
  m2 <- lmerTest::lmer(as.formula(f), data = d, REML = REML, control = tight)
  co <- summary(m2)$coefficients
  list(id = id, data = dname, formula = f, py_formula = py_formula, method = ifelse(REML, "REML", "ML"),
       engine = "lme4", lme4_version = as.character(packageVersion("lme4")),
       lmer_control = paste0("nloptwrap ", paste(names(tight_opt), unlist(tight_opt), sep = "=", collapse = " ")),
       fixef = as.list(fe), se = as.list(se), varcorr = vc_list(m), sigma = sigma(m),
       loglik = as.numeric(logLik(m)), deviance_or_reml = ifelse(REML, REMLcrit(m), deviance(m)),
       aic = AIC(m), bic = BIC(m), nobs = nobs(m), singular = isSingular(m),
       satterthwaite_df = as.list(setNames(co[, "df"], rownames(co))),
       blups = blups, seconds = t, vcov = as.matrix(vcov(m)))
}

cases <- list(
  # crossed random intercepts
  list("penicillin_reml", "penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", TRUE),
  list("penicillin_ml", "penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", FALSE),
  # nested random intercepts: (1|batch/cask) = (1|batch) + (1|batch:cask)
  list("pastes_reml", "pastes", "strength ~ 1 + (1|batch/cask)", TRUE),
  # categorical fixed effects, an interaction, a transform
  list("orthodont_interaction_reml", "orthodont", "distance ~ age * Sex + (1|Subject)", TRUE),
  list("orthodont_quadratic_reml", "orthodont", "distance ~ age + I(age^2) + Sex + (1|Subject)", TRUE,
       "distance ~ age + I(age**2) + Sex + (1|Subject)"),
  # correlated random slope, ML
  list("orthodont_slope_ml", "orthodont", "distance ~ age + Sex + (age|Subject)", FALSE),
  # uncorrelated terms: groups "Subject" and "Subject.1"
  list("sleep_uncorr_reml", "sleepstudy", "Reaction ~ Days + (Days || Subject)", TRUE),
  # singular fit: the batch variance is estimated as 0
  list("dyestuff2_reml", "dyestuff2", "Yield ~ 1 + (1|Batch)", TRUE),
  # incomplete rows are dropped
  list("sleep_na_reml", "sleepstudy_na", "Reaction ~ Days + (Days|Subject)", TRUE),
  # a 4-level factor in the fixed part; numeric-looking group labels
  list("ergostool_reml", "ergostool", "effort ~ Type + (1|Subject)", TRUE),
  # categorical random slope without intercept: an unstructured 3 x 3 D
  list("machines_slope_reml", "machines", "score ~ Machine + (0 + Machine|Worker)", TRUE),
  # a grouping factor written as an interaction a:b
  list("machines_interaction_ml", "machines", "score ~ Machine + (1|Worker) + (1|Worker:Machine)", FALSE)
)
res <- list()
for (c in cases) {
  res[[c[[1]]]] <- lmer_case(c[[1]], c[[2]], c[[3]], c[[4]], if (length(c) > 4) c[[5]] else c[[3]])
}
write(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE), "lme4_extra.json")
cat("lme4", as.character(packageVersion("lme4")), "lmerTest", as.character(packageVersion("lmerTest")),
    ":", length(res), "cases written to lme4_extra.json\n")
