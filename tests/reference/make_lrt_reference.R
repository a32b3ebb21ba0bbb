# Golden likelihood-ratio tests of nested (mixed) models, for tests/test_golden_lrt.py.
#
# What: lrt_reference.json, a list of cases. Each case has
#   id, data (a bundled dataset name or tests/data/<data>.csv, see data_source), null, alt (formulas,
#   valid both for lme4 and for bayeslmm; the null may have no random effects), method (of the fits
#   as requested), refit (TRUE when R refitted both models by ML before comparing, as lme4's anova does
#   for REML fits with different fixed effects), chisq, df, p (the naive chi-square p value),
#   null_loglik, alt_loglik, null_npar, alt_npar (of the fits actually compared), r_call (the R code
#   whose numbers these are) and, where applicable,
#   rlrsim   RLRsim::exactRLRT: statistic (RLRT), p value, nsim and seed (exact finite-sample null
#            distribution of the restricted LRT for one variance component, simulated)
#   pbkr     pbkrtest::PBrefdist/PBmodcomp (parametric bootstrap of the ML LRT): nsim, seed, the
#            statistic, pbkrtest's p value (1 + #(ref > t)) / (1 + #(ref > 0)) and the plain
#            bootstrap p value (1 + #(ref >= t)) / (1 + nsim) (the one bayeslmm reports)
#   reml_constant  for a null without random effects: -2 logLik(lm(...), REML = TRUE) (stats) and
#            lme4's REML criterion of the alternative evaluated at theta = 0 (devFunOnly), which
#            is the same model; they agree (stored difference), i.e. stats and lme4 use the same
#            REML constant:  log|X'X| + (n - p) (1 + log(2 pi RSS / (n - p))).
#
# How: every lmer fit uses lme4's default optimizer (nloptwrap, BOBYQA) run to tight tolerances
# (`tight`, as in make_reference.R), because the defaults can stop short of the optimum by 1e-7 or
# so in the log-likelihood. lme4's anova(m0, m1) refits REML fits with refitML(), i.e. with
# bobyqa at default tolerances; for the refit case the reference numbers come instead from the
# two models fitted by ML with `tight` (the same comparison), and the numbers of the plain
# anova(m0, m1) call are stored beside them (anova_default) for the record.
# For a null without random effects (lm) lme4's anova cannot compare REML fits, so the statistic is
# computed by hand: 2 * (logLik(lmer REML) - logLik(lm, REML = TRUE)), df = difference of the
# numbers of parameters (lme4's npar counts fixed effects + theta + 1, stats's fixed effects + 1).
# This is the statistic exactRLRT reports (checked: rlrsim$stat_diff).
#
# Data: the bundled datasets are read from ../../bayeslmm/datasets/data/ (identical to
# shared/data/), the others from ../data/ (written by make_reference.R). Character columns become
# factors (C collation), as in make_reference.R.
#
# Run from this folder:  Rscript make_lrt_reference.R      (about a minute)
# R and the packages come from Debian:
#   apt-get install r-base-core r-cran-lme4 r-cran-rlrsim r-cran-jsonlite r-cran-pbkrtest
suppressMessages({library(lme4); library(RLRsim); library(jsonlite); library(pbkrtest)})
invisible(Sys.setlocale("LC_COLLATE", "C"))

bundled <- c("pig_weights", "sleepstudy", "dyestuff")
rd <- function(n) {
  path <- if (n %in% bundled) file.path("..", "..", "bayeslmm", "datasets", "data", paste0(n, ".csv"))
          else file.path("..", "data", paste0(n, ".csv"))
  read.csv(path, stringsAsFactors = TRUE)
}
tight_opt <- list(ftol_abs = 1e-15, ftol_rel = 1e-15, xtol_abs = 1e-14, xtol_rel = 1e-14, maxeval = 1e5)
tight <- lmerControl(optimizer = "nloptwrap", optCtrl = tight_opt)
RLRSIM_NSIM <- 1e5
RLRSIM_SEED <- 20240611
PB_NSIM <- 2000
PB_SEED <- 20240611

fit <- function(f, d, REML) lmer(as.formula(f), data = d, REML = REML, control = tight)
npar <- function(m) as.integer(attr(logLik(m), "df"))
src <- function(n) if (n %in% bundled) "bundled" else "tests/data"

base_case <- function(id, dname, f0, f1, method, refit, ll0, ll1, np0, np1, chisq, df, p, r_call) {
  list(id = id, data = dname, data_source = src(dname), null = f0, alt = f1, method = method,
       refit = refit, chisq = chisq, df = df, p = p, null_loglik = ll0, alt_loglik = ll1,
       null_npar = np0, alt_npar = np1, r_call = r_call)
}

# Both models have random effects: lme4's anova (refit = FALSE keeps REML fits as they are).
anova_case <- function(id, dname, f0, f1, REML, refit_ml = FALSE) {
  d <- rd(dname)
  m0 <- fit(f0, d, REML); m1 <- fit(f1, d, REML)
  method <- if (REML) "REML" else "ML"
  if (refit_ml) {
    # what anova(m0, m1) does (refitML, default tolerances) ...
    a_def <- suppressMessages(anova(m0, m1))
    # ... and the same comparison with tightly fitted ML models (the reference numbers)
    m0 <- fit(f0, d, FALSE); m1 <- fit(f1, d, FALSE)
    a <- anova(m0, m1)
    r_call <- sprintf(paste0("m0 <- lmer(%s, %s, REML = TRUE); m1 <- lmer(%s, %s, REML = TRUE); anova(m0, m1)",
                             "  [numbers: both refitted by ML with tight nloptwrap tolerances]"), f0, dname, f1, dname)
  } else {
    a <- anova(m0, m1, refit = FALSE)
    r_call <- sprintf("m0 <- lmer(%s, %s, REML = %s); m1 <- lmer(%s, %s, REML = %s); anova(m0, m1%s)",
                      f0, dname, REML, f1, dname, REML, if (REML) ", refit = FALSE" else "")
  }
  out <- base_case(id, dname, f0, f1, method, refit_ml, a$logLik[1], a$logLik[2], as.integer(a$npar[1]),
                   as.integer(a$npar[2]), a$Chisq[2], as.integer(a$Df[2]), a[["Pr(>Chisq)"]][2], r_call)
  if (refit_ml) out$anova_default <- list(chisq = a_def$Chisq[2], df = as.integer(a_def$Df[2]),
                                          p = a_def[["Pr(>Chisq)"]][2], null_loglik = a_def$logLik[1],
                                          alt_loglik = a_def$logLik[2])
  list(case = out, m0 = m0, m1 = m1, d = d)
}

# The null has no random effects: REML logLik of the lm against the lmer's; exactRLRT(m).
lm_case <- function(id, dname, f0, f1) {
  d <- rd(dname)
  m0 <- lm(as.formula(f0), data = d)
  m1 <- fit(f1, d, TRUE)
  ll0 <- as.numeric(logLik(m0, REML = TRUE)); ll1 <- as.numeric(logLik(m1))
  np0 <- as.integer(attr(logLik(m0, REML = TRUE), "df")); np1 <- npar(m1)
  chisq <- max(0, 2 * (ll1 - ll0)); df <- np1 - np0
  r_call <- sprintf(paste0("m0 <- lm(%s, %s); m1 <- lmer(%s, %s, REML = TRUE); ",
                           "chisq <- 2 * (logLik(m1) - logLik(m0, REML = TRUE)); ",
                           "pchisq(chisq, df = %d, lower.tail = FALSE)"), f0, dname, f1, dname, df)
  out <- base_case(id, dname, f0, f1, "REML", FALSE, ll0, ll1, np0, np1, chisq, df,
                   pchisq(chisq, df, lower.tail = FALSE), r_call)
  devfun <- lmer(as.formula(f1), data = d, REML = TRUE, devFunOnly = TRUE)
  crit0 <- devfun(rep(0, length(getME(m1, "theta"))))
  out$reml_constant <- list(stats_minus2_reml_loglik = -2 * ll0, lme4_reml_crit_theta0 = crit0,
                            difference = crit0 - (-2 * ll0),
                            note = paste("lme4's REML criterion at theta = 0 equals -2 logLik(lm, REML = TRUE):",
                                         "stats and lme4 use the same REML constant; no correction needed"))
  out$rlrsim <- rlrsim(m1, NULL, NULL, chisq,
                       sprintf("set.seed(%d); exactRLRT(m1, nsim = %g, seed = %d)", RLRSIM_SEED, RLRSIM_NSIM,
                               RLRSIM_SEED))
  out
}

rlrsim <- function(m, mA, m0, chisq, call) {
  set.seed(RLRSIM_SEED)
  r <- if (is.null(mA)) exactRLRT(m, nsim = RLRSIM_NSIM, seed = RLRSIM_SEED)
       else exactRLRT(m, mA, m0, nsim = RLRSIM_NSIM, seed = RLRSIM_SEED)
  # p = 0 means that none of the nsim simulated values reached the statistic: p < 1 / nsim
  list(stat = unname(r$statistic), p = unname(r$p.value), nsim = RLRSIM_NSIM, seed = RLRSIM_SEED,
       method = gsub("\\s+", " ", r$method), call = call, stat_diff = unname(r$statistic) - chisq)
}

pbkr <- function(m1, m0, chisq) {
  set.seed(PB_SEED)
  nwarn <- 0
  ref <- withCallingHandlers(PBrefdist(m1, m0, nsim = PB_NSIM),
                             warning = function(w) { nwarn <<- nwarn + 1; invokeRestart("muffleWarning") })
  pb <- PBmodcomp(m1, m0, ref = ref)
  t <- unname(attr(ref, "stat")["tobs"])
  refv <- as.numeric(ref)
  list(nsim = PB_NSIM, seed = PB_SEED, stat = t, stat_diff = t - chisq,
       p_pbkrtest = pb$test["PBtest", "p.value"], npos = sum(refv > 0), n_extreme = sum(refv > t),
       p_plain = (1 + sum(refv >= t - 1e-10)) / (1 + length(refv)),
       convergence_warnings = nwarn,
       call = sprintf("set.seed(%d); ref <- PBrefdist(m1, m0, nsim = %d); PBmodcomp(m1, m0, ref = ref)",
                      PB_SEED, PB_NSIM),
       note = paste("pbkrtest's p value counts only positive simulated statistics in its denominator;",
                    "p_plain = (1 + #(ref >= t)) / (1 + nsim) is the usual bootstrap p value;",
                    "convergence_warnings counts lme4's gradient-check warnings in the refits of the",
                    "simulated responses (muffled)"))
}

cases <- list()
add <- function(x) cases[[length(cases) + 1]] <<- x

# 1. random slope with its covariance added to a random intercept, REML, same fixed effects
r <- anova_case("sleep_slope_reml", "sleepstudy", "Reaction ~ Days + (1|Subject)",
                "Reaction ~ Days + (Days|Subject)", TRUE)
add(r$case)

# 2. fixed-effect test between REML fits: lme4 refits both by ML
r <- anova_case("sleep_fixed_refit", "sleepstudy", "Reaction ~ 1 + (Days|Subject)",
                "Reaction ~ Days + (Days|Subject)", TRUE, refit_ml = TRUE)
add(r$case)

# 3, 4. one random intercept against the linear model, REML, with RLRsim's exact test
add(lm_case("pig_intercept_reml", "pig_weights", "weight ~ num_weeks", "weight ~ num_weeks + (1|id_num)"))
add(lm_case("dyestuff_intercept_reml", "dyestuff", "Yield ~ 1", "Yield ~ 1 + (1|Batch)"))

# 5. one of two crossed variance components, REML; RLRsim's three-model form
r <- anova_case("penicillin_sample_reml", "penicillin", "diameter ~ 1 + (1|plate)",
                "diameter ~ 1 + (1|plate) + (1|sample)", TRUE)
m_only <- fit("diameter ~ 1 + (1|sample)", r$d, TRUE)
r$case$rlrsim <- rlrsim(m_only, r$m1, r$m0, r$case$chisq,
                        sprintf(paste0("mA <- lmer(%s, REML = TRUE); m0 <- lmer(%s, REML = TRUE); ",
                                       "m <- lmer(diameter ~ 1 + (1|sample), REML = TRUE); ",
                                       "set.seed(%d); exactRLRT(m, mA, m0, nsim = %g, seed = %d)"),
                                r$case$alt, r$case$null, RLRSIM_SEED, RLRSIM_NSIM, RLRSIM_SEED))
add(r$case)

# 6. nested: the batch variance beside batch:cask, REML (a moderate p value); three-model RLRsim
r <- anova_case("pastes_batch_reml", "pastes", "strength ~ 1 + (1|batch:cask)",
                "strength ~ 1 + (1|batch/cask)", TRUE)
m_only <- fit("strength ~ 1 + (1|batch)", r$d, TRUE)
r$case$rlrsim <- rlrsim(m_only, r$m1, r$m0, r$case$chisq,
                        sprintf(paste0("mA <- lmer(%s, REML = TRUE); m0 <- lmer(%s, REML = TRUE); ",
                                       "m <- lmer(strength ~ 1 + (1|batch), REML = TRUE); ",
                                       "set.seed(%d); exactRLRT(m, mA, m0, nsim = %g, seed = %d)"),
                                r$case$alt, r$case$null, RLRSIM_SEED, RLRSIM_NSIM, RLRSIM_SEED))
add(r$case)

# 7. ML fits, a fixed effect added
r <- anova_case("orthodont_sex_ml", "orthodont", "distance ~ age + (1|Subject)",
                "distance ~ age + Sex + (1|Subject)", FALSE)
add(r$case)

# 8. ML fits, a random slope with its covariance added; parametric bootstrap with pbkrtest
r <- anova_case("orthodont_slope_ml", "orthodont", "distance ~ age + Sex + (1|Subject)",
                "distance ~ age + Sex + (age|Subject)", FALSE)
r$case$pbkr <- pbkr(r$m1, r$m0, r$case$chisq)
add(r$case)

versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                 RLRsim = as.character(packageVersion("RLRsim")),
                 pbkrtest = as.character(packageVersion("pbkrtest")),
                 Matrix = as.character(packageVersion("Matrix")),
                 jsonlite = as.character(packageVersion("jsonlite")))
out <- list(versions = versions,
            lmer_control = paste0("nloptwrap ", paste(names(tight_opt), unlist(tight_opt), sep = "=", collapse = " ")),
            cases = cases)
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), "lrt_reference.json")
cat(paste(names(versions), unlist(versions), collapse = "; "), "\n", length(cases), "cases written to lrt_reference.json\n")
for (c in cases) cat(sprintf("%-26s chisq %.8g df %d p %.6g%s%s\n", c$id, c$chisq, c$df, c$p,
                             if (!is.null(c$rlrsim)) sprintf("  RLRsim p %.4g (stat diff %.2g)", c$rlrsim$p,
                                                             c$rlrsim$stat_diff) else "",
                             if (!is.null(c$pbkr)) sprintf("  PB p %.4g / plain %.4g", c$pbkr$p_pbkrtest,
                                                           c$pbkr$p_plain) else ""))
