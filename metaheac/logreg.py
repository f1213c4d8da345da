"""Many penalised logistic regressions on the same rows, fitted at once
(runner.adaptation=wide_cv, metaheac/combine.py).

Problem j of P:

    minimise over w_j, a_j, b_j   C sum_i s_ij logloss(y_i, a_j m_ij + b_j + x_i w_j) + ||w_j||^2 / 2

x [n, p] is shared (a campaign's seeds' ids), the offsets m [n, P] and row
weights s [n, P] (0 leaves a row out: a cross-validation fold) are per
problem; a_j is fitted or held at 1. A campaign's cross-validation is tens of
such problems: fitted one by one, an optimiser's per-iteration overhead cost
more than its arithmetic. Here they are stacked as columns and solved together
by Newton's method with conjugate gradients, so every step is a few
sparse-dense products over all the problems still open. A problem's iterates
depend on its own data alone: fitted with others, it gets what it gets fitted
by itself.

Each step is cheap for three reasons:
- A column that one row alone has (most ids of a few thousand seeds) moves
  only that row's margin. Its best weight given the margin is closed-form,
  so those columns leave the problem: each row's loss becomes its Moreau
  envelope over them (a one-dimensional solve per row), and their weights
  are read back from the solution.
- Every row has one id per static field, so raising b while lowering all of
  a field's weights leaves the margins as they are; only the penalty resists
  it and plain conjugate gradients crawl along it. The preconditioner solves
  the Hessian exactly on the span of such directions (one per field, a, b)
  and scales the rest by its diagonal.
- The sparse products are the cost, and the line search takes none: margins
  are linear in the parameters, so CG sums the step's margins from its own
  products. Each row's envelope solve starts from its root at the last
  margins (2-3 Newton steps instead of 4-5 from 0).
"""
import numpy as np
from scipy import sparse

STEP_TOL = 1e-5  # a problem is solved when no parameter's diagonal Newton step (gradient / curvature) exceeds this
FORCING = 0.1    # CG stops at this share of the gradient's norm (less once it is small)
PROX_TOL = 1e-12
MAX_NEWTON = 100
MAX_CG = 250
MAX_PROX = 60
MAX_WARM = 8     # Newton steps from a warm start before starting again from 0
MAX_HALVINGS = 40
ARMIJO = 1e-4


def _dot(a, b):
    """Column-wise dot products [P] of a, b [m, P] (einsum: no [m, P] temporary)."""
    return np.einsum("ij,ij->j", a, b)


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def _envelope(zeta, s, v2, y, start=None):
    """Per row and problem, the weighted log-loss at margin zeta once the
    row's lone columns (squared norm v2 [n, 1]) take their best weights t:

        phi(zeta) = min_t s logloss(y, zeta + sqrt(v2) t) + t^2 / 2

    Returns phi, phi', phi'' and the margin u at the minimum [n, P]. u
    solves g(u) = u + k sigmoid(u) - (zeta + k y) = 0, k = v2 s: g rises,
    convex below 0 and concave above, so Newton's method from u = 0
    approaches the root from one side and never overshoots. From `start`
    (the root at a nearby zeta) it takes fewer steps; should it not settle
    within a few, it starts again from 0."""
    k = v2 * s
    target = zeta + k * y
    bound = PROX_TOL * (1.0 + np.abs(target))

    def newton(u, steps):  # (u, sigmoid(u), settled)
        for _ in range(steps):
            sig = sigmoid(u)
            g = u + k * sig - target
            if (np.abs(g) <= bound).all():
                return u, sig, True
            u = u - g / (1.0 + k * sig * (1.0 - sig))
        return u, sigmoid(u), False

    settled = False
    if start is not None:
        u, sig, settled = newton(start, MAX_WARM)
    if not settled:
        u, sig, _ = newton(np.zeros_like(zeta), MAX_PROX)
    first = s * (sig - y)
    curvature = s * sig * (1.0 - sig)
    # log(1 + e^u) = max(u, 0) - log sigmoid(|u|), read off sig (half logaddexp's cost)
    softplus = np.maximum(u, 0.0) - np.log(np.where(u >= 0.0, sig, 1.0 - sig))
    value = s * (softplus - y * u) + 0.5 * v2 * first * first  # (u - zeta)^2 / (2 v2)
    return value, first, curvature / (1.0 + v2 * curvature), u


class _Problems:
    """Problems stacked as columns; a parameter vector is [p + 2, P]: w, then a, then b."""

    def __init__(self, x, xt, x2t, y, v2, m, s, fit_a, coarse):
        self.x, self.xt, self.x2t, self.y, self.v2 = x, xt, x2t, y, v2   # y, v2: [n, 1]
        self.m, self.s, self.fit_a = m, s, fit_a    # [n, P], [n, P] (C included), [P] 1.0: a is fitted
        self.coarse = coarse                        # _Coarse

    def take(self, keep):
        return _Problems(self.x, self.xt, self.x2t, self.y, self.v2, self.m[:, keep], self.s[:, keep],
                         self.fit_a[keep], self.coarse)

    def margins(self, theta):
        p = self.x.shape[1]
        return self.x @ theta[:p] + theta[p] * self.m + theta[p + 1]                  # [n, P]

    def loss(self, zeta, start=None):
        """phi, phi', phi'' and the envelope's margins u [n, P] of every row
        at margins zeta [n, P] (_envelope; start: u at a nearby zeta)."""
        return _envelope(zeta, self.s, self.v2, self.y, start)

    def objective(self, value, theta):
        w = theta[:self.x.shape[1]]
        return value.sum(0) + 0.5 * _dot(w, w)                                        # [P]

    def back(self, u, theta):
        """The adjoint of margins applied to u [n, P], plus the penalty's gradient: [p + 2, P]."""
        p = self.x.shape[1]
        out = np.empty_like(theta)
        out[:p] = self.xt @ u + theta[:p]
        out[p] = self.fit_a * _dot(self.m, u)
        out[p + 1] = u.sum(0)
        return out


class _Coarse:
    """The per-field directions (see the module's docstring) and a, b."""

    def __init__(self, x, groups):
        n_groups = int(groups.max(initial=0)) + 1
        self.groups = groups                                             # [p] the direction of each column
        self.summing = np.zeros((n_groups, groups.size))                 # [G, p] dense: G is the field count
        self.summing[groups, np.arange(groups.size)] = 1.0
        self.spread = x @ self.summing.T                                 # [n, G] margins of each field direction
        self.sizes = self.summing.sum(1)                                 # [G] their penalty

    def inverse(self, problems, d):
        """[P, G + 2, G + 2] the inverse of the Hessian (loss curvature d [n, P]) on the span."""
        n_groups, n, P = self.sizes.size, d.shape[0], d.shape[1]
        h = np.empty((P, n_groups + 2, n_groups + 2))
        weighted = (d[:, :, None] * self.spread[:, None, :]).reshape(n, P * n_groups)   # [n, P G]
        h[:, :n_groups, :n_groups] = (weighted.T @ self.spread).reshape(P, n_groups, n_groups)
        h[:, np.arange(n_groups), np.arange(n_groups)] += self.sizes
        dm = d * problems.m
        h[:, :n_groups, n_groups] = h[:, n_groups, :n_groups] = dm.T @ self.spread   # with a
        h[:, :n_groups, n_groups + 1] = h[:, n_groups + 1, :n_groups] = d.T @ self.spread  # with b
        h[:, n_groups, n_groups] = _dot(dm, problems.m)
        h[:, n_groups, n_groups + 1] = h[:, n_groups + 1, n_groups] = dm.sum(0)
        h[:, n_groups + 1, n_groups + 1] = d.sum(0)
        fixed = problems.fit_a == 0                                     # a held: its direction is inert
        h[fixed, n_groups, :] = 0.0
        h[fixed, :, n_groups] = 0.0
        h[fixed, n_groups, n_groups] = 1.0
        # pinv: a constant offset makes a and b one direction, flat both ways
        return np.linalg.pinv(h, rcond=1e-12, hermitian=True)

    def apply(self, inv, r, p):
        """Z (Z^T H Z)^-1 Z^T r for residuals r [p + 2, P]."""
        rhs = np.concatenate([self.summing @ r[:p], r[p:]])           # [G + 2, P]
        y = np.einsum("pkl,lp->kp", inv, rhs)
        out = np.empty_like(r)
        out[:p] = np.take(y, self.groups, axis=0)  # faster than y[self.groups]
        out[p:] = y[-2:]
        return out


def _preconditioner(problems, d):
    """(the Hessian's diagonal [p + 2, P], its inverse on the coarse span) at loss curvature d [n, P]."""
    p = problems.x.shape[1]
    diagonal = np.empty((p + 2, d.shape[1]))
    diagonal[:p] = problems.x2t @ d + 1.0
    diagonal[p] = np.where(problems.fit_a > 0, (problems.m * problems.m * d).sum(0), 1.0)
    diagonal[p + 1] = d.sum(0)
    np.maximum(diagonal, 1e-12, out=diagonal)
    return diagonal, problems.coarse.inverse(problems, d)


def _cg(problems, d, g, tol, diagonal, inv):
    """(v, margins(v)) with H v ~ -g per problem (H: the Hessian, loss
    curvature d [n, P]), by conjugate gradients until the residual is below
    tol [P]; preconditioned by the diagonal plus the exact inverse on the
    coarse span. margins(v) is summed from the products CG takes anyway, so
    the line search needs no product of its own."""
    p = problems.x.shape[1]

    def preconditioned(r):
        return r / diagonal + problems.coarse.apply(inv, r, p)

    v = np.zeros_like(g)
    mv = np.zeros_like(d)
    r = -g
    z = preconditioned(r)
    q = z.copy()
    rz = _dot(r, z)
    for _ in range(MAX_CG):
        going = np.sqrt(_dot(r, r)) > tol
        if not going.any():
            break
        mq = problems.margins(q)
        hq = problems.back(d * mq, q)                      # margins(q) is linear in q: H q
        alpha = np.where(going, rz / np.maximum(_dot(q, hq), 1e-300), 0.0)
        v += alpha * q
        mv += alpha * mq
        r -= alpha * hq
        z = preconditioned(r)
        rz_new = _dot(r, z)
        q = z + np.where(going, rz_new / np.maximum(rz, 1e-300), 0.0) * q
        rz = rz_new
    return v, mv


def _solve(problems, theta):
    """Minimise every problem from its start theta [p + 2, P]; in place.
    Returns the rows' loss slopes phi' [n, P] at the solution."""
    open_ = np.arange(theta.shape[1])
    # [n, P] each, kept up to date as steps are taken: the margins, the
    # envelope's value, slope, curvature and root (the next solve's start)
    zeta = problems.margins(theta)
    value, first, second, roots = problems.loss(zeta)
    # the preconditioner of the start serves every step: it need not be exact
    diagonal, inv = _preconditioner(problems, second)
    for _ in range(MAX_NEWTON):
        probs, th = problems.take(open_), theta[:, open_]
        g = probs.back(first[:, open_], th)                                   # [p + 2, P] gradient
        going = (np.abs(g) / diagonal[:, open_]).max(0) > STEP_TOL
        if not going.any():
            break
        open_, probs, th, g = open_[going], probs.take(going), th[:, going], g[:, going]
        gnorm = np.sqrt(_dot(g, g))
        v, mv = _cg(probs, second[:, open_], g, np.minimum(FORCING, np.sqrt(gnorm)) * gnorm, diagonal[:, open_],
                    inv[open_])
        slope = _dot(g, v)                                                    # [P] < 0
        f = probs.objective(value[:, open_], th)
        step, pending = np.ones(open_.size), np.ones(open_.size, bool)
        for _ in range(MAX_HALVINGS):  # backtrack until each problem's objective falls enough
            trial, z_trial = th + step * v, zeta[:, open_] + step * mv
            at_trial = probs.loss(z_trial, roots[:, open_])
            ok = pending & (probs.objective(at_trial[0], trial) <= f + ARMIJO * step * slope)
            theta[:, open_[ok]] = trial[:, ok]
            for cache, new in zip((zeta, value, first, second, roots), (z_trial, *at_trial)):
                cache[:, open_[ok]] = new[:, ok]
            pending &= ~ok
            if not pending.any():
                break
            step = np.where(pending, 0.5 * step, step)
        open_ = open_[~pending]  # a step that never falls enough: at the precision floor, it stops
        if not open_.size:
            break
    return first


def fit_path(x, y, offsets, weights, cs, fit_a, groups):
    """[(w [p, P], a [P], b [P])] per C of `cs` (ascending) for P problems:
    x [n, p] CSR, y [n] in {0, 1}, offsets m [n, P], row weights s [n, P],
    fit_a [P] bool (False holds a_j at 1), groups [p] the field (any
    integers) of each column. Each C starts where the previous, more
    penalised one ended."""
    csc = sparse.csc_matrix(x)
    lone = np.diff(csc.indptr) == 1                     # columns one row alone has
    kept = np.flatnonzero(~lone)
    lone_entries = csc[:, lone].tocoo()                 # one per lone column: its row and value
    lone_columns = np.flatnonzero(lone)[lone_entries.col]
    x = csc[:, kept].tocsr()
    xt = x.T.tocsr()
    x2t = xt.multiply(xt).tocsr()                       # squared entries: the Hessian's diagonal
    v2 = np.bincount(lone_entries.row, lone_entries.data ** 2, minlength=x.shape[0])[:, None]
    coarse = _Coarse(x, np.unique(np.asarray(groups)[kept], return_inverse=True)[1])
    y = np.asarray(y, np.float64)[:, None]
    offsets, weights, fit_a = (np.asarray(v, np.float64) for v in (offsets, weights, fit_a))
    theta = np.zeros((kept.size + 2, offsets.shape[1]))
    theta[-2] = 1.0  # a: the network as it is
    path = []
    for c in cs:
        problems = _Problems(x, xt, x2t, y, v2, offsets, c * weights, fit_a, coarse)
        slopes = _solve(problems, theta)
        w = np.zeros((csc.shape[1], theta.shape[1]))
        w[kept] = theta[:-2]
        # a lone column's best weight: - its value x the loss's slope at its row
        w[lone_columns] = -lone_entries.data[:, None] * slopes[lone_entries.row]
        path.append((w, theta[-2].copy(), theta[-1].copy()))
    return path
