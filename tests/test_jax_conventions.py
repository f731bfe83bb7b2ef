"""The proof of Flax's row in the conventions registry: every field, by running flax.linen and flax.nnx."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from conftest import require

from bnparity.frameworks.conventions import convention

APIS = ("linen", "nnx")


@pytest.fixture(scope="module")
def flax():
    """(jax, jax.numpy, flax.linen, flax.nnx); skips the module's tests when flax is not installed."""
    require("jax")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    return jax, jnp, nn, nnx


@pytest.fixture(scope="module")
def row():
    return convention("jax")


def run_flax(flax, api: str, x: np.ndarray, *, train: bool = True, stats: dict | None = None,
             params: dict | None = None, **options):
    """(y, batch statistics after the call, parameter names) of one call of Flax's BatchNorm on `x`.

    Eager (no jit), with Flax's own defaults except for `options`; `stats` and `params` replace the initial ones.
    """
    jax, jnp, nn, nnx = flax
    x = jnp.asarray(x)
    if api == "linen":
        module = nn.BatchNorm(**options)
        variables = dict(module.init(jax.random.key(0), x, use_running_average=True))
        names = set(variables.get("params", {}))  # the parameters Flax creates
        if stats is not None:
            variables["batch_stats"] = {k: jnp.asarray(v) for k, v in stats.items()}
        if params is not None:
            variables["params"] = {k: jnp.asarray(v) for k, v in params.items()}
        if train:
            y, updated = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
            return y, updated["batch_stats"], names
        return module.apply(variables, x, use_running_average=True), variables["batch_stats"], names
    layer = nnx.BatchNorm(x.shape[-1], rngs=nnx.Rngs(0), **options)
    for name, value in {**(stats or {}), **(params or {})}.items():
        getattr(layer, name).value = jnp.asarray(value)
    names = {n for n in ("scale", "bias") if getattr(layer, n) is not None}
    y = layer(x, use_running_average=not train)
    return y, {"mean": layer.mean.value, "var": layer.var.value}, names


def test_constructor_defaults_are_the_row(flax, row):
    _, _, nn, nnx = flax
    linen = nn.BatchNorm()
    layer = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
    for layer_defaults in ((linen.momentum, linen.epsilon, linen.axis, linen.use_fast_variance),
                           (layer.momentum, layer.epsilon, layer.axis, layer.use_fast_variance)):
        assert layer_defaults == (row.momentum, row.eps, row.channel_axis, row.variance_algorithm == "fast")
    assert (row.momentum_weighs, row.running_var, row.running_var_configurable) == ("old", "biased", False)


@pytest.mark.parametrize("api", APIS)
def test_momentum_weighs_the_old_value_and_running_var_is_biased(flax, row, api):
    x = np.array([[0.0], [2.0], [4.0]], dtype=np.float32)  # μ = 2, biased σ² = 8/3, unbiased σ² = 4
    _, stats, _ = run_flax(flax, api, x)
    m = row.momentum  # weighs the old value (0 for the mean, 1 for the variance)
    assert float(stats["mean"][0]) == pytest.approx(m * 0.0 + (1 - m) * 2.0, rel=1e-6)
    assert float(stats["var"][0]) == pytest.approx(m * 1.0 + (1 - m) * 8.0 / 3.0, rel=1e-6)
    assert float(stats["var"][0]) != pytest.approx(m * 1.0 + (1 - m) * 4.0, rel=1e-6)  # not unbiased
    assert float(stats["mean"][0]) != pytest.approx((1 - m) * 0.0 + m * 2.0, rel=1e-3)  # not "weighs new"


@pytest.mark.parametrize("api", APIS)
def test_default_eps(flax, row, api):
    x = np.array([[-1e-3], [1e-3]], dtype=np.float32)  # σ² = 1e-6, smaller than ε: ε shows in y
    y, _, _ = run_flax(flax, api, x)
    assert float(y[1, 0]) == pytest.approx(1e-3 / np.sqrt(1e-6 + row.eps), rel=1e-5)
    assert float(y[1, 0]) != pytest.approx(1e-3 / np.sqrt(1e-6 + 1e-3), rel=1e-2)  # MXNet's operator default


@pytest.mark.parametrize("api", APIS)
def test_channel_axis_is_last(flax, row, api):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 3, 2)) + np.array([10.0, -10.0])).astype(np.float32)
    y, stats, _ = run_flax(flax, api, x, momentum=0.0)  # momentum 0: the stored mean is μ_B
    assert row.channel_axis == -1
    assert stats["mean"].shape == (2,)
    np.testing.assert_allclose(np.asarray(stats["mean"]), x.mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y).mean(axis=(0, 1)), 0.0, atol=1e-5)


@pytest.mark.parametrize("api", APIS)
def test_default_variance_is_the_fast_E_x2_minus_E_x_squared(flax, row, api):
    rng = np.random.default_rng(0)
    x = (1e4 + rng.normal(size=(4096, 4))).astype(np.float32)  # κ = 1e4: x² ≈ 1e8 is resolved to 8 in float32
    exact = x.astype(np.float64).var(axis=0)
    var = {fast: np.asarray(run_flax(flax, api, x, momentum=0.0, **({} if fast is None else
                                                                       {"use_fast_variance": fast}))[1]["var"])
           for fast in (None, True, False)}
    np.testing.assert_array_equal(var[None], var[True])  # the default is use_fast_variance=True
    np.testing.assert_allclose(var[False], exact, rtol=1e-4)  # two passes: accurate
    assert np.abs(var[True] - exact).max() > 0.5  # E[x²] − E[x]²: visibly wrong (0 or 16 here, not ≈ 1)
    assert row.variance_algorithm == "fast"


@pytest.mark.parametrize("api", APIS)
def test_fast_variance_clips_negative_values_to_zero(flax, api):
    jax, jnp, _, _ = flax
    rng = np.random.default_rng(0)
    x = (1e4 + 0.01 * rng.normal(size=(1000, 64))).astype(np.float32)
    xj = jnp.asarray(x)
    raw = np.asarray(jax.lax.square(xj).mean((0,)) - jax.lax.square(xj.mean((0,))))  # Flax's ops, eagerly
    assert (raw < 0).any()  # the precondition: round-off makes E[x²] − E[x]² negative for some channels
    _, stats, _ = run_flax(flax, api, x, momentum=0.0)
    np.testing.assert_array_equal(np.asarray(stats["var"]), np.maximum(0.0, raw))


@pytest.mark.parametrize("api", APIS)
def test_half_precision_statistics_are_float32(flax, api):
    _, jnp, _, _ = flax
    rng = np.random.default_rng(0)
    x = (300 + rng.normal(size=(256, 2))).astype(np.float16)  # x² ≈ 9e4 overflows float16 (max 65504)
    y, stats, _ = run_flax(flax, api, x, momentum=0.0, dtype=jnp.float16)
    assert stats["var"].dtype == np.float32 and y.dtype == np.float16
    np.testing.assert_allclose(np.asarray(stats["var"]), x.astype(np.float64).var(axis=0), rtol=0.05)
    y_default, _, _ = run_flax(flax, api, x)  # dtype=None: promoted with the float32 params
    assert y_default.dtype == np.float32
    if api == "linen":  # only linen can turn the float32 reductions off: then E[x²] overflows
        _, stats16, _ = run_flax(flax, api, x, momentum=0.0, force_float32_reductions=False)
        assert not np.isfinite(np.asarray(stats16["var"])).any()


def test_nnx_is_a_separate_copy_of_the_code(flax):
    from flax.linen import normalization as linen_norm
    from flax.nnx.nn import normalization as nnx_norm

    assert nnx_norm._compute_stats is not linen_norm._compute_stats
    assert nnx_norm._normalize is not linen_norm._normalize
    assert "force_float32_reductions" in inspect.signature(linen_norm._compute_stats).parameters
    assert "force_float32_reductions" not in inspect.signature(nnx_norm._compute_stats).parameters


def test_train_eval_switch_linen(flax, row):
    jax, jnp, nn, _ = flax
    flax_errors = pytest.importorskip("flax.errors")
    x = jnp.asarray(np.array([[1.0], [3.0]], dtype=np.float32))
    module = nn.BatchNorm()
    variables = module.init(jax.random.key(0), x, use_running_average=True)
    with pytest.raises(ValueError, match='"use_running_average" must be passed'):
        module.apply(variables, x)
    with pytest.raises(flax_errors.ModifyScopeVariableError, match='collection "batch_stats" is immutable'):
        module.apply(variables, x, use_running_average=False)  # training without mutable=['batch_stats']
    assert "mutable=['batch_stats']" in row.train_eval_switch


@pytest.mark.parametrize("api", APIS)
def test_eval_uses_the_stored_statistics(flax, row, api):
    x = np.array([[1.0], [3.0], [8.0]], dtype=np.float32)
    stats = {"mean": np.array([0.5], np.float32), "var": np.array([4.0], np.float32)}
    y, after, _ = run_flax(flax, api, x, train=False, stats=stats)
    np.testing.assert_allclose(np.asarray(y)[:, 0], (x[:, 0] - 0.5) / np.sqrt(4.0 + row.eps), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(after["var"]), stats["var"])  # eval writes nothing
    y_train, _, _ = run_flax(flax, api, x, train=True, stats=stats)
    assert not np.allclose(np.asarray(y_train), np.asarray(y))  # training normalizes with μ_B, σ²_B


def test_nnx_trains_by_default(flax):
    _, jnp, _, nnx = flax
    layer = nnx.BatchNorm(1, rngs=nnx.Rngs(0))
    layer(jnp.asarray(np.array([[4.0], [6.0]], dtype=np.float32)))  # no use_running_average given
    assert float(layer.mean.value[0]) == pytest.approx(0.01 * 5.0, rel=1e-5)


@pytest.mark.parametrize("api", APIS)
def test_scale_and_bias_switch_independently(flax, row, api):
    x = np.array([[0.0, 1.0], [2.0, 5.0]], dtype=np.float32)  # x̂ = ∓1 / √(1 + ε/σ²) per channel
    bias = np.array([0.5, -0.5], np.float32)
    scale = np.array([3.0, 2.0], np.float32)
    y, _, names = run_flax(flax, api, x, use_scale=False, params={"bias": bias})
    assert names == {"bias"}
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + row.eps)
    np.testing.assert_allclose(np.asarray(y), x_hat + bias, rtol=1e-6)  # no γ at all, β still added
    y, _, names = run_flax(flax, api, x, use_bias=False, params={"scale": scale})
    assert names == {"scale"}
    np.testing.assert_allclose(np.asarray(y), scale * x_hat, rtol=1e-6)
    _, _, names = run_flax(flax, api, x, use_scale=False, use_bias=False)
    assert names == set()
    assert row.scale_switch.startswith("use_scale=False")


def test_linen_writes_running_stats_in_the_forward_pass_and_not_in_init(flax, row):
    jax, jnp, nn, _ = flax
    x = jnp.asarray(np.array([[4.0], [6.0]], dtype=np.float32))
    module = nn.BatchNorm(momentum=0.5)
    variables = module.init(jax.random.key(0), x, use_running_average=False)  # even in training mode
    assert float(variables["batch_stats"]["mean"][0]) == 0.0  # init() does not update
    _, updated = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])  # no backward
    assert float(updated["batch_stats"]["mean"][0]) == pytest.approx(0.5 * 0.0 + 0.5 * 5.0)
    assert float(variables["batch_stats"]["mean"][0]) == 0.0  # returned, not written in place
    assert row.running_stats_written.startswith("forward")


def test_nnx_writes_running_stats_in_place_in_the_forward_pass(flax):
    _, jnp, _, nnx = flax
    layer = nnx.BatchNorm(1, momentum=0.5, rngs=nnx.Rngs(0))
    layer(jnp.asarray(np.array([[4.0], [6.0]], dtype=np.float32)), use_running_average=False)  # no backward
    assert float(layer.mean.value[0]) == pytest.approx(2.5)
