# Golden nlme empirical semivariograms (nlme's Variogram) for tests/test_variogram.py.
#
# Makes  nlme_variogram.json  {"generator", "versions", "conventions", "cases": [ ... ]}
# from   ../data/bodyweight.csv and ../data/wheat2.csv (read as Python reads them: character columns
#        become factors; the fits see exactly the rows Python sees, in the same order).
#
# Run from this folder:  Rscript make_variogram_reference.R      (a few seconds on one core)
# R and the packages come from Debian:  apt-get install r-base-core r-cran-nlme r-cran-jsonlite
#
# Each case stores the fit (call, estimates), its residuals row by row in the data's order ("rows":
# the group, the coordinates the distance is computed from, and resid(fit, type = "response" /
# "pearson" / "normalized")), several calls of Variogram() on it ("variograms": the arguments as
# given to nlme and the resulting variog / dist / n.pairs columns), and nlme's model semivariogram
# (attr(v, "modelVariog"): variog on the correlation scale, sig2 = 1, at 50 distances from the
# smallest to the largest distance of the correlation structure's covariate).
#
# nlme's conventions, kept by bayeslmm.variogram's nlme scales:
#   * pairs (j, k) of rows of one group, semivariance (r_j - r_k)^2 / 2, distance dist(): Euclidean;
#   * the default resType is "pearson" (for lme the residuals at the innermost level, divided by
#     sigma times the variance function's weights);
#   * maxDist keeps the pairs with dist <= maxDist, before binning;
#   * binning (collapse = "quantiles" by default, nint = 20): if there are fewer than nint distinct
#     distances, one bin per distinct distance; otherwise breaks at the type-7 quantiles
#     (collapse = "quantiles") or equally spaced from the smallest to the largest distance
#     ("fixed"), or the given breaks, and intervals (b_k, b_k+1] (cut() with include.lowest =
#     FALSE: pairs at the lowest break fall out); each bin: variog = mean (robust: Cressie-Hawkins
#     (mean(v^0.25))^4 / (0.457 + 0.494 / n)), dist = median distance, n.pairs; empty bins dropped;
#   * modelVariog of a corSpatial with a nugget: sig2 * (nugget + (1 - nugget) * (1 - c(d; range))).

suppressPackageStartupMessages({
  library(nlme)
  library(jsonlite)
})

read_data <- function(name) {
  read.csv(file.path("..", "data", paste0(name, ".csv")), stringsAsFactors = TRUE)
}

vtab <- function(v) {
  list(variog = v$variog, dist = v$dist,
       n.pairs = if (is.null(v$n.pairs)) NULL else as.integer(v$n.pairs))
}

model_variog <- function(v) {
  mv <- attr(v, "modelVariog")
  if (is.null(mv)) NULL else list(variog = mv$variog, dist = mv$dist)
}

cases <- list()

# --- BodyWeight: lme with a random intercept and an exponential serial correlation with a nugget (OU)
bw <- read_data("bodyweight")
bw$Rat <- factor(as.character(bw$Rat))
bw$Diet <- factor(as.character(bw$Diet))
fit <- lme(weight ~ Time * Diet, data = bw, random = ~ 1 | Rat,
           correlation = corExp(form = ~ Time, nugget = TRUE), method = "REML")
cs <- coef(fit$modelStruct$corStruct, unconstrained = FALSE)
calls <- list(
  list(name = "default", args = list()),
  list(name = "response", args = list(resType = "response")),
  list(name = "normalized", args = list(resType = "normalized")),
  list(name = "robust", args = list(robust = TRUE)),
  list(name = "maxdist", args = list(maxDist = 30)),
  list(name = "quantiles10", args = list(nint = 10)),
  list(name = "fixed10", args = list(collapse = "fixed", nint = 10)),
  list(name = "breaks", args = list(breaks = c(0, 10, 20, 40, 70))),
  list(name = "none", args = list(collapse = "none"))
)
vgs <- lapply(calls, function(cl) {
  v <- do.call(Variogram, c(list(fit, form = ~ Time), cl$args))
  list(name = cl$name, args = cl$args, table = vtab(v), model = model_variog(v))
})
cases[[length(cases) + 1]] <- list(
  name = "bodyweight_ou_lme",
  data = "bodyweight", factors = c("Rat", "Diet"),
  formula = "weight ~ Time * Diet + (1 | Rat)", residual = "ou(Time | Rat)", method = "REML",
  r_call = paste("lme(weight ~ Time * Diet, random = ~ 1 | Rat,",
                 "correlation = corExp(form = ~ Time, nugget = TRUE), method = 'REML')"),
  variogram_call = "Variogram(fit, form = ~ Time, ...)",
  loglik = as.numeric(logLik(fit)), sigma = fit$sigma,
  range = unname(cs["range"]), nugget = unname(cs["nugget"]),
  fixef = as.list(fixef(fit)),
  rows = list(group = as.character(bw$Rat), coords = lapply(bw$Time, function(x) x),
              response = unname(resid(fit, type = "response")),
              pearson = unname(resid(fit, type = "pearson")),
              normalized = unname(resid(fit, type = "normalized"))),
  variograms = vgs
)

# --- Wheat2: gls with a spherical spatial correlation with a nugget, one group (the field)
wh <- read_data("wheat2")
wh$variety <- factor(as.character(wh$variety))
fitw <- gls(yield ~ variety - 1, data = wh,
            correlation = corSpher(c(28, 0.2), form = ~ latitude + longitude, nugget = TRUE),
            method = "REML")
csw <- coef(fitw$modelStruct$corStruct, unconstrained = FALSE)
callsw <- list(
  list(name = "default", args = list(maxDist = 32)),
  list(name = "response", args = list(maxDist = 32, resType = "response")),
  list(name = "robust", args = list(maxDist = 32, robust = TRUE)),
  list(name = "fixed", args = list(maxDist = 32, collapse = "fixed")),
  list(name = "all", args = list())
)
vgsw <- lapply(callsw, function(cl) {
  v <- do.call(Variogram, c(list(fitw, form = ~ latitude + longitude), cl$args))
  list(name = cl$name, args = cl$args, table = vtab(v), model = model_variog(v))
})
cases[[length(cases) + 1]] <- list(
  name = "wheat2_sph_gls",
  data = "wheat2", factors = c("variety", "Block"),
  formula = "yield ~ 0 + variety", residual = "sph(latitude + longitude | 1)", method = "REML",
  r_call = paste("gls(yield ~ variety - 1, correlation = corSpher(c(28, 0.2),",
                 "form = ~ latitude + longitude, nugget = TRUE), method = 'REML')"),
  variogram_call = "Variogram(fit, form = ~ latitude + longitude, ...)",
  loglik = as.numeric(logLik(fitw)), sigma = fitw$sigma,
  range = unname(csw["range"]), nugget = unname(csw["nugget"]),
  fixef = as.list(coef(fitw)),
  rows = list(group = rep("1", nrow(wh)),
              coords = lapply(seq_len(nrow(wh)), function(i) c(wh$latitude[i], wh$longitude[i])),
              response = unname(as.numeric(resid(fitw, type = "response"))),
              pearson = unname(as.numeric(resid(fitw, type = "pearson"))),
              normalized = unname(as.numeric(resid(fitw, type = "normalized")))),
  variograms = vgsw
)

out <- list(
  generator = "tests/reference/make_variogram_reference.R",
  versions = list(R = R.version.string, nlme = as.character(packageVersion("nlme")),
                  jsonlite = as.character(packageVersion("jsonlite"))),
  conventions = paste(
    "rows.* in the data's order; variograms[].table is Variogram()'s data frame (n.pairs absent",
    "for collapse = 'none'); variograms[].model is attr(, 'modelVariog') (pearson and response",
    "only, on the correlation scale: sig2 = 1 for pearson, sigma^2 for response)"),
  cases = cases
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
           "nlme_variogram.json")
