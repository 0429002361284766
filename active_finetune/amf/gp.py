"""
Weight-space Gaussian process with a linear kernel, for AMF's information gain.

The kernel is k(x, x') = phi(x)^T phi(x'), i.e. Bayesian linear regression on the embeddings with
prior w ~ N(0, I_p) and observation noise rho^2.  Conditioned on the rows Phi_D of the data D the
posterior precision and covariance of the weights are

    P_D = I + rho^-2 Phi_D^T Phi_D = L L^T,        Sigma_D = P_D^-1            (p x p)

and the variance of the latent expert at x is

    sigma_D^2(x) = phi(x)^T Sigma_D phi(x) = ||L^-1 phi(x)||^2.

Conditioning on m more rows X' is a Woodbury update that only solves an m x m system:

    Sigma_{D+X'} = Sigma_D - U^T (rho^2 I + X' Sigma_D X'^T)^-1 U,    U = X' Sigma_D

so the variance at every target drops by || C^-1 U phi(x) ||^2 with C the Cholesky factor of the
m x m matrix.  Information gain of X' about the target x: 0.5 log(sigma_D^2 / sigma_{D+X'}^2).

:class:`WeightSpaceGP` keeps the p x p posterior and answers one question at a time.
:class:`FantasyPosterior` is what greedy selection uses: it keeps only the posterior covariances
between all candidate rows and all target rows (one large matrix product up front), so scoring a
candidate costs an m x m Cholesky factor applied to its m x n covariances with the targets, and
conditioning on a pick is a rank-m update of those covariances; nothing of size p is touched after
the start.
"""

import numpy as np

from scipy.linalg import cho_solve, solve_triangular

VARIANCE_FLOOR = 1e-12
"""Predictive variances at or below this count as zero (a zero embedding has nothing to learn)."""

_RELATIVE_FLOOR = 1e-15
"""Smallest posterior/prior variance ratio kept when rounding makes a posterior variance <= 0."""


class GPShapeError(ValueError):
    """Raised for rows whose shape does not fit the GP's embedding dimension."""


def information_gain(prior_variance, posterior_variance):
    """
    Per-row information gain 0.5 log(sigma_D^2 / sigma_{D+X'}^2), never NaN.

    Rows whose prior variance is at most :data:`VARIANCE_FLOOR` gain 0; a posterior variance that
    rounding made non-positive is clipped to a tiny fraction of the prior variance.

    :param prior_variance: (n,) sigma_D^2(x)
    :param posterior_variance: (n,) sigma_{D+X'}^2(x)
    :return: (n,) non-negative gains
    """
    prior = np.asarray(prior_variance, dtype=np.float64)
    posterior = np.asarray(posterior_variance, dtype=np.float64)
    informative = prior > VARIANCE_FLOOR
    gain = np.zeros(prior.shape)
    before = prior[informative]
    after = np.clip(posterior[informative], before * _RELATIVE_FLOOR, before)
    gain[informative] = 0.5 * np.log(before / after)
    return gain


def as_rows(rows, dim):
    """
    Rows as a float64 (n, dim) array.

    :param rows: array-like of shape (n, dim)
    :param dim: embedding dimension p
    :return: (n, dim) float64 array
    :raises GPShapeError: for another shape
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise GPShapeError(f'expected rows of shape (n, {dim}), got {rows.shape}')
    return rows


def _cholesky(matrix):
    """Lower Cholesky factor of a symmetric positive definite matrix (symmetrised first)."""
    return np.linalg.cholesky(0.5 * (matrix + matrix.T))


def precision_factor(conditioning, dim, rho2):
    """
    Lower Cholesky factor L of the posterior precision P_D = I + rho^-2 Phi_D^T Phi_D = L L^T.

    :param conditioning: (k, p) rows of D (may have zero rows)
    :param dim: embedding dimension p
    :param rho2: observation noise variance rho^2 (> 0)
    :return: (p, p) lower-triangular L, or None when D is empty (P_D = Sigma_D = I)
    :raises ValueError: for a non-positive rho2
    :raises GPShapeError: for rows of the wrong width
    """
    if not rho2 > 0:
        raise ValueError(f'rho2 must be > 0, got {rho2}')
    rows = as_rows(conditioning, dim) if conditioning is not None else np.zeros((0, dim))
    if len(rows) == 0:
        return None
    return _cholesky(np.eye(dim) + rows.T @ rows / rho2)


class WeightSpaceGP:
    """
    Posterior over the weights of a linear model on embeddings, updated by conditioning.

    :param dim: embedding dimension p
    :param rho2: observation noise variance rho^2 (> 0)
    :param conditioning: optional (k, p) rows of the data D to condition on at once
    :raises ValueError: for a non-positive rho2
    :raises GPShapeError: for rows of the wrong width
    """

    def __init__(self, dim, rho2, conditioning=None):
        if not rho2 > 0:
            raise ValueError(f'rho2 must be > 0, got {rho2}')
        self.dim = int(dim)
        self.rho2 = float(rho2)
        self.covariance = np.eye(self.dim)
        self._precision_factor = None
        """Lower Cholesky factor of P_D while it is known (from construction until a condition)."""
        if conditioning is not None and len(conditioning):
            self._precision_factor = precision_factor(conditioning, self.dim, self.rho2)
            covariance = cho_solve((self._precision_factor, True), np.eye(self.dim))
            self.covariance = 0.5 * (covariance + covariance.T)

    def _rows(self, rows):
        return as_rows(rows, self.dim)

    @property
    def precision(self):
        """
        Posterior precision P_D = Sigma_D^-1 of the weights.

        :return: (p, p) array
        """
        if self._precision_factor is not None:
            return self._precision_factor @ self._precision_factor.T
        return np.linalg.inv(self.covariance)

    def variance(self, targets):
        """
        Predictive variance of the latent function at each target row.

        :param targets: (n, p) embeddings
        :return: (n,) variances sigma_D^2(x)
        """
        targets = self._rows(targets)
        return ((targets @ self.covariance) * targets).sum(axis=1)

    def _update_factors(self, candidates):
        """Woodbury factors of ``candidates``: U and the m x m system's Cholesky factor."""
        candidates = self._rows(candidates)
        u = candidates @ self.covariance
        return u, _cholesky(u @ candidates.T + self.rho2 * np.eye(len(candidates)))

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
            return np.array(before, dtype=np.float64)
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
        return information_gain(before, self.variance_after(candidates, targets, before))

    def information_gains(self, blocks, targets, prior_variance=None):
        """
        Per-target information gain of each candidate block, all blocks at once.

        The projections X' Sigma_D phi(x) of every block come from one matrix product (BLAS does
        the heavy part in one call); each block then needs only its own m x m Cholesky solve.

        :param blocks: list of (m_i, p) candidate rows (empty blocks gain nothing)
        :param targets: (n, p) target rows
        :param prior_variance: sigma_D^2 at the targets if already known
        :return: (len(blocks), n) non-negative gains
        """
        targets = self._rows(targets)
        before = self.variance(targets) if prior_variance is None else prior_variance
        gains = np.zeros((len(blocks), len(targets)))
        sizes = [len(b) for b in blocks]
        if not sum(sizes) or not len(targets):
            return gains
        stacked = self._rows(np.concatenate([b for b in blocks if len(b)]))
        projected = stacked @ self.covariance
        reach = projected @ targets.T
        start = 0
        for index, size in enumerate(sizes):
            if size == 0:
                continue
            rows = slice(start, start + size)
            start += size
            system = projected[rows] @ stacked[rows].T + self.rho2 * np.eye(size)
            chol = np.linalg.cholesky(0.5 * (system + system.T))
            reduction = solve_triangular(chol, reach[rows], lower=True)
            reduction = np.einsum('ij,ij->j', reduction, reduction)
            gains[index] = information_gain(before, before - reduction)
        return gains

    def condition(self, rows):
        """
        Condition the posterior on more rows in place (Woodbury; no p x p inversion).

        :param rows: (m, p) rows
        """
        if rows is None or len(rows) == 0:
            return
        u, chol = self._update_factors(rows)
        half = solve_triangular(chol, u, lower=True)
        covariance = self.covariance - half.T @ half
        self.covariance = 0.5 * (covariance + covariance.T)
        self._precision_factor = None


class FantasyPosterior:
    """
    Joint posterior covariances of candidate rows and target rows, for greedy fantasy conditioning.

    Candidate i's m_i rows are zero-padded to m = max_i m_i rows; a zero row has zero covariance
    with everything, so padding changes no gain and no update.  Under the posterior given D (and
    the picks conditioned on so far) the object holds ``cross`` = Cov(candidate rows, target rows)
    as (C, m, n), ``joint`` = Cov(candidate rows) as (C m, C m) and ``variance`` = Var(target rows)
    as (n,).  Building it costs a p x p Cholesky factor L of the precision, triangular solves of
    the targets and the candidates with it (the whitened rows L^-1 phi) and one (C m) x p x n
    matrix product of whitened rows; scoring all candidates applies each candidate's m x m inverse
    Cholesky factor to its m x n block of ``cross``; conditioning on a pick is a rank-m update.
    Memory: about 8 C m (n + C m) bytes.

    Speed (results/bench_selection.json): every m x n block is handled by its own matrix product
    into one reused scratch buffer (numpy's stacked matmul over all C blocks at once took twice as
    long here), and :meth:`condition` can score the candidates in the same pass that updates their
    block, while it is still in the cache.

    :param blocks: list of C arrays (m_i, p), the fantasised rows of each candidate (m_i may be 0)
    :param targets: (n, p) target rows
    :param conditioning: (k, p) rows of D (may have zero rows)
    :param rho2: observation noise variance rho^2 (> 0)
    :param chunk_rows: target rows scored per matrix product (bounds the scratch buffer)
    :raises ValueError: for a non-positive rho2 or chunk_rows
    :raises GPShapeError: for rows of the wrong width
    """

    def __init__(self, blocks, targets, conditioning, rho2, chunk_rows=4096):
        targets = np.asarray(targets, dtype=np.float64)
        if targets.ndim != 2:
            raise GPShapeError(f'targets must be (n, p), got {targets.shape}')
        if chunk_rows < 1:
            raise ValueError(f'chunk_rows must be >= 1, got {chunk_rows}')
        dim = targets.shape[1]
        factor = precision_factor(conditioning, dim, rho2)
        self.rho2 = float(rho2)
        self.chunk_rows = int(chunk_rows)
        blocks = [as_rows(b, dim) for b in blocks]
        self.count = len(blocks)
        self.rows_per_block = max((len(b) for b in blocks), default=0)
        padded = np.zeros((self.count, self.rows_per_block, dim))
        for index, block in enumerate(blocks):
            padded[index, :len(block)] = block
        candidates = padded.reshape(-1, dim)
        if factor is None:
            self.variance = np.einsum('ij,ij->i', targets, targets)
            self.cross = candidates @ targets.T
            self.joint = candidates @ candidates.T
        else:
            # Sigma_D = L^-T L^-1: Cov(a, b) = (L^-1 a)^T (L^-1 b), Var = ||L^-1 phi||^2.
            solved = solve_triangular(factor, targets.T, lower=True, check_finite=False)
            self.variance = np.einsum('ij,ij->j', solved, solved)
            whitened = solve_triangular(factor, candidates.T, lower=True, check_finite=False)
            self.cross = whitened.T @ solved
            del solved
            self.joint = whitened.T @ whitened
        self.cross = self.cross.reshape(self.count, self.rows_per_block, len(targets))
        self.joint = 0.5 * (self.joint + self.joint.T)

    def _inverse_factors(self, indices):
        """Inverse lower Cholesky factors of rho^2 I + Cov(block) of candidates, (len, m, m)."""
        m = self.rows_per_block
        joint = self.joint.reshape(self.count, m, self.count, m)[indices, :, indices, :]
        chol = np.linalg.cholesky(joint + self.rho2 * np.eye(m))
        return np.linalg.inv(chol)

    def _reductions(self, update=None):
        """
        Variance reduction at every target of each candidate alone, after an optional update.

        :param update: None, or (coupling (m, C m), solved (m, n)) to subtract
            ``coupling_c^T solved`` from each block of ``cross`` first (a pick's rank-m update)
        :return: (C, n) reductions ||F_c cross_c[:, x]||^2, F_c the inverse Cholesky factors
            computed after the update of ``joint``
        """
        m, n = self.rows_per_block, len(self.variance)
        reduction = np.zeros((self.count, n))
        inverse = self._inverse_factors(np.arange(self.count))
        scratch = np.empty((m, min(self.chunk_rows, n)))
        for index in range(self.count):
            block = self.cross[index]
            for start in range(0, n, self.chunk_rows):
                part = slice(start, min(start + self.chunk_rows, n))
                out = scratch[:, :part.stop - part.start]
                if update is not None:
                    coupling, solved = update
                    np.matmul(coupling[:, index * m:(index + 1) * m].T, solved[:, part], out=out)
                    block[:, part] -= out
                np.matmul(inverse[index], block[:, part], out=out)
                reduction[index, part] = np.einsum('ij,ij->j', out, out)
        return reduction

    def _gains(self, reduction):
        before = np.broadcast_to(self.variance, reduction.shape)
        return information_gain(before, before - reduction)

    def all_gains(self):
        """
        Per-target information gain of conditioning on each candidate's rows alone.

        :return: (C, n) non-negative gains (rows of candidates without rows are 0)
        """
        if self.rows_per_block == 0 or self.count == 0:
            return np.zeros((self.count, len(self.variance)))
        return self._gains(self._reductions())

    def gains(self, index):
        """
        Per-target information gain of conditioning on candidate ``index``'s rows.

        :param index: position of the candidate in ``blocks``
        :return: (n,) non-negative gains (all 0 for a candidate without rows)
        """
        if self.rows_per_block == 0:
            return np.zeros(len(self.variance))
        solved = self._inverse_factors([index])[0] @ self.cross[index]
        reduction = np.einsum('ij,ij->j', solved, solved)
        return information_gain(self.variance, self.variance - reduction)

    def condition(self, index, score=False):
        """
        Condition on candidate ``index``'s rows as if they had been demonstrated (rank-m update).

        :param index: position of the candidate in ``blocks``
        :param score: also return :meth:`all_gains` of the updated posterior, computed in the
            same pass over ``cross`` as the update
        :return: None, or with ``score`` the (C, n) gains after the update
        """
        m = self.rows_per_block
        if m == 0:
            return self.all_gains() if score else None
        inverse = self._inverse_factors([index])[0]
        solved = inverse @ self.cross[index]
        coupling = inverse @ self.joint[index * m:(index + 1) * m]
        self.variance = np.maximum(self.variance - np.einsum('ij,ij->j', solved, solved), 0.0)
        self.joint -= coupling.T @ coupling
        self.joint = 0.5 * (self.joint + self.joint.T)
        reduction = self._reductions(update=(coupling, solved))
        return self._gains(reduction) if score else None
