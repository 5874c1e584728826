"""A small Gaussian-process regressor in numpy/scipy for the ``bayesian`` sampler.

* Kernel: Matern 5/2 with one lengthscale per search-space dimension (ARD; the one-hot columns of a categorical
  dimension share its lengthscale), a signal variance, and a Gaussian noise variance.
* Hyperparameters: maximum a posteriori by L-BFGS-B on the log marginal likelihood with analytic gradients, from a
  fixed start and a few starts drawn from the priors. Lengthscale prior: log-normal with location
  ``sqrt(2) + log(D) / 2`` and scale ``sqrt(3)`` (Hvarfner et al. 2024, "Vanilla Bayesian optimization performs
  great in high dimensions"), which keeps the model smooth unless the data say otherwise.
* Targets are expected standardized (see :func:`warp_targets`).

Everything is deterministic given the random generator passed in.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.linalg import LinAlgError, cho_solve, cholesky, solve_triangular
from scipy.linalg.lapack import dpotri
from scipy.optimize import minimize
from scipy.special import erfcx, ndtr

_SQRT5 = math.sqrt(5.0)
_LOG_2PI = math.log(2 * math.pi)
_JITTER = 1e-8


def warp_targets(y: np.ndarray) -> np.ndarray:
    """Standardize, then a Yeo-Johnson power transform, then standardize again.

    The power transform tames the heavy upper tail typical of losses (diverged or useless configurations), so the
    GP spends its capacity on the good region; it is monotone, so the ordering of trials is kept. Lambda maximizes
    the Gaussian log likelihood over a grid (vectorised; scipy's scalar search costs more than the GP fit).
    """
    y = np.asarray(y, dtype=float)
    if len(y) < 3 or np.ptp(y) == 0:
        flat: np.ndarray = (y - y.mean()) / (y.std() or 1.0)
        return flat
    z = (y - y.mean()) / y.std()
    t = z[:, None]
    lam = _YJ_LAMBDAS[None]
    pos = t >= 0
    with np.errstate(all="ignore"):
        a = np.where(np.abs(lam) < 1e-8, np.log1p(np.abs(t)), (np.power(1 + np.abs(t), lam) - 1) / lam)
        b = np.where(np.abs(lam - 2) < 1e-8, -np.log1p(np.abs(t)),
                     -(np.power(1 + np.abs(t), 2 - lam) - 1) / (2 - lam))
        T = np.where(pos, a, b)
        var = T.var(axis=0)
        ll = -0.5 * len(z) * np.log(var) + (_YJ_LAMBDAS - 1) * float((np.sign(z) * np.log1p(np.abs(z))).sum())
    ll[~np.isfinite(ll) | (var <= 0)] = -np.inf
    if not np.any(np.isfinite(ll)):
        standardized: np.ndarray = z
        return standardized
    w = T[:, int(np.argmax(ll))]
    warped: np.ndarray = (w - w.mean()) / (w.std() or 1.0)
    return warped


_YJ_LAMBDAS = np.linspace(-2.0, 3.0, 51)


class GaussianProcess:
    """Matern 5/2 ARD GP over encoded points; ``col_dim[c]`` is the search-space dimension of column ``c``."""

    def __init__(self, col_dim: np.ndarray, n_dims: int) -> None:
        self.col_dim = np.asarray(col_dim, dtype=int)
        self.n_dims = n_dims
        self.ls_loc = math.sqrt(2.0) + 0.5 * math.log(max(n_dims, 1))
        self.ls_scale = math.sqrt(3.0)
        lo = [math.log(1e-2)] * n_dims + [math.log(0.05), math.log(1e-6)]
        hi = [math.log(1e3)] * n_dims + [math.log(20.0), math.log(1.0)]
        self.bounds = list(zip(lo, hi))
        self.theta = np.array([math.log(0.5 * math.sqrt(n_dims))] * n_dims + [0.0, math.log(1e-3)])
        self.X = np.zeros((0, len(col_dim)))
        self.y = np.zeros(0)

    # -- hyperparameters ------------------------------------------------------------------------------------

    def _unpack(self, theta: np.ndarray) -> tuple[np.ndarray, float, float]:
        ls = np.exp(theta[: self.n_dims])
        return ls, float(np.exp(theta[self.n_dims])), float(np.exp(theta[self.n_dims + 1]))

    def _kernel(self, A: np.ndarray, B: np.ndarray, ls: np.ndarray, sf2: float) -> np.ndarray:
        inv = 1.0 / ls[self.col_dim]
        a, b = A * inv, B * inv
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
        r = np.sqrt(np.maximum(d2, 0.0))
        k: np.ndarray = sf2 * (1.0 + _SQRT5 * r + (5.0 / 3.0) * d2) * np.exp(-_SQRT5 * r)
        return k

    def _neg_log_posterior(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        ls, sf2, noise = self._unpack(theta)
        n = len(y)
        inv = 1.0 / ls[self.col_dim]
        Xs = X * inv
        sq = (Xs * Xs).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None] - 2.0 * Xs @ Xs.T, 0.0)
        r = np.sqrt(d2)
        e = np.exp(-_SQRT5 * r)
        Kf = sf2 * (1.0 + _SQRT5 * r + (5.0 / 3.0) * d2) * e
        K = Kf + (noise + _JITTER) * np.eye(n)
        try:
            L = cholesky(K, lower=True, check_finite=False)
        except LinAlgError:
            return 1e10, np.zeros_like(theta)
        alpha = cho_solve((L, True), y, check_finite=False)
        nll = 0.5 * float(y @ alpha) + float(np.log(np.diag(L)).sum()) + 0.5 * n * _LOG_2PI
        Kinv, info = dpotri(L, lower=1)
        if info != 0:
            return 1e10, np.zeros_like(theta)
        Kinv = np.tril(Kinv) + np.tril(Kinv, -1).T
        W = Kinv - np.outer(alpha, alpha)
        grad = np.empty_like(theta)
        # dK/dlog(ls_j) = sf2 * 5/3 * (1 + sqrt5 r) e^{-sqrt5 r} * (dx_j / ls_j)^2
        M = W * (sf2 * (5.0 / 3.0) * (1.0 + _SQRT5 * r) * e)
        MX = M @ Xs
        col = 2.0 * (M.sum(1) @ (Xs * Xs)) - 2.0 * (Xs * MX).sum(0)
        grad[: self.n_dims] = 0.5 * np.bincount(self.col_dim, weights=col, minlength=self.n_dims)
        grad[self.n_dims] = 0.5 * float((W * Kf).sum())
        grad[self.n_dims + 1] = 0.5 * noise * float(np.trace(W))
        # Priors: log-normal lengthscales, log-normal signal variance around 1, log-normal noise around 1e-3.
        lls = theta[: self.n_dims]
        nll += float((0.5 * ((lls - self.ls_loc) / self.ls_scale) ** 2).sum())
        grad[: self.n_dims] += (lls - self.ls_loc) / self.ls_scale**2
        nll += 0.5 * theta[self.n_dims] ** 2
        grad[self.n_dims] += theta[self.n_dims]
        ln = theta[self.n_dims + 1] - math.log(1e-3)
        nll += 0.5 * (ln / 2.0) ** 2
        grad[self.n_dims + 1] += ln / 4.0
        return nll, grad

    def fit(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator, restarts: int = 2,
            maxiter: int = 80) -> None:
        """Fit the hyperparameters (MAP) on ``X, y`` and condition on them."""
        starts = [self.theta.copy()]
        for _ in range(restarts):
            t = self.theta.copy()
            t[: self.n_dims] = np.clip(rng.normal(self.ls_loc - 1.5, 1.0, self.n_dims), -3.0, 4.0)
            t[self.n_dims] = rng.normal(0.0, 0.5)
            t[self.n_dims + 1] = math.log(1e-3) + rng.normal(0.0, 1.0)
            starts.append(t)
        best_theta, best_val = self.theta, math.inf
        for t0 in starts:
            t0 = np.clip(t0, [b[0] for b in self.bounds], [b[1] for b in self.bounds])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = minimize(self._neg_log_posterior, t0, args=(X, y), jac=True, method="L-BFGS-B",
                               bounds=self.bounds, options={"maxiter": maxiter})
            if np.isfinite(res.fun) and res.fun < best_val:
                best_theta, best_val = res.x, float(res.fun)
        self.theta = np.asarray(best_theta, dtype=float)
        self.condition(X, y)

    # -- posterior ------------------------------------------------------------------------------------------

    def condition(self, X: np.ndarray, y: np.ndarray, exact: int = 0) -> None:
        """Condition on ``X, y`` with the current hyperparameters; the last ``exact`` points are noise-free."""
        ls, sf2, noise = self._unpack(self.theta)
        self.X, self.y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        diag = np.full(len(self.y), noise + _JITTER)
        if exact:
            diag[-exact:] = _JITTER * 100
        K = self._kernel(self.X, self.X, ls, sf2) + np.diag(diag)
        jitter = _JITTER
        while True:
            try:
                self._L = cholesky(K, lower=True, check_finite=False)
                break
            except LinAlgError:
                jitter *= 10
                K[np.diag_indices_from(K)] += jitter
        self._alpha = cho_solve((self._L, True), self.y, check_finite=False)

    def predict(self, Xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent function at ``Xc``."""
        ls, sf2, _ = self._unpack(self.theta)
        Ks = self._kernel(Xc, self.X, ls, sf2)
        mu = Ks @ self._alpha
        v = solve_triangular(self._L, Ks.T, lower=True, check_finite=False)
        var = np.maximum(sf2 - (v * v).sum(0), 1e-12)
        return mu, np.sqrt(var)


def log_expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """``log EI`` for minimization, accurate far into the tail (where EI itself underflows to 0).

    ``EI = sd * h(z)`` with ``z = (best - mu) / sd`` and ``h(z) = z Phi(z) + phi(z)``. For ``z < 0``,
    ``h(z) = phi(z) * (1 + z sqrt(pi/2) erfcx(-z / sqrt 2))``, which has no underflow and loses only
    ``log10(z^2)`` digits to cancellation; far out, the asymptotic ``phi(z) / z^2``.
    """
    z = np.asarray((best - mu) / sd, dtype=float)
    out = np.empty_like(z)
    pos = z >= 0
    zp = z[pos]
    out[pos] = np.log(zp * ndtr(zp) + np.exp(-0.5 * zp * zp - 0.5 * _LOG_2PI))
    mid = (~pos) & (z > -1e4)
    zm = z[mid]
    out[mid] = -0.5 * zm * zm - 0.5 * _LOG_2PI + np.log1p(zm * math.sqrt(math.pi / 2) * erfcx(-zm / math.sqrt(2)))
    far = z <= -1e4
    zf = z[far]
    out[far] = -0.5 * zf * zf - 0.5 * _LOG_2PI - 2 * np.log(-zf)
    log_ei: np.ndarray = out + np.log(sd)
    return log_ei
