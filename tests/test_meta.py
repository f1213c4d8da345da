"""The meta-learning step: fast weights, exact second order, touched rows."""
import numpy as np
import paddle
import pytest

from conftest import random_rows, random_task
from dygraph_model import DygraphModel
from metaheac import meta
from metaheac.loss import bce_loss
from metaheac.rows import build_meta_batch, cut
from metaheac.schema import schema_from_config


# The PaddleRec network, and the one with wide weights and lookup gates (two
# more tables indexed by the embedding's rows, and no gate MLPs).
ARCHS = {"mlp_gates": {"wide": False, "gate": "mlp"}, "wide_lookup": {"wide": True, "gate": "lookup"}}
PADDLEREC = ARCHS["mlp_gates"]


def build(config, seed=0):
    paddle.seed(seed)
    return DygraphModel().create_model(config)


def meta_batch(config, n=2, seed=1, dtype="float32"):
    """A meta-batch (tasks, rows) of n random tasks as the trainer feeds it (tensors)."""
    schema = schema_from_config(config)
    rng = np.random.default_rng(seed)
    raw_tasks, rows = build_meta_batch([random_task(schema, rng) for _ in range(n)], schema.num_rows)
    tasks = []
    for task in raw_tasks:
        t = {k: paddle.to_tensor(v) for k, v in task.items()}
        for k in ("sup_labels", "qry_labels"):
            t[k] = t[k].astype(dtype)
        tasks.append(t)
    return tasks, paddle.to_tensor(rows)


def task_tensors(config, seed):
    """One task with table rows (not remapped), as tensors."""
    schema = schema_from_config(config)
    return {k: paddle.to_tensor(v) for k, v in random_task(schema, np.random.default_rng(seed)).items()}


def whole_table_loss(net, tasks, rows, local_lr, order=1, inner_steps=1):
    """meta.meta_train_loss adapting the whole row tables, every task's ids
    mapped back to table rows: the reference touched-row adaptation must equal."""
    base = dict(net.named_parameters())
    losses = []
    for task in tasks:
        params = {**base, **{n: cut(net, n, base[n]) for n in net.row_tables}}                  # [R, E], ...
        table_rows = paddle.gather(rows, task["idx"])
        sup, qry = (paddle.gather(table_rows, task[k].reshape([-1])).reshape(task[k].shape)
                    for k in ("sup_rows", "qry_rows"))
        fast = meta.inner_adapt(net, params, sup, task["sup_lengths"], task["sup_labels"], local_lr, inner_steps,
                                second_order=order == 2)
        losses.append(bce_loss(net.forward_rows(qry, task["qry_lengths"], fast), task["qry_labels"]))
    return paddle.stack(losses).mean()


def meta_grads(net, batch, adapt_rows=True, **kw):
    net.clear_gradients()
    loss = (meta.meta_train_loss if adapt_rows else whole_table_loss)(net, *batch, **kw)
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in net.named_parameters()}
    net.clear_gradients()
    return float(loss), grads


def test_explicit_params_equal_own_params(tiny_config):
    config = tiny_config(hyper=PADDLEREC)
    net = build(config)
    task = task_tensors(config, 1)
    own = net.forward_rows(task["sup_rows"], task["sup_lengths"]).numpy()
    explicit = net.forward_rows(task["sup_rows"], task["sup_lengths"], dict(net.named_parameters())).numpy()
    assert np.array_equal(own, explicit)
    assert own.shape == (8,) and np.all((own > 0) & (own < 1))


def test_forward_with_per_field_ids_matches_table_rows(tiny_config):
    config = tiny_config(hyper=PADDLEREC)
    net = build(config)
    schema = net.schema
    ids, lengths = random_rows(schema, np.random.default_rng(3), n=5)
    fs, w = len(schema.static), schema.seq_width
    inputs = [paddle.to_tensor(ids[:, :fs]), paddle.to_tensor(ids[:, fs:fs + w]),
              paddle.to_tensor(lengths), paddle.to_tensor(ids[:, fs + w:])]
    a = net(inputs).numpy()
    b = net.forward_rows(paddle.to_tensor(ids + schema.col_offsets), paddle.to_tensor(lengths)).numpy()
    np.testing.assert_allclose(a, b, rtol=0, atol=0)


def test_sequence_padding_is_ignored(tiny_config):
    """Ids past a sequence's length must not change the output."""
    config = tiny_config(hyper=PADDLEREC)
    net = build(config)
    schema = net.schema
    rng = np.random.default_rng(4)
    ids = rng.integers(0, schema.col_vocab, size=(4, schema.num_id_cols))
    lengths = np.array([[1, 0]] * 4)
    other = ids.copy()
    fs = len(schema.static)
    other[:, fs + 1:fs + 5] = rng.integers(0, 10, size=(4, 4))  # padding of both sequence fields
    run = lambda x: net.forward_rows(paddle.to_tensor(x + schema.col_offsets), paddle.to_tensor(lengths)).numpy()  # noqa: E731
    np.testing.assert_array_equal(run(ids), run(other))


@pytest.mark.parametrize("arch", ARCHS)
def test_second_order_matches_finite_differences(tiny_config, float64, arch):
    config = tiny_config(hyper={"local_lr": 0.5, "inner_steps": 2, **ARCHS[arch]})
    net = build(config, seed=5)
    rng = np.random.default_rng(0)
    # Zero-initialised biases put ReLUs of dead inputs exactly on their kink,
    # where finite differences are meaningless; move them off it.
    for name, p in net.named_parameters():
        if "_b" in name:
            p.set_value(rng.normal(0, 0.1, size=p.shape))
    tasks = meta_batch(config, 2, seed=6, dtype="float64")
    kw = dict(local_lr=0.5, inner_steps=2)
    _, g2 = meta_grads(net, tasks, order=2, **kw)
    _, g1 = meta_grads(net, tasks, order=1, **kw)
    h = 1e-5
    max_rel_2nd, max_rel_1st = 0.0, 0.0
    # The inner loop needs gradients, so the loss is evaluated with autograd on.
    for name, p in net.named_parameters():
        base = p.numpy().copy()
        for _ in range(3):
            idx = tuple(rng.integers(0, s) for s in base.shape)
            if name in net.row_tables:  # a row the tasks actually use
                idx = (int(tasks[1].numpy()[rng.integers(0, 5)]), idx[1])
            vals = []
            for sign in (1, -1):
                bumped = base.copy()
                bumped[idx] += sign * h
                p.set_value(bumped)
                vals.append(float(meta.meta_train_loss(net, *tasks, order=2, **kw)))
            p.set_value(base)
            fd = (vals[0] - vals[1]) / (2 * h)
            scale = max(abs(fd), 1e-6)
            max_rel_2nd = max(max_rel_2nd, abs(g2[name][idx] - fd) / scale)
            max_rel_1st = max(max_rel_1st, abs(g1[name][idx] - fd) / scale)
    assert max_rel_2nd < 1e-5, max_rel_2nd
    assert max_rel_1st > 1e-3  # the check can tell first from second order


def test_first_order_matches_hand_computation(tiny_config):
    config = tiny_config(hyper=PADDLEREC)
    net = build(config, seed=2)
    schema = net.schema
    raw = random_task(schema, np.random.default_rng(3))
    batch = meta_batch(config, 1, seed=3)
    lr = 0.5
    _, got = meta_grads(net, batch, local_lr=lr, order=1, inner_steps=1, adapt_rows=False)

    # By hand, on the whole table: theta' = theta - lr * grad L_sup(theta);
    # the first-order meta-gradient is grad L_qry evaluated at theta'.
    from metaheac.loss import bce_loss
    t = {k: paddle.to_tensor(v) for k, v in raw.items()}
    params = dict(net.named_parameters())
    sup = bce_loss(net.forward_rows(t["sup_rows"], t["sup_lengths"], params), t["sup_labels"])
    names = list(params)
    grads = paddle.grad(sup, [params[n] for n in names])
    fast = {}
    for n, g in zip(names, grads):
        fast[n] = paddle.to_tensor(params[n].numpy() - lr * g.numpy())
        fast[n].stop_gradient = False
    qry = bce_loss(net.forward_rows(t["qry_rows"], t["qry_lengths"], fast), t["qry_labels"])
    want = paddle.grad(qry, [fast[n] for n in names])
    for n, w in zip(names, want):
        np.testing.assert_allclose(got[n], w.numpy(), rtol=1e-5, atol=1e-7, err_msg=n)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("order", [1, 2])
def test_touched_rows_equal_whole_table(tiny_config, order, arch):
    config = tiny_config(hyper=ARCHS[arch])
    net = build(config, seed=8)
    tasks = meta_batch(config, 2, seed=9)
    kw = dict(local_lr=0.5, order=order, inner_steps=2)
    loss_rows, g_rows = meta_grads(net, tasks, adapt_rows=True, **kw)
    loss_table, g_table = meta_grads(net, tasks, adapt_rows=False, **kw)
    assert loss_rows == pytest.approx(loss_table, rel=1e-6)
    for n in g_rows:
        np.testing.assert_allclose(g_rows[n], g_table[n], rtol=1e-4, atol=1e-7, err_msg=n)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("order", [1, 2])
def test_every_parameter_gets_a_gradient(tiny_config, order, arch):
    config = tiny_config(hyper=ARCHS[arch])
    net = build(config, seed=10)
    tasks = meta_batch(config, 2, seed=11)
    _, grads = meta_grads(net, tasks, local_lr=0.5, order=order, inner_steps=1, adapt_rows=True)
    assert set(grads) == {n for n, _ in net.named_parameters()}
    for n, g in grads.items():
        assert np.abs(g).sum() > 0, n


def test_inner_step_lowers_support_loss(tiny_config):
    from metaheac.loss import bce_loss
    config = tiny_config(hyper=PADDLEREC)
    net = build(config, seed=12)
    task = task_tensors(config, 13)
    params = dict(net.named_parameters())
    before = float(bce_loss(net.forward_rows(task["sup_rows"], task["sup_lengths"], params), task["sup_labels"]))
    fast = meta.inner_adapt(net, params, task["sup_rows"], task["sup_lengths"], task["sup_labels"],
                            lr=0.1, steps=1, second_order=False)
    after = float(bce_loss(net.forward_rows(task["sup_rows"], task["sup_lengths"], fast), task["sup_labels"]))
    assert after < before


def test_meta_step_leaves_layer_parameters_untouched(tiny_config):
    config = tiny_config(hyper=PADDLEREC)
    net = build(config, seed=14)
    before = {n: p.numpy().copy() for n, p in net.named_parameters()}
    meta.meta_train_loss(net, *meta_batch(config, 2, seed=15), local_lr=0.5, order=2, inner_steps=2)
    for n, p in net.named_parameters():
        np.testing.assert_array_equal(before[n], p.numpy())


@pytest.mark.parametrize("drop", ["static", "sequence"])
def test_schemas_without_a_user_group(tiny_config, drop):
    from conftest import TINY_FEATURES
    features = [f for f in TINY_FEATURES if f["group"] != drop]
    config = tiny_config(hyper={"features": features})
    net = build(config)
    _, grads = meta_grads(net, meta_batch(config, 2, seed=3), local_lr=0.5, order=2, inner_steps=1)
    assert all(np.abs(g).sum() > 0 for g in grads.values())


def test_gates_see_only_the_configured_ad_fields(tiny_config):
    """An ad field left out of gate_fields has no effect on the output; one in it has."""
    net = build(tiny_config(hyper={**PADDLEREC, "gate_fields": ["adCategoryId"]}))
    schema = net.schema
    ids, lengths = random_rows(schema, np.random.default_rng(5))
    run = lambda x: net.forward_rows(paddle.to_tensor(x + schema.col_offsets), paddle.to_tensor(lengths)).numpy()  # noqa: E731
    category, product = schema.num_id_cols - 2, schema.num_id_cols - 1  # ad columns: adCategoryId, productType
    other_product, other_category = ids.copy(), ids.copy()
    other_product[:, product] = (ids[:, product] + 1) % schema.col_vocab[product]
    other_category[:, category] = (ids[:, category] + 1) % schema.col_vocab[category]
    np.testing.assert_array_equal(run(ids), run(other_product))
    assert np.abs(run(ids) - run(other_category)).max() > 1e-6
    expert, critic = net.gates(paddle.to_tensor(ids + schema.col_offsets), paddle.to_tensor(lengths))
    assert expert.shape == [6, 3] and critic.shape == [6, 2]  # [B, K], [B, O]
    np.testing.assert_allclose(expert.sum(axis=1).numpy(), 1.0, rtol=1e-6)
    assert net.expert_gate_w0.shape[0] == 2 * 4  # (1 ad field + user mean) * embed_dim


@pytest.mark.parametrize("fields, needle", [(["campaignId"], "not ad fields"), (["age"], "not ad fields"),
                                            ([], "non-empty list"), (["productType", "productType"], "repeats")])
def test_bad_gate_fields_are_named(tiny_config, fields, needle):
    from metaheac.errors import ConfigError
    with pytest.raises(ConfigError, match="hyper_parameters.gate_fields") as err:
        build(tiny_config(hyper={"gate_fields": fields}))
    assert needle in str(err.value)


@pytest.mark.parametrize("arch", ARCHS)
def test_learning_rate_scales_multiply_the_outer_step(tiny_config, arch):
    """Adam's first step moves each weight by about the learning rate, so with
    the same gradients the steps of the scaled groups are the scale times as large."""
    def first_step(gate_scale, wide_scale):
        config = tiny_config(hyper=ARCHS[arch],
                             overrides=[f"hyper_parameters.optimizer.gate_lr_scale={gate_scale}",
                                        f"hyper_parameters.optimizer.wide_lr_scale={wide_scale}"])
        net = build(config, seed=20)
        optimizer = DygraphModel().create_optimizer(net, config)
        before = {n: p.numpy().copy() for n, p in net.named_parameters()}
        meta.meta_train_loss(net, *meta_batch(config, 2, seed=21), local_lr=0.5).backward()
        optimizer.step()
        return {n: np.abs(p.numpy() - before[n]).max() for n, p in net.named_parameters()}

    base, scaled = first_step(1.0, 1.0), first_step(4.0, 8.0)
    ratios = {"gate_table": 4.0, "wide": 8.0}
    for name in base:
        ratio = ratios.get(name, 4.0 if "_gate_" in name else 1.0)
        assert scaled[name] == pytest.approx(ratio * base[name], rel=1e-3), name


def test_lookup_gates_follow_only_the_gate_field_ids(tiny_config):
    """Lookup gates are a function of the campaign's gate-field ids alone: the
    same for every user, different for another category."""
    def gates(ids, lengths):
        net = build(tiny_config(hyper={"gate": "lookup", "gate_fields": ["adCategoryId"]}), seed=3)
        schema = net.schema
        expert, critic = net.gates(paddle.to_tensor(ids + schema.col_offsets), paddle.to_tensor(lengths))
        return net, expert.numpy(), critic.numpy()

    config = tiny_config(hyper={"gate": "lookup"})
    schema = schema_from_config(config)
    ids, lengths = random_rows(schema, np.random.default_rng(4), min_length=1)
    category = schema.num_id_cols - 2
    ids[:, category] = 1                      # one campaign, different users
    net, expert, critic = gates(ids, lengths)
    assert expert.shape == (6, 3) and critic.shape == (6, 2)  # [B, K], [B, O]
    np.testing.assert_allclose(expert.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(expert, np.broadcast_to(expert[0], expert.shape), rtol=1e-6)
    assert not any("expert_gate" in n or "critic_gate" in n for n, _ in net.named_parameters())
    other = ids.copy()
    other[:, category] = 2
    assert np.abs(gates(other, lengths)[1] - expert).max() > 1e-3


def test_wide_weights_start_at_zero_and_score_user_ids_only(tiny_config):
    """The wide table starts at 0 (the output equals the network without it);
    a user id's wide weight moves the output, an ad id's does not."""
    config = tiny_config(hyper={"wide": True, "gate": "lookup"})
    net = build(config, seed=5)
    schema = net.schema
    ids, lengths = random_rows(schema, np.random.default_rng(6), min_length=1)
    rows = ids + schema.col_offsets
    run = lambda p: net.forward_rows(paddle.to_tensor(rows), paddle.to_tensor(lengths), p).numpy()  # noqa: E731
    params = {n: cut(net, n, t) if n in net.row_tables else t for n, t in net.named_parameters()}  # table rows
    assert not np.any(net.wide.numpy())
    without = {n: t for n, t in params.items() if n != "wide"}
    np.testing.assert_array_equal(run(params), run(without))

    def bumped(row):
        table = net.wide.numpy().copy()
        table[row] += 1.0
        return run({**params, "wide": paddle.to_tensor(table)})

    static_row, ad_row = rows[0, 0], rows[0, -1]
    assert abs(bumped(static_row)[0] - run(params)[0]) > 1e-3
    np.testing.assert_array_equal(bumped(ad_row), run(params))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("order", [1, 2])
def test_decay_in_the_table_gradient_equals_l2decay(tiny_config, order, arch):
    """The shipped step (row tables decayed by their gradient, meta.DecayedRows)
    gives bitwise the parameters of Adam with L2Decay on every parameter."""
    config = tiny_config(hyper={**ARCHS[arch], "meta_order": order, "optimizer": {"weight_decay": 0.05}})
    dm = DygraphModel()
    shipped, plain = build(config, seed=16), build(config, seed=16)
    opt = dm.create_optimizer(shipped, config)
    for p in plain.parameters():
        p.regularizer = None
    ref = paddle.optimizer.Adam(learning_rate=config["hyper_parameters.optimizer.global_learning_rate"],
                                parameters=plain.parameters(), weight_decay=paddle.regularizer.L2Decay(0.05))
    for p, q in zip(shipped.parameters(), plain.parameters()):
        q.optimize_attr["learning_rate"] = p.optimize_attr["learning_rate"]
    for step in range(3):
        batch = meta_batch(config, 2, seed=17 + step)
        loss, _, _ = dm.train_forward(shipped, [], ([{k: v.numpy() for k, v in t.items()} for t in batch[0]],
                                                     batch[1].numpy()), config)
        loss.backward()
        opt.step()
        opt.clear_grad()
        meta.meta_train_loss(plain, *batch, local_lr=config["hyper_parameters.local_lr"], order=order).backward()
        ref.step()
        ref.clear_grad()
    for (n, p), q in zip(shipped.named_parameters(), plain.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
