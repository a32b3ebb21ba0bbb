# Golden nlme and glmmTMB fits of linear models with structured residual covariance (MMRM-type
# unstructured / heterogeneous structures over visits, spatial correlation with a nugget, variance
# functions).
#
# Makes
#   ../data/sim_mmrm.csv  a simulated two-arm clinical trial with monotone MAR dropout (below)
#   ../data/wheat2.csv    nlme's Wheat2 (spatial field trial: Block, variety, yield, latitude, longitude)
#   nlme_mmrm.json        {"generator", "versions", "conventions", "cases": [ ... ]}
# orthodont.csv and bodyweight.csv are read as written by make_nlme_reference.R / make_reference.R
# and are not rewritten here.  Every model is fitted to the data as read back from the CSV files, so
# that R sees exactly what Python sees (character columns become factors with levels sorted by code
# point, C collation).
#
# Run from this folder:  Rscript make_nlme_mmrm_reference.R   (2 to 3 minutes on one core, mostly glmmTMB
# and the exact re-maximisation of its fits)
# R and the packages come from Debian:
#   apt-get install r-base-core r-cran-nlme r-cran-glmmtmb r-cran-jsonlite
#
# Structures (bayeslmm syntax in "structure") and their mapping to nlme / glmmTMB
# -----------------------------------------------------------------------------
# In "s(visit | id)" the visit variable is treated as a factor whose levels are its sorted unique
# values (numeric sort for a numeric column such as Orthodont's age or BodyWeight's Time, code-point
# sort for strings such as "V1".."V5"); k = 1..m is the level index.  A subject's covariance matrix
# is the submatrix of the m x m matrix `marginal_cov` at the visits it has (dropout / missing visits
# simply remove rows and columns; for ar1 the lag is the difference of k, so a gap counts).
#   us(visit | id)    gls: correlation = corSymm(form = ~ k | id), weights = varIdent(form = ~ 1 | visit)
#   cs(visit | id)    gls: correlation = corCompSymm(form = ~ 1 | id)
#   csh(visit | id)   gls: corCompSymm(form = ~ 1 | id) + varIdent(form = ~ 1 | visit)
#   ar1(visit | id)   corAR1(form = ~ k | id)
#   ar1h(visit | id)  corAR1(form = ~ k | id) + varIdent(form = ~ 1 | visit)
#   diag(visit | id)  gls: varIdent(form = ~ 1 | visit), no correlation
#   exp/gau/sph(x + y | 1)  corExp / corGaus / corSpher(form = ~ x + y, nugget = TRUE), one group
#                     (all observations correlated; Euclidean distance d):
#                     Cov = sigma^2 * ((1 - nugget) * c(d) + nugget * [d == 0]), with
#                     c(d) = exp(-d / range), exp(-(d / range)^2), or
#                     (1 - 1.5 d / range + 0.5 (d / range)^3) [d < range] (spherical).
#   toeph(visit | id) glmmTMB: toep(0 + visit | id), dispformula = ~ 0 (a variance per visit and a
#                     correlation per lag: SAS TOEPH)
#   us(visit | arm/id) glmmTMB: us(0 + visit:dA | id) + us(0 + visit:dB | id), dispformula = ~ 0,
#                     dA = (arm == "active"), dB = (arm == "placebo") numeric 0/1 dummies made in R
#                     (not in the CSV): a separate unstructured matrix per arm ("marginal_cov" is then
#                     a dict arm -> matrix).
# Variance functions ("variance"):
#   ident(visit)  varIdent(form = ~ 1 | visit): sd of visit v = sigma * ratio_v, ratio of the
#                 reference stratum (var_ref: the first stratum nlme meets, here always the first
#                 level) = 1; var_params are the other ratios (coef(varStruct, unconstrained = FALSE)).
#   power(x)      varPower(form = ~ x): sd = sigma * |x|^delta;  exp(x): varExp(form = ~ x):
#                 sd = sigma * exp(delta * x).
# Random effects ("random", lme4-style text) are nlme's lme random = ~ 1 | id; only combined with
# ar1 / variance functions (a random intercept with us or cs is not identifiable).
#
# Fields of a case: name, data (CSV name under tests/data, without ".csv"), factors (columns to read
# as character, e.g. pd.read_csv(..., dtype={"Diet": str})), formula (bayeslmm syntax; "C(age)" is
# age as a factor, levels in numeric order), formula_r (as fitted in R), structure, variance, random,
# method, engine ("nlme" or "glmmTMB"), r_call (the exact call), control, converged, message
# (warnings / the optimizer's message; "ok" if none), loglik, df, nobs, aic, fixef (bayeslmm names,
# e.g. arm[T.placebo]:visit[T.V2]), se, se_engine, sigma, corr_params, var_params, var_ref,
# marginal_cov (list of rows), marginal_rows (visit labels as in the data column), marginal_subject
# (the complete subject it was taken from), ranef_cov / ranef_terms (lme: D = getVarCov(fit)),
# range, nugget (spatial), alt_fits (each optimizer's logLik), failed_attempts, checks.
# glmmTMB cases also: n_iter (nlminb iterations or optim function evaluations), max_abs_gradient,
# pdHess, loglik_direct, sds / corr (of marginal_cov), exact (see polish below: loglik, fixef, se,
# marginal_cov, sds, corr of the exact re-maximisation, loglik_at_glmmTMB, gain_over_glmmTMB,
# optimizer).
# Notes:
#   * se = sqrt(diag((X'V^-1 X)^-1)) at the estimates (lme4's convention).  se_engine = vcov(fit); it
#     equals se except for gls ML fits, where nlme multiplies by sqrt(n / (n - p)).
#   * sigma: nlme's residual sigma.  For gls with corSymm/varIdent, marginal_cov =
#     sigma^2 * diag(r) C diag(r) with r the varIdent ratios (reference 1) and C the correlation matrix.
#     For lme, marginal_cov = getVarCov(fit, type = "marginal") = Z D Z' + R.  For glmmTMB,
#     marginal_cov = VarCorr of the term; the full marginal covariance adds sigma^2 I where sigma is
#     glmmTMB's fixed tiny residual sd under dispformula = ~ 0 (about 1.2e-4, i.e. 1.5e-8 on the
#     variance); the loglik includes it.
#   * no iteration count is recorded for nlme (gls's numIter is 0 with nlminb, lme's is NULL); every
#     nlme fit is repeated with the other optimizer instead (alt_fits, checks).
#
# Checks (the script stop()s if one fails), for every converged case:
#   * the log-likelihood computed directly from the stored covariance (marginal_cov submatrices per
#     subject, or the spatial formula above from range, nugget and sigma) equals logLik(fit) to 1e-6
#     (glmmTMB: 1e-3, see below; its exact value is stored as loglik_direct),
#       ML:   -0.5 * (sum_i log|V_i| + r'V^-1 r + n log(2 pi))
#       REML: -0.5 * (sum_i log|V_i| + log|X'V^-1 X| + r'V^-1 r + (n - p) log(2 pi));
#   * the fixed effects equal the GLS ones at that covariance (rel. 1e-6, glmmTMB 1e-4), and for nlme
#     the standard errors too (rel. 1e-6; glmmTMB's se_engine come from the joint Hessian with the
#     covariance parameters and differ from (X'V^-1 X)^-1 by up to a few percent: se is the GLS one);
#   * marginal_cov is symmetric and positive definite;
#   * nlme: the other optimizer (nlminb <-> optim) does not reach a higher logLik by more than 1e-6
#     (if it does, its fit is used and the case says so);
#   * glmmTMB us(visit | id) reaches nlme's us logLik (to 1e-3, the tiny residual variance aside).
# glmmTMB with dispformula = ~ 0 is badly conditioned (residual sd fixed at ~1.2e-4).  ML fits are
# fine (logLik exact to 1e-10, at the optimum).  REML fits are not: nlminb stops with "false
# convergence (8)", optim BFGS ends with code 0 but a gradient ~0.2, and logLik(fit) itself is off by
# up to ~4e-4 from the exact REML log-likelihood at the same parameters (loglik_direct); the exact
# re-maximisation gains 4e-5 to 1.3e-4 over glmmTMB's estimates.  So for the REML glmmTMB cases the
# reference values are those in "exact" (for us(visit | id) they equal nlme's to 5e-8 in logLik);
# loglik / fixef / marginal_cov at the top level are glmmTMB's own.  glmmTMB is run with its default
# (nlminb) and with optim BFGS; of those with a positive definite Hessian the one with the higher
# logLik(fit) is kept; "converged" is the kept optimizer's own verdict (code 0 and pdHess)
# (max_abs_gradient, pdHess, message and alt_fits say how it ended).
#
# Cases: Orthodont (distance ~ C(age) * Sex; us, cs, csh, ar1h, diag, plain gls, and lme with a
# random intercept of Subject plus ar1, with and without ident(age)); sim_mmrm (gls us, cs, ar1h;
# glmmTMB us, toeph, us per arm); BodyWeight (lme (1 | Rat) with power(Time), exp(Time), and
# power(Time) + ar1(Time | Rat); gls with power(Time)); all REML and ML except the BodyWeight gls
# (REML) and Wheat2 (yield ~ variety, exp / gau / sph with nugget by REML, started as in the nlme book
# at c(range, nugget) = c(28, 0.2), and exp by ML).
#   * wheat2_exp_gls_reml has NO finite REML maximum (range -> infinity, see the profile in the case):
#     it is recorded with converged = false; wheat2_exp_gls_ml, gau and sph are interior optima.
#   * bodyweight_ri_power_ar1_lme_*: lme with opt = "optim" fails ("NA/NaN/Inf in foreign function
#     call"); nlminb's fit is used (failed_attempts).
suppressMessages({library(nlme); library(glmmTMB); library(jsonlite)})
invisible(Sys.setlocale("LC_COLLATE", "C"))
Sys.setenv(OMP_NUM_THREADS = "1")

datadir <- file.path("..", "data")

export <- function(d, name) {
  d <- data.frame(lapply(d, function(v) if (is.factor(v)) as.character(v) else v), stringsAsFactors = FALSE)
  write.csv(d, file.path(datadir, paste0(name, ".csv")), row.names = FALSE)
}
rd <- function(n, factors = character()) {
  cc <- setNames(rep("character", length(factors)), factors)
  read.csv(file.path(datadir, paste0(n, ".csv")), colClasses = cc, stringsAsFactors = TRUE)
}

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
for (f in c("orthodont", "bodyweight"))
  if (!file.exists(file.path(datadir, paste0(f, ".csv")))) stop("missing ", f, ".csv (run make_reference.R / make_nlme_reference.R)")

# Wheat2: 224 plots, 56 varieties in 4 blocks, yield with plot coordinates (nlme book, ch. 5.3).
export(as.data.frame(Wheat2), "wheat2")

# sim_mmrm: 200 subjects S001..S200, randomised 100:100 to "placebo" / "active", visits V1..V5 at
# week 0, 2, 4, 8, 12, baseline covariate base ~ N(50, 8^2) (rounded to 0.1).
#   y_ij = 20 + 0.6 base_i + mu_j + [active] eff_j + e_ij,
#   mu = (0, -1, -2, -3, -4), eff = (0, -1, -2.5, -4, -5),
#   e_i ~ N(0, diag(sds) Rc diag(sds)), sds = (3, 3.5, 4, 4.5, 5), Rc unstructured (below,
#   correlations 0.4 to 0.8, not Toeplitz), y rounded to 1e-4.
# Monotone dropout, missing at random: before visit j = 2..5 a subject still in the study leaves with
# probability plogis(-3.2 + 0.25 (y_i,j-1 - mean of y at visit j-1 over all subjects, complete data)),
# i.e. depending on its previous observed value; visits after dropout are absent (rows removed).
# With this seed 46 of 200 subjects (23%) miss V5.  Rows are exported in random order.
set.seed(20250301)
nsub <- 200; weeks <- c(0, 2, 4, 8, 12); m <- 5
sds <- c(3, 3.5, 4, 4.5, 5)
Rc <- matrix(c(1, .75, .6, .5, .4,
               .75, 1, .7, .6, .5,
               .6, .7, 1, .8, .65,
               .5, .6, .8, 1, .75,
               .4, .5, .65, .75, 1), 5)
S <- diag(sds) %*% Rc %*% diag(sds)
arm <- sample(rep(c("placebo", "active"), each = nsub / 2))
base <- round(rnorm(nsub, 50, 8), 1)
mu_pl <- c(0, -1, -2, -3, -4); eff <- c(0, -1, -2.5, -4, -5)
E <- matrix(rnorm(nsub * m), nsub) %*% chol(S)
Y <- t(sapply(1:nsub, function(i) 20 + 0.6 * base[i] + mu_pl + (arm[i] == "active") * eff)) + E
mv <- colMeans(Y)
last <- rep(m, nsub)
for (i in 1:nsub) for (j in 2:m) {
  if (runif(1) < plogis(-3.2 + 0.25 * (Y[i, j - 1] - mv[j - 1]))) { last[i] <- j - 1; break }
}
sim <- do.call(rbind, lapply(1:nsub, function(i) {
  j <- seq_len(last[i])
  data.frame(id = sprintf("S%03d", i), arm = arm[i], visit = paste0("V", j), week = weeks[j],
             base = base[i], y = round(Y[i, j], 4), stringsAsFactors = FALSE)
}))
sim <- sim[sample(nrow(sim)), ]
export(sim, "sim_mmrm")
dropout_summary <- list(subjects = nsub, rows = nrow(sim), missing_last_visit = sum(last < m),
                        last_visit_counts = as.list(setNames(as.integer(table(factor(last, 1:m))), paste0("V", 1:m))))
cat(sprintf("sim_mmrm: %d rows, %d of %d subjects miss V5\n", nrow(sim), sum(last < m), nsub))

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
ctl_gls <- "glsControl(tolerance = 1e-10, msTol = 1e-10, maxIter = 500, msMaxIter = 500)"
ctl_gls_alt <- "glsControl(tolerance = 1e-10, msTol = 1e-10, maxIter = 500, msMaxIter = 500, opt = \"optim\")"
ctl_lme <- "lmeControl(tolerance = 1e-10, msTol = 1e-10, maxIter = 500, msMaxIter = 500, niterEM = 0)"
ctl_lme_alt <- "lmeControl(tolerance = 1e-10, msTol = 1e-10, maxIter = 500, msMaxIter = 500, niterEM = 0, opt = \"optim\")"
tmb_alt <- "glmmTMBControl(optimizer = optim, optArgs = list(method = \"BFGS\"), optCtrl = list(maxit = 2000, reltol = 1e-14))"

# R coefficient name -> bayeslmm (formulaic) name: armplacebo:visitV2 -> arm[T.placebo]:visit[T.V2];
# alias maps a derived R column to its bayeslmm term (fage -> C(age)).
py_name <- function(nm, d, alias = list()) {
  part <- function(s) {
    for (v in names(d)) if (is.factor(d[[v]])) for (l in levels(d[[v]]))
      if (s == paste0(v, l)) return(sprintf("%s[T.%s]", if (!is.null(alias[[v]])) alias[[v]] else v, l))
    s
  }
  vapply(nm, function(x) paste(vapply(strsplit(x, ":", fixed = TRUE)[[1]], part, ""), collapse = ":"), "")
}

# GLS estimates, SEs and log-likelihood for given per-group covariance matrices Vs (list by group).
direct <- function(Vs, y, X, idx, REML) {
  p <- ncol(X); n <- length(y)
  XVX <- matrix(0, p, p); XVy <- numeric(p); yVy <- 0; logdet <- 0
  for (k in names(idx)) {
    i <- idx[[k]]
    L <- chol(Vs[[k]])
    Xi <- backsolve(L, X[i, , drop = FALSE], transpose = TRUE)
    yi <- backsolve(L, y[i], transpose = TRUE)
    XVX <- XVX + crossprod(Xi); XVy <- XVy + drop(crossprod(Xi, yi)); yVy <- yVy + sum(yi^2)
    logdet <- logdet + 2 * sum(log(diag(L)))
  }
  beta <- solve(XVX, XVy)
  quad <- yVy - sum(beta * XVy)
  ll <- -0.5 * (logdet + quad + (n - REML * p) * log(2 * pi) + REML * as.numeric(determinant(XVX)$modulus))
  list(loglik = ll, beta = beta, se = sqrt(diag(solve(XVX))))
}

mat_rows <- function(M) lapply(seq_len(nrow(M)), function(i) unname(M[i, ]))

# Load a data set as R fits it: read back, derived columns added, sorted by group then visit.
# spec: list(data, factors, visit, group) (visit/group NULL for spatial data).
load_data <- function(spec) {
  d <- rd(spec$data, spec$factors)
  d[spec$factors] <- lapply(d[spec$factors], factor)
  if (!is.null(spec$visit)) {
    v <- d[[spec$visit]]
    lev <- sort(unique(if (is.factor(v)) as.character(v) else v))
    d$k <- match(if (is.factor(v)) as.character(v) else v, lev)
    d$fvisit <- factor(d$k, levels = seq_along(lev), labels = as.character(lev))
    d <- d[order(d[[spec$group]], d$k), ]
    if (spec$data == "orthodont") d$fage <- d$fvisit
    if (spec$data == "sim_mmrm") {
      d$dA <- as.numeric(d$arm == "active"); d$dB <- as.numeric(d$arm == "placebo")
    }
  }
  rownames(d) <- NULL
  d
}

try_fits <- function(calls, env) {
  notes <- character(); fits <- list()
  for (cl in calls) {
    w <- character()
    f <- withCallingHandlers(
      tryCatch(eval(parse(text = cl), env), error = function(e) { notes <<- c(notes, paste0(cl, ": ", conditionMessage(e))); NULL }),
      warning = function(wn) { w <<- c(w, conditionMessage(wn)); invokeRestart("muffleWarning") })
    fits[[length(fits) + 1]] <- list(call = cl, fit = f, warnings = w)
  }
  list(fits = fits, notes = notes)
}

# ---------------------------------------------------------------------------------------------
# One nlme case
# ---------------------------------------------------------------------------------------------
# spec: name, data, factors, visit, group, formula (bayeslmm), formula_r, structure, variance,
#   random (text or NULL), method, cor (nlme correlation text or NULL), wts (nlme weights text or
#   NULL), alias, spatial (NULL or list(kind, coords, start)).
nlme_case <- function(spec) {
  d <- load_data(spec)
  dfit <- d
  REML <- spec$method == "REML"
  is_lme <- !is.null(spec$random)
  args <- c(sprintf("%s, data = dfit", spec$formula_r),
            if (is_lme) sprintf("random = ~ 1 | %s", spec$group),
            if (!is.null(spec$cor)) sprintf("correlation = %s", spec$cor),
            if (!is.null(spec$wts)) sprintf("weights = %s", spec$wts),
            sprintf("method = \"%s\"", spec$method))
  fn <- if (is_lme) "lme" else "gls"
  ctls <- if (is_lme) c(ctl_lme, ctl_lme_alt) else c(ctl_gls, ctl_gls_alt)
  calls <- sprintf("%s(%s, control = %s)", fn, paste(args, collapse = ", "), ctls)
  env <- environment()
  tf <- try_fits(calls, env)
  lls <- vapply(tf$fits, function(f) if (is.null(f$fit)) NA_real_ else as.numeric(logLik(f$fit)), 0)
  alt_fits <- lapply(seq_along(calls), function(j) list(call = calls[j], loglik = lls[j], warnings = tf$fits[[j]]$warnings))
  base_res <- list(name = spec$name, data = spec$data, factors = spec$factors, formula = spec$formula,
                   formula_r = spec$formula_r, structure = spec$structure, variance = spec$variance,
                   random = spec$random, method = spec$method, engine = "nlme",
                   nlme_version = as.character(packageVersion("nlme")))
  if (all(is.na(lls))) {
    cat(sprintf("%-32s FAILED: %s\n", spec$name, paste(tf$notes, collapse = " | ")))
    return(c(base_res, list(converged = FALSE, message = paste(tf$notes, collapse = " | "),
                            r_call = calls[1], alt_fits = alt_fits, failed_attempts = tf$notes)))
  }
  # primary = first call unless it failed or the other reaches a higher logLik by > 1e-6
  j <- if (!is.na(lls[1]) && (is.na(lls[2]) || lls[2] - lls[1] <= 1e-6)) 1 else 2
  fit <- tf$fits[[j]]$fit
  r_call <- calls[j]
  ll <- logLik(fit)
  sig <- fit$sigma
  cst <- fit$modelStruct$corStruct; vst <- fit$modelStruct$varStruct
  corr_params <- if (is.null(cst)) NULL else coef(cst, unconstrained = FALSE)
  if (!is.null(cst) && inherits(cst, "corSymm")) {
    mm <- length(levels(d$fvisit)); nm <- character()
    for (a in 1:(mm - 1)) for (b in (a + 1):mm) nm <- c(nm, sprintf("cor(%d,%d)", a, b))
    names(corr_params) <- nm
  }
  var_params <- if (is.null(vst)) NULL else coef(vst, unconstrained = FALSE)
  var_ref <- if (!is.null(vst) && inherits(vst, "varIdent")) attr(vst, "groupNames")[1] else NULL

  fe_r <- if (is_lme) fixef(fit) else coef(fit)
  se_eng <- sqrt(diag(as.matrix(vcov(fit))))
  fnames <- py_name(names(fe_r), d, spec$alias)
  X <- model.matrix(as.formula(spec$formula_r), d)
  y <- model.response(model.frame(as.formula(spec$formula_r), d))
  if (!identical(colnames(X), names(fe_r))) stop(spec$name, ": X columns differ from nlme's")

  res <- list(); boundary_note <- NULL
  if (is.null(spec$spatial)) {
    # covariance of one complete subject, in visit order
    g <- d[[spec$group]]
    sizes <- table(g)
    mm <- length(levels(d$fvisit))
    comp <- names(sizes)[sizes == mm][1]
    rows_c <- which(g == comp)
    if (!identical(d$k[rows_c], seq_len(mm))) stop(spec$name, ": complete subject not in visit order")
    # (getVarCov is not implemented for gls without a correlation structure: M2 below is used there)
    M <- if (is_lme) getVarCov(fit, individual = comp, type = "marginal")[[1]]
         else if (!is.null(cst)) getVarCov(fit, individual = comp)
    if (!is.null(M)) M <- matrix(unclass(M), mm, mm)
    # our own construction for gls, from the mapped parameters
    if (!is_lme) {
      ratios <- rep(1, mm)
      # sd ratios of the complete subject's rows (varIdent by visit, or varPower / varExp of the
      # visit time: either way a function of the visit only, so other subjects use submatrices)
      if (!is.null(vst)) ratios <- 1 / varWeights(vst)[rows_c]
      C <- if (is.null(cst)) diag(mm) else corMatrix(cst)[[comp]]
      M2 <- sig^2 * diag(ratios, mm) %*% C %*% diag(ratios, mm)
      if (is.null(M)) M <- M2
      if (max(abs(M2 - M)) > 1e-8 * max(abs(M))) stop(spec$name, ": getVarCov differs from sigma^2 A C A")
    }
    idx <- split(seq_along(y), g, drop = TRUE)
    Vs <- lapply(idx, function(i) M[d$k[i], d$k[i], drop = FALSE])
    vis <- d[[spec$visit]][rows_c]
    res$marginal_cov <- mat_rows(M)
    res$marginal_rows <- if (is.factor(vis)) as.character(vis) else vis
    res$marginal_subject <- comp
    if (is_lme) {
      Dm <- getVarCov(fit)
      res$ranef_cov <- mat_rows(matrix(unclass(Dm), nrow(Dm)))
      res$ranef_terms <- colnames(Dm)
    }
    Mchk <- M
  } else {
    coords <- as.matrix(d[, spec$spatial$coords])
    D <- as.matrix(dist(coords))
    rn <- coef(cst, unconstrained = FALSE)
    r <- rn[["range"]]; nug <- rn[["nugget"]]
    cfun <- switch(spec$spatial$kind,
                   exp = function(h) exp(-h / r),
                   gau = function(h) exp(-(h / r)^2),
                   sph = function(h) ifelse(h < r, 1 - 1.5 * h / r + 0.5 * (h / r)^3, 0))
    V <- sig^2 * ((1 - nug) * cfun(D) * (D > 0) + diag(nrow(D)))
    idx <- list(all = seq_along(y)); Vs <- list(all = V)
    res$range <- r; res$nugget <- nug
    # A range far beyond the field means there is no finite maximum: the likelihood keeps rising as
    # range -> infinity (nugget -> 0, sigma^2 -> infinity with sigma^2 (1 - nugget) / range fixed), the
    # limit of a linear variogram.  Then the estimates are only where nlme stopped: the case is marked
    # not converged and the profile (nugget maximised at fixed ranges, sigma and beta profiled) is kept.
    if (r > 100 * max(D)) {
      boundary_note <- sprintf(paste(
        "no finite maximum: range -> infinity (here %.4g, the field spans %.4g), nugget -> 0 and sigma -> infinity;",
        "the log-likelihood rises to a supremum (see profile), nlme stopped on its way there; only loglik",
        "(a lower bound of the supremum, within 1e-5 of it) is meaningful, not range / nugget / sigma"), r, max(D))
      pf <- lapply(c(1, 10, 100, 1000, 1e4) * max(D), function(rr) {
        fl <- function(lnug) as.numeric(logLik(gls(as.formula(spec$formula_r), data = dfit, method = spec$method,
          correlation = do.call(switch(spec$spatial$kind, exp = corExp, gau = corGaus, sph = corSpher),
                                list(c(rr, exp(lnug)), form = as.formula(paste("~", paste(spec$spatial$coords, collapse = " + "))),
                                     nugget = TRUE, fixed = TRUE)))))
        o <- optimize(fl, c(log(1e-12), log(0.99)), maximum = TRUE, tol = 1e-10)
        list(range = rr, nugget = exp(o$maximum), loglik = o$objective)
      })
      res$profile <- pf
      cat(sprintf("%-32s range %.4g > 100 x field size: no finite maximum; profile logLik at range = 1, 10, ..., 1e4 x field: %s\n",
                  spec$name, r, paste(sprintf("%.7f", vapply(pf, `[[`, 0, "loglik")), collapse = ", ")))
    }
    res$marginal_cov <- NULL
    res$marginal_note <- "one group: Cov = sigma^2 ((1 - nugget) c(d) + nugget [d == 0]), d Euclidean in the coordinates"
    Mchk <- V
  }
  dr <- direct(Vs, y, X, idx, REML)
  err_ll <- abs(dr$loglik - as.numeric(ll))
  err_beta <- max(abs(dr$beta - fe_r) / pmax(1, abs(fe_r)))
  se_factor <- if (!is_lme && !REML) sqrt(nrow(X) / (nrow(X) - ncol(X))) else 1
  err_se <- max(abs(se_factor * dr$se / se_eng - 1))
  asym <- max(abs(Mchk - t(Mchk)))
  mineig <- min(eigen(Mchk, symmetric = TRUE, only.values = TRUE)$values)
  other <- lls[3 - j]
  cat(sprintf("%-32s logLik %14.8f  |direct - nlme| %.1e  beta %.1e  se %.1e  other opt %s\n",
              spec$name, as.numeric(ll), err_ll, err_beta, err_se,
              if (is.na(other)) "failed" else sprintf("%+.1e", other - as.numeric(ll))))
  if (err_ll > 1e-6) stop(spec$name, ": logLik differs from the direct computation by ", err_ll)
  if (err_beta > 1e-6 || err_se > 1e-6) stop(spec$name, ": estimates differ from the direct GLS ones")
  if (asym > 1e-10 || mineig <= 0) stop(spec$name, ": marginal covariance not symmetric positive definite")

  c(base_res, list(
    r_call = r_call, control = sub(".*control = ", "", sub("\\)$", "", r_call)),
    r_data = sprintf("dfit: tests/data/%s.csv read with stringsAsFactors = TRUE%s, sorted by %s (LC_COLLATE=C)%s",
                     spec$data, if (length(spec$factors)) paste0(", columns ", paste(spec$factors, collapse = ", "), " as factors") else "",
                     if (is.null(spec$group)) "row (as in the CSV)" else paste(spec$group, "then k"),
                     if (is.null(spec$visit)) "" else sprintf("; k = index of %s among its sorted unique values", spec$visit)),
    converged = is.null(boundary_note),
    message = paste(c(if (length(tf$fits[[j]]$warnings)) tf$fits[[j]]$warnings else "ok", boundary_note), collapse = " | "),
    loglik = as.numeric(ll), df = attr(ll, "df"), nobs = nobs(fit), aic = AIC(fit),
    fixef = as.list(setNames(fe_r, fnames)), se = as.list(setNames(dr$se, fnames)),
    se_engine = as.list(setNames(se_eng, fnames)), sigma = sig,
    corr_params = if (is.null(corr_params)) NULL else as.list(corr_params),
    var_params = if (is.null(var_params)) NULL else as.list(var_params), var_ref = var_ref),
    res,
    list(alt_fits = alt_fits, failed_attempts = tf$notes,
         checks = list(loglik_abs_err = err_ll, fixef_rel_err = err_beta, se_rel_err = err_se,
                       cov_asymmetry = asym, cov_min_eigen = mineig,
                       other_optimizer_loglik_diff = if (is.na(other)) NULL else other - as.numeric(ll))))
}

# ---------------------------------------------------------------------------------------------
# Exact re-maximisation of glmmTMB fits ("exact" block of the glmmTMB cases)
# ---------------------------------------------------------------------------------------------
# The model of the structure itself (no residual variance: sigma^2 = 0), maximised with optim BFGS
# over an unconstrained parametrisation started at glmmTMB's estimates:
#   (nlminb, then optim BFGS, both with finite-difference gradients)
#   us:   log-Cholesky of each m x m matrix (log of the diagonal of L, then its lower triangle);
#   toep: log sds, then atanh of the partial autocorrelations of the Toeplitz correlation matrix
#         (Durbin-Levinson; every value in (-1, 1)^(m-1) gives a positive definite matrix).
# Subjects with the same visit pattern (and arm, for the per-arm model) share V_i, so the log-
# likelihood is computed pattern by pattern.  For us(visit | id) this reproduces nlme's gls
# corSymm + varIdent fit (checked below, logLik to 1e-6); so for the REML fits, where glmmTMB's own
# logLik and estimates are accurate only to ~1e-4 (see the notes above tmb_case's checks), "exact"
# holds the reference values of the structure as written in our syntax.
pacf_to_acf <- function(a) {
  m1 <- length(a); r <- numeric(m1); phi <- numeric(0); v <- 1
  for (k in seq_len(m1)) {
    r[k] <- a[k] * v + if (k > 1) sum(phi * r[(k - 1):1]) else 0
    phi <- c(phi - a[k] * rev(phi), a[k]); v <- v * (1 - a[k]^2)
  }
  r
}
acf_to_pacf <- function(r) {
  m1 <- length(r); a <- numeric(m1); phi <- numeric(0); v <- 1
  for (k in seq_len(m1)) {
    a[k] <- (r[k] - if (k > 1) sum(phi * r[(k - 1):1]) else 0) / v
    phi <- c(phi - a[k] * rev(phi), a[k]); v <- v * (1 - a[k]^2)
  }
  a
}
mat_to_theta <- function(M, kind) {
  if (kind == "us") { L <- t(chol(M)); return(c(log(diag(L)), L[lower.tri(L)])) }
  C <- cov2cor(M); m <- nrow(M)
  c(log(sqrt(diag(M))), atanh(acf_to_pacf(C[1, -1])))
}
theta_to_mat <- function(th, kind, m) {
  if (kind == "us") {
    L <- diag(exp(th[1:m]), m); L[lower.tri(L)] <- th[-(1:m)]; return(L %*% t(L))
  }
  sd <- exp(th[1:m]); r <- c(1, pacf_to_acf(tanh(th[-(1:m)])))
  C <- matrix(r[abs(outer(1:m, 1:m, "-")) + 1], m)
  outer(sd, sd) * C
}
# pats: list of list(rows = row indices (all subjects of the pattern, stacked), k = visit indices,
# nsub, mat = which matrix); one call = loglik, beta, se.
direct_pat <- function(mats, pats, y, X, REML) {
  p <- ncol(X); n <- length(y)
  XVX <- matrix(0, p, p); XVy <- numeric(p); yVy <- 0; logdet <- 0
  for (pt in pats) {
    L <- chol(mats[[pt$mat]][pt$k, pt$k, drop = FALSE]); ni <- length(pt$k)
    # rows are stacked subject by subject: whiten all subjects at once (ni x nsub blocks)
    Xs <- X[pt$rows, , drop = FALSE]; ys <- matrix(y[pt$rows], ni)
    W <- backsolve(L, diag(ni), transpose = TRUE)            # L'^-1
    yw <- W %*% ys
    Xw <- do.call(rbind, lapply(seq_len(pt$nsub), function(s) W %*% Xs[(s - 1) * ni + 1:ni, , drop = FALSE]))
    XVX <- XVX + crossprod(Xw); XVy <- XVy + drop(crossprod(Xw, as.vector(yw))); yVy <- yVy + sum(yw^2)
    logdet <- logdet + pt$nsub * 2 * sum(log(diag(L)))
  }
  beta <- solve(XVX, XVy)
  ll <- -0.5 * (logdet + yVy - sum(beta * XVy) + (n - REML * p) * log(2 * pi) +
                  REML * as.numeric(determinant(XVX)$modulus))
  list(loglik = ll, beta = beta, se = sqrt(diag(solve(XVX))))
}
polish <- function(mats, kind, pats, y, X, REML) {
  m <- nrow(mats[[1]]); nth <- length(mat_to_theta(mats[[1]], kind))
  unpack <- function(th) setNames(lapply(seq_along(mats), function(a) theta_to_mat(th[(a - 1) * nth + 1:nth], kind, m)), names(mats))
  f <- function(th) {
    ms <- unpack(th)
    -tryCatch(direct_pat(ms, pats, y, X, REML)$loglik, error = function(e) -Inf)
  }
  th <- unlist(lapply(mats, mat_to_theta, kind = kind), use.names = FALSE)
  if (!is.finite(f(th))) stop("polish: the log-likelihood cannot be evaluated at the start")
  # nlminb (finite-difference gradient; backs off where V is not positive definite), then BFGS
  o <- nlminb(th, f, control = list(rel.tol = 1e-15, x.tol = 1e-12, eval.max = 20000, iter.max = 5000))
  if (f(o$par) < f(th)) th <- o$par
  o2 <- tryCatch(optim(th, f, method = "BFGS", control = list(reltol = 1e-15, maxit = 5000)), error = function(e) NULL)
  if (!is.null(o2) && o2$value < f(th)) th <- o2$par
  conv <- sprintf("nlminb: %s; optim BFGS: %s", o$message, if (is.null(o2)) "failed" else o2$convergence)
  ms <- unpack(th)
  list(mats = ms, fit = direct_pat(ms, pats, y, X, REML), convergence = conv)
}

# ---------------------------------------------------------------------------------------------
# One glmmTMB case (the structure is a random-effect term; residual variance fixed tiny)
# ---------------------------------------------------------------------------------------------
# spec: name, data, factors, visit, group, formula, formula_r, structure, method, terms (glmmTMB
#   term text), per_arm (TRUE for the us per arm case).
tmb_case <- function(spec) {
  d <- load_data(spec)
  dfit <- d
  REML <- spec$method == "REML"
  fml <- sprintf("%s + %s", spec$formula_r, spec$terms)
  calls <- sprintf("glmmTMB(%s, data = dfit, dispformula = ~ 0, REML = %s%s)", fml, REML,
                   c("", paste0(", control = ", tmb_alt)))
  env <- environment()
  base_res <- list(name = spec$name, data = spec$data, factors = spec$factors, formula = spec$formula,
                   formula_r = fml, structure = spec$structure, variance = NULL, random = NULL,
                   method = spec$method, engine = "glmmTMB",
                   glmmTMB_version = as.character(packageVersion("glmmTMB")))
  tf <- try_fits(calls, env)
  info <- lapply(tf$fits, function(f) {
    if (is.null(f$fit)) return(list(call = f$call, loglik = NA, ok = FALSE))
    ft <- f$fit
    gr <- if (!is.null(ft$sdr)) max(abs(ft$sdr$gradient.fixed)) else NA
    ok <- is.finite(as.numeric(logLik(ft))) && isTRUE(ft$sdr$pdHess)
    list(call = f$call, loglik = as.numeric(logLik(ft)), convergence = ft$fit$convergence,
         optimizer_message = if (is.null(ft$fit$message)) "" else ft$fit$message,
         max_abs_gradient = gr, pdHess = isTRUE(ft$sdr$pdHess),
         warnings = f$warnings, ok = ok,
         converged = ok && ft$fit$convergence == 0)
  })
  lls <- vapply(info, function(z) if (isTRUE(z$ok)) z$loglik else NA_real_, 0)
  if (all(is.na(lls))) {
    cat(sprintf("%-32s NOT CONVERGED\n", spec$name))
    return(c(base_res, list(converged = FALSE, message = paste(c(tf$notes, unlist(lapply(info, `[[`, "warnings"))), collapse = " | "),
                            r_call = calls[1], alt_fits = info, failed_attempts = tf$notes)))
  }
  j <- which.max(lls)   # the higher logLik of the two optimizers (a false convergence may be the higher)
  fit <- tf$fits[[j]]$fit
  ll <- logLik(fit)
  fe_r <- fixef(fit)$cond
  se_eng <- sqrt(diag(vcov(fit)$cond))
  fnames <- py_name(names(fe_r), d)
  X <- model.matrix(as.formula(spec$formula_r), d)
  y <- model.response(model.frame(as.formula(spec$formula_r), d))
  sig <- sigma(fit)
  vc <- VarCorr(fit)$cond
  mats <- lapply(vc, function(M) { nm <- colnames(M); M <- matrix(unclass(M)[seq_along(nm), seq_along(nm)], length(nm)); M })
  g <- d[[spec$group]]
  idx <- split(seq_along(y), g, drop = TRUE)
  if (isTRUE(spec$per_arm)) {
    names(mats) <- c("active", "placebo")   # term 1: dA (active), term 2: dB (placebo)
    armg <- tapply(as.character(d$arm), g, `[`, 1)
    Vs <- lapply(names(idx), function(s) { i <- idx[[s]]; mats[[armg[[s]]]][d$k[i], d$k[i], drop = FALSE] + diag(sig^2, length(i)) })
  } else {
    Vs <- lapply(idx, function(i) mats[[1]][d$k[i], d$k[i], drop = FALSE] + diag(sig^2, length(i)))
  }
  names(Vs) <- names(idx)
  dr <- direct(Vs, y, X, idx, REML)
  err_ll <- abs(dr$loglik - as.numeric(ll))
  err_beta <- max(abs(dr$beta - fe_r) / pmax(1, abs(fe_r)))
  err_se <- max(abs(dr$se / se_eng - 1))
  asym <- max(vapply(mats, function(M) max(abs(M - t(M))), 0))
  mineig <- min(vapply(mats, function(M) min(eigen(M, symmetric = TRUE, only.values = TRUE)$values), 0))
  other <- lls[3 - j]
  cat(sprintf("%-32s logLik %14.8f  |direct - TMB| %.1e  beta %.1e  se %.1e  sigma %.2e  other opt %s\n",
              spec$name, as.numeric(ll), err_ll, err_beta, err_se, sig,
              if (is.na(other)) "n/a" else sprintf("%+.1e", other - as.numeric(ll))))
  # glmmTMB's Laplace step is exact for a Gaussian model, but with the residual sd fixed at ~1.2e-4
  # its inner problem is so badly conditioned that logLik(fit) is accurate to ~1e-4 only:
  # loglik_direct is the exact value at glmmTMB's covariance parameters.
  if (err_ll > 1e-3) stop(spec$name, ": logLik differs from the direct computation by ", err_ll)
  # beta: the GLS estimate at glmmTMB's covariance (REML: beta is integrated out, its mode is GLS; ML:
  # beta is an outer parameter, GLS only at the optimum).  The SEs are NOT checked: glmmTMB's come from
  # the inverse of the joint observed Hessian (beta with the covariance parameters; REML: sdreport of
  # beta including the covariance parameters' uncertainty), not from (X'V^-1 X)^-1.
  if (err_beta > 1e-4) stop(spec$name, ": fixed effects differ from the GLS ones at glmmTMB's covariance")
  if (asym > 1e-10 || mineig <= 0) stop(spec$name, ": covariance not symmetric positive definite")
  sdcor <- lapply(mats, function(M) list(sds = sqrt(diag(M)), corr = mat_rows(cov2cor(M))))
  mc <- lapply(mats, mat_rows)

  # exact re-maximisation (sigma^2 = 0), subjects grouped by visit pattern and matrix
  if (!isTRUE(spec$per_arm)) names(mats) <- "all"
  mkey <- if (isTRUE(spec$per_arm)) unname(armg[names(idx)]) else rep("all", length(idx))
  pkey <- paste(mkey, vapply(idx, function(i) paste(d$k[i], collapse = ","), ""))
  pats <- lapply(split(seq_along(idx), pkey), function(ss) {
    i1 <- idx[[ss[1]]]
    list(rows = unlist(idx[ss], use.names = FALSE), k = d$k[i1], nsub = length(ss), mat = mkey[ss[1]])
  })
  at_tmb <- direct_pat(mats, pats, y, X, REML)
  pol <- polish(mats, spec$kind, pats, y, X, REML)
  ex <- pol$fit
  gain <- ex$loglik - at_tmb$loglik
  cat(sprintf("%-32s exact: logLik %14.8f  (gain over glmmTMB's parameters %.2e; %s)\n",
              "", ex$loglik, gain, pol$convergence))
  ex_sdcor <- lapply(pol$mats, function(M) list(sds = sqrt(diag(M)), corr = mat_rows(cov2cor(M))))
  one <- function(z) if (isTRUE(spec$per_arm)) z else z[[1]]
  exact <- list(
    loglik = ex$loglik, fixef = as.list(setNames(ex$beta, fnames)), se = as.list(setNames(ex$se, fnames)),
    marginal_cov = one(lapply(pol$mats, mat_rows)),
    sds = one(lapply(ex_sdcor, `[[`, "sds")), corr = one(lapply(ex_sdcor, `[[`, "corr")),
    loglik_at_glmmTMB = at_tmb$loglik, gain_over_glmmTMB = gain, optimizer = pol$convergence)
  rows <- levels(d$fvisit)
  c(base_res, list(
    r_call = calls[j], control = if (j == 1) "glmmTMB default (nlminb)" else tmb_alt,
    r_data = sprintf("dfit: tests/data/%s.csv read with stringsAsFactors = TRUE, sorted by %s then visit (LC_COLLATE=C)%s",
                     spec$data, spec$group, if (isTRUE(spec$per_arm)) "; dA = as.numeric(arm == \"active\"), dB = as.numeric(arm == \"placebo\")" else ""),
    converged = info[[j]]$converged,
    message = paste(c(if (nzchar(info[[j]]$optimizer_message)) info[[j]]$optimizer_message else "ok", info[[j]]$warnings), collapse = " | "),
    max_abs_gradient = info[[j]]$max_abs_gradient, pdHess = info[[j]]$pdHess,
    n_iter = if (!is.null(fit$fit$iterations)) fit$fit$iterations else unname(fit$fit$counts[1]),
    loglik = as.numeric(ll), loglik_direct = dr$loglik, df = attr(ll, "df"), nobs = nobs(fit), aic = AIC(fit),
    fixef = as.list(setNames(fe_r, fnames)), se = as.list(setNames(dr$se, fnames)),
    se_engine = as.list(setNames(se_eng, fnames)), sigma = sig,
    marginal_cov = if (isTRUE(spec$per_arm)) mc else mc[[1]],
    marginal_rows = rows,
    sds = if (isTRUE(spec$per_arm)) lapply(sdcor, `[[`, "sds") else sdcor[[1]]$sds,
    corr = if (isTRUE(spec$per_arm)) lapply(sdcor, `[[`, "corr") else sdcor[[1]]$corr,
    exact = exact,
    alt_fits = info, failed_attempts = tf$notes,
    checks = list(loglik_abs_err = err_ll, fixef_rel_err = err_beta, se_rel_err = err_se,
                  cov_asymmetry = asym, cov_min_eigen = mineig,
                  other_optimizer_loglik_diff = if (is.na(other)) NULL else other - as.numeric(ll))))
}

# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------
both <- function(spec, methods = c("REML", "ML")) lapply(methods, function(m) {
  s <- spec; s$method <- m; s$name <- paste0(spec$name, "_", tolower(m)); s })

OR <- list(data = "orthodont", factors = character(), visit = "age", group = "Subject",
           formula = "distance ~ C(age) * Sex", formula_r = "distance ~ fage * Sex",
           alias = list(fage = "C(age)"), variance = NULL, random = NULL, cor = NULL, wts = NULL)
SM <- list(data = "sim_mmrm", factors = character(), visit = "visit", group = "id",
           formula = "y ~ arm * visit + base", formula_r = "y ~ arm * visit + base",
           alias = list(), variance = NULL, random = NULL, cor = NULL, wts = NULL)
BW <- list(data = "bodyweight", factors = c("Rat", "Diet"), visit = "Time", group = "Rat",
           formula = "weight ~ Time * Diet", formula_r = "weight ~ Time * Diet",
           alias = list(), variance = NULL, random = NULL, cor = NULL, wts = NULL)
WH <- list(data = "wheat2", factors = character(), visit = NULL, group = NULL,
           formula = "yield ~ variety", formula_r = "yield ~ variety",
           alias = list(), variance = NULL, random = NULL, wts = NULL)
upd <- function(b, ...) modifyList(b, list(...))
UScor <- function(g) sprintf("corSymm(form = ~ k | %s)", g)
ID <- function(v) "varIdent(form = ~ 1 | fvisit)"

nlme_specs <- c(
  both(upd(OR, name = "orthodont_us_gls", structure = "us(age | Subject)", cor = UScor("Subject"), wts = ID())),
  both(upd(OR, name = "orthodont_cs_gls", structure = "cs(age | Subject)", cor = "corCompSymm(form = ~ 1 | Subject)")),
  both(upd(OR, name = "orthodont_csh_gls", structure = "csh(age | Subject)", cor = "corCompSymm(form = ~ 1 | Subject)", wts = ID())),
  both(upd(OR, name = "orthodont_ar1h_gls", structure = "ar1h(age | Subject)", cor = "corAR1(form = ~ k | Subject)", wts = ID())),
  both(upd(OR, name = "orthodont_diag_gls", structure = "diag(age | Subject)", wts = ID())),
  both(upd(OR, name = "orthodont_ols_gls", structure = NULL)),
  both(upd(OR, name = "orthodont_ri_ar1_ident_lme", random = "(1 | Subject)", structure = "ar1(age | Subject)",
           variance = "ident(age)", cor = "corAR1(form = ~ k | Subject)", wts = ID())),
  both(upd(OR, name = "orthodont_ri_ar1_lme", random = "(1 | Subject)", structure = "ar1(age | Subject)",
           cor = "corAR1(form = ~ k | Subject)")),
  both(upd(SM, name = "sim_mmrm_us_gls", structure = "us(visit | id)", cor = UScor("id"), wts = ID())),
  both(upd(SM, name = "sim_mmrm_cs_gls", structure = "cs(visit | id)", cor = "corCompSymm(form = ~ 1 | id)")),
  both(upd(SM, name = "sim_mmrm_ar1h_gls", structure = "ar1h(visit | id)", cor = "corAR1(form = ~ k | id)", wts = ID())),
  both(upd(BW, name = "bodyweight_ri_power_lme", random = "(1 | Rat)", variance = "power(Time)", structure = NULL,
           wts = "varPower(form = ~ Time)")),
  both(upd(BW, name = "bodyweight_ri_exp_lme", random = "(1 | Rat)", variance = "exp(Time)", structure = NULL,
           wts = "varExp(form = ~ Time)")),
  both(upd(BW, name = "bodyweight_ri_power_ar1_lme", random = "(1 | Rat)", variance = "power(Time)",
           structure = "ar1(Time | Rat)", cor = "corAR1(form = ~ k | Rat)", wts = "varPower(form = ~ Time)")),
  list(upd(BW, name = "bodyweight_power_gls_reml", method = "REML", variance = "power(Time)", structure = NULL,
           wts = "varPower(form = ~ Time)")),
  list(upd(WH, name = "wheat2_exp_gls_reml", method = "REML", structure = "exp(latitude + longitude | 1)",
           cor = "corExp(c(28, 0.2), form = ~ latitude + longitude, nugget = TRUE)",
           spatial = list(kind = "exp", coords = c("latitude", "longitude"))),
       upd(WH, name = "wheat2_exp_gls_ml", method = "ML", structure = "exp(latitude + longitude | 1)",
           cor = "corExp(c(28, 0.2), form = ~ latitude + longitude, nugget = TRUE)",
           spatial = list(kind = "exp", coords = c("latitude", "longitude"))),
       upd(WH, name = "wheat2_gau_gls_reml", method = "REML", structure = "gau(latitude + longitude | 1)",
           cor = "corGaus(c(28, 0.2), form = ~ latitude + longitude, nugget = TRUE)",
           spatial = list(kind = "gau", coords = c("latitude", "longitude"))),
       upd(WH, name = "wheat2_sph_gls_reml", method = "REML", structure = "sph(latitude + longitude | 1)",
           cor = "corSpher(c(28, 0.2), form = ~ latitude + longitude, nugget = TRUE)",
           spatial = list(kind = "sph", coords = c("latitude", "longitude"))))
)
tmb_specs <- c(
  both(upd(SM, name = "sim_mmrm_us_tmb", structure = "us(visit | id)", terms = "us(0 + visit | id)", kind = "us")),
  both(upd(SM, name = "sim_mmrm_toeph_tmb", structure = "toeph(visit | id)", terms = "toep(0 + visit | id)", kind = "toep")),
  both(upd(SM, name = "sim_mmrm_us_by_arm_tmb", structure = "us(visit | arm/id)",
           terms = "us(0 + visit:dA | id) + us(0 + visit:dB | id)", per_arm = TRUE, kind = "us"))
)

res <- list()
for (s in nlme_specs) res[[length(res) + 1]] <- nlme_case(s)
for (s in tmb_specs) res[[length(res) + 1]] <- tmb_case(s)
names(res) <- NULL

# cross-check: glmmTMB's us against nlme's us on the same data
by_name <- setNames(res, vapply(res, `[[`, "", "name"))
cross <- list()
for (m in c("reml", "ml")) {
  a <- by_name[[paste0("sim_mmrm_us_gls_", m)]]; b <- by_name[[paste0("sim_mmrm_us_tmb_", m)]]
  if (isTRUE(a$converged) && !is.null(b$loglik)) {
    dl <- b$loglik - a$loglik
    dc <- max(abs(unlist(a$marginal_cov) - unlist(b$marginal_cov))) / max(abs(unlist(a$marginal_cov)))
    de <- b$exact$loglik - a$loglik
    dce <- max(abs(unlist(a$marginal_cov) - unlist(b$exact$marginal_cov))) / max(abs(unlist(a$marginal_cov)))
    cat(sprintf("us %s: glmmTMB - nlme logLik %+.2e, max rel. cov difference %.2e; exact - nlme logLik %+.2e, cov %.2e\n",
                m, dl, dc, de, dce))
    if (abs(dl) > 1e-3) stop("glmmTMB and nlme us fits disagree (", m, ")")
    if (abs(de) > 1e-6 || dce > 1e-4) stop("the exact re-maximisation does not reproduce nlme's us fit (", m, ")")
    cross[[m]] <- list(loglik_diff = dl, cov_max_rel_diff = dc, exact_loglik_diff = de, exact_cov_max_rel_diff = dce)
  }
}

out <- list(
  generator = "tests/reference/make_nlme_mmrm_reference.R",
  versions = list(R = R.version.string, nlme = as.character(packageVersion("nlme")),
                  glmmTMB = as.character(packageVersion("glmmTMB")), TMB = as.character(packageVersion("TMB"))),
  conventions = list(
    visit_levels = "sorted unique values of the visit column (numeric sort if numeric, code point if string); k = level index",
    marginal_cov = "covariance of one complete subject in visit order (gls: getVarCov(fit, individual); lme: getVarCov(fit, type = 'marginal')); glmmTMB: VarCorr of the term (add sigma^2 I)",
    se = "sqrt(diag((X'V^-1X)^-1)); se_engine = vcov(fit) (nlme gls ML inflates by sqrt(n/(n-p)))",
    corr_params = "coef(corStruct, unconstrained = FALSE); corSymm: cor(a,b) = correlation of visit levels a < b",
    var_params = "coef(varStruct, unconstrained = FALSE): varIdent sd ratios to var_ref, varPower / varExp delta"),
  sim_mmrm = dropout_summary,
  cross_checks = list(sim_mmrm_us_glmmTMB_vs_nlme = cross),
  cases = res)
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null", null = "null"), "nlme_mmrm.json")
cat(sprintf("nlme %s, glmmTMB %s: %d cases written to nlme_mmrm.json (%d not converged)\n",
            packageVersion("nlme"), packageVersion("glmmTMB"), length(res),
            sum(!vapply(res, function(r) isTRUE(r$converged), TRUE))))
