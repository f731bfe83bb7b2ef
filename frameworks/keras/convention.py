"""Keras 3's conventions (keras 3.15.1; tensorflow 2.21.0, jax 0.7.1, torch 2.13.0), as data, one row per backend:
BatchNorm's (CONVENTION, framework name -> row, proved by tests/test_keras_conventions.py) and the other
normalizations' (LAYER_CONVENTIONS, proved by tests/test_keras_norms.py). The backends share the layers' code and
defaults; they differ in the op that computes σ² (each backend's ops.moments) and in float64 (computed in float32 on
JAX and PyTorch). No REPLICA_CONVENTION yet: the registry reads it only where a folder declares one.

Every citation is "path:LINE: `the code on that line` what it means", the path relative to site-packages.
"""

from bnparity.frameworks.conventions import Convention, LayerConvention, ReplicaConvention

_BN = "keras/src/layers/normalization/batch_normalization.py"
_LN = "keras/src/layers/normalization/layer_normalization.py"
_GN = "keras/src/layers/normalization/group_normalization.py"
_RMS = "keras/src/layers/normalization/rms_normalization.py"
_OPS = "keras/src/ops/nn.py"
_DTYPES = "keras/src/backend/common/dtypes.py:240: `\"float64\": \"float64\" if config.backend() == \"tensorflow\" " \
          "else \"float32\",` result_type's float64 is float32 on every backend but TensorFlow"
_BACKENDS = ("tensorflow", "jax", "torch")
_C = "tests/test_keras_conventions.py::"

# What each backend's ops.moments (BatchNormalization, GroupNormalization and, on TF/JAX, LayerNormalization) does.
_VARIANCE = {"tensorflow": "two-pass", "jax": "two-pass", "torch": "fast"}
_MOMENTS = {
    "tensorflow": "keras/src/backend/tensorflow/nn.py:1548: `return tf.nn.moments(x, axes, keepdims=keepdims)` "
                  "TensorFlow's moments; tensorflow/python/ops/nn_impl.py:1270: "
                  "`mean = math_ops.reduce_mean(y, axes, keepdims=True, name=\"mean\")` μ first; "
                  "tensorflow/python/ops/nn_impl.py:1276: "
                  "`math_ops.squared_difference(y, array_ops.stop_gradient(mean)),` then mean((x − μ)²): two passes",
    "jax": "keras/src/backend/jax/nn.py:1054: `variance = jnp.var(x, axis=axes, keepdims=True)` jnp.var; "
           "jax/_src/numpy/reductions.py:1135: `centered = lax.sub(a, a_mean)` x − μ, then mean of its square: "
           "two passes",
    "torch": "keras/src/backend/torch/nn.py:981: `torch.square(x), dim=axes, keepdim=True` E[x²]; "
             "keras/src/backend/torch/nn.py:982: `) - torch.square(mean)` − E[x]², not clipped at 0: one pass",
}
_VARIANCE_FACT = {
    "two-pass": "σ² is the two-pass mean((x − μ)²) of the backend's ops.moments; no argument changes it.",
    "fast": "σ² is E[x²] − E[x]² (the PyTorch backend's ops.moments), NOT clipped at 0: on an offset float32 input "
            "it cancels catastrophically and can go negative, and then rsqrt(σ² + ε) is NaN. No argument changes it.",
}
_FLOAT64_FACT = ("float64 is computed in float32 on the JAX and PyTorch backends (the layer casts to "
                 "backend.result_type(dtype, 'float32'), which is float32 there) and cast back: ~1e-7 errors in a "
                 "float64 model; TensorFlow computes float64. bnparity refuses float64 for the builtin layer there.")


def _batchnorm(backend: str) -> Convention:
    name = f"keras-{backend}"
    variance = _VARIANCE[backend]
    return Convention(
        framework=name,
        layer="keras.layers.BatchNormalization",
        momentum=0.99,
        momentum_weighs="old",
        eps=1e-3,
        running_var="biased",
        running_var_configurable=False,
        channel_axis=-1,
        variance_algorithm=variance,
        train_eval_switch="call(x, training=True) normalizes with the batch's statistics and updates the moving "
                          "ones, training=False (the default outside fit()) with the moving ones — but only while "
                          "layer.trainable: trainable=False forces inference mode even with training=True (the "
                          "fine-tuning rule). No track_running_stats=False: call with training=True in eval too "
                          "and restore the moving statistics",
        scale_switch="scale=False removes γ, center=False removes β, independently (no variable is created); no "
                     "fix_gamma-style pitfall",
        running_stats_written="forward pass: call(training=True) assigns moving_mean and moving_variance; the "
                              "backward pass never touches them (on JAX, stateless_call returns them instead)",
        citations={
            "momentum": f"{_BN}:163: `momentum=0.99,` the default; {_BN}:386: "
                        "`moving_mean * self.momentum + mean * (1.0 - self.momentum)` momentum weighs the old value",
            "eps": f"{_BN}:164: `epsilon=1e-3,` the default; {_BN}:403: `epsilon=self.epsilon,` passed to "
                   f"ops.batch_normalization, inside the root",
            "running_var": f"{_BN}:364: `mean, variance = self._moments(inputs, mask)` the σ²_B that normalizes; "
                           f"{_BN}:390: `+ variance * (1.0 - self.momentum)` is what the moving variance averages "
                           "(biased: no m/(m − 1)); Keras 2's fused TF path stored a Bessel-corrected moving "
                           "variance (keras-team/keras#19649, tensorflow/tensorflow#55545): Keras 3 does not",
            "channel_axis": f"{_BN}:162: `axis=-1,` channels last; {_BN}:316: `del reduction_axes[self.axis]` "
                            "statistics over every other axis",
            "variance_algorithm": f"{_BN}:436: `return ops.moments(` the backend's moments; {_MOMENTS[backend]}",
            "train_eval_switch": f"{_BN}:334: `def call(self, inputs, training=None, mask=None):` the switch; "
                                 f"{_BN}:363: `if training and self.trainable:` batch statistics only while "
                                 f"trainable; {_BN}:393: `mean = moving_mean` else the moving statistics",
            "scale_switch": f"{_BN}:242: `if self.scale:` γ created only if scale; {_BN}:252: `if self.center:` "
                            "β created only if center",
            "running_stats_written": f"{_BN}:385: `self.moving_mean.assign(` in call(), the forward pass",
            "dtype": f"{_BN}:345: `compute_dtype = backend.result_type(inputs.dtype, \"float32\")` the layer "
                     f"computes in at least float32; {_DTYPES}",
            "synchronized": f"{_BN}:184: `if synchronized and backend.backend() != \"tensorflow\":` synchronized=True "
                            "raises ValueError on JAX and PyTorch",
        },
        constructor="keras.layers.BatchNormalization(momentum={m:g}, epsilon={eps:g})",
        batch_of_one="normalizes to β",
        proofs={
            "momentum": (f"{_C}test_row_is_the_layer_as_shipped",
                         f"{_C}test_momentum_weighs_the_old_value_and_the_moving_variance_is_biased"),
            "momentum_weighs": (f"{_C}test_momentum_weighs_the_old_value_and_the_moving_variance_is_biased",),
            "eps": (f"{_C}test_row_is_the_layer_as_shipped", f"{_C}test_default_eps"),
            "running_var": (f"{_C}test_momentum_weighs_the_old_value_and_the_moving_variance_is_biased",),
            "running_var_configurable": (f"{_C}test_realize_fixes_what_the_layer_cannot_be_told",),
            "channel_axis": (f"{_C}test_row_is_the_layer_as_shipped", f"{_C}test_channel_axis_is_last"),
            "variance_algorithm": (f"{_C}test_variance_algorithm_is_the_backends_moments",
                                   f"{_C}test_an_offset_float32_input_on_the_torch_backend_gives_nan"),
            "train_eval_switch": (f"{_C}test_train_eval_switch_and_trainable_false_forces_inference",),
            "scale_switch": (f"{_C}test_scale_and_center_switch_independently",),
            "running_stats_written": (f"{_C}test_moving_statistics_are_written_in_the_forward_pass",),
            "batch_of_one": (f"{_C}test_a_batch_of_one_normalizes_to_beta",),
        },
    )


CONVENTION: dict[str, Convention] = {f"keras-{b}": _batchnorm(b) for b in _BACKENDS}

# The other normalizations' rows; the proofs run Keras (tests/test_keras_norms.py).
_T = "tests/test_keras_norms.py::"
_EPS_PROOFS = (f"{_T}test_default_eps", f"{_T}test_defaults_mode_is_keras_as_shipped")
_VARIANCE_PROOFS = (f"{_T}test_variance_algorithm_is_the_backends_moments",)
_FLOAT64_PROOFS = (f"{_T}test_builtin_computes_float64_in_float32_except_on_tensorflow",)
_EVAL_FACT = ("no running statistics and no train/eval switch: every call, training or eval, normalizes with the "
              "input's own statistics (the layer holds γ and β only).")
_EVAL_PROOFS = (f"{_T}test_keeps_no_running_statistics",)
_GN_EVAL = f"{_GN}:192: `mean, variance = ops.moments(` the input's own statistics in every call"


def _layernorm(backend: str) -> LayerConvention:
    # LayerNormalization's σ²: F.layer_norm on the PyTorch backend, ops.moments (two passes) on TF and JAX.
    variance = (f"{_OPS}:3182: `outputs = F.layer_norm(x, normalized_shape, gamma, beta, epsilon)` PyTorch's own "
                "kernel (two-pass class) on the PyTorch backend" if backend == "torch" else
                f"{_OPS}:3185: `mean, variance = moments(x, axes=axis, keepdims=True)` the backend's moments; "
                f"{_MOMENTS[backend]}")
    return LayerConvention(
        framework=f"keras-{backend}",
        normalization="layernorm",
        layer="keras.layers.LayerNormalization",
        defaults={"eps": 1e-3, "variance": "two-pass", "affine": True, "axis": -1, "normalized_dims": 1,
                  "params": "elementwise", "bias": True},
        facts={
            "eps": "ε defaults to 1e-3 (PyTorch's and MXNet's LayerNorm: 1e-5, Flax's 1e-6); port with "
                   "epsilon=1e-5.",
            "variance": "σ² is two-pass on every backend (PyTorch's F.layer_norm kernel on the PyTorch backend); "
                        "no argument changes it.",
            "axis": "axis=-1 by default: the features are the last axis.",
            "normalized_dims": "axis is the list of normalized axes: PyTorch's normalized_shape of k dims is "
                               "axis=[-k, ..., -1]; the default normalizes the last axis only.",
            "params": "γ and β have the shape of all the normalized axes (PyTorch's elementwise affine); no "
                      "argument makes them per last-axis feature only (Flax's feature_axes=-1).",
            "affine": "center=True and scale=True by default, switched independently.",
            "bias": "center=False removes β only (PyTorch's bias=False).",
            "float64": _FLOAT64_FACT,
            "eval": _EVAL_FACT,
        },
        citations={
            "eps": f"{_LN}:108: `epsilon=1e-3,` the default; {_OPS}:3187: `inv = backend.math.rsqrt(variance + "
                   "epsilon)` inside the root",
            "variance": variance,
            "axis": f"{_LN}:107: `axis=-1,` the last axis",
            "normalized_dims": f"{_LN}:107: `axis=-1,` the last axis only; {_LN}:159: `self.axis = [self.axis]` "
                               "a list of axes",
            "params": f"{_LN}:156: `shape = tuple(input_shape[dim] for dim in self.axis)` γ, β over every "
                      "normalized axis",
            "affine": f"{_LN}:110: `scale=True,` γ by default; {_LN}:109: `center=True,` β by default",
            "bias": f"{_LN}:173: `if self.center and not self.rms_scaling:` β only if center",
            "float64": f"{_OPS}:3145: `compute_dtype = backend.result_type(x.dtype, \"float32\")` at least "
                       f"float32; {_DTYPES}",
            "eval": f"{_LN}:187: `outputs = ops.layer_normalization(` the input's own statistics in every call",
        },
        proofs={
            "eps": _EPS_PROOFS,
            "variance": _VARIANCE_PROOFS,
            "axis": (f"{_T}test_default_normalizes_the_last_axis_only",),
            "normalized_dims": (f"{_T}test_default_normalizes_the_last_axis_only",
                                f"{_T}test_params_have_the_shape_of_the_normalized_axes"),
            "params": (f"{_T}test_params_have_the_shape_of_the_normalized_axes",
                       f"{_T}test_feature_params_over_several_axes_are_unsupported"),
            "affine": (f"{_T}test_center_and_scale_switch_independently",),
            "bias": (f"{_T}test_center_and_scale_switch_independently",),
            "float64": _FLOAT64_PROOFS,
            "eval": _EVAL_PROOFS,
        },
        constructor="keras.layers.LayerNormalization(axis=-1, epsilon=1e-3)",
    )


def _groupnorm(backend: str) -> LayerConvention:
    return LayerConvention(
        framework=f"keras-{backend}",
        normalization="groupnorm",
        layer="keras.layers.GroupNormalization",
        defaults={"eps": 1e-3, "variance": _VARIANCE[backend], "affine": True, "axis": -1, "groups": 32,
                  "params": "channel"},
        facts={
            "eps": "ε defaults to 1e-3 (PyTorch's GroupNorm: 1e-5, Flax's 1e-6); port with epsilon=1e-5.",
            "variance": _VARIANCE_FACT[_VARIANCE[backend]],
            "groups": "groups defaults to 32 (PyTorch requires it); a channel count it does not divide raises "
                      "ValueError.",
            "grouping": "channel c is in group c // (C/G): consecutive channels, as in PyTorch (the input is "
                        "reshaped to (..., G, C/G)).",
            "params": "γ and β are per channel, shape (C,); MXNet 1.9's per-group (G,) ones have no Keras "
                      "equivalent.",
            "axis": "axis=-1 by default: channels last; each sample's group is normalized over every other axis "
                    "but the first (the batch).",
            "affine": "center=True and scale=True by default, switched independently.",
            "float64": _FLOAT64_FACT,
            "eval": _EVAL_FACT,
        },
        citations={
            "eps": f"{_GN}:71: `epsilon=1e-3,` the default; {_GN}:197: `inv = ops.rsqrt(variance + self.epsilon)` "
                   "inside the root",
            "variance": f"{_GN}:192: `mean, variance = ops.moments(` the backend's moments; {_MOMENTS[backend]}",
            "groups": f"{_GN}:69: `groups=32,` the default; {_GN}:122: `if dim % self.groups != 0:` raises "
                      "ValueError",
            "grouping": f"{_GN}:174: `group_shape[self.axis] = input_shape[self.axis] // self.groups` C/G "
                        f"consecutive channels; {_GN}:175: `group_shape.insert(self.axis, self.groups)` then G",
            "params": f"{_GN}:134: `shape=(dim,),` γ per channel; {_GN}:146: `shape=(dim,),` β per channel",
            "axis": f"{_GN}:70: `axis=-1,` channels last; {_GN}:186: "
                    "`group_reduction_axes = list(range(1, len(reshaped_inputs.shape)))` all but the batch axis",
            "affine": f"{_GN}:73: `scale=True,` γ by default; {_GN}:72: `center=True,` β by default",
            "float64": f"{_GN}:181: `compute_dtype = backend.result_type(inputs_dtype, \"float32\")` at least "
                       f"float32; {_DTYPES}",
            "eval": _GN_EVAL,
        },
        proofs={
            "eps": _EPS_PROOFS,
            "variance": _VARIANCE_PROOFS,
            "groups": (f"{_T}test_groupnorm_default_is_32_groups",),
            "grouping": (f"{_T}test_groupnorm_groups_are_consecutive_channels_and_params_per_channel",),
            "params": (f"{_T}test_groupnorm_groups_are_consecutive_channels_and_params_per_channel",
                       f"{_T}test_group_params_are_unsupported"),
            "axis": (f"{_T}test_groupnorm_groups_are_consecutive_channels_and_params_per_channel",),
            "affine": (f"{_T}test_center_and_scale_switch_independently",),
            "float64": _FLOAT64_PROOFS,
            "eval": _EVAL_PROOFS,
        },
        constructor="keras.layers.GroupNormalization(groups=32, axis=-1, epsilon=1e-3)",
    )


def _instancenorm(backend: str) -> LayerConvention:
    return LayerConvention(
        framework=f"keras-{backend}",
        normalization="instancenorm",
        layer="keras.layers.GroupNormalization(groups=-1) (Keras has no InstanceNormalization layer)",
        defaults={"eps": 1e-3, "variance": _VARIANCE[backend], "affine": True, "axis": -1,
                  "track_running_stats": False},
        facts={
            "layer": "Keras has no InstanceNormalization: GroupNormalization(groups=-1), one group per channel, is "
                     "its instance norm (the keras-contrib / tensorflow_addons InstanceNormalization is gone).",
            "eps": "ε defaults to 1e-3 (PyTorch's InstanceNorm: 1e-5, Flax's 1e-6); port with epsilon=1e-5.",
            "variance": _VARIANCE_FACT[_VARIANCE[backend]],
            "affine": "center=True and scale=True by default: γ and β exist, PyTorch's InstanceNorm (affine=False) "
                      "has neither; port with center=False, scale=False.",
            "track_running_stats": "no running statistics: training and eval normalize with the input's own "
                                   "statistics, as PyTorch's default track_running_stats=False does; its True "
                                   "has no Keras equivalent.",
            "axis": "axis=-1: channels last; each sample's channel is normalized over the spatial axes.",
            "rank": "a 2-D (N, C) input leaves one value per group: x̂ = 0 and y = β for every input, silently.",
            "float64": _FLOAT64_FACT,
        },
        citations={
            "layer": f"{_GN}:28: `Instance Normalization. You can achieve this via` groups=-1, says the docstring; "
                     f"{_GN}:114: `self.groups = dim` groups=-1 becomes one group per channel",
            "eps": f"{_GN}:71: `epsilon=1e-3,` the default; {_GN}:197: `inv = ops.rsqrt(variance + self.epsilon)` "
                   "inside the root",
            "variance": f"{_GN}:192: `mean, variance = ops.moments(` the backend's moments; {_MOMENTS[backend]}",
            "affine": f"{_GN}:73: `scale=True,` γ by default; {_GN}:72: `center=True,` β by default",
            "track_running_stats": _GN_EVAL,
            "axis": f"{_GN}:70: `axis=-1,` channels last; {_GN}:189: `group_reduction_axes.pop(axis)` every axis "
                    "but the batch and group axes",
            "rank": f"{_GN}:186: `group_reduction_axes = list(range(1, len(reshaped_inputs.shape)))` for (N, C, 1) "
                    "only the size-1 channel-in-group axis",
            "float64": f"{_GN}:181: `compute_dtype = backend.result_type(inputs_dtype, \"float32\")` at least "
                       f"float32; {_DTYPES}",
        },
        proofs={
            "layer": (f"{_T}test_instancenorm_is_groupnorm_with_one_group_per_channel",),
            "eps": _EPS_PROOFS,
            "variance": _VARIANCE_PROOFS,
            "affine": (f"{_T}test_center_and_scale_switch_independently",),
            "track_running_stats": (f"{_T}test_keeps_no_running_statistics",
                                    f"{_T}test_instancenorm_running_statistics_are_unsupported"),
            "axis": (f"{_T}test_instancenorm_is_groupnorm_with_one_group_per_channel",),
            "rank": (f"{_T}test_instancenorm_of_a_2d_input_returns_beta",),
            "float64": _FLOAT64_PROOFS,
        },
        constructor="keras.layers.GroupNormalization(groups=-1, axis=-1, epsilon=1e-3)",
    )


def _rmsnorm(backend: str) -> LayerConvention:
    return LayerConvention(
        framework=f"keras-{backend}",
        normalization="rmsnorm",
        layer="keras.layers.RMSNormalization",
        defaults={"eps": 1e-6, "affine": True, "axis": -1, "normalized_dims": 1, "params": "elementwise"},
        facts={
            "eps": "ε is a fixed 1e-6 (as Flax; PyTorch's RMSNorm(eps=None) uses the machine epsilon of its "
                   "computation dtype, 1.19e-7 in float32).",
            "axis": "axis=-1 by default: the features are the last axis.",
            "normalized_dims": "axis is the list of normalized axes; the default normalizes the last axis only.",
            "params": "γ (the variable `scale`) has the shape of all the normalized axes; no argument makes it per "
                      "last-axis feature only.",
            "affine": "γ always exists (no scale=False) and there is never a β: a γ-free RMSNorm is γ left at its "
                      "initial ones.",
            "float64": _FLOAT64_FACT,
            "eval": _EVAL_FACT,
        },
        citations={
            "eps": f"{_RMS}:45: `def __init__(self, axis=-1, epsilon=1e-6, **kwargs):` the default; "
                   f"{_OPS}:3050: `+ epsilon` inside the root",
            "axis": f"{_RMS}:45: `def __init__(self, axis=-1, epsilon=1e-6, **kwargs):` the last axis",
            "normalized_dims": f"{_RMS}:53: `shape = tuple(input_shape[dim] for dim in self.axis)` a list of axes",
            "params": f"{_RMS}:53: `shape = tuple(input_shape[dim] for dim in self.axis)` γ over every normalized "
                      "axis",
            "affine": f"{_RMS}:59: `name=\"scale\", shape=shape, initializer=\"ones\"` γ always, initially 1; "
                      f"{_RMS}:74: `return ops.rms_normalization(` no β passed",
            "float64": f"{_OPS}:3027: `compute_dtype = backend.result_type(x.dtype, \"float32\")` at least float32; "
                       f"{_DTYPES}",
            "eval": f"{_RMS}:74: `return ops.rms_normalization(` the input's own mean square in every call",
        },
        proofs={
            "eps": _EPS_PROOFS,
            "axis": (f"{_T}test_default_normalizes_the_last_axis_only",),
            "normalized_dims": (f"{_T}test_default_normalizes_the_last_axis_only",
                                f"{_T}test_params_have_the_shape_of_the_normalized_axes"),
            "params": (f"{_T}test_params_have_the_shape_of_the_normalized_axes",
                       f"{_T}test_feature_params_over_several_axes_are_unsupported"),
            "affine": (f"{_T}test_rmsnorm_has_only_a_scale",),
            "float64": _FLOAT64_PROOFS,
            "eval": _EVAL_PROOFS,
        },
        constructor="keras.layers.RMSNormalization(axis=-1, epsilon=1e-6)",
    )


LAYER_CONVENTIONS: tuple[LayerConvention, ...] = tuple(
    row(b) for b in _BACKENDS for row in (_layernorm, _groupnorm, _instancenorm, _rmsnorm))


# BatchNorm across data-parallel replicas (frameworks/keras/replicas.py), per backend; the torch backend has no
# distribution support (keras/src/backend/__init__.py:47: distribution_lib = None), so no row.
_REPLICAS = "tests/test_keras_replicas.py"
REPLICA_CONVENTION = {
    "keras-tensorflow": ReplicaConvention(
        framework="keras-tensorflow",
        layer="keras.layers.BatchNormalization(synchronized=True)",
        switch="keras.layers.BatchNormalization(..., synchronized=True), the model built and trained inside "
               "tf.distribute.MirroredStrategy().scope() (outside a replica context the flag does nothing)",
        engine="tf.distribute.MirroredStrategy over R logical CPU devices (tf.config.set_logical_device_configuration "
               "before TensorFlow starts: BNPARITY_KERAS_TF_CPUS=R), cross_device_ops=ReductionToOneDevice",
        shard_weighting="count",
        saved_running="replica0",
        cpu="yes",
        facts=(
            "synchronized=True makes ops.moments all-reduce each replica's Σx, Σx² and count (tf.ones_like(x) "
            "summed): μ = Σx/m, σ² = max(Σx²/m − μ², 0) over the global batch, so unequal shards are weighted by "
            "their counts (measured: the equally weighted statistics are 0.14 (R=2, shards 3+2) and 0.094 (R=4, "
            "3+3+3+2) relative away). The variance is one pass (E[x²] − μ²), unlike the unsynchronized layer's "
            "tf.nn.moments (centred).",
            "The all-reduce's gradient is an all-reduce (tf.distribute ReplicaContext.all_reduce's custom "
            "gradient), so dx crosses replicas; dγ and dβ are each replica's own until the optimizer sums them.",
            "The moving statistics are MirroredVariables with aggregation 'none': each replica's assign writes its "
            "own copy, so per-replica (unsynchronized) copies diverge and Model.save_weights writes replica 0's "
            "(the primary copy).",
            "Two MirroredStrategy objects with default (collective) ops in one process collide: each numbers its "
            "collective groups from 1 (\"joining a group with size 4, but that group has size 2\"); bnparity "
            "reduces through one device instead.",
            "Off TensorFlow, synchronized=True raises ValueError at construction.",
        ),
        citations={
            "layer": f"{_BN}:178 (synchronized=False), :184-189 (ValueError off TensorFlow; stored), :434-439 "
                     "(_moments passes it to ops.moments)",
            "shard_weighting": "keras/src/backend/tensorflow/nn.py:1515-1542 (_compute_moments_sync: all_reduce SUM "
                               "of local_sum, local_squared_sum, local_count; mean = y_sum / count_sum; variance = "
                               "tf.maximum(y_squared_mean - tf.square(mean), 0.0))",
            "saved_running": "keras/src/layers/layer.py:534 (add_weight aggregation='none'); "
                             "tensorflow/python/distribute/values.py:54-55 (aggregation NONE: a replica-context "
                             "update writes that replica's own copy)",
            "engine": "tensorflow/python/distribute/distribute_lib.py:3648-3653 (the all-reduce's gradient); "
                      "tensorflow/python/distribute/mirrored_strategy.py:373-381 (collective keys from 1; "
                      "ReductionToOneDevice, MirroredStrategy's own CPU fallback)",
            "cpu": "measured (tests/test_keras_replicas.py)",
        },
        proofs={
            "shard_weighting": (f"{_REPLICAS}::test_synchronized_statistics_weight_shards_by_count",
                                f"{_REPLICAS}::test_every_case_that_runs_matches_its_reference"),
            "saved_running": (f"{_REPLICAS}::test_saved_running_statistics_are_replica_0s",),
            "cpu": (f"{_REPLICAS}::test_every_case_that_runs_matches_its_reference",),
        },
    ),
    "keras-jax": ReplicaConvention(
        framework="keras-jax",
        layer="keras.layers.BatchNormalization under keras.distribution.DataParallel (no switch)",
        switch="keras.distribution.set_distribution(keras.distribution.DataParallel(devices=...)) before building "
               "the model: every BatchNormalization then normalizes with the global batch (synchronized=True "
               "raises ValueError on JAX)",
        engine="keras.distribution.DataParallel: one jax.jit program over the batch-sharded global batch (GSPMD) "
               "on R JAX host devices (XLA_FLAGS=--xla_force_host_platform_device_count=R)",
        shard_weighting="count",
        saved_running="replica0",
        cpu="yes",
        facts=(
            "Keras on JAX runs one global program: variables replicated, the batch sharded on its first axis; "
            "jnp.mean/jnp.var over the batch are the global batch's and XLA inserts the all-reduces. There is no "
            "per-replica BatchNorm in Keras on JAX (bnparity's 'local' mode runs the stateless model under "
            "jax.shard_map, and keeps device 0's statistics in the Keras variables).",
            "A global batch that R does not divide cannot be sharded (JAX's ValueError: 'should be divisible'): "
            "unequal shards do not exist, so the count weighting is never tested against unequal shards here.",
            "float64: BatchNormalization computes in float32 on JAX whatever its dtype (result_type(x, 'float32') "
            "maps float64 to float32 off TensorFlow); the builtin refuses float64 (the scratch keras.ops layer "
            "computes it).",
        ),
        citations={
            "layer": f"{_BN}:184-189 (synchronized=True only on TensorFlow); "
                     "keras/src/backend/jax/nn.py:1039-1043 (moments: synchronized raises NotImplementedError)",
            "switch": "keras/src/distribution/distribution_lib.py:533-627 (DataParallel), :610-613 "
                      "(get_data_layout: shard the first axis), :615-621 (variables replicated)",
            "shard_weighting": "keras/src/backend/jax/nn.py:1053-1054 (jnp.mean / jnp.var over the (global) batch)",
            "saved_running": "bnparity's choice for the shard_map 'local' mode (frameworks/keras/replicas.py, "
                             "data_parallel.py): the Keras variable holds one array, device 0's",
            "cpu": "measured (tests/test_keras_replicas.py)",
        },
        proofs={
            "shard_weighting": (f"{_REPLICAS}::test_every_case_that_runs_matches_its_reference",),
            "saved_running": (f"{_REPLICAS}::test_saved_running_statistics_are_replica_0s",),
            "cpu": (f"{_REPLICAS}::test_what_the_backend_refuses_is_a_skip_with_its_reason",),
        },
    ),
}
