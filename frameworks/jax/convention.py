"""Flax's BatchNorm conventions (flax 0.12.0, jax 0.7.1), as data. Proved by tests/test_jax_conventions.py."""

from bnparity.frameworks.conventions import Convention

_LINEN = "flax/linen/normalization.py"
_NNX = "flax/nnx/nn/normalization.py"

CONVENTION = Convention(
    framework="jax",
    layer="flax.linen.BatchNorm (flax.nnx.BatchNorm: same defaults, its own copy of the code)",
    momentum=0.99,
    momentum_weighs="old",
    eps=1e-5,
    running_var="biased",
    running_var_configurable=False,
    channel_axis=-1,
    variance_algorithm="fast",
    train_eval_switch="use_running_average=False (batch statistics) with apply(..., mutable=['batch_stats']) / "
                      "use_running_average=True (running statistics); linen requires the flag (constructor or "
                      "call), nnx defaults to False (training). No track_running_stats=False: pass "
                      "use_running_average=False in eval too and drop the returned update",
    scale_switch="use_scale=False removes γ, use_bias=False removes β, independently (no parameter is "
                 "created); no fix_gamma-style pitfall",
    running_stats_written="forward pass (training apply), returned as the mutated 'batch_stats' collection "
                          "(linen; the variables passed in are not modified, and init() never updates them); "
                          "nnx writes layer.mean/layer.var in place in __call__",
    citations={
        "momentum": f"{_LINEN}: BatchNorm (momentum: float = 0.99); BatchNorm.__call__: "
                    "ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean; "
                    f"{_NNX}: BatchNorm.__init__(momentum=0.99)",
        "eps": f"{_LINEN}: BatchNorm (epsilon: float = 1e-5); _normalize: lax.rsqrt(var + epsilon)",
        "running_var": f"{_LINEN}: BatchNorm.__call__: ra_var.value = momentum * ra_var.value + (1 - momentum) "
                       "* var, var from _compute_stats (a mean over the m values, the σ²_B that normalizes); "
                       "no argument rescales it",
        "channel_axis": f"{_LINEN}: BatchNorm (axis: int = -1), the feature axis (NHWC); "
                        f"{_NNX}: BatchNorm.__init__(axis=-1)",
        "variance_algorithm": f"{_LINEN}: BatchNorm (use_fast_variance: bool = True); _compute_stats: "
                              "var = jnp.maximum(0.0, mu2 - _abs_sq(mu)) (E[x²] − E[x]², negatives clipped "
                              "to 0); use_fast_variance=False: mean of _abs_sq(x - mu) (two passes). "
                              f"{_NNX}: BatchNorm.__init__(use_fast_variance=True), same formula",
        "half_precision": f"{_LINEN}: _compute_stats promotes x to at least float32 when "
                          "force_float32_reductions=True (default), BatchNorm.__call__ creates batch_stats in "
                          f"float32; {_NNX}: _compute_stats always promotes, mean/var BatchStat are float32. "
                          "So float16/bfloat16 statistics are float32; y has `dtype`, whose default (None) "
                          "is the promoted type of x and the params (param_dtype=float32): float32 for float16 x",
        "train_eval_switch": f"{_LINEN}: BatchNorm.__call__: merge_param('use_running_average', ...); "
                             "flax/linen/module.py: Module.apply(mutable=False); flax/errors.py: "
                             "ModifyScopeVariableError when batch_stats is not mutable; "
                             f"{_NNX}: BatchNorm.__init__(use_running_average=False), train()/eval()",
        "scale_switch": f"{_LINEN}: BatchNorm (use_bias=True, use_scale=True); _normalize: "
                        "mdl.param('scale', ...) only if use_scale, mdl.param('bias', ...) only if use_bias",
        "running_stats_written": f"{_LINEN}: BatchNorm.__call__: `if not self.is_initializing(): "
                                 "ra_mean.value = ...` in the forward; Module.apply returns (y, mutated "
                                 f"collections); {_NNX}: BatchNorm.__call__: self.mean[...] = ...",
    },
    constructor="flax.linen.BatchNorm(use_running_average=not train, momentum={m:g}, epsilon={eps:g}, "
                "use_fast_variance={fast})",
    batch_of_one="normalizes to β",
    proofs={
        "momentum": ("tests/test_jax_conventions.py::test_momentum_weighs_the_old_value_and_running_var_is_biased",),
        "running_var": ("tests/test_jax_adapter.py::test_realize_fixes_the_running_variance_flax_always_stores",),
        "eps": ("tests/test_jax_conventions.py::test_default_eps",),
        "channel_axis": ("tests/test_jax_conventions.py::test_channel_axis_is_last",
                         "tests/test_jax_adapter.py::test_layout_conversion_nhwc_equals_nchw_transposed"),
        "variance_algorithm": (
            "tests/test_jax_conventions.py::test_default_variance_is_the_fast_E_x2_minus_E_x_squared",
            "tests/test_jax_adapter.py::test_matched_mode_uses_two_pass_variance_and_defaults_mode_the_fast_one"),
        "train_eval_switch": ("tests/test_jax_conventions.py::test_train_eval_switch_linen",
                              "tests/test_jax_conventions.py::test_nnx_trains_by_default"),
        "running_stats_written": (
            "tests/test_jax_conventions.py::test_linen_writes_running_stats_in_the_forward_pass_and_not_in_init",
            "tests/test_jax_conventions.py::test_nnx_writes_running_stats_in_place_in_the_forward_pass"),
        "scale_switch": ("tests/test_jax_conventions.py::test_scale_and_bias_switch_independently",),
        "batch_of_one": ("tests/test_parity.py::test_a_1d_batch_of_one_raises_or_normalizes_to_beta_as_registered",),
    },
)
