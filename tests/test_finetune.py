"""Adapting by fine-tuning (runner.adaptation=finetune) and routing by the seeds."""
import numpy as np
import paddle
import pytest

from conftest import make_frame, random_rows, random_task
from dygraph_model import DygraphModel
from metaheac import routing
from metaheac.adapt import adapt
from metaheac.learned import Learned
from metaheac.rows import cut
from metaheac.scoring import network_scores


def setup(tiny_config, seed=0, hyper=None, overrides=(), **runner):
    config = tiny_config(runner={"adaptation": "finetune", "route_prior": 0.0, "infer_batch_size": 8, **runner},
                         hyper=hyper, overrides=overrides)
    paddle.seed(seed)
    net = DygraphModel().create_model(config)
    task = random_task(net.schema, np.random.default_rng(seed), batch=40)
    stage1 = {"aid": 1, "rows": task["sup_rows"], "lengths": task["sup_lengths"], "labels": task["sup_labels"]}
    return config, net, stage1


def run(config, net, stage1, seed=1, trained_ad_rows=None):
    return adapt(Learned(net, None, trained_ad_rows), stage1, config, np.random.default_rng(seed))


def changed(net, params, uniq):
    own = dict(net.named_parameters())
    out = {}
    for name, t in params.items():
        base = (cut(net, name, own[name], paddle.to_tensor(uniq)) if name in net.row_tables else own[name]).numpy()
        out[name] = not np.array_equal(base, t.numpy())
    return out


def test_epochs_over_all_parameters_leave_the_network_as_it_was(tiny_config):
    config, net, stage1 = setup(tiny_config, infer_train_epoch=3)  # 40 seeds, batch 8 -> 5 steps an epoch
    before = {n: p.numpy().copy() for n, p in net.named_parameters()}
    tuned = run(config, net, stage1)
    assert tuned.steps == 15 and tuned.method == "finetune" and tuned.describe() == "15 fine-tune steps"
    assert all(changed(net, tuned.params, tuned.uniq).values())
    for n, p in net.named_parameters():  # the meta-learned model itself is untouched
        np.testing.assert_array_equal(before[n], p.numpy())


def test_zero_fine_tuning_epochs_scores_the_meta_learned_model(tiny_config):
    config, net, stage1 = setup(tiny_config, infer_train_epoch=0)
    tuned = run(config, net, stage1)
    assert tuned.steps == 0
    assert not any(changed(net, tuned.params, tuned.uniq).values())
    np.testing.assert_array_equal(tuned.score(stage1["rows"], stage1["lengths"]),
                                  network_scores(net, stage1["rows"], stage1["lengths"]))


@pytest.mark.parametrize("hyper", [{"wide": True, "gate": "lookup"}, {"wide": False, "gate": "mlp"}])
def test_row_tables_fine_tune_and_merge(tiny_config, hyper):
    """The wide and gate tables are cut to the campaign's rows like the
    embedding, adapt, and merge back into a full state dict (export) that
    scores as the fine-tuned campaign does."""
    config, net, stage1 = setup(tiny_config, hyper=hyper)
    tuned = run(config, net, stage1)
    assert all(changed(net, tuned.params, tuned.uniq).values())
    state = tuned.state_dict()
    for name in net.row_tables:
        merged = cut(net, name, state[name], paddle.to_tensor(tuned.uniq))  # the campaign's rows of the merged table
        np.testing.assert_array_equal(merged.numpy(), tuned.params[name].numpy())
    fresh = DygraphModel().create_model(config)
    fresh.set_state_dict(state)
    np.testing.assert_allclose(network_scores(fresh, stage1["rows"], stage1["lengths"]),
                               tuned.score(stage1["rows"], stage1["lengths"]), rtol=1e-5, atol=1e-7)


def test_learning_rate_scales_apply_to_fine_tuning(tiny_config):
    """optimizer.*_lr_scale multiply the fine-tuning rate as they do the outer one:
    one Adam step moves each weight by about its learning rate."""
    def one_step(scale):
        overrides = [f"hyper_parameters.optimizer.{k}_lr_scale={scale}" for k in ("wide", "gate")]
        config, net, stage1 = setup(tiny_config, hyper={"wide": True, "gate": "lookup"}, overrides=overrides,
                                    infer_train_epoch=1, infer_batch_size=40)
        tuned = run(config, net, stage1)
        own = dict(net.named_parameters())
        start = {n: cut(net, n, own[n], paddle.to_tensor(tuned.uniq)) if n in net.row_tables else own[n]
                 for n in tuned.params}
        return {n: np.abs(t.numpy() - start[n].numpy()).max() for n, t in tuned.params.items()}

    base, scaled = one_step(1.0), one_step(3.0)
    for name in ("wide", "gate_table"):
        assert scaled[name] == pytest.approx(3.0 * base[name], rel=1e-3), name
    assert scaled["critic_w"] == pytest.approx(base["critic_w"], rel=1e-3)


def routed_setup(tiny_config, truth, own_id=1, n=300, **runner):
    """A lookup-gated net whose adCategoryId 1 routes to expert 0 and 2 to
    expert 1, the experts' regressions on age pointing opposite ways, and a
    seed set of campaign id `own_id` labelled by expert `truth`'s model."""
    hyper = {"wide": True, "gate": "lookup", "gate_fields": ["adCategoryId"]}
    config, net, _ = setup(tiny_config, hyper=hyper, **{"infer_train_epoch": 0, **runner})
    schema = net.schema
    age, cat = schema.static[0], next(f for f in schema.ad if f.name == "adCategoryId")
    gate = np.zeros(net.gate_table.shape, np.float32)
    own_rows = cat.offset - net.gate_base  # the gate table holds the ad rows only
    gate[own_rows + 1, 0] = gate[own_rows + 2, 1] = 10.0
    wide = np.zeros(net.wide.shape, np.float32)
    slope = np.linspace(-3.0, 3.0, age.vocab_size)
    wide[age.offset:age.offset + age.vocab_size, 0], wide[age.offset:age.offset + age.vocab_size, 1] = slope, -slope
    net.gate_table.set_value(gate)
    net.wide.set_value(wide)
    net.critic_w.set_value(np.zeros(net.critic_w.shape, np.float32))  # the regressions alone score
    rng = np.random.default_rng(0)
    ids, lengths = random_rows(schema, rng, n)
    ids[:, schema.num_id_cols - len(schema.data_ad) + schema.data_ad.index(cat)] = own_id
    p = 1.0 / (1.0 + np.exp(-(slope if truth == 0 else -slope)[ids[:, 0]]))
    stage1 = {"aid": own_id, "rows": schema.table_rows(ids), "lengths": lengths,
              "labels": (rng.random(n) < p).astype(np.float32)}
    return config, net, stage1, cat


def test_seeds_route_a_campaign_whose_gate_id_misdescribes_it(tiny_config):
    config, net, stage1, cat = routed_setup(tiny_config, truth=1, route_prior=0.1)
    tuned = run(config, net, stage1)
    assert tuned.route["field"] == "adCategoryId"
    assert (tuned.route["own_id"], tuned.route["id"]) == (1, 2)
    assert tuned.route["own_probability"] < 1e-6
    assert routing.describe_route(tuned.route).startswith("adCategoryId 1 -> 2")
    # the campaign's own gate row now holds id 2's logits (no fine-tuning steps here)
    own = int(np.searchsorted(tuned.uniq, cat.offset + 1))
    two = cat.offset + 2 - net.gate_base  # id 2's row of the gate table (it holds the ad rows only)
    np.testing.assert_array_equal(tuned.params["gate_table"].numpy()[own], net.gate_table.numpy()[two])
    # so it scores its seeds as id 2 does
    as_two = stage1["rows"].copy()
    as_two[as_two == cat.offset + 1] = cat.offset + 2
    np.testing.assert_allclose(tuned.score(stage1["rows"], stage1["lengths"]),
                               network_scores(net, as_two, stage1["lengths"]), atol=1e-6)
    assert tuned.describe().startswith("0 fine-tune steps; routed adCategoryId 1 -> 2")
    # the merged state (export) carries the routing under the campaign's own id
    state = tuned.state_dict()
    np.testing.assert_array_equal(state["gate_table"].numpy()[two - 1], net.gate_table.numpy()[two])


def test_routing_never_picks_an_id_training_did_not_see(tiny_config):
    """Only the ad rows of meta-training's campaigns are candidates: the id
    that fits the seeds best (2) is left out when training never saw it."""
    config, net, stage1, cat = routed_setup(tiny_config, truth=1, route_prior=0.1)
    first = run(config, net, stage1).route
    assert first["id"] == 2 and first["margin"] > 0  # held out: every other seed
    assert run(config, net, stage1).route == first  # deterministic
    trained = frozenset(r for r in range(net.schema.num_rows) if r != cat.offset + 2)
    route = run(config, net, stage1, trained_ad_rows=trained).route
    assert route is None or route["row"] in trained


def test_routing_keeps_a_well_described_campaign_and_is_off_at_prior_0(tiny_config):
    config, net, stage1, _ = routed_setup(tiny_config, truth=0, route_prior=0.1)
    assert run(config, net, stage1).route is None  # its own id fits its seeds best
    config, net, stage1, _ = routed_setup(tiny_config, truth=1)
    assert config["runner.route_prior"] == 0.0
    assert run(config, net, stage1).route is None  # PaddleRec behaviour: no routing


def test_a_weak_seed_set_keeps_the_prior(tiny_config):
    """Two seeds (at most 2 x 3 nats of evidence: the logits are within +-3)
    do not outweigh a prior of log(3 / 1e-4) = 10.3 nats on the campaign's own
    ids; a weak prior lets the same seeds re-route it."""
    config, net, stage1, _ = routed_setup(tiny_config, truth=1, n=2, route_prior=1e-4)
    assert run(config, net, stage1).route is None
    config, net, stage1, _ = routed_setup(tiny_config, truth=1, n=2, route_prior=0.5)
    assert run(config, net, stage1).route is not None


@pytest.mark.parametrize("gate", ["mlp", "lookup"])
@pytest.mark.parametrize("mlp_dims, wide", [([6, 5], True), ([8], True), ([8], False)])
def test_forward_routes_scores_each_routing_like_the_rerouted_rows(tiny_config, gate, mlp_dims, wide):
    """forward_routes scores all routings in one pass over the experts; forward_rows one routing at a time."""
    config = tiny_config(hyper={"wide": wide, "gate": gate, "gate_fields": ["adCategoryId", "productType"],
                                "mlp_dims": mlp_dims})
    paddle.seed(0)
    net = DygraphModel().create_model(config)
    schema = net.schema
    ids, lengths = random_rows(schema, np.random.default_rng(0), n=10)
    rows = schema.table_rows(ids)
    columns = routing.gate_columns(net)
    routes = [None] + [(j, field.offset + field.vocab_size - 1) for j, (_, field) in enumerate(columns)]
    out = net.forward_routes(paddle.to_tensor(rows), paddle.to_tensor(lengths), routes).numpy()
    assert out.shape == (len(routes), 10)
    for r, route in enumerate(routes):
        rerouted = rows.copy()
        if route is not None:
            rerouted[:, columns[route[0]][0]] = route[1]
        expected = net.forward_rows(paddle.to_tensor(rerouted), paddle.to_tensor(lengths)).numpy()
        np.testing.assert_allclose(out[r], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0], out[1])  # the routings do differ


def test_routing_reads_a_bounded_number_of_seeds(tiny_config, monkeypatch):
    """Past ROUTE_MAX_SEEDS seeds the evidence is read on an evenly spaced
    subset: the decision stands, and the scoring passes see only the subset."""
    config, net, stage1, _ = routed_setup(tiny_config, truth=1, n=300, route_prior=0.1)
    seen = []
    real = net.forward_routes
    monkeypatch.setattr(net, "forward_routes", lambda rows, *a, **k: seen.append(rows.shape[0]) or real(rows, *a, **k))
    monkeypatch.setattr(routing, "ROUTE_MAX_SEEDS", 50)
    route = routing.choose_route(Learned(net), stage1, 0.1)
    assert (route["own_id"], route["id"]) == (1, 2)
    assert sum(seen) == 50


def test_a_one_class_seed_set_is_not_routed(tiny_config, caplog):
    """Positives alone favour whichever route scores them highest, not the one
    that separates the campaign's users: a warning, and the campaign keeps its ids."""
    config, net, stage1, _ = routed_setup(tiny_config, truth=1, route_prior=0.1)
    assert run(config, net, stage1).route is not None  # with both classes, these seeds re-route it
    stage1 = {**stage1, "labels": np.ones_like(stage1["labels"]), "aid": 42}
    assert run(config, net, stage1).route is None
    assert "campaign 42: its 300 seeds are all of one class" in caplog.text


def test_training_campaigns_ad_rows_travel_with_the_checkpoint(tiny_config, tmp_path):
    """The reader lists the ad rows of the training campaigns; the trainer saves
    them in state.json and loading a checkpoint gives them to the adaptation."""
    from reader_train import RecDataset
    from tools.utils.checkpoint import load_checkpoint, save_checkpoint

    config, net, _ = setup(tiny_config)
    schema = net.schema
    frame = make_frame(schema, np.random.default_rng(4), [6, 5, 7])
    frame.to_pickle(tmp_path / "train_stage1.pkl")
    reader = RecDataset([str(tmp_path / "train_stage1.pkl")], config)
    ad = [f for f in schema.data_ad]
    expected = {f.offset + int(v) for f in ad for v in frame[f.name].unique()}
    assert set(reader.ad_rows) == expected
    save_checkpoint(str(tmp_path / "ck"), 0, net, None, config, {"epoch": 0, "complete": True,
                                                                 "trained_ad_rows": reader.ad_rows})
    _, learned = load_checkpoint(str(tmp_path / "ck" / "0"), DygraphModel().create_model(config))
    assert learned.trained_ad_rows == expected
