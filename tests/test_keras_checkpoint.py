"""Keras' checkpoint format (frameworks/keras/checkpoint.py) against Keras' own saving code, on this process's backend:
a file `model.save_weights` wrote is read (layers addressed by class, names from the `vars` groups), a file written
here is one `model.load_weights` accepts, and what the file cannot say is refused in one line.
(tests/test_checkpoint_contract.py holds the format to the contract every framework's format passes.)"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import require

NAME = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
require(NAME)

import h5py  # noqa: E402
import keras  # noqa: E402

from bnparity.frameworks.checkpoints import BNConventions, BNState, CheckpointError, WeightTensor, read_layers  # noqa: E402
from bnparity.frameworks.keras.alexnet import AlexNet, from_canonical, to_canonical  # noqa: E402
from bnparity.frameworks.keras.checkpoint import CheckpointFormat  # noqa: E402
from bnparity.reference.alexnet import alexnet_spec, init_params  # noqa: E402

ARCH = alexnet_spec("tiny", norm="bn")
FMT = CheckpointFormat()
KERAS = BNConventions(momentum=0.99, momentum_weighs="old", eps=1e-3, running_var="biased")


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    initial = init_params(ARCH, seed=0)
    return {k: (v + rng.standard_normal(v.shape) * 0.1).astype(np.float32) for k, v in initial.items()}


def _small(*, center: bool = True, scale: bool = True) -> keras.Model:
    init = keras.initializers.GlorotUniform(seed=0)
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, kernel_initializer=init, name="conv"),
                              keras.layers.BatchNormalization(center=center, scale=scale, name="bn"),
                              keras.layers.Flatten(), keras.layers.Dense(2, name="fc")])
    bn = model.get_layer("bn")
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 4).astype(np.float32))
    return model


def test_a_file_keras_saved_is_read_to_the_same_network(tmp_path: Path) -> None:
    params = _params()
    path = tmp_path / "alexnet.weights.h5"
    from_canonical(ARCH, params, dtype=np.dtype(np.float32)).save_weights(path)
    tensors = FMT.read(path)
    assert "bn1/moving_variance" in tensors and tensors["conv1/kernel"].shape == (3, 3, 1, 6)  # HWIO
    canonical, batches = FMT.alexnet_read(ARCH, tensors)
    assert batches == {}
    for name, value in params.items():
        np.testing.assert_array_equal(canonical[name], value)


def test_a_file_written_here_is_one_keras_loads(tmp_path: Path) -> None:
    params = _params(1)
    path = tmp_path / "converted.weights.h5"
    FMT.write(path, FMT.alexnet_write(ARCH, params, {}))
    model = AlexNet(ARCH)
    model.load_weights(path)  # Keras' own loader: the class-and-position paths are Keras' own
    for name, value in to_canonical(ARCH, model).items():
        np.testing.assert_array_equal(value, params[name])
    x = np.random.default_rng(2).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(FMT.alexnet_logits(ARCH, params, x),
                                  keras.ops.convert_to_numpy(model(x, training=False)))


def test_without_an_architecture_the_layers_are_read_by_class(tmp_path: Path) -> None:
    model = _small()
    path = tmp_path / "small.weights.h5"
    model.save_weights(path)
    layers = read_layers(FMT, FMT.read(path), KERAS)
    bn = next(la for la in layers.layers if isinstance(la, BNState))
    assert bn.name == "bn" and bn.channels == 4 and bn.batches_tracked is None
    np.testing.assert_array_equal(bn.running_var, np.linspace(0.5, 2.0, 4).astype(np.float32))
    conv = next(la for la in layers.layers if isinstance(la, WeightTensor) and la.kind == "conv")
    np.testing.assert_array_equal(conv.weight, keras.ops.convert_to_numpy(model.get_layer("conv").kernel)
                                  .transpose(3, 2, 0, 1))  # HWIO -> OIHW
    assert conv.native_layout == "HWIO"


def test_a_batchnorm_without_gamma_and_beta_is_read_and_one_without_one_of_them_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.weights.h5"
    _small(center=False, scale=False).save_weights(path)
    assert {"bn/moving_mean", "bn/moving_variance"} <= set(FMT.read(path)) and "bn/gamma" not in FMT.read(path)
    half = tmp_path / "half.weights.h5"
    _small(center=False).save_weights(half)
    with pytest.raises(CheckpointError, match="whether it kept γ or β") as e:
        FMT.read(half)
    assert "\n" not in str(e.value)


def test_a_nested_model_names_its_layers_by_path(tmp_path: Path) -> None:
    inner = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="fc"),
                              keras.layers.BatchNormalization(name="bn")], name="block")
    outer = keras.Sequential([keras.Input((5,)), inner, keras.layers.Dense(2, name="head")], name="net")
    path = tmp_path / "nested.weights.h5"
    outer.save_weights(path)
    keys = set(FMT.read(path))
    assert {"block/fc/kernel", "block/bn/gamma", "block/bn/moving_variance", "head/kernel"} <= keys
    assert FMT.split_key("block/bn/gamma") == ("block.bn", "gamma")


def test_bad_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5" * 10)
    with pytest.raises(CheckpointError, match="not an HDF5 file"):
        FMT.read(junk)
    other = tmp_path / "other.weights.h5"
    with h5py.File(other, "w") as f:
        f["model_weights"] = np.zeros(3)  # a Keras 2 legacy file has model_weights/<layer>/...
    with pytest.raises(CheckpointError, match="not a Keras 3 weights file"):
        FMT.read(other)
    with pytest.raises(CheckpointError, match="no Keras layer holds"):
        FMT.write(tmp_path / "x.weights.h5", {"ln/gamma": np.ones(3)})
    with pytest.raises(CheckpointError, match="no cumulative average"):
        FMT.bn_layer(BNState("bn", np.ones(2), np.zeros(2), np.zeros(2), np.ones(2), None,
                             BNConventions(None, "new", 1e-5, "unbiased")), 2)


@pytest.mark.slow
def test_bnparity_convert_torch_to_keras_and_back(tmp_path: Path) -> None:
    """`bnparity convert --arch tiny`: a PyTorch AlexNet into a file Keras' load_weights takes (the same logits: without
    --count the running variances are copied), and the file Keras then saves back into PyTorch, exactly; every gated
    agreement holds both ways."""
    pytest.importorskip("torch")
    from bnparity.frameworks.registry import framework_module
    from bnparity.suites import cli
    from bnparity.suites.convert.records import read_convert

    torch_fmt = framework_module("torch", "checkpoint").CheckpointFormat()
    params = _params(3)
    src = tmp_path / "alexnet.pt"
    torch_fmt.write(src, torch_fmt.alexnet_write(ARCH, params, {}))
    out = tmp_path / "alexnet.weights.h5"
    assert cli.main(["convert", str(src), "--from", "torch", "--to", NAME, "--out", str(out), "--arch", "tiny"]) == 0
    assert read_convert(Path(f"{out}.bnparity.json")).passed
    model = AlexNet(ARCH)
    model.load_weights(out)
    x = np.random.default_rng(4).standard_normal((2, 1, 28, 28)).astype(np.float32)
    y_torch = torch_fmt.alexnet_logits(ARCH, params, x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x, training=False)), y_torch, rtol=1e-4, atol=1e-4)
    saved = tmp_path / "saved.weights.h5"
    model.save_weights(saved)
    back = tmp_path / "back.pt"
    assert cli.main(["convert", str(saved), "--from", NAME, "--to", "torch", "--out", str(back), "--arch", "tiny"]) == 0
    canonical, _ = torch_fmt.alexnet_read(ARCH, torch_fmt.read(back))
    for name, value in params.items():
        np.testing.assert_array_equal(canonical[name], value)
