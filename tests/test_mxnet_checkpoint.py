"""frameworks/mxnet/checkpoint.py: native files round-trip, keys and layouts invert, the AlexNet maps are alexnet.py's,
and the BatchNorm it builds from a state reads back (frameworks/mxnet/user_layers.py) with that state's conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bnparity.frameworks.mxnet._mx")

from bnparity.frameworks.checkpoints import BNConventions, BNState, CheckpointError  # noqa: E402
from bnparity.frameworks.mxnet.checkpoint import CheckpointFormat  # noqa: E402
from bnparity.frameworks.mxnet.user_layers import UserLayers  # noqa: E402
from bnparity.reference.alexnet import alexnet_spec, init_params  # noqa: E402

FMT = CheckpointFormat()
ARCH = alexnet_spec("tiny", norm="bn")


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    initial = init_params(ARCH, seed=0)
    return {k: (v + rng.standard_normal(v.shape) * 0.1).astype(np.float32) for k, v in initial.items()}


@pytest.mark.parametrize("suffix", [".params"])
def test_the_alexnet_round_trips_through_the_native_file(tmp_path: Path, suffix: str) -> None:
    params = _params()
    native = FMT.alexnet_write(ARCH, params, {})
    path = tmp_path / f"model{suffix}"
    FMT.write(path, native)
    back = FMT.read(path)
    assert list(back) == list(native)
    for key, value in native.items():
        np.testing.assert_array_equal(back[key], value)
    canonical, _ = FMT.alexnet_read(ARCH, back)
    for name, value in params.items():
        np.testing.assert_array_equal(canonical[name], value)


def test_keys_and_weight_layouts_invert_and_match_the_alexnet_maps() -> None:
    params = _params()
    native = FMT.alexnet_write(ARCH, params, {})
    for key in native:
        layer, leaf = FMT.split_key(key)
        assert FMT.native_key(layer, leaf) == key
    conv = next(k for k in native if FMT.split_key(k)[1] == FMT.weight_leaves["weight"] and native[k].ndim == 4)
    canonical = FMT.weight_to_canonical(native[conv])
    assert canonical.shape == params["conv1.weight"].shape
    np.testing.assert_array_equal(canonical, params["conv1.weight"])  # alexnet.py's OIHW map, the same
    np.testing.assert_array_equal(FMT.weight_from_canonical(canonical), native[conv])
    dense = params["fc3.weight"]
    np.testing.assert_array_equal(FMT.weight_to_canonical(FMT.weight_from_canonical(dense)), dense)
    with pytest.raises(CheckpointError, match="unknown key"):
        FMT.split_key("nolayer")


def test_a_misshapen_alexnet_is_refused_in_one_line() -> None:
    native = FMT.alexnet_write(ARCH, _params(), {})
    key = next(iter(native))
    with pytest.raises(CheckpointError, match="shape mismatch") as e:
        FMT.alexnet_read(ARCH, {**native, key: np.zeros((1, 2), np.float32)})
    assert "\n" not in str(e.value)


def test_an_unreadable_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / ("junk" + FMT.suffixes[0])
    path.write_bytes(b"junk" * 20)
    with pytest.raises(CheckpointError):
        FMT.read(path)


@pytest.mark.parametrize("ndim", [2, 4])
def test_the_built_batchnorm_holds_the_state_and_its_conventions(ndim: int) -> None:
    c = BNConventions(momentum=0.2, momentum_weighs="new" if FMT.cumulative_average else "old", eps=1e-3,
                      running_var="unbiased" if FMT.cumulative_average else "biased")
    state = BNState("bn", np.array([1.0, 2.0, 0.5], np.float32), np.array([0.0, 0.1, -0.1], np.float32),
                    np.array([0.3, -0.2, 1.0], np.float32), np.array([1.5, 0.25, 2.0], np.float32), None, c)
    user = UserLayers().read(*FMT.bn_layer(state, ndim))
    assert user.spec.momentum == pytest.approx(0.2) and user.spec.momentum_weighs == c.momentum_weighs
    assert user.spec.eps == pytest.approx(1e-3) and user.spec.running_var == c.running_var
    np.testing.assert_allclose(user.spec.init_running_var, state.running_var)
    np.testing.assert_allclose(user.spec.init_running_mean, state.running_mean)
    np.testing.assert_allclose(user.gamma, state.gamma)
    assert "BatchNorm" in FMT.constructor(state)
