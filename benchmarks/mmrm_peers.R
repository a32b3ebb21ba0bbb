# Peer timings for an MMRM (unstructured residual covariance over visits), fitted by REML with
#   (a) nlme:    gls(y ~ arm * visit + base, correlation = corSymm(form = ~ k | id),
#                    weights = varIdent(form = ~ 1 | visit), method = "REML")
#   (b) glmmTMB: glmmTMB(y ~ arm * visit + base + us(0 + visit | id), dispformula = ~ 0, REML = TRUE)
#
# Usage:  Rscript benchmarks/mmrm_peers.R data.csv [--skip-nlme] [--skip-glmmTMB]
# The CSV has columns id, arm, visit (V1..Vm), base, y (one row per observed visit; missing visits are
# absent rows).  visit is a factor with levels in the numeric order of their suffix (V1, V2, ..., V10,
# not the code-point order V1, V10, V2, ...); k = its level index, so corSymm's correlations are
# those of visit levels, whatever visits a subject misses.  arm (and id) are factors with levels
# sorted by code point (LC_COLLATE=C), as bayeslmm sorts strings.
# Prints ONE JSON object on stdout:
#   {"nlme": {"seconds", "loglik", "converged", "message"}, "glmmTMB": {...}, "data": {...},
#    "threads": {...}, "versions": {...}}
# seconds = elapsed time of the fitting call alone (system.time(...)["elapsed"]), not R's start-up,
# package loading or reading the CSV.  loglik = logLik(fit) (REML; same scale in both).  Warnings and
# messages go to stderr.
#
# Threads: BLAS and OpenMP are limited to one thread.  Environment variables only act before R
# starts, so if OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS are not all "1" the script
# runs itself again in a child R with them set (its stdout passed through).  glmmTMB/TMB: parallel
# = 1 (glmmTMBControl) and TMB::openmp(1).  The JSON says what was in force ("threads").
#
# Notes: glmmTMB's dispformula = ~ 0 fixes the residual variance at sqrt(.Machine$double.eps)
# (~1.5e-8), which makes its inner problem badly conditioned: nlminb often ends with "false
# convergence (8)" although the fit is close to the optimum, and its REML logLik is accurate to ~1e-4
# only (see tests/reference/make_nlme_mmrm_reference.R).  converged = nlminb's code 0 and a positive
# definite Hessian; the message says how it ended.  nlme stops with an error when it fails; that
# gives converged = false and the error as message.
thread_vars <- c("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
if (!all(Sys.getenv(thread_vars) == "1") && Sys.getenv("MMRM_PEERS_CHILD") == "") {
  self <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1])
  st <- system2(file.path(R.home("bin"), "Rscript"), c(shQuote(self), shQuote(commandArgs(TRUE))),
                env = c(paste0(thread_vars, "=1"), "MMRM_PEERS_CHILD=1"))
  quit(save = "no", status = st)
}

suppressMessages({library(nlme); library(glmmTMB); library(jsonlite)})
invisible(Sys.setlocale("LC_COLLATE", "C"))
args <- commandArgs(TRUE)
if (length(args) < 1) stop("usage: Rscript benchmarks/mmrm_peers.R data.csv [--skip-nlme] [--skip-glmmTMB]")
csv <- args[1]
tmb_omp <- tryCatch({ TMB::openmp(1); TMB::openmp() }, error = function(e) NA)

d <- read.csv(csv, stringsAsFactors = FALSE)
for (v in c("id", "arm", "visit", "base", "y")) if (!v %in% names(d)) stop("column ", v, " missing in ", csv)
vlev <- unique(d$visit)
num <- suppressWarnings(as.numeric(sub("^[^0-9]*", "", vlev)))
vlev <- if (all(is.finite(num))) vlev[order(num)] else sort(vlev)
d$visit <- factor(d$visit, levels = vlev)
d$k <- as.integer(d$visit)
d$id <- factor(d$id); d$arm <- factor(d$arm)
d <- d[order(d$id, d$k), ]
rownames(d) <- NULL

run <- function(expr_fun) {
  msgs <- character(); fit <- NULL; err <- NULL
  tm <- system.time(
    fit <- withCallingHandlers(
      tryCatch(expr_fun(), error = function(e) { err <<- conditionMessage(e); NULL }),
      warning = function(w) { msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleWarning") }))
  list(fit = fit, seconds = unname(tm["elapsed"]), cpu = unname(tm["user.self"] + tm["sys.self"]),
       warnings = msgs, error = err)
}
num_or_null <- function(x) if (is.null(x) || !is.finite(x)) NULL else x

out <- list()
ctl_nlme <- "glsControl(maxIter = 100, msMaxIter = 500)"
if (!"--skip-nlme" %in% args) {
  r <- run(function() gls(y ~ arm * visit + base, data = d, correlation = corSymm(form = ~ k | id),
                          weights = varIdent(form = ~ 1 | visit), method = "REML",
                          control = glsControl(maxIter = 100, msMaxIter = 500)))
  out$nlme <- list(seconds = r$seconds, cpu_seconds = r$cpu,
                   loglik = if (is.null(r$fit)) NULL else as.numeric(logLik(r$fit)),
                   converged = !is.null(r$fit),
                   message = paste(c(if (is.null(r$error)) "ok" else r$error, r$warnings), collapse = " | "),
                   call = paste("gls(y ~ arm * visit + base, correlation = corSymm(form = ~ k | id),",
                                "weights = varIdent(form = ~ 1 | visit), method = \"REML\", control =", ctl_nlme, ")"))
}
if (!"--skip-glmmTMB" %in% args) {
  r <- run(function() glmmTMB(y ~ arm * visit + base + us(0 + visit | id), data = d, dispformula = ~ 0,
                              REML = TRUE, control = glmmTMBControl(parallel = 1)))
  f <- r$fit
  conv <- !is.null(f) && isTRUE(f$fit$convergence == 0)
  pd <- !is.null(f) && isTRUE(f$sdr$pdHess)
  out$glmmTMB <- list(seconds = r$seconds, cpu_seconds = r$cpu,
                      loglik = if (is.null(f)) NULL else num_or_null(as.numeric(logLik(f))),
                      converged = conv && pd,
                      message = paste(c(if (!is.null(r$error)) r$error else if (!is.null(f$fit$message)) f$fit$message else "ok",
                                        if (!is.null(f) && !pd) "Hessian not positive definite", r$warnings), collapse = " | "),
                      max_abs_gradient = if (is.null(f)) NULL else num_or_null(max(abs(f$sdr$gradient.fixed))),
                      optimizer_iterations = if (is.null(f)) NULL else f$fit$iterations,
                      call = "glmmTMB(y ~ arm * visit + base + us(0 + visit | id), dispformula = ~ 0, REML = TRUE, control = glmmTMBControl(parallel = 1))")
}
if (!is.null(out$nlme$loglik) && !is.null(out$glmmTMB$loglik))
  out$loglik_diff_glmmTMB_minus_nlme <- out$glmmTMB$loglik - out$nlme$loglik
out$data <- list(file = csv, n_obs = nrow(d), n_subjects = nlevels(d$id), visits = levels(d$visit),
                 missing_visit_fraction = 1 - nrow(d) / (nlevels(d$id) * nlevels(d$visit)))
la <- tryCatch(scan("/proc/loadavg", what = "", n = 1, quiet = TRUE), error = function(e) NA)
out$threads <- list(OPENBLAS_NUM_THREADS = Sys.getenv("OPENBLAS_NUM_THREADS"),
                    OMP_NUM_THREADS = Sys.getenv("OMP_NUM_THREADS"),
                    MKL_NUM_THREADS = Sys.getenv("MKL_NUM_THREADS"),
                    set_by = if (Sys.getenv("MMRM_PEERS_CHILD") == "1") "this script (re-run in a child R with the variables set)" else "the caller's environment",
                    blas = tryCatch(extSoftVersion()[["BLAS"]], error = function(e) ""),
                    glmmTMB_parallel = 1, TMB_openmp = num_or_null(as.numeric(tmb_omp)),
                    loadavg_1min_at_end = as.numeric(la))
out$versions <- list(R = R.version.string, nlme = as.character(packageVersion("nlme")),
                     glmmTMB = as.character(packageVersion("glmmTMB")), TMB = as.character(packageVersion("TMB")))
cat(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", na = "null"), "\n")
