"""Every framework's checkpoint.py (frameworks/<fw>/checkpoint.py, `CheckpointFormat`) under one contract: native
files round-trip, keys and layouts invert, the AlexNet maps are alexnet.py's, and the BatchNorm it builds from a state
reads back (frameworks/<fw>/user_layers.py) with that state's conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import framework_installed, runs_elsewhere

from bnparity.frameworks.checkpoints import BNConventions, BNState, CheckpointError, CheckpointFormat, load_format
from bnparity.frameworks.registry import framework_module, framework_names
from bnparity.reference.alexnet import alexnet_spec, init_params

ARCH = alexnet_spec("tiny", norm="bn")


def _formats() -> list:
    params = []
    for name in framework_names():
        reason = runs_elsewhere(name) or f"{name} is not installed"
        mark = pytest.mark.skipif(not framework_installed(name), reason=reason)
        params.append(pytest.param(name, id=name, marks=mark))
    return params


@pytest.fixture(params=_formats())
def framework(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fmt(framework: str) -> CheckpointFormat:
    found = load_format(framework)
    if not isinstance(found, CheckpointFormat):
        pytest.skip(found.reason)
    return found


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    initial = init_params(ARCH, seed=0)
    return {k: (v + rng.standard_normal(v.shape) * 0.1).astype(np.float32) for k, v in initial.items()}


def test_the_alexnet_round_trips_through_every_native_file(fmt: CheckpointFormat, tmp_path: Path) -> None:
    params = _params()
    native = fmt.alexnet_write(ARCH, params, {})
    for suffix in fmt.suffixes:
        path = tmp_path / f"model{suffix}"
        fmt.write(path, native)
        back = fmt.read(path)
        assert list(back) == list(native)
        for key, value in native.items():
            np.testing.assert_array_equal(back[key], value)
        canonical, _ = fmt.alexnet_read(ARCH, back)
        for name, value in params.items():
            np.testing.assert_array_equal(canonical[name], value)


def test_keys_and_weight_layouts_invert_and_match_the_alexnet_maps(fmt: CheckpointFormat) -> None:
    params = _params()
    native = fmt.alexnet_write(ARCH, params, {})
    for key in native:
        layer, leaf = fmt.split_key(key)
        assert fmt.native_key(layer, leaf) == key
    conv = next(k for k in native if fmt.split_key(k)[1] == fmt.weight_leaves["weight"] and native[k].ndim == 4)
    canonical = fmt.weight_to_canonical(native[conv])
    assert canonical.shape == params["conv1.weight"].shape
    np.testing.assert_array_equal(canonical, params["conv1.weight"])  # alexnet.py's OIHW map, the same
    np.testing.assert_array_equal(fmt.weight_from_canonical(canonical), native[conv])
    dense = params["fc3.weight"]
    np.testing.assert_array_equal(fmt.weight_to_canonical(fmt.weight_from_canonical(dense)), dense)
    with pytest.raises(CheckpointError, match="unknown key"):
        fmt.split_key("nolayer")


def test_a_misshapen_alexnet_is_refused_in_one_line(fmt: CheckpointFormat) -> None:
    native = fmt.alexnet_write(ARCH, _params(), {})
    key = next(iter(native))
    with pytest.raises(CheckpointError, match="shape mismatch") as e:
        fmt.alexnet_read(ARCH, {**native, key: np.zeros((1, 2), np.float32)})
    assert "\n" not in str(e.value)


def test_an_unreadable_file_is_a_checkpoint_error(fmt: CheckpointFormat, tmp_path: Path) -> None:
    path = tmp_path / ("junk" + fmt.suffixes[0])
    path.write_bytes(b"junk" * 20)
    with pytest.raises(CheckpointError):
        fmt.read(path)


@pytest.mark.parametrize("ndim", [2, 4])
def test_the_built_batchnorm_holds_the_state_and_its_conventions(framework: str, fmt: CheckpointFormat,
                                                                 ndim: int) -> None:
    c = BNConventions(momentum=0.2, momentum_weighs="new" if fmt.cumulative_average else "old", eps=1e-3,
                      running_var="unbiased" if fmt.cumulative_average else "biased")
    state = BNState("bn", np.array([1.0, 2.0, 0.5], np.float32), np.array([0.0, 0.1, -0.1], np.float32),
                    np.array([0.3, -0.2, 1.0], np.float32), np.array([1.5, 0.25, 2.0], np.float32), None, c)
    user = framework_module(framework, "user_layers").UserLayers().read(*fmt.bn_layer(state, ndim))
    assert user.spec.momentum == pytest.approx(0.2) and user.spec.momentum_weighs == c.momentum_weighs
    assert user.spec.eps == pytest.approx(1e-3) and user.spec.running_var == c.running_var
    np.testing.assert_allclose(user.spec.init_running_var, state.running_var)
    np.testing.assert_allclose(user.spec.init_running_mean, state.running_mean)
    np.testing.assert_allclose(user.gamma, state.gamma)
    assert "BatchNorm" in fmt.constructor(state)
