"""Flax's conventions (flax 0.12.0, jax 0.7.1), as data: BatchNorm's row (CONVENTION, proved by
tests/test_jax_conventions.py), the other normalizations' rows (LAYER_CONVENTIONS, proved by
tests/test_jax_norms.py) and BatchNorm across data-parallel replicas (REPLICA_CONVENTION, proved by
tests/test_jax_replicas.py)."""

from bnparity.frameworks.conventions import Convention, LayerConvention, ReplicaConvention

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

# The other normalizations' rows (flax 0.12.0): every citation is "file:LINE: `the code on that line` what it
# means"; the proofs run flax.linen and flax.nnx (tests/test_jax_norms.py).
_T = "tests/test_jax_norms.py::"
_SHARED_CITATIONS = {
    "variance_clip": f"{_LINEN}:142: `var = jnp.maximum(0.0, mu2 - _abs_sq(mu))` E[x²] − E[x]², negatives "
                     "clipped to 0; "
                     f"{_LINEN}:146: `_abs_sq(x - jnp.expand_dims(mu, axes))` the two-pass mean((x − μ)²) of "
                     "use_fast_variance=False; "
                     f"{_NNX}:120: `var = jnp.maximum(0.0, mu2 - _abs_sq(mu))` the same in nnx",
    "eps_use": f"{_LINEN}:206: `mul = lax.rsqrt(var + epsilon)` ε inside the root; "
               f"{_NNX}:169: `mul = lax.rsqrt(var + epsilon)` the same in nnx",
    "half_precision": f"{_LINEN}:112: `dtype = jnp.promote_types(dtype, jnp.float32)` statistics in at least "
                      "float32 (force_float32_reductions=True by default); "
                      f"{_NNX}:95: `dtype = jnp.promote_types(dtype, jnp.float32)` nnx always promotes",
}
_HALF_PRECISION_FACT = ("float16 and bfloat16 inputs get float32 statistics (linen's force_float32_reductions=True "
                        "default, nnx always); y has the layer's `dtype` (default: promoted from x and the "
                        "float32 params).")
_HALF_PRECISION_PROOF = (f"{_T}test_half_precision_statistics_are_float32", f"{_T}test_runs_in_half_precision")
_EPS_PROOFS = (f"{_T}test_default_eps", f"{_T}test_defaults_mode_is_flax_as_shipped")
_VARIANCE_PROOFS = (f"{_T}test_default_variance_is_the_fast_E_x2_minus_E_x_squared",
                    f"{_T}test_matched_mode_configures_the_variance_and_defaults_mode_is_fast")
_VARIANCE_FACT = ("σ² is E[x²] − E[x]² clipped at 0 by default (use_fast_variance=True), which cancels "
                  "catastrophically in float32 when |mean| ≫ spread; use_fast_variance=False is the two-pass "
                  "mean((x − μ)²) of PyTorch and MXNet.")
_EVAL_FACT = ("no running statistics and no train/eval switch: every call, training or eval, normalizes with "
              "the input's own statistics (the layer holds parameters only).")
_EVAL_PROOFS = (f"{_T}test_keeps_no_running_statistics", f"{_T}test_matches_the_reference_in_float64")
_NNX_PARAMS_FACT = ("flax.nnx.{layer}(num_features) always creates 1-D parameters of shape (num_features,) and "
                    "reshapes them to the feature axes: a γ over (H, W) is num_features=H·W, flattened row-major.")

LAYER_CONVENTIONS: tuple[LayerConvention, ...] = (
    LayerConvention(
        framework="jax",
        normalization="layernorm",
        layer="flax.linen.LayerNorm (flax.nnx.LayerNorm: same defaults, its own copy of the code)",
        defaults={"eps": 1e-6, "variance": "fast", "affine": True, "axis": -1, "normalized_dims": 1,
                  "params": "feature", "bias": True},
        facts={
            "eps": "ε defaults to 1e-6 (PyTorch's and MXNet's LayerNorm: 1e-5); port with epsilon=1e-5.",
            "variance": _VARIANCE_FACT,
            "axis": "the normalized axes and the feature axes count from the end: features are the last axis.",
            "normalized_dims": "reduction_axes defaults to -1, the last axis only; PyTorch's normalized_shape of "
                               "k dims is reduction_axes=(-k, ..., -1).",
            "params": "feature_axes defaults to -1: γ and β have shape (x.shape[-1],) even when reduction_axes "
                      "spans more axes; PyTorch's elementwise γ over normalized_shape needs "
                      "feature_axes=reduction_axes.",
            "affine": "use_scale=True and use_bias=True by default, switched independently (a switched-off "
                      "parameter is not created); elementwise_affine=False is use_scale=False, use_bias=False.",
            "bias": "use_bias=False removes β only (PyTorch's bias=False, MXNet's center=False).",
            "nnx_params": _NNX_PARAMS_FACT.format(layer="LayerNorm"),
            "half_precision": _HALF_PRECISION_FACT,
            "eval": _EVAL_FACT,
        },
        citations={
            "eps": f"{_LINEN}:486: `epsilon: float = 1e-6` LayerNorm's default; {_SHARED_CITATIONS['eps_use']}; "
                   f"{_NNX}:442: `epsilon: float = 1e-6,` nnx.LayerNorm's default",
            "variance": f"{_LINEN}:497: `use_fast_variance: bool = True` LayerNorm's default; "
                        f"{_SHARED_CITATIONS['variance_clip']}; "
                        f"{_NNX}:453: `use_fast_variance: bool = True,` nnx.LayerNorm's default",
            "axis": f"{_LINEN}:493: `reduction_axes: Axes = -1` counted from the end; "
                    f"{_LINEN}:494: `feature_axes: Axes = -1` the last axis",
            "normalized_dims": f"{_LINEN}:493: `reduction_axes: Axes = -1` the last axis only; "
                               f"{_LINEN}:512: `mean, var = _compute_stats(` over self.reduction_axes; "
                               f"{_NNX}:449: `reduction_axes: Axes = -1,` nnx's default",
            "params": f"{_LINEN}:494: `feature_axes: Axes = -1` γ, β per last-axis feature; "
                      f"{_LINEN}:201: `reduced_feature_shape.append(x.shape[ax])` their shape is the feature "
                      f"axes' sizes; {_NNX}:450: `feature_axes: Axes = -1,` nnx's default",
            "affine": f"{_LINEN}:490: `use_scale: bool = True` γ by default; "
                      f"{_LINEN}:208: `if use_scale:` γ created only if use_scale; "
                      f"{_NNX}:446: `use_scale: bool = True,` nnx's default",
            "bias": f"{_LINEN}:489: `use_bias: bool = True` β by default; "
                    f"{_LINEN}:217: `if use_bias:` β created only if use_bias; "
                    f"{_NNX}:445: `use_bias: bool = True,` nnx's default",
            "nnx_params": f"{_NNX}:456: `feature_shape = (num_features,)` 1-D parameters; "
                          f"{_NNX}:172: `scale = scale.reshape(feature_shape)` reshaped to the feature axes",
            "half_precision": _SHARED_CITATIONS["half_precision"],
            "eval": f"{_LINEN}:512: `mean, var = _compute_stats(` the input's own statistics in every call; "
                    f"{_NNX}:495: `mean, var = _compute_stats(` the same in nnx",
        },
        proofs={
            "eps": _EPS_PROOFS,
            "variance": _VARIANCE_PROOFS,
            "axis": (f"{_T}test_default_normalizes_the_last_axis_only",),
            "normalized_dims": (f"{_T}test_default_normalizes_the_last_axis_only",),
            "params": (f"{_T}test_default_params_are_per_last_axis_feature",
                       f"{_T}test_linen_elementwise_params_have_the_normalized_shape"),
            "affine": (f"{_T}test_default_parameters", f"{_T}test_use_scale_and_use_bias_switch_independently"),
            "bias": (f"{_T}test_use_scale_and_use_bias_switch_independently",),
            "nnx_params": (f"{_T}test_nnx_params_are_always_1d_and_reshaped_to_the_feature_axes",),
            "half_precision": _HALF_PRECISION_PROOF,
            "eval": _EVAL_PROOFS,
        },
        constructor="flax.linen.LayerNorm(epsilon=1e-6, use_fast_variance=True, reduction_axes=-1, feature_axes=-1)",
    ),
    LayerConvention(
        framework="jax",
        normalization="groupnorm",
        layer="flax.linen.GroupNorm (flax.nnx.GroupNorm: same defaults, its own copy of the code)",
        defaults={"eps": 1e-6, "variance": "fast", "affine": True, "axis": -1, "groups": 32, "params": "channel"},
        facts={
            "eps": "ε defaults to 1e-6 (PyTorch's and MXNet's GroupNorm: 1e-5); port with epsilon=1e-5.",
            "variance": _VARIANCE_FACT,
            "groups": "num_groups defaults to 32 (PyTorch requires it, MXNet defaults to 1); a channel count 32 "
                      "does not divide raises ValueError.",
            "grouping": "channel c is in group c // (C/G): consecutive channels, as in PyTorch (the channels-last "
                        "input is reshaped to (..., G, C/G)).",
            "params": "scale and bias are per channel, shape (C,); MXNet 1.9's per-group (G,) γ and β have no "
                      "Flax equivalent.",
            "axis": "channels are the last axis (NHWC), fixed; each sample's group is normalized over every "
                    "other axis but the first (the batch).",
            "affine": "use_scale=True and use_bias=True by default, switched independently.",
            "nnx_reduction_axes": "flax.nnx.GroupNorm repeats the group statistics along axis 1 (linen: -1): the "
                                  "same for the default reduction axes, silently wrong with a custom "
                                  "reduction_axes that keeps a spatial axis.",
            "half_precision": _HALF_PRECISION_FACT,
            "eval": _EVAL_FACT,
        },
        citations={
            "eps": f"{_LINEN}:713: `epsilon: float = 1e-6` GroupNorm's default; {_SHARED_CITATIONS['eps_use']}; "
                   f"{_NNX}:717: `epsilon: float = 1e-6,` nnx.GroupNorm's default",
            "variance": f"{_LINEN}:723: `use_fast_variance: bool = True` GroupNorm's default; "
                        f"{_SHARED_CITATIONS['variance_clip']}; "
                        f"{_NNX}:727: `use_fast_variance: bool = True,` nnx.GroupNorm's default",
            "groups": f"{_LINEN}:711: `num_groups: int | None = 32` the default; "
                      f"{_LINEN}:779: `if num_groups <= 0 or channels % num_groups != 0:` raises ValueError; "
                      f"{_NNX}:714: `num_groups: tp.Optional[int] = 32,` nnx's default",
            "grouping": f"{_LINEN}:786: `group_shape = x.shape[:-1] + (num_groups, group_size)` consecutive "
                        f"channels per group; {_NNX}:810: "
                        "`group_shape = x.shape[:-1] + (self.num_groups, self.group_size)` the same in nnx",
            "params": f"{_LINEN}:810: `(feature_axis,),` γ, β over the feature axis only, shape (C,); "
                      f"{_NNX}:761: `feature_shape = (num_features,)` the same in nnx",
            "axis": f"{_LINEN}:747: `feature_axis = -1` channels last; "
                    f"{_LINEN}:746: `reduction_axes = list(range(1, x.ndim - 1)) + [-1]` all but the batch axis; "
                    f"{_NNX}:807: `reduction_axes = list(range(1, x.ndim - 1)) + [-1]` the same in nnx",
            "affine": f"{_LINEN}:717: `use_scale: bool = True` γ by default; "
                      f"{_LINEN}:716: `use_bias: bool = True` β by default; "
                      f"{_NNX}:721: `use_scale: bool = True,` nnx's default",
            "nnx_reduction_axes": f"{_NNX}:823: `mean = jnp.repeat(mean, self.group_size, axis=1)` axis 1; "
                                  f"{_LINEN}:801: `mean = jnp.repeat(mean, group_size, axis=-1)` linen's -1",
            "half_precision": _SHARED_CITATIONS["half_precision"],
            "eval": f"{_LINEN}:791: `mean, var = _compute_stats(` the input's own statistics in every call; "
                    f"{_NNX}:814: `mean, var = _compute_stats(` the same in nnx",
        },
        proofs={
            "eps": _EPS_PROOFS,
            "variance": _VARIANCE_PROOFS,
            "groups": (f"{_T}test_groupnorm_default_is_32_groups",),
            "grouping": (f"{_T}test_groupnorm_groups_are_consecutive_channels_and_params_per_channel",),
            "params": (f"{_T}test_groupnorm_groups_are_consecutive_channels_and_params_per_channel",
                       f"{_T}test_group_params_are_unsupported"),
            "axis": (f"{_T}test_channels_are_last",),
            "affine": (f"{_T}test_default_parameters", f"{_T}test_use_scale_and_use_bias_switch_independently"),
            "nnx_reduction_axes": (f"{_T}test_nnx_groupnorm_repeats_the_statistics_along_axis_1",),
            "half_precision": _HALF_PRECISION_PROOF,
            "eval": _EVAL_PROOFS,
        },
        constructor="flax.linen.GroupNorm(num_groups=32, epsilon=1e-6, use_fast_variance=True)",
    ),
    LayerConvention(
        framework="jax",
        normalization="instancenorm",
        layer="flax.linen.InstanceNorm (flax.nnx.InstanceNorm: same defaults, its own copy of the code)",
        defaults={"eps": 1e-6, "variance": "fast", "affine": True, "axis": -1, "track_running_stats": False},
        facts={
            "eps": "ε defaults to 1e-6 (PyTorch's InstanceNorm and MXNet's: 1e-5); port with epsilon=1e-5.",
            "variance": _VARIANCE_FACT,
            "affine": "use_scale=True and use_bias=True by default: Flax's InstanceNorm has γ and β, PyTorch's "
                      "(affine=False) has neither; port with use_scale=False, use_bias=False.",
            "track_running_stats": "no running statistics (no batch_stats collection, no use_running_average): "
                                   "training and eval normalize with the input's own statistics, as PyTorch's "
                                   "default track_running_stats=False does; its True has no Flax equivalent.",
            "axis": "feature_axes=-1: channels last; each sample's channel is normalized over every axis but the "
                    "first (the batch) and the feature axes.",
            "rank": "a 2-D (N, C) input leaves no axis to reduce: x̂ = 0 and y = β for every input, silently.",
            "half_precision": _HALF_PRECISION_FACT,
        },
        citations={
            "eps": f"{_LINEN}:887: `epsilon: float = 1e-6` InstanceNorm's default; "
                   f"{_SHARED_CITATIONS['eps_use']}; {_NNX}:912: `epsilon: float = 1e-6,` nnx's default",
            "variance": f"{_LINEN}:897: `use_fast_variance: bool = True` InstanceNorm's default; "
                        f"{_SHARED_CITATIONS['variance_clip']}; "
                        f"{_NNX}:922: `use_fast_variance: bool = True,` nnx's default",
            "affine": f"{_LINEN}:891: `use_scale: bool = True` γ by default; "
                      f"{_LINEN}:890: `use_bias: bool = True` β by default; "
                      f"{_NNX}:916: `use_scale: bool = True,` nnx's default",
            "track_running_stats": f"{_LINEN}:918: `mean, var = _compute_stats(` the input's own statistics in "
                                   f"every call; {_NNX}:970: `mean, var = _compute_stats(` the same in nnx",
            "axis": f"{_LINEN}:894: `feature_axes: Axes = -1` channels last; "
                    f"{_LINEN}:916: `reduction_axes = [i for i in range(1, x.ndim) if i not in feature_axes]` "
                    f"all but the batch and feature axes; {_NNX}:968: "
                    "`reduction_axes = [i for i in range(1, x.ndim) if i not in feature_axes]` the same in nnx",
            "rank": f"{_LINEN}:916: `reduction_axes = [i for i in range(1, x.ndim) if i not in feature_axes]` "
                    "empty for a 2-D input",
            "half_precision": _SHARED_CITATIONS["half_precision"],
        },
        proofs={
            "eps": _EPS_PROOFS,
            "variance": _VARIANCE_PROOFS,
            "affine": (f"{_T}test_default_parameters", f"{_T}test_use_scale_and_use_bias_switch_independently"),
            "track_running_stats": (f"{_T}test_keeps_no_running_statistics",
                                    f"{_T}test_instancenorm_running_statistics_are_unsupported"),
            "axis": (f"{_T}test_channels_are_last",),
            "rank": (f"{_T}test_instancenorm_of_a_2d_input_returns_beta",
                     f"{_T}test_instancenorm_of_a_2d_input_is_unsupported"),
            "half_precision": _HALF_PRECISION_PROOF,
        },
        constructor="flax.linen.InstanceNorm(epsilon=1e-6, use_fast_variance=True, use_scale=True, use_bias=True)",
    ),
    LayerConvention(
        framework="jax",
        normalization="rmsnorm",
        layer="flax.linen.RMSNorm (flax.nnx.RMSNorm: same defaults, its own copy of the code)",
        defaults={"eps": 1e-6, "affine": True, "axis": -1, "normalized_dims": 1, "params": "feature"},
        facts={
            "eps": "ε is a fixed 1e-6 (PyTorch's RMSNorm(eps=None) uses the machine epsilon of its computation "
                   "dtype, 1.19e-7 in float32).",
            "use_fast_variance": "use_fast_variance exists (default True) but changes nothing: no mean is "
                                 "subtracted, the mean square is mean(x²) either way.",
            "axis": "the normalized axes and the feature axes count from the end: features are the last axis.",
            "normalized_dims": "reduction_axes defaults to -1, the last axis only.",
            "params": "feature_axes defaults to -1: γ has shape (x.shape[-1],) even when reduction_axes spans "
                      "more axes; an elementwise γ needs feature_axes=reduction_axes.",
            "affine": "use_scale=True by default; there is never a β (no use_bias argument).",
            "nnx_params": _NNX_PARAMS_FACT.format(layer="RMSNorm"),
            "half_precision": _HALF_PRECISION_FACT,
            "eval": _EVAL_FACT,
        },
        citations={
            "eps": f"{_LINEN}:588: `epsilon: float = 1e-6` RMSNorm's default; {_SHARED_CITATIONS['eps_use']}; "
                   f"{_NNX}:573: `epsilon: float = 1e-6,` nnx's default",
            "use_fast_variance": f"{_LINEN}:597: `use_fast_variance: bool = True` the argument; "
                                 f"{_LINEN}:618: `use_mean=False,` RMSNorm's statistics; "
                                 f"{_LINEN}:149: `var = maybe_distributed_mean(_abs_sq(x), mask=mask)` "
                                 "mean(x²) without use_mean",
            "axis": f"{_LINEN}:593: `reduction_axes: Axes = -1` counted from the end; "
                    f"{_LINEN}:594: `feature_axes: Axes = -1` the last axis",
            "normalized_dims": f"{_LINEN}:593: `reduction_axes: Axes = -1` the last axis only; "
                               f"{_NNX}:578: `reduction_axes: Axes = -1,` nnx's default",
            "params": f"{_LINEN}:594: `feature_axes: Axes = -1` γ per last-axis feature; "
                      f"{_LINEN}:201: `reduced_feature_shape.append(x.shape[ax])` its shape is the feature axes' "
                      f"sizes; {_NNX}:579: `feature_axes: Axes = -1,` nnx's default",
            "affine": f"{_LINEN}:591: `use_scale: bool = True` γ by default; "
                      f"{_LINEN}:634: `False,` use_bias=False passed to _normalize; "
                      f"{_NNX}:631: `None,` no bias in nnx",
            "nnx_params": f"{_NNX}:585: `feature_shape = (num_features,)` 1-D parameters; "
                          f"{_NNX}:172: `scale = scale.reshape(feature_shape)` reshaped to the feature axes",
            "half_precision": _SHARED_CITATIONS["half_precision"],
            "eval": f"{_LINEN}:612: `mean, var = _compute_stats(` the input's own statistics in every call; "
                    f"{_NNX}:615: `mean, var = _compute_stats(` the same in nnx",
        },
        proofs={
            "eps": _EPS_PROOFS,
            "use_fast_variance": (f"{_T}test_rmsnorm_use_fast_variance_changes_nothing",),
            "axis": (f"{_T}test_default_normalizes_the_last_axis_only",),
            "normalized_dims": (f"{_T}test_default_normalizes_the_last_axis_only",),
            "params": (f"{_T}test_default_params_are_per_last_axis_feature",
                       f"{_T}test_linen_elementwise_params_have_the_normalized_shape"),
            "affine": (f"{_T}test_default_parameters", f"{_T}test_rmsnorm_has_no_bias_argument"),
            "nnx_params": (f"{_T}test_nnx_params_are_always_1d_and_reshaped_to_the_feature_axes",),
            "half_precision": _HALF_PRECISION_PROOF,
            "eval": _EVAL_PROOFS,
        },
        constructor="flax.linen.RMSNorm(epsilon=1e-6, reduction_axes=-1, feature_axes=-1)",
    ),
)

# BatchNorm across data-parallel replicas (flax 0.12.0, jax 0.7.1; frameworks/jax/replicas.py runs it on R JAX host
# devices). Citations are "file:LINE: `the code on that line` what it means"; flax/ and jax/ paths are the installed
# packages', examples/ paths the flax repository at tag v0.12.0 (the ImageNet example is not installed).
_R = "tests/test_jax_replicas.py::"
_IMAGENET = "examples/imagenet/train.py (flax v0.12.0)"
REPLICA_CONVENTION = ReplicaConvention(
    framework="jax",
    layer="flax.linen.BatchNorm(axis_name=...)",
    switch="nn.BatchNorm(use_running_average=not train, axis_name='batch') inside shard_map/pmap over axis 'batch'",
    engine="JAX SPMD: shard_map (and pmap) over host devices (XLA_FLAGS=--xla_force_host_platform_device_count=R)",
    shard_weighting="equal",
    saved_running="mean",
    cpu="yes",
    facts=(
        "axis_name makes _compute_stats lax.pmean each device's means (E[x] and E[x²], or E[(x − μ)²] with "
        "use_fast_variance=False): every device gets weight 1/R whatever its shard size. Equal shards: the global "
        "batch's statistics. Unequal shards, padded and marked with BatchNorm's `mask` argument (SPMD needs equal "
        "shapes): μ = (1/R) Σ_r μ_r, not the global mean; y, dx and the running statistics are a weighted "
        "BatchNorm (w = 1/(R·m_r) per value), measurably off the global batch's (tests/test_jax_replicas.py "
        "measures it: above 1e-3 relative on its unequal cases).",
        "For the global batch's statistics with unequal shards, all-reduce counts instead of means: lax.psum of "
        "m_r, m_r·μ_r and M₂,r + m_r(μ_r − μ)² (frameworks/jax/replicas.py: _sync_batch_norm).",
        "The backward pass goes through the pmean: dx of a synchronized layer depends on every device's data; dγ "
        "and dβ are each device's own until the training step pmeans the gradients.",
        "Without axis_name every device's batch_stats are its own shard's; the Flax ImageNet example pmeans them "
        "after every step and checkpoints that replicated state, so a saved model holds the mean over the "
        "devices (flax.jax_utils.unreplicate takes device 0's copy, which is then the mean).",
        "Running variance: the biased σ² that normalizes, as on one device; momentum weighs the old value.",
        "jax 0.7.1's jax.pmap is still its own (C++) implementation unless jax_pmap_shmap_merge=True; shard_map "
        "and pmap give the same results here.",
    ),
    citations={
        "shard_weighting": "flax/linen/normalization.py:122: `mus = tuple(x.mean(axes, where=mask) for x in xs)` "
                           "each device's masked means; "
                           "flax/linen/normalization.py:128: `reduced_mus = lax.pmean(` equal weights over the "
                           "devices; flax/linen/normalization.py:139: "
                           "`mu, mu2 = maybe_distributed_mean(x, _abs_sq(x), mask=mask)` E[x] and E[x²] pmeaned; "
                           "flax/linen/normalization.py:145: `var = maybe_distributed_mean(` the two-pass variance "
                           "pmeaned",
        "switch": "flax/linen/normalization.py:318: `axis_name: str | None = None` the BatchNorm field; "
                  "flax/linen/normalization.py:393: "
                  "`axis_name=self.axis_name if not self.is_initializing() else None,` passed to _compute_stats; "
                  "flax/linen/normalization.py:329: `mask: jax.Array | None = None,` the per-call sample mask",
        "saved_running": f"{_IMAGENET}:153: `batch_stats=lax.pmean(new_model_state['batch_stats'], 'batch'),` "
                         "the devices' batch_stats averaged after every step; "
                         "flax/jax_utils.py:50: `return jax.tree_util.tree_map(lambda x: x[0], tree)` unreplicate: "
                         "device 0's copy",
        "engine": "jax/_src/api.py:1471: `if config.pmap_shmap_merge.value:` pmap goes through shard_map only "
                  "with jax_pmap_shmap_merge; jax/_src/api.py:1479: `return _cpp_pmap(` the default, legacy pmap",
        "running_var": "flax/linen/normalization.py:404: "
                       "`ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var` the pmeaned σ²",
    },
    proofs={
        "shard_weighting": (f"{_R}test_builtin_synchronized_is_the_equal_weight_step",
                            f"{_R}test_builtin_unequal_shards_are_measurably_off_the_global_batch"),
        "switch": (f"{_R}test_builtin_synchronized_is_the_equal_weight_step",),
        "engine": (f"{_R}test_shard_map_and_pmap_agree", f"{_R}test_too_few_devices_raise_one_line_naming_xla_flags"),
        "saved_running": (f"{_R}test_saved_running_is_the_mean_over_the_replicas",),
        "cpu": (f"{_R}test_builtin_synchronized_is_the_equal_weight_step",),
        "running_var": (f"{_R}test_builtin_synchronized_is_the_equal_weight_step",),
        "global_batch": (f"{_R}test_scratch_synchronized_is_the_global_batch",),
    },
)
