"""`bnparity convert` end to end: small Conv-BN-ReLU-Dense-BN-Dense nets built and trained two steps in the source
framework, saved natively, converted, loaded in the target framework; bad input exits 2 with one line."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from bnparity.reference.conversion import Conversion
from bnparity.suites import cli
from bnparity.suites.convert import command
from bnparity.suites.convert.records import read_convert

X = np.random.default_rng(1).standard_normal((5, 2, 6, 6)).astype(np.float32) * 2 + 1
COUNT = 72  # m of the first BN on the training batches below: 8 images, 3×3 after the stride-2 convolution


# --- the same small net in each framework (children 0..7: conv, bn, relu, pool, flatten, dense, bn, dense) -------

def _torch_net():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))


def _torch_eval(net, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net.eval()(torch.from_numpy(x)).numpy()


def _flax_module():
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.Conv(4, (3, 3), strides=(2, 2), padding="VALID", name="0")(x.transpose(0, 2, 3, 1))
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_fast_variance=False,
                             name="1")(x)
            x = nn.relu(x).mean(axis=(1, 2))
            x = nn.Dense(6, name="5")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, use_fast_variance=False,
                             name="6")(x)
            return nn.Dense(3, name="7")(x)

    return Net()


def _mxnet_net():
    pytest.importorskip("bnparity.frameworks.mxnet._mx")
    from bnparity.frameworks.mxnet._mx import gluon, mx

    nn = gluon.nn
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, strides=2, in_channels=2), nn.BatchNorm(in_channels=4), nn.Activation("relu"),
            nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(6, in_units=4), nn.BatchNorm(in_channels=6),
            nn.Dense(3, in_units=6))
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(), ctx=mx.cpu())
    return net


def _batches(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((8, 2, 7, 7)) * 2 + 1).astype(np.float32) for _ in range(n)]


def make_torch(path: Path) -> np.ndarray:
    import torch

    net = _torch_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for x in _batches():
        loss = net.train()(torch.from_numpy(x)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(net.state_dict(), path)
    return _torch_eval(net, X)


def make_jax(path: Path) -> np.ndarray:
    import jax
    from flax import serialization

    net = _flax_module()
    variables = net.init(jax.random.key(0), _batches()[0], train=False)
    for x in _batches():
        def loss(params, stats, x=x):
            y, new = net.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
            return (y ** 2).mean(), new["batch_stats"]
        grads, stats = jax.grad(loss, has_aux=True)(variables["params"], variables["batch_stats"])
        params = jax.tree.map(lambda p, g: p - 0.1 * g, variables["params"], grads)
        variables = {"params": params, "batch_stats": stats}
    path.write_bytes(serialization.msgpack_serialize(jax.tree.map(np.asarray, variables)))
    return np.asarray(net.apply(variables, X, train=False))


def make_mxnet(path: Path) -> np.ndarray:
    from bnparity.frameworks.mxnet._mx import autograd, gluon, nd

    net = _mxnet_net()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    for x in _batches():
        with autograd.record():
            loss = (net(nd.array(x)) ** 2).mean()
        loss.backward()
        trainer.step(1)
    net.save_parameters(str(path))
    return net(nd.array(X)).asnumpy()


def load_torch(path: Path) -> np.ndarray:
    import torch

    net = _torch_net()
    net.load_state_dict(torch.load(path, weights_only=True))
    return _torch_eval(net, X)


def load_jax(path: Path) -> np.ndarray:
    from flax import serialization

    return np.asarray(_flax_module().apply(serialization.msgpack_restore(path.read_bytes()), X, train=False))


def load_mxnet(path: Path) -> np.ndarray:
    from bnparity.frameworks.mxnet._mx import nd

    net = _mxnet_net()
    net.load_parameters(str(path))
    return net(nd.array(X)).asnumpy()


MAKE = {"torch": (make_torch, ".pt"), "jax": (make_jax, ".msgpack"), "mxnet": (make_mxnet, ".params")}
LOAD = {"torch": load_torch, "jax": load_jax, "mxnet": load_mxnet}
PAIRS = [("torch", "jax"), ("torch", "mxnet"), ("jax", "torch"), ("mxnet", "torch")]


def _convert(src: Path, source: str, target: str, out: Path, *extra: str) -> int:
    return cli.main(["convert", str(src), "--from", source, "--to", target, "--out", str(out), *extra])


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_convert_verifies_and_the_file_loads_in_the_target(tmp_path: Path, source: str, target: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    make, suffix = MAKE[source]
    src = tmp_path / f"net{suffix}"
    y_source = make(src)
    out = tmp_path / f"out{MAKE[target][1]}"
    assert _convert(src, source, target, out, "--count", str(COUNT)) == 0, capsys.readouterr()
    doc = read_convert(Path(f"{out}.bnparity.json"))
    assert doc.passed and {r.name for r in doc.bn_layers} == {"1", "6"} and all(r.exact for r in doc.bn_layers)
    assert {a.quantity for a in doc.agreement} >= {"y_eval", "running_mean", "running_var"}
    assert "layers as: " in capsys.readouterr().out  # the constructor to write
    # without --count the variance is copied: the target's eval is the source's
    copied = tmp_path / f"copy{MAKE[target][1]}"
    assert _convert(src, source, target, copied) == 0
    np.testing.assert_allclose(LOAD[target](copied), y_source, rtol=1e-5, atol=1e-5)
    # with --count the variance follows the target's estimator: eval differs by it, little
    y_exact = LOAD[target](out)
    assert 0 < np.abs(y_exact - y_source).max() < 0.05


def test_a_skipped_variance_conversion_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("jax")
    src = tmp_path / "net.pt"
    make_torch(src)
    real = command.convert_state

    def skipping(source, **kw):  # claims exactness but does not apply (m − 1)/m
        return Conversion(spec=real(source, **{**kw, "count": None}).spec, exact=True)

    monkeypatch.setattr(command, "convert_state", skipping)
    assert _convert(src, "torch", "jax", tmp_path / "out.msgpack", "--count", str(COUNT)) == 1
    doc = read_convert(tmp_path / "out.msgpack.bnparity.json")
    assert [a.quantity for a in doc.agreement if a.gated and not a.passed] == ["running_var", "running_var"]


def test_without_a_count_the_approximation_is_stated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("bnparity.frameworks.mxnet._mx")
    src = tmp_path / "net.pt"
    make_torch(src)
    assert _convert(src, "torch", "mxnet", tmp_path / "o.params") == 0
    text = capsys.readouterr().out
    assert "approximated: 1: m (values per channel" in text and "--count" in text
    assert "not converted: 1.num_batches_tracked" in text  # never silently dropped


def test_the_cumulative_average_into_a_fixed_momentum_is_bounded(tmp_path: Path) -> None:
    pytest.importorskip("jax")
    src = tmp_path / "net.pt"
    make_torch(src)
    assert _convert(src, "torch", "jax", tmp_path / "o.msgpack", "--momentum", "none", "--count", str(COUNT)) == 0
    doc = read_convert(tmp_path / "o.msgpack.bnparity.json")
    assert doc.bn_layers[0].target.momentum == pytest.approx(1 - 1 / 3)  # num_batches_tracked = 2: weight 1/3
    assert any("cumulative average" in a for a in doc.approximations)


class NotAStateDict:
    pass


def _one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bnparity convert: error:" in err and expected in err, err


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("jax")
    base = ["--from", "torch", "--to", "jax", "--out"]
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 10)
    _one_line_exit_2(capsys, ["convert", str(garbage), *base, str(tmp_path / "a.msgpack")], "not a PyTorch checkpoint")
    pickled = tmp_path / "pickled.pt"
    with pickled.open("wb") as f:
        pickle.dump(NotAStateDict(), f)
    _one_line_exit_2(capsys, ["convert", str(pickled), *base, str(tmp_path / "b.msgpack")], "weights_only=True")
    unknown = tmp_path / "unknown.pt"
    torch.save(OrderedDict([("1.running_mean", torch.zeros(4)), ("1.running_var", torch.ones(4)),
                            ("1.running_foo", torch.ones(4))]), unknown)
    _one_line_exit_2(capsys, ["convert", str(unknown), *base, str(tmp_path / "c.msgpack")],
                     "unknown key '1.running_foo'")
    misshapen = tmp_path / "misshapen.pt"
    torch.save(OrderedDict([("1.weight", torch.ones(4)), ("1.bias", torch.zeros(4)),
                            ("1.running_mean", torch.zeros(4)), ("1.running_var", torch.ones(5))]), misshapen)
    _one_line_exit_2(capsys, ["convert", str(misshapen), *base, str(tmp_path / "d.msgpack")], "shape mismatch")
    good = tmp_path / "net.pt"
    make_torch(good)
    exists = tmp_path / "exists.msgpack"
    exists.write_bytes(b"mine")
    _one_line_exit_2(capsys, ["convert", str(good), *base, str(exists)], "never overwrites")
    assert exists.read_bytes() == b"mine"
    _one_line_exit_2(capsys, ["convert", str(good), *base, str(tmp_path / "e.pt")], "--out must end in")
    _one_line_exit_2(capsys, ["convert", str(good), *base, str(tmp_path / "f.msgpack"), "--arch", "tiny"],
                     "unknown keys for the tiny AlexNet")
    _one_line_exit_2(capsys, ["convert", str(tmp_path / "missing.pt"), *base, str(tmp_path / "g.msgpack")],
                     "no such file")
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".msgpack") == ["exists.msgpack"]
