"""Many penalised logistic regressions fitted at once (metaheac/logreg.py)."""
import numpy as np
import pytest
from scipy import optimize, sparse

from metaheac import logreg

CS = (0.003, 0.03, 0.3, 1.0)


def seed_like(n, rng):
    """x [n, p] as features.user_features builds it, with its fields [p]: two
    small static fields, a sequence field (up to 3 ids, each 1/length) and
    a large static field whose ids are mostly in one row alone."""
    vocab = (2, 5, 30, 20 * n)
    rows, cols, vals, offset = [], [], [], 0
    for j, size in enumerate(vocab):
        if j == 2:
            length = rng.integers(1, 4, n)
            for i in range(n):
                rows += [i] * length[i]
                cols += list(offset + rng.integers(0, size, length[i]))
                vals += [1.0 / length[i]] * length[i]
        else:
            rows += range(n)
            cols += list(offset + rng.integers(0, size, n))
            vals += [1.0] * n
        offset += size
    x = sparse.csr_matrix((vals, (rows, cols)), shape=(n, offset))
    used = np.unique(x.indices)
    fields = np.searchsorted(np.cumsum(vocab), used, side="right")
    return x[:, used], fields


def problems(n, n_folds, rng):
    """A campaign's cross-validation: per fold, the network corrected (a
    fitted, an offset) and the seeds alone (a held, no offset)."""
    x, fields = seed_like(n, rng)
    hidden = rng.normal(size=x.shape[1])
    network = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ hidden + network)))).astype(np.float64)
    fold = rng.permutation(n) % n_folds
    offsets = np.zeros((n, 2 * n_folds))
    offsets[:, 0::2] = network[:, None] + 0.1 * rng.normal(size=(n, n_folds))
    weights = np.repeat(fold[:, None] != np.arange(n_folds), 2, axis=1).astype(np.float64)
    return x, y, offsets, weights, np.arange(2 * n_folds) % 2 == 0, fields


def objective(x, y, m, s, c, w, a, b):
    z = a * m + b + x @ w
    return c * (s * (np.logaddexp(0.0, z) - y * z)).sum() + 0.5 * w @ w


def reference(x, y, m, s, c, fit_a):
    """The same problem over every column by a general optimiser, to tight tolerance."""
    n_w = x.shape[1]

    def loss_and_grad(theta):
        w, a, b = theta[:n_w], theta[n_w], theta[n_w + 1]
        z = a * m + b + x @ w
        r = c * s * (0.5 * (1.0 + np.tanh(0.5 * z)) - y)
        return objective(x, y, m, s, c, w, a, b), np.concatenate([x.T @ r + w, [r @ m if fit_a else 0.0, r.sum()]])

    start = np.zeros(n_w + 2)
    start[n_w] = 1.0
    theta = optimize.minimize(loss_and_grad, start, jac=True, method="L-BFGS-B",
                              options={"maxiter": 50000, "ftol": 1e-15, "gtol": 1e-10}).x
    return theta[:n_w], theta[n_w], theta[n_w + 1]


def test_every_problem_reaches_the_optimum_of_all_its_columns():
    rng = np.random.default_rng(0)
    x, y, offsets, weights, fit_a, fields = problems(300, 3, rng)
    lone = np.diff(x.tocsc().indptr) == 1
    assert lone.sum() > x.shape[1] / 3  # the reduction has columns to take out
    path = logreg.fit_path(x, y, offsets, weights, CS, fit_a, fields)
    for c, (w, a, b) in zip(CS, path):
        for j in range(offsets.shape[1]):
            m, s = offsets[:, j], weights[:, j]
            w_ref, a_ref, b_ref = reference(x, y, m, s, c, fit_a[j])
            ours = objective(x, y, m, s, c, w[:, j], a[j], b[j])
            assert ours <= objective(x, y, m, s, c, w_ref, a_ref, b_ref) + 1e-7 * max(1.0, abs(ours))
            np.testing.assert_allclose(w[:, j], w_ref, atol=2e-4)
            assert abs(b[j] - b_ref) < 2e-4
            if fit_a[j]:
                assert abs(a[j] - a_ref) < 2e-4
            else:
                assert a[j] == 1.0  # held
            # a column the fold leaves out (all its rows validation) has weight 0
            left_out = np.asarray(abs(x[s > 0]).sum(0)).ravel() == 0
            assert np.abs(w[left_out, j]).max(initial=0.0) < 10 * logreg.STEP_TOL


@pytest.mark.parametrize("n", [40, 700])
def test_problems_fitted_together_equal_each_fitted_alone(n):
    rng = np.random.default_rng(n)
    x, y, offsets, weights, fit_a, fields = problems(n, 4, rng)
    together = logreg.fit_path(x, y, offsets, weights, CS, fit_a, fields)
    for j in range(offsets.shape[1]):
        alone = logreg.fit_path(x, y, offsets[:, j:j + 1], weights[:, j:j + 1], CS, fit_a[j:j + 1], fields)
        for (w, a, b), (w1, a1, b1) in zip(together, alone):
            np.testing.assert_allclose(w[:, j], w1[:, 0], rtol=0, atol=1e-9)
            np.testing.assert_allclose([a[j], b[j]], [a1[0], b1[0]], rtol=0, atol=1e-9)


def test_a_constant_offset_and_one_class_folds_do_not_break_the_solver():
    rng = np.random.default_rng(3)
    x, y, offsets, weights, fit_a, fields = problems(60, 2, rng)
    offsets[:, 0] = 0.7  # a and b then move the margins alike: the Hessian is singular along a - b / 0.7
    path = logreg.fit_path(x, y, offsets, weights, CS, fit_a, fields)
    for c, (w, a, b) in zip(CS, path):
        assert np.isfinite(w).all() and np.isfinite(a).all() and np.isfinite(b).all()
        w_ref, a_ref, b_ref = reference(x, y, offsets[:, 0], weights[:, 0], c, True)
        ours = objective(x, y, offsets[:, 0], weights[:, 0], c, w[:, 0], a[0], b[0])
        assert ours <= objective(x, y, offsets[:, 0], weights[:, 0], c, w_ref, a_ref, b_ref) + 1e-7 * ours


def test_the_row_envelope_is_exact_whatever_the_memory_layout():
    """The open problems are column slices (Fortran-ordered): the per-row
    solve for the lone columns' weights must hold there too."""
    rng = np.random.default_rng(5)
    n, P = 200, 6
    zeta, y = rng.normal(scale=3.0, size=(n, P)), (rng.random((n, 1)) < 0.3).astype(np.float64)
    s = (rng.random((n, P)) < 0.8) * rng.uniform(0.01, 2.0)
    v2 = (rng.random((n, 1)) < 0.7) * rng.uniform(0.0, 5.0, size=(n, 1))
    open_ = np.array([0, 2, 3, 5])
    for z, w in ((zeta, s), (zeta[:, open_], s[:, open_])):
        value, first, second, u = logreg._envelope(z, w, v2, y)
        np.testing.assert_allclose(u, z - v2 * first, atol=1e-9)  # the margin with the lone weights at their best
        # stationarity of s logloss(y, u) + (u - zeta)^2 / (2 v2) in u, and its value
        np.testing.assert_allclose(u - z + v2 * w * (0.5 * (1 + np.tanh(0.5 * u)) - y), 0.0, atol=1e-9)
        np.testing.assert_allclose(value, w * (np.logaddexp(0.0, u) - y * u) + 0.5 * v2 * first ** 2, rtol=1e-9)
        assert np.all(second >= 0.0) and np.all(second <= w / 4 + 1e-12)


@pytest.mark.parametrize("how", ["near", "far"])
def test_the_row_envelope_from_a_warm_start_is_the_same(how):
    """The line search starts each row's solve from its root at the last
    margins: near them it settles in fewer steps, far off (where Newton's
    steps from an arbitrary start may overshoot) it starts again from 0;
    either way the result is the cold start's."""
    rng = np.random.default_rng(9)
    n, P = 300, 4
    zeta, y = rng.normal(scale=3.0, size=(n, P)), (rng.random((n, 1)) < 0.4).astype(np.float64)
    s = rng.uniform(0.01, 3.0, size=(n, P))
    v2 = rng.uniform(0.0, 8.0, size=(n, 1))       # k = v2 s up to 24: far outside Newton's easy range
    cold = logreg._envelope(zeta, s, v2, y)
    start = (logreg._envelope(zeta - 0.05, s, v2, y)[3] if how == "near"
             else rng.choice([-60.0, 60.0], size=(n, P)))
    warm = logreg._envelope(zeta, s, v2, y, start)
    for a, b in zip(cold, warm):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
