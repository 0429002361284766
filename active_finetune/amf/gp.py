"""
Weight-space Gaussian process with a linear kernel, for AMF's information gain (AMF.md).

The kernel is k(x, x') = phi(x)^T phi(x'), i.e. Bayesian linear regression on the embeddings with
prior w ~ N(0, I_p) and observation noise rho^2.  Conditioned on the rows Phi_D of the data D the
posterior covariance of the weights is

    Sigma_D = (I + rho^-2 Phi_D^T Phi_D)^-1            (p x p)

and the variance of the latent expert at x is sigma_D^2(x) = phi(x)^T Sigma_D phi(x).  Conditioning
on m more rows X' is a Woodbury update that only solves an m x m system:

    Sigma_{D+X'} = Sigma_D - U^T (rho^2 I + X' Sigma_D X'^T)^-1 U,    U = X' Sigma_D

so the variance at every target drops by || L^-1 U phi(x) ||^2 with L the Cholesky factor of
the m x m matrix.  Information gain of X' about the target x: 0.5 log(sigma_D^2 / sigma_{D+X'}^2).
"""

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular

VARIANCE_FLOOR = 1e-12
"""Predictive variances below this are treated as zero (a zero embedding has nothing to learn)."""


class WeightSpaceGP:
    """
    Posterior over the weights of a linear model on embeddings, updated by conditioning.

    :param dim: embedding dimension p
    :param rho2: observation noise variance rho^2 (> 0)
    :param conditioning: optional (k, p) rows of the data D to condition on at once
    :raises ValueError: for a non-positive rho2 or rows of the wrong width
    """

    def __init__(self, dim, rho2, conditioning=None):
        if not rho2 > 0:
            raise ValueError(f'rho2 must be > 0, got {rho2}')
        self.dim = int(dim)
        self.rho2 = float(rho2)
        if conditioning is not None and len(conditioning):
            rows = self._rows(conditioning)
            precision = np.eye(self.dim) + rows.T @ rows / self.rho2
            self.covariance = cho_solve(cho_factor(precision, lower=True), np.eye(self.dim))
            self.covariance = 0.5 * (self.covariance + self.covariance.T)
        else:
            self.covariance = np.eye(self.dim)

    def _rows(self, rows):
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f'expected rows of shape (n, {self.dim}), got {rows.shape}')
        return rows

    def variance(self, targets):
        """
        Predictive variance of the latent function at each target row.

        :param targets: (n, p) embeddings
        :return: (n,) variances sigma_D^2(x)
        """
        targets = self._rows(targets)
        return ((targets @ self.covariance) * targets).sum(axis=1)

    def _update_factors(self, candidates):
        """Woodbury factors of conditioning on ``candidates``: (U, Cholesky of the m x m system)."""
        candidates = self._rows(candidates)
        u = candidates @ self.covariance
        system = u @ candidates.T + self.rho2 * np.eye(len(candidates))
        chol = np.linalg.cholesky(0.5 * (system + system.T))
        return u, chol

    def variance_after(self, candidates, targets, prior_variance=None):
        """
        Variance at each target after also conditioning on ``candidates`` (nothing is changed).

        :param candidates: (m, p) fantasised demo rows X'
        :param targets: (n, p) target rows
        :param prior_variance: sigma_D^2 at the targets if already known
        :return: (n,) sigma_{D+X'}^2(x)
        """
        targets = self._rows(targets)
        before = self.variance(targets) if prior_variance is None else prior_variance
        if candidates is None or len(candidates) == 0:
            return before.copy()
        u, chol = self._update_factors(candidates)
        reduction = solve_triangular(chol, u @ targets.T, lower=True)
        return before - np.einsum('ij,ij->j', reduction, reduction)

    def information_gain(self, candidates, targets, prior_variance=None):
        """
        Per-target information gain 0.5 log(sigma_D^2(x) / sigma_{D+X'}^2(x)).

        Targets with (numerically) zero prior variance gain nothing.

        :param candidates: (m, p) fantasised demo rows X'
        :param targets: (n, p) target rows
        :param prior_variance: sigma_D^2 at the targets if already known
        :return: (n,) non-negative gains
        """
        targets = self._rows(targets)
        before = self.variance(targets) if prior_variance is None else prior_variance
        after = self.variance_after(candidates, targets, before)
        informative = before > VARIANCE_FLOOR
        gain = np.zeros(len(targets))
        gain[informative] = 0.5 * np.log(
            before[informative] / np.maximum(after[informative], VARIANCE_FLOOR * 1e-3))
        return np.maximum(gain, 0.0)

    def condition(self, rows):
        """
        Condition the posterior on more rows in place (Woodbury; no p x p inversion).

        :param rows: (m, p) rows
        """
        if rows is None or len(rows) == 0:
            return
        u, chol = self._update_factors(rows)
        half = solve_triangular(chol, u, lower=True)
        self.covariance = self.covariance - half.T @ half
        self.covariance = 0.5 * (self.covariance + self.covariance.T)
