"""MXNet Gluon's conventions (mxnet 1.9.1, CPU), as data: BatchNorm's CONVENTION, proved by
tests/test_mxnet_conventions.py, and LAYER_CONVENTIONS (LayerNorm, GroupNorm, InstanceNorm), proved by
tests/test_mxnet_norms.py."""

from bnparity.frameworks.conventions import Convention, LayerConvention, ReplicaConvention

_GLUON = "mxnet/gluon/nn/basic_layers.py"
_OP = "src/operator/nn/batch_norm.cc"
_ONEDNN = "src/operator/nn/mkldnn/mkldnn_batch_norm-inl.h"

CONVENTION = Convention(
    framework="mxnet",
    layer="mxnet.gluon.nn.BatchNorm (operator BatchNorm)",
    momentum=0.9,
    momentum_weighs="old",
    eps=1e-5,
    running_var="biased",
    running_var_configurable=False,
    channel_axis=1,
    variance_algorithm="two-pass",
    train_eval_switch="autograd.record() (train_mode=True) normalizes with batch statistics; outside "
                      "record() (or under predict_mode) with moving statistics; use_global_stats=True uses "
                      "moving statistics in training too; there is no track_running_stats=False",
    scale_switch="scale=False sets the operator's fix_gamma=True: γ is forced to 1 (and overwritten with 1 "
                 "in training), its gradient is 0. center=False only freezes β (grad_req='null'); β is "
                 "still added. Pitfall: the raw operator (nd.BatchNorm / sym.BatchNorm) defaults to "
                 "fix_gamma=True and eps=1e-3, silently ignoring a learned γ",
    running_stats_written="backward pass: a training forward under autograd.record() only saves μ_B and "
                          "1/√(σ²_B+ε); _backward_BatchNorm updates moving_mean/moving_var (native and "
                          "oneDNN CPU kernels alike), so a training forward without backward updates nothing",
    citations={
        "momentum": f"{_GLUON}: BatchNorm.__init__(momentum=0.9) (line 433); {_OP}: BatchNorm docstring "
                    "'moving_mean = moving_mean * momentum + data_mean * (1 - momentum)'; "
                    "batch_norm-inl.h: BatchNormParam `float momentum` (parsed as float32: 0.899999976)",
        "eps": f"{_GLUON}: BatchNorm.__init__(epsilon=1e-5) (line 433), passed as 'eps' (line 339); "
               "the operator's own default is eps=1e-3 (nd.BatchNorm docstring)",
        "running_var": f"{_OP}: BatchNormForwardImpl divides the sum of squares by itemCountPerChannel; "
                       "BatchNormBackwardImpl stores INVSTD_TO_VARIANCE(invstd, eps) in the moving variance",
        "channel_axis": f"{_GLUON}: BatchNorm.__init__(axis=1), docstring 'after a Conv2D layer with "
                        "layout=NCHW, set axis=1'",
        "variance_algorithm": f"{_OP}: BatchNormForwardImpl: mean first, then the sum of "
                              "(x - mean)² in a second pass over the data",
        "train_eval_switch": "mxnet/autograd.py: record(train_mode=True) (line 120), is_training() (line 79); "
                             f"{_OP}: is_train_and_not_global_stats = ctx.is_train && !use_global_stats",
        "scale_switch": f"{_GLUON}: _BatchNorm.__init__ 'fix_gamma': not scale (line 340), "
                        "beta grad_req='write' if center else 'null' (line 349); "
                        f"{_OP}: BatchNormForwardImpl fix_gamma branch w[channel] = 1; "
                        "nd.BatchNorm docstring: fix_gamma default=1, eps default=0.0010000000474974513 "
                        "(float32 1e-3)",
        "running_stats_written": f"{_OP}: BatchNormBackwardImpl '// update running averages'; "
                                 f"{_ONEDNN}: MKLDNNBatchNormBackward updates moving_mean_ptr/moving_var_ptr, "
                                 "MKLDNNBatchNormForward writes only the outputs mean and var (invstd)",
    },
    constructor="mxnet.gluon.nn.BatchNorm(momentum={m:g}, epsilon={eps:g})",
    batch_of_one="normalizes to β",
    proofs={
        "momentum": ("tests/test_mxnet_conventions.py::test_default_momentum_weighs_the_old_value",
                     "tests/test_mxnet_conventions.py::test_momentum_is_parsed_as_float32"),
        "running_var": ("tests/test_mxnet_conventions.py::test_running_var_is_the_biased_batch_variance",
                        "tests/test_mxnet_adapter.py::test_builtin_realize_fixes_what_mxnet_stores"),
        "eps": ("tests/test_mxnet_conventions.py::test_default_eps",),
        "channel_axis": ("tests/test_mxnet_conventions.py::test_default_channel_axis_is_1",
                         "tests/test_mxnet_adapter.py::test_nhwc_through_the_adapter_equals_nchw_transposed"),
        "variance_algorithm": ("tests/test_mxnet_conventions.py::test_variance_is_two_pass",),
        "train_eval_switch": (
            "tests/test_mxnet_conventions.py::test_record_selects_batch_statistics_and_eval_the_running_ones",
            "tests/test_mxnet_conventions.py::test_use_global_stats_normalizes_with_running_statistics_in_training",
            "tests/test_mxnet_adapter.py::test_builtin_without_running_stats_is_unsupported"),
        "running_stats_written": (
            "tests/test_mxnet_conventions.py::test_running_statistics_are_written_in_the_backward_pass",
            "tests/test_mxnet_conventions.py::test_training_forward_without_backward_never_updates"),
        "scale_switch": (
            "tests/test_mxnet_conventions.py::test_scale_false_forces_gamma_to_one_and_center_false_still_adds_beta",
            "tests/test_mxnet_conventions.py::test_gluon_uses_gamma_but_the_raw_operator_ignores_it"),
        "batch_of_one": ("tests/test_parity.py::test_a_1d_batch_of_one_raises_or_normalizes_to_beta_as_registered",),
    },
)

# The other normalizations' layers (gluon.nn in mxnet 1.9.1, CPU). MXNet has no RMSNorm layer, so no row for it.
# Proved by tests/test_mxnet_norms.py. The operators' C++ sources are not installed: what only they decide
# (the variance algorithm, the CPU dtypes) is cited from the installed docstrings and errors and measured.
_NORMS = "tests/test_mxnet_norms.py"
_GEN = "mxnet/ndarray/gen_op.py"
_AFFINE = ("scale=False / center=False only freeze γ / β (grad_req 'null'): the operator still multiplies by γ and "
           "adds β")


def _proof(*names: str) -> tuple[str, ...]:
    return tuple(f"{_NORMS}::{name}" for name in names)


LAYER_CONVENTIONS = (
    LayerConvention(
        framework="mxnet",
        normalization="layernorm",
        layer="mxnet.gluon.nn.LayerNorm (operator LayerNorm)",
        defaults={"axis": -1, "eps": 1e-5, "affine": True, "bias": True, "normalized_dims": 1,
                  "variance": "two-pass"},
        facts={
            "eps": "ε defaults to 1e-5 and the operator stores it as a float32 (9.99999975e-06), in float64 too.",
            "variance": "σ² is computed in two passes (mean of squared deviations), not as E[x²] − E[x]².",
            "axis": "The normalized axis is the last (axis=-1); `axis` picks any other single axis.",
            "normalized_dims": "Exactly one axis is normalized: `axis` is an int, so PyTorch's multi-axis "
                               "normalized_shape has no equivalent (reshape to one axis first).",
            "affine": f"γ and β have shape (C,) of the normalized axis, center=True and scale=True; {_AFFINE}, "
                      "so a γ or β that is set still applies.",
            "bias": "There is no bias switch: center=False freezes β (initially 0) but still adds it.",
            "eval": "Training and eval compute the same thing: no running statistics are kept.",
            "dtypes": "CPU kernels for float64, float32 and float16; bfloat16 raises 'Unknown type enum 12'.",
        },
        citations={
            "eps": "mxnet/gluon/nn/basic_layers.py:734: LayerNorm.__init__(axis=-1, epsilon=1e-5, ...); "
                   f"{_GEN}:1469: 'eps : float, optional, default=9.99999975e-06' (a C float)",
            "variance": f"{_GEN}:1441: 'out = (data - mean(data, axis)) / sqrt(var(data, axis) + epsilon) * gamma "
                        "+ beta' (the algorithm is in src/operator/nn/layer_norm.cc, not installed: measured)",
            "axis": "mxnet/gluon/nn/basic_layers.py:692: 'axis : int, default -1 The axis that should be "
                    "normalized'",
            "normalized_dims": "mxnet/gluon/nn/basic_layers.py:692: 'axis : int'; the operator rejects a tuple: "
                               "'Invalid Parameter format for axis expect int'",
            "affine": "mxnet/gluon/nn/basic_layers.py:743-748: gamma/beta shape=(in_channels,), grad_req='write' "
                      "if scale/center else 'null'; :752: layer_norm(data, gamma=gamma, beta=beta, ...) always",
            "bias": "mxnet/gluon/nn/basic_layers.py:746-752: beta grad_req='write' if center else 'null', always "
                    "passed to the operator",
            "eval": "mxnet/gluon/nn/basic_layers.py:743-748: the only parameters are gamma and beta (no "
                    "running statistics); :752 the same call in training and eval",
            "dtypes": "measured: MXNetError 'Unknown type enum 12' for bfloat16 (src/operator/nn/layer_norm.cc "
                      "LayerNormType, not installed)",
        },
        proofs={
            "eps": _proof("test_default_eps_is_1e_5_stored_as_float32",
                          "test_builtin_realize_fixes_what_mxnet_computes",
                          "test_the_eps_rounding_is_needed_in_float64", "test_defaults_mode_reproduces_the_row"),
            "variance": _proof("test_variance_is_two_pass", "test_builtin_realize_fixes_what_mxnet_computes"),
            "axis": _proof("test_layernorm_normalizes_the_last_axis_only"),
            "normalized_dims": _proof("test_layernorm_normalizes_the_last_axis_only",
                                      "test_builtin_layernorm_normalizes_one_axis_only"),
            "affine": _proof("test_center_and_scale_false_freeze_but_still_apply_beta_and_gamma",
                             "test_layernorm_normalizes_the_last_axis_only"),
            "bias": _proof("test_center_and_scale_false_freeze_but_still_apply_beta_and_gamma",
                           "test_matches_the_reference"),
            "eval": _proof("test_eval_computes_what_training_does"),
            "dtypes": _proof("test_builtin_dtypes_are_the_kernels_mxnet_has"),
        },
        constructor="mxnet.gluon.nn.LayerNorm(axis=-1, epsilon=1e-5)",
    ),
    LayerConvention(
        framework="mxnet",
        normalization="groupnorm",
        layer="mxnet.gluon.nn.GroupNorm (operator GroupNorm)",
        defaults={"axis": 1, "eps": 1e-5, "affine": True, "groups": 1, "params": "group", "variance": "two-pass"},
        facts={
            "eps": "ε defaults to 1e-5 and the operator stores it as a float32 (9.99999975e-06), in float64 too.",
            "variance": "σ² is computed in two passes (mean of squared deviations), not as E[x²] − E[x]².",
            "groups": "num_groups defaults to 1 (one group: each sample normalized over all its channels and "
                      "positions), where PyTorch requires it and Flax defaults to 32.",
            "params": "γ and β are one per GROUP, shape (num_groups,), not one per channel as in PyTorch and Flax: "
                      "per-channel weights cannot be loaded.",
            "axis": "Inputs are channels-first (N, C, ...) of rank 3 or more; there is no axis argument and an "
                    "(N, C) input raises.",
            "affine": f"center=True and scale=True; {_AFFINE}, so a γ or β that is set still applies.",
            "eval": "Training and eval compute the same thing: no running statistics are kept.",
            "dtypes": "CPU kernels for float64, float32 and float16; bfloat16 raises 'Unknown type enum 12'.",
        },
        citations={
            "eps": "mxnet/gluon/nn/basic_layers.py:825: GroupNorm.__init__(num_groups=1, epsilon=1e-5, ...); "
                   f"{_GEN}:1206: 'eps : float, optional, default=9.99999975e-06' (a C float)",
            "variance": f"{_GEN}:1188: 'out = (data - mean(data, axis)) / sqrt(var(data, axis) + epsilon) * gamma "
                        "+ beta' (the algorithm is in src/operator/nn/group_norm.cc, not installed: measured)",
            "groups": "mxnet/gluon/nn/basic_layers.py:778: 'num_groups: int, default 1'; :825",
            "params": "mxnet/gluon/nn/basic_layers.py:834-839: gamma and beta shape=(num_groups,)",
            "axis": "mxnet/gluon/nn/basic_layers.py:767: 'the leftmost 2 axis are batch and channel'; :794 "
                    "'input tensor with shape (N, C, ...)'; the operator: 'Check failed: dshape.ndim() >= 3U'",
            "affine": "mxnet/gluon/nn/basic_layers.py:834-842: grad_req='write' if scale/center else 'null'; "
                      "F.GroupNorm(data, gamma=gamma, beta=beta, ...) always",
            "eval": "mxnet/gluon/nn/basic_layers.py:834-839: the only parameters are gamma and beta; :842 the "
                    "same call in training and eval",
            "dtypes": "measured: MXNetError 'Unknown type enum 12' for bfloat16 (src/operator/nn/group_norm.cc, "
                      "not installed)",
        },
        proofs={
            "eps": _proof("test_default_eps_is_1e_5_stored_as_float32",
                          "test_builtin_realize_fixes_what_mxnet_computes", "test_defaults_mode_reproduces_the_row"),
            "variance": _proof("test_variance_is_two_pass", "test_builtin_realize_fixes_what_mxnet_computes"),
            "groups": _proof("test_groupnorm_defaults_to_one_group_with_per_group_parameters"),
            "params": _proof("test_groupnorm_defaults_to_one_group_with_per_group_parameters",
                             "test_groupnorm_gamma_and_beta_are_per_group",
                             "test_builtin_groupnorm_has_no_per_channel_parameters"),
            "axis": _proof("test_groupnorm_takes_channels_first_inputs_of_rank_3_or_more",
                           "test_builtin_groupnorm_and_instancenorm_need_rank_3"),
            "affine": _proof("test_center_and_scale_false_freeze_but_still_apply_beta_and_gamma"),
            "eval": _proof("test_eval_computes_what_training_does"),
            "dtypes": _proof("test_builtin_dtypes_are_the_kernels_mxnet_has"),
        },
        constructor="mxnet.gluon.nn.GroupNorm(num_groups=1, epsilon=1e-5)",
    ),
    LayerConvention(
        framework="mxnet",
        normalization="instancenorm",
        layer="mxnet.gluon.nn.InstanceNorm (operator InstanceNorm)",
        defaults={"axis": 1, "eps": 1e-5, "track_running_stats": False, "variance": "two-pass"},
        facts={
            "eps": "ε defaults to 1e-5 in gluon (the raw nd.InstanceNorm operator's default is 1e-3) and is added "
                   "to σ² under the sqrt, y = (x − μ)/√(σ² + ε), though both docstrings say (x − μ)/(√Var + ε).",
            "variance": "σ² is computed in two passes (mean of squared deviations), not as E[x²] − E[x]².",
            "affine": "The defaults are center=True, scale=False: β learned, γ frozen at 1, neither PyTorch's "
                      f"affine=False nor affine=True; {_AFFINE}, so a γ or β that is set still applies.",
            "track_running_stats": "No running statistics are kept: eval normalizes with the eval input's own "
                                   "statistics, as training does (PyTorch's default track_running_stats=False).",
            "axis": "Channels at axis 1 by default; `axis` picks another (the layer swaps it to 1 and back); "
                    "inputs must have rank 3 or more.",
            "dtypes": "float32 only on CPU: float64, float16 and bfloat16 raise 'Unsupported data type'.",
        },
        citations={
            "eps": "mxnet/gluon/nn/basic_layers.py:648: InstanceNorm.__init__(axis=1, epsilon=1e-5, center=True, "
                   f"scale=False, ...); :594 and {_GEN}:1253: 'out = (x - mean) / (sqrt(Var) + epsilon)' (not what "
                   f"it computes: measured); {_GEN}:1297: raw operator 'eps : float, optional, default=0.00100000005'",
            "variance": f"{_GEN}:1245-1253 (the algorithm is in src/operator/instance_norm-inl.h, not installed: "
                        "measured)",
            "affine": "mxnet/gluon/nn/basic_layers.py:648: center=True, scale=False; :655-660: grad_req='write' if "
                      "scale/center else 'null'; :663-668: F.InstanceNorm(x, gamma, beta, ...) always",
            "track_running_stats": "mxnet/gluon/nn/basic_layers.py:655-660: the only parameters are gamma and beta "
                                   "(no moving statistics); :663-668 the same call in training and eval",
            "axis": "mxnet/gluon/nn/basic_layers.py:598-603: 'axis : int, default 1 ... Data will be normalized "
                    f"along axes excluding the first axis and the axis given'; :666-668 swapaxes(1, axis); {_GEN}:1248"
                    ": '(n>2)'; the operator: 'InstanceNorm only supports input tensors of rank >= 3'",
            "dtypes": "include/mxnet/operator.h:226-227: the legacy operator's InferType accepts only "
                      "default_type_flag (float32): 'Unsupported data type'",
        },
        proofs={
            "eps": _proof("test_instancenorm_default_eps_is_1e_5_not_the_operators_1e_3",
                          "test_instancenorm_adds_eps_under_the_square_root",
                          "test_builtin_realize_fixes_what_mxnet_computes", "test_defaults_mode_reproduces_the_row"),
            "variance": _proof("test_variance_is_two_pass", "test_builtin_realize_fixes_what_mxnet_computes"),
            "affine": _proof("test_instancenorm_defaults_learn_beta_but_not_gamma",
                             "test_center_and_scale_false_freeze_but_still_apply_beta_and_gamma"),
            "track_running_stats": _proof("test_instancenorm_keeps_no_running_statistics",
                                          "test_builtin_instancenorm_keeps_no_running_statistics"),
            "axis": _proof("test_instancenorm_channel_axis_and_rank",
                           "test_builtin_groupnorm_and_instancenorm_need_rank_3"),
            "dtypes": _proof("test_builtin_dtypes_are_the_kernels_mxnet_has"),
        },
        constructor="mxnet.gluon.nn.InstanceNorm(axis=1, epsilon=1e-5, center=True, scale=False)",
    ),
)

# BatchNorm across data-parallel replicas: gluon.contrib.nn.SyncBatchNorm on R CPU contexts (frameworks/mxnet/
# replicas.py), proved by tests/test_mxnet_replicas.py. The operator's C++ source is not installed: cited from the
# mxnet 1.9.1 tag of github.com/apache/mxnet and measured.
_REPLICAS = "tests/test_mxnet_replicas.py"
_SYNC_OP = "src/operator/contrib/sync_batch_norm-inl.h"
_CONTRIB = "mxnet/gluon/contrib/nn/basic_layers.py"

REPLICA_CONVENTION = ReplicaConvention(
    framework="mxnet",
    layer="mxnet.gluon.contrib.nn.SyncBatchNorm (operator _contrib_SyncBatchNorm)",
    switch="replace nn.BatchNorm with gluon.contrib.nn.SyncBatchNorm(in_channels=C, num_devices=len(ctx)) and run "
           "the block on every context: net.initialize(ctx=ctx); with autograd.record(): "
           "outs = [net(x) for x in gluon.utils.split_and_load(batch, ctx)]",
    engine="MXNet Gluon across CPU contexts cpu(0)…cpu(R-1) of one process, each context its own engine worker "
           "pool (ThreadedEnginePerDevice; MXNET_CPU_WORKER_NTHREADS=R threads each, one suffices)",
    shard_weighting="equal",
    saved_running="mean",
    cpu="yes",
    facts=(
        "SyncBatchNorm averages the contexts' E[x] and E[x²] with equal weights 1/R (sum / num_devices), so with "
        "unequal shards (a last batch R does not divide) it normalizes with neither the global batch's statistics "
        "nor any shard's. Measured for shards 4+3 and 3+3+3+1: y and dx are off the global batch's by 1e-2 to 0.4 "
        "of max(1, |reference|), the running statistics by 7e-3 to 7e-2; the backward pass weights Σ dy and "
        "Σ dy·x̂ the same way (equal-weight BatchNorm, bnparity.reference.crossreplica.equal_weight_step).",
        "σ² = E[x²] − E[x]² in one pass (not clipped), in float32: SyncBatchNorm has no float64 kernel (MXNetError "
        "'TBlob.get_with_shape: data type do not match specified type'; on several contexts the error can crash the "
        "process), and its docstring rules out float16.",
        "The channel axis is fixed to 1 (no axis argument): NHWC inputs must be transposed first.",
        "ε and momentum are C floats (rounded to float32); momentum weighs the old running value, the running "
        "variance is the biased σ², updated in the backward pass, identical on every context.",
        "Every context must run the block in every step: the operator blocks an engine worker thread in a barrier "
        "keyed by the block's prefix until num_devices contexts arrive. A context that skips it, a num_devices "
        "larger than the contexts used, or MXNET_ENGINE_TYPE=NaiveEngine hang forever.",
        "Without SyncBatchNorm (plain nn.BatchNorm on several contexts) each context normalizes with its own shard "
        "and keeps its own running statistics; save_parameters stores their mean over the contexts.",
    ),
    citations={
        "layer": f"{_CONTRIB}:165 class SyncBatchNorm(BatchNorm); :224 super().__init__(axis=1, ...); :233-235 "
                 "_kwargs 'ndev': num_devices, 'key': self.prefix; :246 F.contrib.SyncBatchNorm",
        "shard_weighting": f"{_SYNC_OP}:272-273 scale = C / size (1/m_r); :307-308 mean = scale·Σx, var = "
                           "scale·Σx²; :153-156 SharedND::MeanReady: data_[0] += data_[i]; mean_ = data_[0] / "
                           "num_devices_; :327 var = var − mean²; :402-419 Σ dy and Σ dy·(x − μ) averaged the "
                           "same way; :435-440 dx scaled by the local 1/m_r (mxnet 1.9.1)",
        "saved_running": "mxnet/gluon/parameter.py:387-396 Parameter._reduce: add_n(*(w.copyto(cpu) for w in "
                         "list_data())) / len(block); mxnet/gluon/block.py:450 save_parameters: "
                         "arg_dict = {key: val._reduce() ...}",
        "cpu": f"src/operator/contrib/sync_batch_norm.cc:31-32 CreateOp<cpu> (mxnet 1.9.1); {_SYNC_OP}:277-292 "
               "every tensor read as real_t (float32): no float64 kernel; "
               f"{_CONTRIB}:172 'Current implementation of SyncBN does not support FP16 training'",
        "engine": "src/engine/engine.cc:34 default ThreadedEnginePerDevice; "
                  "src/engine/threaded_engine_perdevice.cc:105-120 one worker pool per CPU dev_id "
                  "(cpu_normal_workers_.Get(dev_id, ...)) of MXNET_CPU_WORKER_NTHREADS threads "
                  "(src/initialize.cc:91, default 1); src/engine/naive_engine.cc:149-152 NaiveEngine's PushAsync "
                  "is synchronous",
        "hang": f"{_SYNC_OP}:299-300 barrier and rank registered by key and ndev; :320 and :415 "
                "global_barrier->Wait() (forward and backward)",
        "running": f"{_SYNC_OP}:49-50 float eps, float momentum; :397-398 moving_mean = moving_mean·momentum + "
                   "mean·(1 − momentum), moving_var likewise with the biased var (in Backward)",
    },
    proofs={
        "shard_weighting": (f"{_REPLICAS}::test_builtin_sync_batchnorm_weights_the_shards_equally",
                            f"{_REPLICAS}::test_scratch_is_the_global_batch_with_unequal_shards_too"),
        "saved_running": (f"{_REPLICAS}::test_saved_running_is_the_mean_over_the_contexts",),
        "cpu": (f"{_REPLICAS}::test_builtin_sync_batchnorm_weights_the_shards_equally",
                f"{_REPLICAS}::test_builtin_sync_batchnorm_has_no_float64_kernel"),
        "engine": (f"{_REPLICAS}::test_the_subprocess_ran_every_case_on_the_descriptors_engine",
                   f"{_REPLICAS}::test_a_hung_barrier_fails_fast"),
        "per_replica": (f"{_REPLICAS}::test_builtin_per_replica_is_each_contexts_own_batchnorm",
                        f"{_REPLICAS}::test_dgamma_and_dbeta_are_each_contexts_own"),
        "running": (f"{_REPLICAS}::test_builtin_realize_is_what_mxnet_computes",
                    f"{_REPLICAS}::test_builtin_sync_batchnorm_weights_the_shards_equally"),
    },
)
