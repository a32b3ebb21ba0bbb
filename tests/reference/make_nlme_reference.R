# Golden nlme fits of linear models with serially correlated residuals (gls and lme).
#
# Makes
#   ../data/<name>.csv   the data sets used below: bodyweight, ovary and sim_ou (factors written as
#                        plain character columns, numeric columns kept numeric, no row names)
#   nlme_serial.json     a dict of cases (fields listed at `serial_case` below)
# The models are fitted to the data as read back from the CSV files, so that R sees exactly what
# Python sees (character columns become factors with levels sorted by code point, C collation).
#
# Run from this folder:  Rscript make_nlme_reference.R
# R and the packages come from Debian:
#   apt-get install r-base-core r-cran-nlme r-cran-jsonlite
#
# Residual models and their mapping to nlme
# -----------------------------------------
# ou(t | g): within each level of g,  y = X beta + Z b + w + e,  with
#     Cov(w_ij, w_ik) = process_var * rho^|t_ij - t_ik|   (Ornstein-Uhlenbeck process in continuous t)
#     e_ij ~ N(0, nugget) independent                       (measurement error)
#   and possibly random effects b of the same grouping factor g.
#   nlme: correlation = corExp(form = ~ t | g, nugget = TRUE), whose correlation between two
#   observations at distance d = |t_ij - t_ik| > 0 is (1 - nug) * exp(-d / range).  With nlme's
#   residual standard deviation sigma,
#       rho         = exp(-1 / range)
#       process_var = sigma^2 * (1 - nug)
#       nugget      = sigma^2 * nug
#   (range and nug from coef(fit$modelStruct$corStruct, unconstrained = FALSE)).  Two visits of one
#   group at the same time (d = 0) have covariance process_var.  nlme refuses zero distances ("cannot
#   have zero distances in corSpatial"), so for sim_ou nlme fits a copy of the data in which the later
#   of two tied times is moved by `tie_jitter` = 1e-8; the checks below are run on the exact data and
#   show that this changes the log-likelihood and the estimates by far less than 1e-6.
#
# ar1(t | g): AR(1) errors by the order of t within g: Cov(e_ij, e_ik) = sigma2 * phi^|j - k|, where
#   j, k are the ranks of t_ij, t_ik within group g (the spacing of t is ignored), sigma2 = sigma^2.
#   nlme: correlation = corAR1(form = ~ 1 | g) on data sorted by t within g.  (corAR1(form = ~ t | g)
#   is NOT used: nlme requires an integer covariate with unit steps there, and for any other t it
#   silently switches to corARMA(p = 1), which truncates the non-integer lags of e.g. Ovary's Time.)
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
#   * maximising the direct log-likelihood with optim, started at nlme's estimates, gains < 1e-6
#     (nlme stopped at the optimum).
#
# Fields of a case in nlme_serial.json: id, data (CSV name), factors (columns to read as character:
# their labels look numeric, e.g. pd.read_csv(..., dtype={"Diet": str}), else Diet is read as a number),
# formula (bayeslmm syntax), residual, method, engine, nlme_version, fixef (bayeslmm names, e.g.
# Diet[T.2], Time:Diet[T.2]), se, se_nlme, loglik, aic, bic, bic_nobs, df, nobs, residual_params
# ({kind: "ou", process_var, rho, nugget} or {kind: "ar1", phi, sigma2}), varcorr (random-effect rows
# grp/var1/var2/vcov/sdcor as lme4's as.data.frame(VarCorr), no Residual row; [] for gls), ranef (rows
# grpvar/term/grp/condval), nlme_raw (sigma and range, nug or Phi as nlme reports them), r_call (the
# exact call), r_data (how its `dfit` was made), tie_jitter, control, failed_attempts, checks.
# Notes:
#   * se = sqrt(diag((X'V^-1 X)^-1)) at the estimates (lme4's convention).  se_nlme = vcov(fit); it
#     equals se except for gls ML fits, where nlme multiplies by sqrt(n / (n - p)).
#   * nlme's BIC for a REML fit uses log(n - p), not log(n) (lme4); `bic_nobs` records the n used.
#   * BodyWeight OU: the optimum is at range ~976 days (rho ~0.999, far beyond the 63-day span), where
#     the likelihood is flat in range: fits from different starts agree in logLik to 1e-9 but in range
#     and process_var only to ~1e-5 relative.
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
# BodyWeight: 16 rats weighed on days 1, 8, ..., 43, 44, 50, 57, 64 (irregular spacing).
bw <- as.data.frame(nlme::BodyWeight)[, c("weight", "Time", "Rat", "Diet")]
export(bw, "bodyweight")

# Ovary: follicle counts of 11 mares; Time is the (fractional) time in the oestrus cycle, sorted
# within Mare.  The harmonics are precomputed (bayeslmm's formulas have no `pi`).
ov <- as.data.frame(nlme::Ovary)[, c("Mare", "Time", "follicles")]
ov$s1 <- sin(2 * pi * ov$Time)
ov$c1 <- cos(2 * pi * ov$Time)
export(ov, "ovary")

# sim_ou: 60 subjects at irregular times (gaps ~ Exp(1), rounded to 0.01), 3 to 8 visits each,
# except subjects S07, S23, S41 with a single visit; subjects S05 and S30 have two visits at exactly
# the same time.  y = 2 + 0.5 t + b + w + e with b ~ N(0, 0.8^2), w an OU process with process_var 1.5
# and rho 0.7 per unit time, e ~ N(0, 0.5).  Rows are exported in random order.
set.seed(20240611)
nsub <- 60
nvis <- sample(3:8, nsub, replace = TRUE)
nvis[c(7, 23, 41)] <- 1
sim <- do.call(rbind, lapply(seq_len(nsub), function(i) {
  t <- round(cumsum(rexp(nvis[i], rate = 1)), 2)
  if (i %in% c(5, 30)) t[3] <- t[2]
  V <- 1.5 * 0.7^abs(outer(t, t, "-")) + 0.5 * diag(length(t)) + 0.8^2
  y <- 2 + 0.5 * t + drop(crossprod(chol(V), rnorm(length(t))))
  data.frame(id = sprintf("S%02d", i), t = t, y = round(y, 4), stringsAsFactors = FALSE)
}))
sim <- sim[sample(nrow(sim)), ]
export(sim, "sim_ou")

# ---------------------------------------------------------------------------------------------
# Direct computation from the marginal covariance (the checks)
# ---------------------------------------------------------------------------------------------
# Per-group marginal covariance for the mapped parameters `rp` and random-intercept variance tau2.
group_cov <- function(rp, t, tau2) {
  n <- length(t)
  R <- if (rp$kind == "ou") {
    rp$process_var * rp$rho^abs(outer(t, t, "-")) + rp$nugget * diag(n)
  } else {
    j <- rank(t, ties.method = "first")
    rp$sigma2 * rp$phi^abs(outer(j, j, "-"))
  }
  R + tau2
}

# GLS estimates, standard errors, log-likelihood and random intercepts; d is sorted by group.
direct <- function(rp, tau2, y, X, t, g, REML) {
  idx <- split(seq_along(y), g, drop = TRUE)
  p <- ncol(X); n <- length(y)
  XVX <- matrix(0, p, p); XVy <- numeric(p); yVy <- 0; logdet <- 0; Vs <- list()
  for (k in names(idx)) {
    i <- idx[[k]]
    V <- group_cov(rp, t[i], tau2); Vs[[k]] <- V
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
  b <- sapply(names(idx), function(k) tau2 * sum(solve(Vs[[k]], r[idx[[k]]])))
  list(loglik = ll, beta = beta, se = sqrt(diag(solve(XVX))), b = b)
}

# Unconstrained parametrisation of (residual params, tau2) for the optim polish.
to_theta <- function(rp, tau2) {
  th <- if (rp$kind == "ou") c(log(rp$process_var), qlogis(rp$rho), log(rp$nugget))
        else c(log(rp$sigma2), atanh(rp$phi))
  if (!is.null(tau2)) th <- c(th, log(tau2))
  th
}
from_theta <- function(th, kind, has_re) {
  rp <- if (kind == "ou") list(kind = "ou", process_var = exp(th[1]), rho = plogis(th[2]), nugget = exp(th[3]))
        else list(kind = "ar1", phi = tanh(th[2]), sigma2 = exp(th[1]))
  list(rp = rp, tau2 = if (has_re) exp(th[length(th)]) else 0)
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

# id: case name; dname: CSV name; fixed: R fixed-effects formula (also bayeslmm's, without the
# random part); re: TRUE for a random intercept of the residual's group; kind/tvar/gvar: residual;
# cor_init: initial corExp values (needed where some distances are 0).
serial_case <- function(id, dname, factors, fixed, re, kind, tvar, gvar, REML, cor_init = NULL,
                        tie_jitter = 0) {
  d <- rd(dname, factors)
  d[factors] <- lapply(d[factors], factor)
  d <- d[order(d[[gvar]], d[[tvar]]), ]   # a sorted copy (corAR1 uses the row order within groups)
  rownames(d) <- NULL
  dfit <- d                               # what nlme sees: d, with tied times moved by tie_jitter
  if (tie_jitter > 0) {
    dup <- duplicated(d[c(gvar, tvar)])
    dfit[[tvar]][dup] <- dfit[[tvar]][dup] + tie_jitter
    if (any(duplicated(dfit[c(gvar, tvar)]))) stop(id, ": ties left after jittering")
  }
  method <- if (REML) "REML" else "ML"
  cor_txt <- if (kind == "ou") {
    sprintf("corExp(%sform = ~ %s | %s, nugget = TRUE)",
            if (is.null(cor_init)) "" else sprintf("value = c(%s), ", paste(cor_init, collapse = ", ")), tvar, gvar)
  } else sprintf("corAR1(form = ~ 1 | %s)", gvar)
  calls <- if (re) {
    sprintf("lme(%s, data = dfit, random = ~ 1 | %s, correlation = %s, method = \"%s\", control = %s)",
            fixed, gvar, cor_txt, method, c(ctl_lme, ctl_lme_alt))
  } else {
    sprintf("gls(%s, data = dfit, correlation = %s, method = \"%s\", control = %s)",
            fixed, cor_txt, method, c(ctl_gls, ctl_gls_alt))
  }
  fit <- NULL; notes <- character()
  for (cl in calls) {
    fit <- tryCatch(eval(parse(text = cl)), error = function(e) { notes <<- c(notes, conditionMessage(e)); NULL })
    if (!is.null(fit)) { r_call <- cl; break }
    cat(id, ": failed with", cl, "\n   ", tail(notes, 1), "\n")
  }
  if (is.null(fit)) { cat(id, ": no fit, skipped\n"); return(NULL) }

  # residual parameters in nlme's terms and in ours
  sig <- fit$sigma
  cs <- coef(fit$modelStruct$corStruct, unconstrained = FALSE)
  if (kind == "ou") {
    raw <- list(sigma = sig, range = unname(cs["range"]), nug = unname(cs["nugget"]))
    rp <- list(kind = "ou", process_var = sig^2 * (1 - raw$nug), rho = exp(-1 / raw$range),
               nugget = sig^2 * raw$nug)
  } else {
    raw <- list(sigma = sig, Phi = unname(cs["Phi"]))
    rp <- list(kind = "ar1", phi = raw$Phi, sigma2 = sig^2)
  }

  fe <- fixef_nlme <- if (re) fixef(fit) else coef(fit)
  se_nlme <- sqrt(diag(as.matrix(vcov(fit))))
  names(fe) <- names(se_nlme) <- py_name(names(fe), d)
  vc <- list(); rnf <- list(); tau2 <- 0
  if (re) {
    tau2 <- as.numeric(getVarCov(fit)[1, 1])
    vc <- list(list(grp = gvar, var1 = "(Intercept)", var2 = "", vcov = tau2, sdcor = sqrt(tau2)))
    rr <- ranef(fit)
    rnf <- lapply(seq_len(nrow(rr)), function(i)
      list(grpvar = gvar, term = "(Intercept)", grp = rownames(rr)[i], condval = rr[i, 1]))
  }
  ll <- logLik(fit)

  # checks against the direct computation
  X <- model.matrix(as.formula(fixed), d)
  y <- model.response(model.frame(as.formula(fixed), d))
  dr <- direct(rp, tau2, y, X, d[[tvar]], d[[gvar]], REML)
  err_ll <- abs(dr$loglik - as.numeric(ll))
  err_beta <- max(abs(dr$beta - fixef_nlme) / pmax(1, abs(fixef_nlme)))
  # nlme's gls (not lme) inflates the ML standard errors by sqrt(n / (n - p))
  se_factor <- if (!re && !REML) sqrt(nrow(X) / (nrow(X) - ncol(X))) else 1
  err_se <- max(abs(se_factor * dr$se / se_nlme - 1))
  se <- setNames(dr$se, names(fe))
  err_b <- if (re) max(abs(dr$b[rownames(ranef(fit))] - ranef(fit)[, 1])) else 0
  negll <- function(th) { p <- from_theta(th, kind, re); -direct(p$rp, p$tau2, y, X, d[[tvar]], d[[gvar]], REML)$loglik }
  th0 <- to_theta(rp, if (re) tau2 else NULL)
  pol <- optim(th0, negll, method = "BFGS", control = list(reltol = 1e-15, maxit = 1000))
  gain <- -pol$value - dr$loglik
  cat(sprintf("%-22s logLik %.8f  |direct - nlme| %.1e  beta %.1e  se %.1e  ranef %.1e  optim gain %.1e\n",
              id, as.numeric(ll), err_ll, err_beta, err_se, err_b, gain))
  if (err_ll > 1e-6) stop(id, ": logLik(fit) differs from the direct computation by ", err_ll)
  if (err_beta > 1e-6 || err_se > 1e-6 || err_b > 1e-6) stop(id, ": estimates differ from the direct GLS ones")
  if (gain > 1e-6) stop(id, ": nlme did not reach the optimum (optim gains ", gain, ")")

  list(id = id, data = dname,
       formula = if (re) sprintf("%s + (1 | %s)", fixed, gvar) else fixed,
       residual = sprintf("%s(%s | %s)", kind, tvar, gvar),
       method = method, engine = "nlme", nlme_version = as.character(packageVersion("nlme")),
       factors = factors, fixef = as.list(fe), se = as.list(se), se_nlme = as.list(se_nlme),
       loglik = as.numeric(ll), aic = AIC(fit), bic = BIC(fit), bic_nobs = attr(ll, "nobs"),
       df = attr(ll, "df"), nobs = nobs(fit),
       residual_params = rp, varcorr = vc, ranef = rnf, nlme_raw = raw,
       r_call = r_call,
       r_data = paste0(sprintf("dfit: tests/data/%s.csv read with stringsAsFactors = TRUE, ", dname),
                       if (length(factors)) sprintf("columns %s as factors, ", paste(factors, collapse = ", ")) else "",
                       sprintf("sorted by %s, then %s (LC_COLLATE=C)", gvar, tvar),
                       if (tie_jitter > 0) sprintf("; the later of two tied times within %s moved by %g", gvar, tie_jitter) else ""),
       tie_jitter = tie_jitter,
       control = sub(".*control = ", "", sub("\\)$", "", r_call)),
       failed_attempts = notes,
       checks = list(loglik_abs_err = err_ll, fixef_rel_err = err_beta, se_rel_err = err_se,
                     ranef_abs_err = err_b, optim_loglik_gain = gain))
}

# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------
BW_F <- c("Rat", "Diet")
cases <- list(
  # gls, OU + nugget on irregular days
  list("bodyweight_ou_gls_reml", "bodyweight", BW_F, "weight ~ Time * Diet", FALSE, "ou", "Time", "Rat", TRUE),
  list("bodyweight_ou_gls_ml", "bodyweight", BW_F, "weight ~ Time * Diet", FALSE, "ou", "Time", "Rat", FALSE),
  # Not included: lme(weight ~ Time * Diet, random = ~ 1 | Rat, correlation = corExp(form = ~ Time | Rat,
  # nugget = TRUE)), REML.  The random-intercept variance goes to the boundary 0 (the OU process, range
  # ~976 days, i.e. rho ~0.999, absorbs the between-rat variance): nlme stops at tau2 = 0.2 (optim) or
  # 0.001 (nlminb) with logLik 1e-5 below the gls fit's, so there is no interior optimum to pin down.
  # random intercept + AR(1) by order
  list("ovary_ar1_lme_reml", "ovary", "Mare", "follicles ~ s1 + c1", TRUE, "ar1", "Time", "Mare", TRUE),
  list("ovary_ar1_lme_ml", "ovary", "Mare", "follicles ~ s1 + c1", TRUE, "ar1", "Time", "Mare", FALSE),
  list("ovary_ar1_gls_reml", "ovary", "Mare", "follicles ~ s1 + c1", FALSE, "ar1", "Time", "Mare", TRUE),
  # simulated: irregular times, single-visit subjects, tied times, shuffled rows
  list("sim_ou_lme_reml", "sim_ou", "id", "y ~ t", TRUE, "ou", "t", "id", TRUE, c(2, 0.3), 1e-8),
  list("sim_ou_gls_ml", "sim_ou", "id", "y ~ t", FALSE, "ou", "t", "id", FALSE, c(2, 0.3), 1e-8)
)
res <- list()
for (c in cases) {
  r <- do.call(serial_case, c)
  if (!is.null(r)) res[[r$id]] <- r
}
write(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE), "nlme_serial.json")
cat("nlme", as.character(packageVersion("nlme")), ":", length(res), "cases written to nlme_serial.json\n")
