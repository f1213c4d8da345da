"""Config loading/overrides/validation and the feature schema."""
import numpy as np
import pytest

from conftest import random_rows, write_config
from metaheac.errors import ConfigError
from tools.utils.yaml_config import load_config
from metaheac.columns import TENCENT_AD, TENCENT_SEQUENCE, TENCENT_STATIC
from metaheac.schema import schema_from_config

BIG_MAX_IDXS = [[3, 2, 855, 5, 7, 2, 1], [124, 82, 12, 263312, 49780, 10002, 9984], [78, 137, 14, 39, 32, 3]]


def test_overrides_are_typed(tmp_path):
    path = write_config(tmp_path / "c.yaml")
    config = load_config(path, ["runner.epochs=3", "hyper_parameters.local_lr=1", "runner.use_gpu=false",
                                "hyper_parameters.mlp_dims=[8, 4]", "runner.model_save_path=out"],
                         cwd=str(tmp_path / "elsewhere"))
    assert config["runner.epochs"] == 3
    assert config["hyper_parameters.local_lr"] == 1.0 and isinstance(config["hyper_parameters.local_lr"], float)
    assert config["runner.use_gpu"] is False
    assert config["hyper_parameters.mlp_dims"] == [8, 4]
    # -o paths are relative to where the command was typed
    assert config["runner.model_save_path"] == str(tmp_path / "elsewhere" / "out")


def test_yaml_paths_are_relative_to_the_config(tmp_path):
    config = load_config(write_config(tmp_path / "c.yaml", runner={"train_data_dir": "data/train"}))
    assert config["runner.train_data_dir"] == str(tmp_path / "data" / "train")


def test_the_defaults_are_the_shipped_algorithm(tmp_path):
    """Every setting config.yaml spells out is the code's default, but the
    paths, the data's schema and the infer epochs (derived: the last one)."""
    import os

    import yaml

    from conftest import ROOT
    from metaheac.config import SPEC

    shipped = load_config(os.path.join(ROOT, "config.yaml"))
    with open(os.path.join(ROOT, "config.yaml")) as f:
        tree = yaml.safe_load(f)
    written = {f"{section}.{k}" for section, keys in tree.items() for k in keys if k != "optimizer"} | \
        {f"hyper_parameters.optimizer.{k}" for k in tree["hyper_parameters"]["optimizer"]}
    own = {"hyper_parameters.max_idxs", "hyper_parameters.ad_crosses", "hyper_parameters.gate_fields",
           "runner.infer_start_epoch", "runner.infer_end_epoch"}
    for key in sorted(written - own):
        if not SPEC[key].path:
            assert SPEC[key].default == shipped[key], key
    config = load_config(write_config(tmp_path / "c.yaml", runner={"epochs": 4}))
    assert (config["runner.infer_start_epoch"], config["runner.infer_end_epoch"]) == (3, 4)
    assert config["runner.infer_start_epoch"] == 3


@pytest.mark.parametrize("override, needle", [
    ("runner.epoch=3", "unknown config key 'runner.epoch'"),
    ("hyper_parameters.batchsize=3", "unknown config key 'hyper_parameters.batchsize'"),
    ("runner.epochs=three", "runner.epochs must be int"),
    ("runner.epochs=1.5", "runner.epochs must be int"),
    ("runner.use_gpu=2", "runner.use_gpu must be bool"),
    ("hyper_parameters.num_expert=0", "hyper_parameters.num_expert must be > 0"),
    ("hyper_parameters.optimizer.global_learning_rate=-0.1", "global_learning_rate must be > 0"),
    ("hyper_parameters.meta_order=3", "hyper_parameters.meta_order must be one of 1, 2"),
    ("runner.adaptation=fine-tune", "runner.adaptation must be one of mixture, finetune, routed"),
    ("hyper_parameters.columns={labl: y}", "hyper_parameters.columns: unknown key(s) ['labl']"),
    ("hyper_parameters.mlp_dims=[4, 0]", "mlp_dims must be a non-empty list of positive ints"),
    ("runner.epochs", "expected key=value"),
])
def test_bad_overrides_name_the_key(tmp_path, override, needle):
    path = write_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=None) as err:
        load_config(path, [override])
    assert needle in str(err.value)


def test_unknown_key_in_yaml_names_file_and_key(tmp_path):
    path = write_config(tmp_path / "c.yaml", hyper={"embedding_dim": 8})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "hyper_parameters.embedding_dim" in str(err.value) and "c.yaml" in str(err.value)


def test_max_idxs_form_gives_the_tencent_schema(tmp_path):
    config = load_config(write_config(tmp_path / "c.yaml"), ["hyper_parameters.features=null",
                                                             f"hyper_parameters.max_idxs={BIG_MAX_IDXS}"])
    schema = schema_from_config(config)
    assert [f.name for f in schema.static] == TENCENT_STATIC
    assert [f.name for f in schema.sequence] == TENCENT_SEQUENCE
    assert [f.name for f in schema.ad] == TENCENT_AD
    assert [f.width for f in schema.sequence] == [10, 10, 10, 5, 5, 5, 5]
    assert [f.length_col for f in schema.sequence][0] == "interest1_length"
    # vocabulary = max_idx + 1 (PaddleRec's convention), one fused table
    vocab = [m + 1 for group in BIG_MAX_IDXS for m in group]
    assert [f.vocab_size for f in schema.fields] == vocab
    assert schema.num_rows == sum(vocab)
    assert schema.num_id_cols == 7 + 50 + 6


def test_offsets_derived_from_the_schema(tiny_config):
    schema = schema_from_config(tiny_config())
    # model order: static, sequence, ad; each field's block follows the previous one
    assert [f.name for f in schema.fields] == ["age", "gender", "interest1", "kw1", "adCategoryId", "productType"]
    assert [f.offset for f in schema.fields] == [0, 5, 8, 19, 32, 36]
    assert schema.num_rows == 39
    np.testing.assert_array_equal(schema.col_offsets, [0, 5, 8, 8, 8, 19, 19, 32, 36])
    np.testing.assert_array_equal(schema.col_vocab, [5, 3, 11, 11, 11, 13, 13, 4, 3])
    np.testing.assert_array_equal(schema.seq_field_of_col, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(schema.seq_pos, [0, 1, 2, 0, 1])


def test_a_cross_of_ad_fields_is_one_more_ad_field(tiny_config):
    """adCategoryId (4 ids) x productType (3): 12 combinations, rows after the
    data's fields; the rows get one more column, computed from the ids alone,
    the same in numpy (readers) and in the network (export); the converted
    data and its cache key do not change."""
    from dygraph_model import DygraphModel
    plain = schema_from_config(tiny_config())
    config = tiny_config(hyper={"ad_crosses": [["adCategoryId", "productType"]]})
    schema = schema_from_config(config)
    cross = schema.ad[-1]
    assert (cross.name, cross.vocab_size, cross.offset, cross.parts) == \
        ("adCategoryId*productType", 12, 39, ("adCategoryId", "productType"))
    assert schema.num_rows == 51 and schema.num_id_cols == plain.num_id_cols == 9
    assert [f.name for f in schema.data_ad] == ["adCategoryId", "productType"]
    assert schema.signature() == plain.signature()
    assert schema.gate_positions(["adCategoryId*productType"]) == [2]
    assert schema.id_label(cross, 2 * 3 + 1) == "2*1" and schema.id_label(schema.ad[0], 3) == "3"
    ids, lengths = random_rows(plain, np.random.default_rng(0), n=20)
    rows = schema.table_rows(ids)
    np.testing.assert_array_equal(rows[:, :9], plain.table_rows(ids))
    np.testing.assert_array_equal(rows[:, 9], 39 + ids[:, 7] * 3 + ids[:, 8])
    import paddle
    net = DygraphModel().create_model(config)
    t = [paddle.to_tensor(a) for a in (ids[:, :2], ids[:, 2:7], ids[:, 7:])]
    np.testing.assert_array_equal(net.table_rows(*t).numpy(), rows)


@pytest.mark.parametrize("crosses, needle", [
    ([["adCategoryId"]], "two or more ad field names"),
    (["adCategoryId"], "two or more ad field names"),
    ([["adCategoryId", "age"]], "['age'] are not ad fields"),
    ([["adCategoryId", "adCategoryId"]], "repeats a name"),
])
def test_bad_crosses_are_named(tiny_config, crosses, needle):
    with pytest.raises(ConfigError) as err:
        schema_from_config(tiny_config(hyper={"ad_crosses": crosses}))
    assert needle in str(err.value) and "hyper_parameters.ad_crosses" in str(err.value)


def test_a_huge_cross_is_refused():
    config = {"hyper_parameters.max_idxs": BIG_MAX_IDXS, "hyper_parameters.ad_crosses": [["advertiserId", "campaignId", "creativeSize", "productId"]]}
    with pytest.raises(ConfigError, match="id combinations"):
        schema_from_config(config)


@pytest.mark.parametrize("features, needle", [
    ([{"name": "a", "group": "user", "vocab_size": 3}], "group must be one of"),
    ([{"name": "a", "group": "static", "vocab_size": 0}], "vocab_size must be a positive int"),
    ([{"name": "a", "group": "sequence", "vocab_size": 3}], "need a positive int width"),
    ([{"name": "a", "group": "static", "vocab_size": 3, "width": 2}], "sequence fields only"),
    ([{"name": "a", "group": "static", "vocab_size": 3}, {"name": "a", "group": "ad", "vocab_size": 3}],
     "duplicate field names"),
    ([{"name": "a", "group": "ad", "vocab_size": 3}], "at least one static or sequence"),
    ([{"name": "a", "group": "static", "vocab_size": 3}], "at least one ad field"),
])
def test_bad_features_are_named(tiny_config, features, needle):
    with pytest.raises(ConfigError) as err:
        schema_from_config(tiny_config(hyper={"features": features}))
    assert needle in str(err.value)


def test_exactly_one_schema_form(tiny_config):
    with pytest.raises(ConfigError, match="exactly one"):
        schema_from_config(tiny_config(hyper={"max_idxs": BIG_MAX_IDXS}))
    with pytest.raises(ConfigError, match="max_idxs must be"):
        schema_from_config(tiny_config(hyper={"features": None, "max_idxs": [[1, 2], [3], [4]]}))


def test_config_doc_documents_every_key():
    from tools import config_doc
    with open(config_doc.PATH, encoding="utf-8") as f:
        assert f.read() == config_doc.markdown(), "docs/configs.md is stale; run python tools/config_doc.py"


@pytest.mark.parametrize("name", ["config.yaml", "config_big.yaml"])
def test_shipped_configs_build_the_measured_network(name):
    """Both shipped configs load, build the network the readme's accuracy
    table measures (wide weights, lookup gates on adCategoryId x productType,
    routing by the seeds) and score rows."""
    import os

    import paddle

    from dygraph_model import DygraphModel
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(os.path.join(root, name))
    assert config["hyper_parameters.wide"] and config["hyper_parameters.gate"] == "lookup"
    assert config["hyper_parameters.gate_fields"] == ["adCategoryId*productType"]
    assert config["runner.route_prior"] > 0
    net = DygraphModel().create_model(config)
    assert net.row_tables == ["embedding", "wide", "gate_table"]
    schema = net.schema
    assert [schema.ad[p].parts for p in net.gate_positions] == [("adCategoryId", "productType")]
    ids, lengths = random_rows(schema, np.random.default_rng(0), n=4)
    prob = net.forward_rows(paddle.to_tensor(schema.table_rows(ids)), paddle.to_tensor(lengths)).numpy()
    assert prob.shape == (4,) and np.all((prob > 0) & (prob < 1))
