"""checkpoint.save_state: paddle.save's file, written one tensor at a time."""
import tracemalloc

import numpy as np
import paddle

from tools.utils import checkpoint


def _state(rows=2048):
    paddle.seed(0)
    layer = paddle.nn.Linear(rows, 1024)  # weight [2048, 1024]: 8 MB
    opt = paddle.optimizer.Adam(parameters=layer.parameters())
    layer(paddle.randn([2, rows])).sum().backward()
    opt.step()
    return layer.state_dict(), opt.state_dict()


def test_save_state_reads_back_as_paddle_save_writes(tmp_path):
    for state in _state():
        paddle.save(state, str(tmp_path / "ref"))
        checkpoint.save_state(state, str(tmp_path / "lean"))
        ref, lean = paddle.load(str(tmp_path / "ref")), paddle.load(str(tmp_path / "lean"))
        assert list(lean) == list(ref)
        for key, value in ref.items():
            if isinstance(value, paddle.Tensor):
                np.testing.assert_array_equal(lean[key].numpy(), value.numpy(), err_msg=key)
                assert lean[key].name == value.name  # Adam's state is matched by these names on resume
            else:
                assert lean[key] == value, key


def test_save_state_copies_one_tensor_at_a_time(tmp_path):
    tensors = {f"t{i}": paddle.randn([1024, 1024]) for i in range(6)}  # 4 MB each
    size = 4 * 1024 * 1024
    peaks = {}
    for name, save in (("paddle", paddle.save), ("lean", checkpoint.save_state)):
        tracemalloc.start()
        save(tensors, str(tmp_path / name))
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["paddle"] > 6 * size  # every tensor as numpy at once
    assert peaks["lean"] < 1.5 * size


def test_adam_moments_resume_and_mismatched_moments_are_named(tiny_config, tmp_path):
    """Saved Adam moments resume; moments of another shape are one DataError
    naming the file, not an assertion at the first step (Paddle sets them
    only then)."""
    import pytest

    from conftest import random_rows
    from dygraph_model import DygraphModel
    from metaheac.errors import DataError

    config = tiny_config(hyper={"wide": True, "gate": "lookup"})
    dm = DygraphModel()

    def stepped():
        net = dm.create_model(config)
        opt = dm.create_optimizer(net, config)
        ids, lengths = random_rows(net.schema, np.random.default_rng(1))
        rows = paddle.to_tensor(net.schema.table_rows(ids))
        net.forward_rows(rows, paddle.to_tensor(lengths)).sum().backward()
        opt.step()
        return net, opt

    net, opt = stepped()
    moments = opt.state_dict()
    checkpoint.save_state(net.state_dict(), str(tmp_path / checkpoint.PARAMS))
    checkpoint.save_state(moments, str(tmp_path / checkpoint.OPT))
    resumed, opt2 = stepped()
    checkpoint.load_checkpoint(str(tmp_path), resumed, opt2)
    opt2.step()  # the moments are set
    gate = net.gate_table.name
    for key in [k for k in moments if k.startswith(gate + "_moment")]:
        np.testing.assert_array_equal(opt2.state_dict()[key.replace(gate, resumed.gate_table.name)].numpy().shape,
                                      moments[key].numpy().shape)

    bad = dict(moments)
    emb = next(k for k in bad if k.startswith(net.embedding.name + "_moment1"))
    bad[emb] = bad[emb][1:]
    checkpoint.save_state(bad, str(tmp_path / checkpoint.OPT))
    with pytest.raises(DataError, match=r"rec\.pdopt: Adam's moments of 'embedding' have shape"):
        checkpoint.load_checkpoint(str(tmp_path), *stepped())
