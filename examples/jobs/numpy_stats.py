# numpy in the sandbox: statistics over generated data and a least-squares
# fit. Needs the worker's numpy image (ERYX_RUNTIME_IMAGE=numpy, the default).
import numpy as np

rng = np.random.default_rng(2024)

# A noisy line, y = 3x + 2, with a few outliers.
x = np.linspace(0, 10, 500)
y = 3.0 * x + 2.0 + rng.normal(0.0, 1.5, x.size)
y[rng.choice(x.size, 10, replace=False)] += 25.0

# Least squares: [x 1] @ [slope intercept] ~= y
A = np.column_stack([x, np.ones_like(x)])
(slope, intercept), residuals, rank, _ = np.linalg.lstsq(A, y, rcond=None)
fit = A @ np.array([slope, intercept])
resid = y - fit
rmse = float(np.sqrt(np.mean(resid**2)))

# Robust statistics of the residuals flag the outliers.
mad = float(np.median(np.abs(resid - np.median(resid))))
outliers = np.flatnonzero(np.abs(resid - np.median(resid)) > 5 * 1.4826 * mad)

counts, edges = np.histogram(resid, bins=8)
print(f"fit: y = {slope:.3f} x + {intercept:.3f}  (rmse {rmse:.3f}, rank {rank})")
print(f"residuals: mean {resid.mean():+.3f}, std {resid.std():.3f}, MAD {mad:.3f}")
print(f"outliers at x = {np.round(x[outliers], 2).tolist()}")
for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
    print(f"  [{lo:+7.2f}, {hi:+7.2f})  {'#' * int(c // 10)} {c}")

# `result` must be JSON: numpy values are converted first.
result = {
    "slope": round(float(slope), 4),
    "intercept": round(float(intercept), 4),
    "rmse": round(rmse, 4),
    "outliers": int(outliers.size),
    "quantiles": np.round(np.quantile(y, [0.05, 0.5, 0.95]), 3).tolist(),
}
