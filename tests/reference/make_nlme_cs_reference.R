# Golden nlme fits of linear models with compound-symmetry residual correlation (gls and lme).
#
# Makes
#   ../data/sim_cs.csv   a simulated data set with negative within-group correlation (below); the
#                        other data sets (bodyweight, ovary) are read as written by
#                        make_nlme_reference.R and are not rewritten here
#   nlme_cs.json         a dict of cases (fields listed at `cs_case` below)
# The models are fitted to the data as read back from the CSV files, so that R sees exactly what
# Python sees (character columns become factors with levels sorted by code point, C collation).
#
# Run from this folder:  Rscript make_nlme_cs_reference.R
# R and the packages come from Debian:
#   apt-get install r-base-core r-cran-nlme r-cran-jsonlite
#
# Residual model and its mapping to nlme
# --------------------------------------
# cs(t | g): within each level of g,
#     Var(e_ij) = sigma2,   Corr(e_ij, e_ik) = rho  (j != k),
#   i.e. R_i = sigma2 * ((1 - rho) I + rho 1 1'); errors of different groups are independent.
#   The time variable t plays NO role in the correlation (every pair in a group has the same
#   correlation, whatever the times or the row order); it is written only to keep the syntax of the
#   other residual models.  The cases below use the data's time column as t.
#   nlme: correlation = corCompSymm(form = ~ 1 | g).  With nlme's residual standard deviation sigma
#   and Rho from coef(fit$modelStruct$corStruct, unconstrained = FALSE),
#       rho    = Rho
#       sigma2 = sigma^2
#   Random effects b of the same grouping factor g may be added, Z_i D Z_i' + R_i, but NOT a random
#   intercept of g: sigma2 * rho 1 1' already is one (tau2 and rho would not be identifiable).  The
#   lme cases use a random slope without a random intercept, random = ~ 0 + Time | g.
#   nlme's bounds: nlme parametrises Rho = (exp(u) + inf) / (exp(u) + 1) with
#   inf = -1 / (max group size - 1), so the estimate is always in (-1/(max n_i - 1), 1), the range
#   in which every group's R_i is positive definite (a group of size m needs rho > -1/(m - 1)).
#
# Settings: gls uses glsControl(tolerance = 1e-10, msTol = 1e-12, msMaxIter = 500, maxIter = 500)
# (optimizer nlminb); lme uses lmeControl(tolerance = 1e-10, msTol = 1e-12, msMaxIter = 500,
# maxIter = 500, niterEM = 0, opt = "optim").  If a fit fails, the other optimizer is tried; the
# settings actually used are recorded in each case (`control`) together with the exact call (`r_call`).
#
# Checks (the script stop()s if one fails), for every case, from the marginal covariance
# V_i = Z_i D Z_i' + R_i built from the stored (mapped) parameters:
#   * logLik(fit) equals the log-likelihood computed directly,
#       ML:   -0.5 * (sum_i log|V_i| + r'V^-1 r + n log(2 pi))
#       REML: -0.5 * (sum_i log|V_i| + log|X'V^-1 X| + r'V^-1 r + (n - p) log(2 pi)),
#     r = y - X beta_GLS, to 1e-6 (this pins down the parameter mapping above);
#   * the fixed effects and standard errors equal the GLS ones, (X'V^-1 X)^-1 X'V^-1 y and
#     sqrt(diag((X'V^-1 X)^-1)), and the random effects equal D Z_i' V_i^-1 r_i;
#   * maximising the direct log-likelihood with optim (BFGS, in an unconstrained parametrisation:
#     log sigma2, rho mapped to the real line on nlme's interval, log-Cholesky of D), started at
#     nlme's estimates, gains < 1e-6 (nlme stopped at the optimum);
#   * for lme cases, the fit with the other optimizer (nlminb vs optim) reaches the same
#     log-likelihood to 1e-6 and the same rho, sigma2 and D to 1e-4 relative (recorded as
#     checks$other_optimizer_loglik_diff and checks$other_optimizer_param_rel_diff; null for gls);
#   * rho is not within 1e-4 of either end of nlme's interval (inf, 1).
#
# Fields of a case in nlme_cs.json (as in nlme_serial.json): id, data (CSV name), factors (columns to
# read as character: their labels look numeric, e.g. pd.read_csv(..., dtype={"Diet": str}), else
# Diet is read as a number), formula (bayeslmm syntax), residual (bayeslmm syntax, "cs(t | g)"),
# method, engine, nlme_version, fixef (bayeslmm names, e.g. Diet[T.2], Time:Diet[T.2]), se, se_nlme,
# loglik, aic, bic, bic_nobs, df, nobs, residual_params ({kind: "cs", rho, sigma2}), varcorr
# (random-effect rows grp/var1/var2/vcov/sdcor as lme4's as.data.frame(VarCorr), no Residual row;
# [] for gls), ranef (rows grpvar/term/grp/condval; [] for gls), nlme_raw (sigma and Rho as nlme
# reports them, and the bound inf = -1/(max group size - 1)), r_call (the exact call), r_data (how
# its `dfit` was made), control, failed_attempts, checks.
# Notes:
#   * se = sqrt(diag((X'V^-1 X)^-1)) at the estimates (lme4's convention).  se_nlme = vcov(fit); it
#     equals se except for gls ML fits, where nlme multiplies by sqrt(n / (n - p)).
#   * nlme's BIC for a REML fit uses log(n - p), not log(n) (lme4); `bic_nobs` records the n used.
#   * df counts the fixed effects and the variance parameters: sigma, rho and the random-effect
#     (co)variances (attr(logLik(fit), "df")).
#   * With rho >= 0, cs is a reparametrised random intercept: bodyweight_cs_gls_reml has the same
#     logLik (-616.1226) as lme(weight ~ Time * Diet, random = ~ 1 | Rat), with sigma2 = tau2 +
#     sigma_e^2 (1340.23 + 41.02) and rho = tau2 / sigma2.  Only a negative rho (sim_cs) goes beyond it.
#   * bodyweight_cs_lme_slope_*: Diet is not in the fixed part, so the large between-rat level
#     differences go into the cs part: rho ~0.9987, sigma2 ~15000, i.e. a within-rat variance
#     sigma2 (1 - rho) ~20.  optim and nlminb agree to ~1e-6 relative in rho, sigma2 and the slope
#     variance, and to ~1e-7 (in units of the slope sd) in the BLUPs.
suppressMessages({library(nlme); library(jsonlite)})
invisible(Sys.setlocale("LC_COLLATE", "C"))

datadir <- file.path("..", "data")
dir.create(datadir, showWarnings = FALSE)

# Write a data frame to ../data/<name>.csv with every factor (ordered or not) as character.
export <- function(d, name) {
  d <- data.frame(lapply(d, function(v) if (is.factor(v)) as.character(v) else v), stringsAsFactors = FALSE)
  write.csv(d, file.path(datadir, paste0(name, ".csv")), row.names = FALSE)
}
# Read ../data/<name>.csv back; the columns in `factors` are read as character (their labels may look
# numeric, e.g. Diet "1", "2", "3") and, like every character column, become factors.
rd <- function(n, factors = character()) {
  cc <- setNames(rep("character", length(factors)), factors)
  read.csv(file.path(datadir, paste0(n, ".csv")), colClasses = cc, stringsAsFactors = TRUE)
}

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
# bodyweight.csv and ovary.csv come from make_nlme_reference.R (BodyWeight: 16 rats weighed on 11
# days; Ovary: follicle counts of 11 mares with precomputed harmonics s1, c1).
for (f in c("bodyweight", "ovary"))
  if (!file.exists(file.path(datadir, paste0(f, ".csv")))) stop("run make_nlme_reference.R first (", f, ".csv)")

# sim_cs: 40 groups G01..G40 of 2 to 6 observations (sizes drawn at random), times t = visit
# times (gaps ~ Exp(1), rounded to 0.01), a covariate x ~ N(0, 1).
# y = 1 + 0.3 t + 0.8 x + e with e_i ~ N(0, sigma2 ((1 - rho) I + rho 1 1')), sigma2 = 1 and a
# NEGATIVE rho = -0.15 (valid for groups of up to 6: rho > -1/5).  Rows are exported in random order.
set.seed(20240612)
ngrp <- 40
nobs_g <- sample(2:6, ngrp, replace = TRUE)
sim <- do.call(rbind, lapply(seq_len(ngrp), function(i) {
  m <- nobs_g[i]
  t <- round(cumsum(rexp(m, rate = 1)), 2)
  x <- round(rnorm(m), 3)
  R <- 1 * ((1 - (-0.15)) * diag(m) + (-0.15))
  y <- 1 + 0.3 * t + 0.8 * x + drop(crossprod(chol(R), rnorm(m)))
  data.frame(g = sprintf("G%02d", i), t = t, x = x, y = round(y, 4), stringsAsFactors = FALSE)
}))
sim <- sim[sample(nrow(sim)), ]
export(sim, "sim_cs")

# ---------------------------------------------------------------------------------------------
# Direct computation from the marginal covariance (the checks)
# ---------------------------------------------------------------------------------------------
# Per-group marginal covariance Z_i D Z_i' + sigma2 ((1 - rho) I + rho 1 1'), rp = mapped parameters.
group_cov <- function(rp, Zi, D) {
  n <- nrow(Zi)
  R <- rp$sigma2 * ((1 - rp$rho) * diag(n) + rp$rho)
  if (ncol(Zi) > 0) R + Zi %*% D %*% t(Zi) else R
}

# GLS estimates, standard errors, log-likelihood and BLUPs (one row per group) for residual params
# rp and random-effect covariance D (q x q; q = 0 for gls); Z is the n x q random-effects design.
direct <- function(rp, D, y, X, Z, g, REML) {
  idx <- split(seq_along(y), g, drop = TRUE)
  p <- ncol(X); n <- length(y)
  XVX <- matrix(0, p, p); XVy <- numeric(p); yVy <- 0; logdet <- 0; Vs <- list()
  for (k in names(idx)) {
    i <- idx[[k]]
    V <- group_cov(rp, Z[i, , drop = FALSE], D); Vs[[k]] <- V
    L <- chol(V)
    Xi <- backsolve(L, X[i, , drop = FALSE], transpose = TRUE)
    yi <- backsolve(L, y[i], transpose = TRUE)
    XVX <- XVX + crossprod(Xi); XVy <- XVy + drop(crossprod(Xi, yi)); yVy <- yVy + sum(yi^2)
    logdet <- logdet + 2 * sum(log(diag(L)))
  }
  beta <- solve(XVX, XVy)
  quad <- yVy - sum(beta * XVy)
  ll <- -0.5 * (logdet + quad + (n - REML * p) * log(2 * pi) +
                  REML * as.numeric(determinant(XVX)$modulus))
  r <- y - drop(X %*% beta)
  b <- if (ncol(Z) > 0) {
    t(sapply(names(idx), function(k) {
      i <- idx[[k]]
      drop(D %*% crossprod(Z[i, , drop = FALSE], solve(Vs[[k]], r[i])))
    }, simplify = "array"))
  } else NULL
  if (!is.null(b) && ncol(Z) == 1) b <- matrix(b, ncol = 1, dimnames = list(names(idx), NULL))
  list(loglik = ll, beta = beta, se = sqrt(diag(solve(XVX))), b = b)
}

# Unconstrained parametrisation of (sigma2, rho, D) for the optim polish: log sigma2; rho on nlme's
# interval (inf, 1) as u = log((rho - inf) / (1 - rho)) (nlme's own); D = L L' with log diag(L).
to_theta <- function(rp, D, inf) {
  th <- c(log(rp$sigma2), log((rp$rho - inf) / (1 - rp$rho)))
  if (length(D)) {
    L <- t(chol(D))
    th <- c(th, log(diag(L)), L[lower.tri(L)])
  }
  th
}
from_theta <- function(th, q, inf) {
  u <- exp(th[2])
  rp <- list(kind = "cs", rho = (u + inf) / (u + 1), sigma2 = exp(th[1]))
  D <- matrix(0, q, q)
  if (q > 0) {
    L <- diag(exp(th[2 + seq_len(q)]), q)
    L[lower.tri(L)] <- th[-seq_len(2 + q)]
    D <- L %*% t(L)
  }
  list(rp = rp, D = D)
}

# ---------------------------------------------------------------------------------------------
# Fitting one case
# ---------------------------------------------------------------------------------------------
ctl_gls <- "glsControl(tolerance = 1e-10, msTol = 1e-12, msMaxIter = 500, maxIter = 500)"
ctl_gls_alt <- "glsControl(tolerance = 1e-10, msTol = 1e-12, msMaxIter = 500, maxIter = 500, opt = \"optim\")"
ctl_lme <- "lmeControl(tolerance = 1e-10, msTol = 1e-12, msMaxIter = 500, maxIter = 500, niterEM = 0, opt = \"optim\")"
ctl_lme_alt <- "lmeControl(tolerance = 1e-10, msTol = 1e-12, msMaxIter = 500, maxIter = 500, niterEM = 0, opt = \"nlminb\")"

# nlme coefficient name -> bayeslmm name: Diet2 -> Diet[T.2], Time:Diet2 -> Time:Diet[T.2].
py_name <- function(nm, d) {
  part <- function(s) {
    for (v in names(d)) if (is.factor(d[[v]])) for (l in levels(d[[v]]))
      if (s == paste0(v, l)) return(sprintf("%s[T.%s]", v, l))
    s
  }
  vapply(nm, function(x) paste(vapply(strsplit(x, ":", fixed = TRUE)[[1]], part, ""), collapse = ":"), "")
}

# Random-effect rows as lme4's as.data.frame(VarCorr): the variances, then the covariances (lower
# triangle, by column) with sdcor the correlation.
varcorr_rows <- function(D, terms, gvar) {
  q <- nrow(D); rows <- list()
  for (j in seq_len(q))
    rows[[length(rows) + 1]] <- list(grp = gvar, var1 = terms[j], var2 = "", vcov = D[j, j], sdcor = sqrt(D[j, j]))
  for (j in seq_len(q)) for (k in seq_len(q)) if (k > j)
    rows[[length(rows) + 1]] <- list(grp = gvar, var1 = terms[j], var2 = terms[k], vcov = D[k, j],
                                     sdcor = D[k, j] / sqrt(D[j, j] * D[k, k]))
  rows
}

# id: case name; dname: CSV name; fixed: R fixed-effects formula (also bayeslmm's, without the
# random part); re: NULL for gls, else the random-effects terms of gvar (e.g. "0 + Time"; never with
# an intercept); tvar/gvar: the residual's time and group variables.
cs_case <- function(id, dname, factors, fixed, re, tvar, gvar, REML) {
  d <- rd(dname, factors)
  d[factors] <- lapply(d[factors], factor)
  d <- d[order(d[[gvar]], d[[tvar]]), ]   # a sorted copy (the row order does not matter for cs)
  rownames(d) <- NULL
  dfit <- d
  method <- if (REML) "REML" else "ML"
  cor_txt <- sprintf("corCompSymm(form = ~ 1 | %s)", gvar)
  is_lme <- !is.null(re)
  calls <- if (is_lme) {
    sprintf("lme(%s, data = dfit, random = ~ %s | %s, correlation = %s, method = \"%s\", control = %s)",
            fixed, re, gvar, cor_txt, method, c(ctl_lme, ctl_lme_alt))
  } else {
    sprintf("gls(%s, data = dfit, correlation = %s, method = \"%s\", control = %s)",
            fixed, cor_txt, method, c(ctl_gls, ctl_gls_alt))
  }
  fit <- NULL; notes <- character(); other <- NULL
  for (j in seq_along(calls)) {
    cl <- calls[j]
    fit <- tryCatch(eval(parse(text = cl)), error = function(e) { notes <<- c(notes, conditionMessage(e)); NULL })
    if (!is.null(fit)) { r_call <- cl; other <- calls[-j][1]; break }
    cat(id, ": failed with", cl, "\n   ", tail(notes, 1), "\n")
  }
  if (is.null(fit)) { cat(id, ": no fit, skipped\n"); return(NULL) }

  # residual parameters in nlme's terms and in ours
  sig <- fit$sigma
  cst <- fit$modelStruct$corStruct
  inf <- attr(cst, "inf")
  raw <- list(sigma = sig, Rho = unname(coef(cst, unconstrained = FALSE)["Rho"]), inf = inf)
  rp <- list(kind = "cs", rho = raw$Rho, sigma2 = sig^2)

  fe <- fixef_nlme <- if (is_lme) fixef(fit) else coef(fit)
  se_nlme <- sqrt(diag(as.matrix(vcov(fit))))
  names(fe) <- names(se_nlme) <- py_name(names(fe), d)
  X <- model.matrix(as.formula(fixed), d)
  y <- model.response(model.frame(as.formula(fixed), d))
  Z <- if (is_lme) model.matrix(as.formula(paste("~", re)), d) else matrix(0, nrow(d), 0)
  vc <- list(); rnf <- list(); D <- matrix(0, 0, 0)
  if (is_lme) {
    D <- unclass(getVarCov(fit)); D <- matrix(D, nrow(D), dimnames = dimnames(D))
    terms <- colnames(ranef(fit))
    if (!identical(terms, colnames(Z))) stop(id, ": random-effect terms ", paste(terms, collapse = ", "))
    if (any(terms == "(Intercept)")) stop(id, ": a random intercept with corCompSymm is not identifiable")
    vc <- varcorr_rows(D, terms, gvar)
    rr <- ranef(fit)
    rnf <- unlist(lapply(seq_along(terms), function(j) lapply(seq_len(nrow(rr)), function(i)
      list(grpvar = gvar, term = terms[j], grp = rownames(rr)[i], condval = rr[i, j]))), recursive = FALSE)
  }
  ll <- logLik(fit)

  # checks against the direct computation
  dr <- direct(rp, D, y, X, Z, d[[gvar]], REML)
  err_ll <- abs(dr$loglik - as.numeric(ll))
  err_beta <- max(abs(dr$beta - fixef_nlme) / pmax(1, abs(fixef_nlme)))
  # nlme's gls (not lme) inflates the ML standard errors by sqrt(n / (n - p))
  se_factor <- if (!is_lme && !REML) sqrt(nrow(X) / (nrow(X) - ncol(X))) else 1
  err_se <- max(abs(se_factor * dr$se / se_nlme - 1))
  se <- setNames(dr$se, names(fe))
  err_b <- if (is_lme) max(abs(dr$b[rownames(ranef(fit)), , drop = FALSE] - as.matrix(ranef(fit)))) else 0
  q <- ncol(Z)
  negll <- function(th) {
    p <- from_theta(th, q, inf)
    -tryCatch(direct(p$rp, p$D, y, X, Z, d[[gvar]], REML)$loglik, error = function(e) -Inf)
  }
  th0 <- to_theta(rp, D, inf)
  pol <- optim(th0, negll, method = "BFGS", control = list(reltol = 1e-15, maxit = 1000))
  gain <- -pol$value - dr$loglik
  # lme: the other optimizer from nlme's default start reaches the same optimum
  diff_other <- NA; pdiff_other <- NA
  if (is_lme) {
    fit2 <- tryCatch(eval(parse(text = other)), error = function(e) NULL)
    if (!is.null(fit2)) {
      diff_other <- abs(as.numeric(logLik(fit2)) - as.numeric(ll))
      par1 <- c(rp$rho, rp$sigma2, D)
      par2 <- c(coef(fit2$modelStruct$corStruct, unconstrained = FALSE), fit2$sigma^2, unclass(getVarCov(fit2)))
      pdiff_other <- max(abs(par2 / par1 - 1))
    }
  }
  cat(sprintf("%-24s rho %9.6f  sigma2 %12.6g  logLik %.8f  |direct - nlme| %.1e  beta %.1e  se %.1e  ranef %.1e  optim gain %.1e%s\n",
              id, rp$rho, rp$sigma2, as.numeric(ll), err_ll, err_beta, err_se, err_b, gain,
              if (is_lme) sprintf("  other optimizer: logLik %.1e, params %.1e", diff_other, pdiff_other) else ""))
  if (err_ll > 1e-6) stop(id, ": logLik(fit) differs from the direct computation by ", err_ll)
  if (err_beta > 1e-6 || err_se > 1e-6 || err_b > 1e-6) stop(id, ": estimates differ from the direct GLS ones")
  if (gain > 1e-6) stop(id, ": nlme did not reach the optimum (optim gains ", gain, ")")
  if (is_lme && (is.na(diff_other) || diff_other > 1e-6))
    stop(id, ": the other optimizer gives a different logLik (", diff_other, ")")
  if (is_lme && pdiff_other > 1e-4) stop(id, ": the other optimizer gives different estimates (", pdiff_other, ")")
  if (rp$rho - inf < 1e-4 || 1 - rp$rho < 1e-4) stop(id, ": rho is at a bound of nlme's interval")

  list(id = id, data = dname,
       formula = if (is_lme) sprintf("%s + (%s | %s)", fixed, re, gvar) else fixed,
       residual = sprintf("cs(%s | %s)", tvar, gvar),
       method = method, engine = "nlme", nlme_version = as.character(packageVersion("nlme")),
       factors = factors, fixef = as.list(fe), se = as.list(se), se_nlme = as.list(se_nlme),
       loglik = as.numeric(ll), aic = AIC(fit), bic = BIC(fit), bic_nobs = attr(ll, "nobs"),
       df = attr(ll, "df"), nobs = nobs(fit),
       residual_params = rp, varcorr = vc, ranef = rnf, nlme_raw = raw,
       r_call = r_call,
       r_data = paste0(sprintf("dfit: tests/data/%s.csv read with stringsAsFactors = TRUE, ", dname),
                       if (length(factors)) sprintf("columns %s as factors, ", paste(factors, collapse = ", ")) else "",
                       sprintf("sorted by %s, then %s (LC_COLLATE=C)", gvar, tvar)),
       control = sub(".*control = ", "", sub("\\)$", "", r_call)),
       failed_attempts = notes,
       checks = list(loglik_abs_err = err_ll, fixef_rel_err = err_beta, se_rel_err = err_se,
                     ranef_abs_err = err_b, optim_loglik_gain = gain,
                     other_optimizer_loglik_diff = diff_other, other_optimizer_param_rel_diff = pdiff_other))
}

# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------
BW_F <- c("Rat", "Diet")
cases <- list(
  # gls: compound symmetry in place of a random intercept of Rat
  list("bodyweight_cs_gls_reml", "bodyweight", BW_F, "weight ~ Time * Diet", NULL, "Time", "Rat", TRUE),
  list("bodyweight_cs_gls_ml", "bodyweight", BW_F, "weight ~ Time * Diet", NULL, "Time", "Rat", FALSE),
  # lme: a random slope of Time WITHOUT a random intercept, plus compound symmetry within Rat
  list("bodyweight_cs_lme_slope_reml", "bodyweight", BW_F, "weight ~ Time", "0 + Time", "Time", "Rat", TRUE),
  list("bodyweight_cs_lme_slope_ml", "bodyweight", BW_F, "weight ~ Time", "0 + Time", "Time", "Rat", FALSE),
  # gls on Ovary (11 mares, 25 to 31 observations each)
  list("ovary_cs_gls_reml", "ovary", "Mare", "follicles ~ s1 + c1", NULL, "Time", "Mare", TRUE),
  # simulated: negative within-group correlation, unequal group sizes 2..6, shuffled rows
  list("sim_cs_gls_reml", "sim_cs", "g", "y ~ t + x", NULL, "t", "g", TRUE),
  list("sim_cs_gls_ml", "sim_cs", "g", "y ~ t + x", NULL, "t", "g", FALSE)
)
res <- list()
for (c in cases) {
  r <- do.call(cs_case, c)
  if (!is.null(r)) res[[r$id]] <- r
}
write(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"), "nlme_cs.json")
cat("nlme", as.character(packageVersion("nlme")), ":", length(res), "cases written to nlme_cs.json\n")
