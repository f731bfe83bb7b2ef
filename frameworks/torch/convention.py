"""PyTorch's conventions (torch 2.13), as data: BatchNorm's row, the other normalizations' rows and the cross-replica
row. Proved by the tests in their `proofs`."""

from bnparity.frameworks.conventions import Convention, LayerConvention, ReplicaConvention

_SRC = "torch/nn/modules/batchnorm.py"

CONVENTION = Convention(
    framework="torch",
    layer="torch.nn.BatchNorm1d / BatchNorm2d / BatchNorm3d",
    momentum=0.1,
    momentum_weighs="new",
    eps=1e-5,
    running_var="unbiased",
    running_var_configurable=False,
    channel_axis=1,
    variance_algorithm="two-pass",
    train_eval_switch="module.train() / module.eval() (the `training` flag); track_running_stats=False "
                      "uses batch statistics in eval too",
    scale_switch="affine=False removes both γ and β",
    running_stats_written="forward pass, in training mode",
    citations={
        "momentum": f"{_SRC}: _NormBase.__init__(momentum=0.1); docstring: "
                    "x_new = (1 - momentum) * x_old + momentum * x_t",
        "eps": f"{_SRC}: _NormBase.__init__(eps=1e-5)",
        "running_var": f"{_SRC}: docstring 'the moving average of the variance is calculated via the "
                       "unbiased estimator'; aten/src/ATen/native/Normalization.cpp scales by n/(n-1)",
        "channel_axis": f"{_SRC}: BatchNorm2d expects (N, C, H, W)",
        "variance_algorithm": "aten/src/ATen/native/cpu/batch_norm_kernel.cpp: mean, then sum of "
                              "squared deviations (Welford in the collect-stats path)",
        "train_eval_switch": f"{_SRC}: _BatchNorm.forward: bn_training = self.training or "
                             "running stats are None",
        "running_stats_written": f"{_SRC}: _BatchNorm.forward passes running_mean/var to F.batch_norm, "
                                 "which updates them in place during the forward pass",
    },
    constructor="torch.nn.BatchNorm2d(C, momentum={m:g}, eps={eps:g})",
    batch_of_one="raises (its unbiased running variance would divide by m − 1 = 0)",
    proofs={
        "momentum": ("tests/test_torch_adapter.py::test_momentum_weighs_the_new_batch_and_running_var_is_unbiased",),
        "running_var": ("tests/test_torch_adapter.py::test_realize_fixes_the_running_variance_torch_always_stores",),
        "eps": ("tests/test_torch_adapter.py::test_registry_defaults_are_the_module_defaults",),
        "channel_axis": ("tests/test_torch_adapter.py::test_layout_conversion_nhwc_equals_nchw_transposed",),
        "variance_algorithm": ("tests/test_torch_adapter.py::test_train_eval_switch_and_two_pass_variance",),
        "train_eval_switch": ("tests/test_torch_adapter.py::test_train_eval_switch_and_two_pass_variance",),
        "running_stats_written": ("tests/test_torch_adapter.py::test_running_stats_are_written_in_the_forward_pass",),
        "batch_of_one": ("tests/test_torch_adapter.py::test_batch_of_one_in_1d_is_an_error",),
    },
)


# --- LayerNorm, GroupNorm, InstanceNorm, RMSNorm (torch 2.13) -------------------------------------------------

_NORM = "torch/nn/modules/normalization.py"
_IN = "torch/nn/modules/instancenorm.py"
_F = "torch/nn/functional.py"
_T = "tests/test_torch_norms.py"

LAYER_NORM = LayerConvention(
    framework="torch",
    normalization="layernorm",
    layer="torch.nn.LayerNorm",
    defaults={"axis": -1, "eps": 1e-5, "affine": True, "bias": True, "params": "elementwise",
              "variance": "two-pass"},
    facts={
        "normalized_dims": "normalized_shape is required (no default): the statistics run over the trailing "
                           "len(normalized_shape) axes, whose sizes must equal it.",
        "eps": "ε defaults to 1e-5, added to the biased variance inside the square root.",
        "params": "γ and β have the shape of normalized_shape (one per normalized element); there is no "
                  "one-per-feature option over several axes.",
        "affine": "elementwise_affine=True by default; False removes both γ and β.",
        "bias": "bias=False removes β only (y = γ x̂).",
        "variance": "σ² is the biased variance computed in two passes, accurate on an offset input; not configurable.",
        "eval": "training and eval compute the same: the statistics are always the sample's own.",
        "half_precision": "float16 and bfloat16 inputs are normalized in float32 and the result rounded once.",
    },
    citations={
        "normalized_dims": f"{_NORM}:114: mean and standard-deviation calculated over the last D dimensions, D the "
                           "dimension of normalized_shape",
        "eps": f"{_NORM}:191: eps: float = 1e-5",
        "params": f"{_NORM}:206-212: weight and bias = Parameter(torch.empty(self.normalized_shape))",
        "affine": f"{_NORM}:192: elementwise_affine: bool = True; 215-217: otherwise weight and bias are None",
        "bias": f"{_NORM}:193: bias: bool = True; 213-214: register_parameter('bias', None)",
        "variance": f"{_NORM}:120: the variance is calculated via the biased estimator; "
                    "torch/_refs/__init__.py:3343-3344: torch.var_mean(..., unbiased=False)",
        "eval": f"{_NORM}:129-130: uses statistics computed from input data in both training and evaluation modes",
        "half_precision": "torch/_refs/__init__.py:3339-3340: computation_dtype = get_computation_dtype(a.dtype); "
                          "torch/_prims_common/__init__.py:1504-1507: float16, bfloat16 -> float32",
    },
    proofs={
        "normalized_dims": (f"{_T}::test_layernorm_normalizes_the_trailing_normalized_shape",),
        "eps": (f"{_T}::test_default_eps_by_output",),
        "params": (f"{_T}::test_layernorm_normalizes_the_trailing_normalized_shape",),
        "affine": (f"{_T}::test_layernorm_affine_and_bias_switches",),
        "bias": (f"{_T}::test_layernorm_affine_and_bias_switches",),
        "variance": (f"{_T}::test_two_pass_variance_on_an_offset_input",),
        "eval": (f"{_T}::test_eval_equals_training_without_running_statistics",),
        "half_precision": (f"{_T}::test_half_precision_is_computed_in_float32",),
    },
    constructor="torch.nn.LayerNorm(x.shape[-k:], eps=1e-5)",
)

GROUP_NORM = LayerConvention(
    framework="torch",
    normalization="groupnorm",
    layer="torch.nn.GroupNorm",
    defaults={"axis": 1, "eps": 1e-5, "affine": True, "params": "channel", "variance": "two-pass"},
    facts={
        "groups": "num_groups is required (no default) and must divide num_channels; channel c is in group "
                  "c // (C/G) (consecutive channels).",
        "eps": "ε defaults to 1e-5.",
        "axis": "channels at axis 1, (N, C, *): the statistics run over each sample's C/G channels and every "
                "spatial position.",
        "params": "γ and β are per channel, shape (C,), not per group.",
        "affine": "affine=True by default; False removes γ and β (a keyword bias=False removes β only).",
        "variance": "two-pass σ² for a contiguous (NCHW) input, but E[x²] − E[x]² when the input is in the "
                    "channels_last memory format: the CPU kernel's NHWC path cancels on an offset input.",
        "eval": "training and eval compute the same: the statistics are always the sample's own.",
        "single_value": "F.group_norm raises when N·C/G·(spatial size) is 1, in eval too, although every group of "
                        "a batch of N > 1 may still hold one value.",
        "half_precision": "float16 and bfloat16 inputs are normalized in float32 and the result rounded once.",
    },
    citations={
        "groups": f"{_NORM}:295: num_groups: int (no default); 306-309: ValueError unless num_channels % "
                  "num_groups == 0; torch/_refs/__init__.py:3383-3386: reshape to (N, G, C/G, inner)",
        "eps": f"{_NORM}:297: eps: float = 1e-5",
        "axis": f"{_NORM}:248-251: channels separated into num_groups groups, statistics over each group; "
                "Shape: (N, C, *)",
        "params": f"{_NORM}:316-318: weight and bias = Parameter(torch.empty(num_channels))",
        "affine": f"{_NORM}:298: affine: bool = True; 302: bias: bool = True (keyword-only)",
        "variance": f"{_NORM}:254: biased estimator; the channels_last path is in the CPU kernel "
                    "(aten/src/ATen/native/cpu/group_norm_kernel.cpp, not installed): measured",
        "eval": f"{_NORM}:333-334: forward is F.group_norm with no training flag",
        "single_value": f"{_F}:3038-3041: _verify_batch_size([N·C // num_groups, num_groups] + spatial); "
                        f"{_F}:2850-2855: 'Expected more than 1 value per channel when training'",
        "half_precision": "torch/_refs/__init__.py:3379-3380: computation_dtype = "
                          "get_computation_dtype(input.dtype) (float16, bfloat16 -> float32)",
    },
    proofs={
        "groups": (f"{_T}::test_groupnorm_num_groups_is_required_and_groups_are_consecutive",),
        "eps": (f"{_T}::test_default_eps_by_output",),
        "axis": (f"{_T}::test_adapters_match_the_reference",),
        "params": (f"{_T}::test_groupnorm_params_are_per_channel",),
        "affine": (f"{_T}::test_groupnorm_params_are_per_channel",),
        "variance": (f"{_T}::test_two_pass_variance_on_an_offset_input",
                     f"{_T}::test_groupnorm_channels_last_uses_the_fast_variance"),
        "eval": (f"{_T}::test_eval_equals_training_without_running_statistics",),
        "single_value": (f"{_T}::test_groupnorm_refuses_one_value_per_channel_and_batch",),
        "half_precision": (f"{_T}::test_half_precision_is_computed_in_float32",),
    },
    constructor="torch.nn.GroupNorm(G, C, eps=1e-5)",
)

INSTANCE_NORM = LayerConvention(
    framework="torch",
    normalization="instancenorm",
    layer="torch.nn.InstanceNorm1d / InstanceNorm2d / InstanceNorm3d",
    defaults={"axis": 1, "eps": 1e-5, "affine": False, "track_running_stats": False, "momentum": 0.1,
              "momentum_weighs": "new", "running_var": "unbiased", "init_running_mean": 0.0,
              "init_running_var": 1.0, "variance": "two-pass"},
    facts={
        "axis": "InstanceNorm1d/2d/3d take (N, C, L), (N, C, H, W), (N, C, D, H, W): channels at axis 1, the "
                "statistics per sample and channel over the spatial positions.",
        "rank": "a 2-D input is not an (N, C) batch: InstanceNorm1d reads it as one unbatched (C, L) sample and "
                "normalizes each row over its columns.",
        "eps": "ε defaults to 1e-5.",
        "affine": "affine=False by default: no γ and β unless asked for (unlike BatchNorm).",
        "track_running_stats": "track_running_stats=False by default: eval normalizes with the eval input's own "
                               "statistics, exactly as training does.",
        "momentum": "momentum=0.1 weighs the new statistic (running = (1 − m)·running + m·new), as in BatchNorm; "
                    "but momentum=None freezes the running statistics (BatchNorm's None is a cumulative average).",
        "running_var": "the running variance averages over the batch the per-sample variances, each unbiased over "
                       "its m spatial values (× m/(m − 1)); the running mean averages the per-sample means.",
        "eval": "with track_running_stats=True, eval normalizes with the running statistics.",
        "variance": "σ² is the biased variance computed in two passes; not configurable.",
        "spatial_size": "training on one spatial value per channel (L = 1, or H = W = 1) raises ValueError.",
        "half_precision": "float16 and bfloat16 are not computed end to end in float32 (batch_norm's CPU path): "
                          "the error grows with |μ|/σ, unlike LayerNorm's and GroupNorm's.",
    },
    citations={
        "axis": f"{_IN}:194: Input (N, C, L) or (C, L); 212, 332, 452: 2D/3D, 3D/4D, 4D/5D inputs",
        "rank": f"{_IN}:130-131: input.dim() == _get_no_batch_dim() -> _handle_no_batch_input; 207-208: "
                "InstanceNorm1d's no-batch dim is 2",
        "eps": f"{_IN}:25: eps: float = 1e-5",
        "affine": f"{_IN}:27: affine: bool = False",
        "track_running_stats": f"{_IN}:28: track_running_stats: bool = False; 61: use_input_stats = "
                               "self.training or not self.track_running_stats",
        "momentum": f"{_IN}:26: momentum: float = 0.1; 166: x_new = (1 - momentum) x + momentum x_t; 62: "
                    "self.momentum if self.momentum is not None else 0.0 (torch/nn/modules/batchnorm.py:191-192: "
                    "BatchNorm's None is 1/num_batches_tracked)",
        "running_var": "torch/onnx/_internal/torchscript_exporter/symbolic_opset9.py:2854-2856: instance_norm "
                       "reshapes (N, C, H, W) to (1, N·C, H, W) and calls batch_norm, running stats repeated N "
                       "times; torch/nn/modules/batchnorm.py:322-324: the stored moving variance is unbiased",
        "eval": f"{_IN}:157-159: running estimates kept in training are used for normalization during evaluation",
        "variance": f"{_IN}:151: the variance is calculated via the biased estimator",
        "spatial_size": f"{_F}:2950-2952: if use_input_stats: _verify_spatial_size; 2911-2919: 'Expected more "
                        "than 1 spatial element when training'",
        "half_precision": "measured (aten/src/ATen/native/Normalization.cpp is not installed)",
    },
    proofs={
        "axis": (f"{_T}::test_adapters_match_the_reference",),
        "rank": (f"{_T}::test_instancenorm1d_reads_a_2d_input_as_one_unbatched_sample",),
        "eps": (f"{_T}::test_default_eps_by_output",),
        "affine": (f"{_T}::test_instancenorm_defaults",),
        "track_running_stats": (f"{_T}::test_instancenorm_defaults",),
        "momentum": (f"{_T}::test_instancenorm_running_statistics",
                     f"{_T}::test_instancenorm_momentum_none_freezes_the_running_statistics"),
        "running_var": (f"{_T}::test_instancenorm_running_statistics",),
        "eval": (f"{_T}::test_instancenorm_running_statistics",),
        "variance": (f"{_T}::test_two_pass_variance_on_an_offset_input",),
        "spatial_size": (f"{_T}::test_instancenorm_refuses_one_spatial_value",),
        "half_precision": (f"{_T}::test_instancenorm_half_precision_error_grows_with_the_mean",),
    },
    constructor="torch.nn.InstanceNorm2d(C, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False)",
)

RMS_NORM = LayerConvention(
    framework="torch",
    normalization="rmsnorm",
    layer="torch.nn.RMSNorm",
    defaults={"axis": -1, "eps": None, "affine": True, "params": "elementwise"},
    facts={
        "normalized_dims": "normalized_shape is required (no default): the mean square runs over the trailing "
                           "len(normalized_shape) axes.",
        "eps": "eps=None by default: ε is the machine epsilon of the computation type, float32's (1.19e-7) for "
               "float16, bfloat16 and float32 inputs and float64's (2.2e-16) for float64 inputs.",
        "params": "γ has the shape of normalized_shape (one per normalized element); there is no β.",
        "affine": "elementwise_affine=True by default; False removes γ.",
        "eval": "training and eval compute the same: the statistics are always the sample's own.",
        "half_precision": "float16 and bfloat16 inputs are normalized in float32 and the result rounded once.",
    },
    citations={
        "normalized_dims": f"{_NORM}:353-356: the RMS is taken over the last D dimensions of normalized_shape",
        "eps": f"{_NORM}:395: eps: float | None = None; 368-371: machine epsilon of the computation (opmath) "
               "type; torch/_decomp/decompositions.py:1962-1966: finfo(float32).eps for a float32 computation "
               "dtype, else finfo(float64).eps",
        "params": f"{_NORM}:409-411: weight = Parameter(torch.empty(self.normalized_shape)); no bias",
        "affine": f"{_NORM}:396: elementwise_affine: bool = True; 413: register_parameter('weight', None)",
        "eval": f"{_NORM}:423-427: forward is F.rms_norm with no training flag",
        "half_precision": "torch/_decomp/decompositions.py:1957-1959: upcast is needed for fp16 and bf16 "
                          "(input.to(computation_dtype))",
    },
    proofs={
        "normalized_dims": (f"{_T}::test_rmsnorm_has_elementwise_gamma_and_no_beta",
                            f"{_T}::test_adapters_match_the_reference"),
        "eps": (f"{_T}::test_rmsnorm_default_eps_is_the_machine_epsilon_of_the_computation_type",),
        "params": (f"{_T}::test_rmsnorm_has_elementwise_gamma_and_no_beta",),
        "affine": (f"{_T}::test_rmsnorm_has_elementwise_gamma_and_no_beta",),
        "eval": (f"{_T}::test_eval_equals_training_without_running_statistics",),
        "half_precision": (f"{_T}::test_half_precision_is_computed_in_float32",),
    },
    constructor="torch.nn.RMSNorm(x.shape[-k:], eps=None)",
    eps_rule="machine-epsilon",
)

LAYER_CONVENTIONS: tuple[LayerConvention, ...] = (LAYER_NORM, GROUP_NORM, INSTANCE_NORM, RMS_NORM)


# --- BatchNorm across data-parallel replicas (torch 2.13.0+cpu: the installed source's lines) --------------------

_SYNC = "torch/nn/modules/_functions.py"  # _SRC is torch/nn/modules/batchnorm.py
_DDP = "torch/nn/parallel/distributed.py"
_TR = "tests/test_torch_replicas.py::"
_TD = "tests/test_torch_data_parallel.py::"

REPLICA_CONVENTION = ReplicaConvention(
    framework="torch",
    layer="torch.nn.SyncBatchNorm",
    switch="model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model); "
           "model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank])",
    engine="torch.distributed (gloo), one process per replica, DistributedDataParallel",
    shard_weighting="count",
    saved_running="replica0",
    cpu="no: raises on CPU tensors (ValueError: SyncBatchNorm expected input tensor to be on GPU or XPU or "
        "privateuseone); bnparity's scratch all-gather / all-reduce in torch ops runs instead",
    facts=(
        "SyncBatchNorm all-gathers each rank's (μ_r, 1/√(σ²_r + ε), m_r) and combines them with "
        "batch_norm_gather_stats_with_counts, each shard weighted by its count m_r (Chan's parallel update): the "
        "global batch's μ and σ², also when the last shard is smaller; the running variance is unbiased over the "
        "global count m.",
        "Its backward all-reduces Σ dy and Σ dy·(x − μ) (SUM) to form dx; dγ and dβ stay each rank's own sums, "
        "which DistributedDataParallel all-reduces and divides by R with every other gradient.",
        "torch.nn.SyncBatchNorm runs only on CUDA, HPU, XPU or a PrivateUse1 device, and only in training mode with "
        "torch.distributed initialized (otherwise it is a plain BatchNorm); its kernels batch_norm_stats and "
        "batch_norm_gather_stats_with_counts have no CPU implementation (NotImplementedError on CPU tensors).",
        "Without SyncBatchNorm each rank's BatchNorm normalizes and updates with its own shard; "
        "DistributedDataParallel (broadcast_buffers=True by default) then overwrites every rank's buffers with "
        "rank 0's at the start of each forward pass, and a checkpoint is rank 0's state_dict: the saved running "
        "statistics are rank 0's own chain of updates; the other ranks' copies hold their last shard's update of "
        "rank 0's.",
        "On CPU, bnparity's scratch layer (frameworks/torch/replicas.py) computes what SyncBatchNorm does with "
        "dist.all_gather of (m_r, μ_r, M₂,r) and dist.all_reduce of (Σ dy, Σ dy·x̂) on gloo; the data-parallel "
        "trainer uses it for bn_sync='sync' on CPU.",
    ),
    # Each citation: "path:LINE: `the code on that line` what it means", "; " between them (the tests read every
    # line in the installed torch).
    citations={
        "layer": f"{_SRC}:650: `class SyncBatchNorm(_BatchNorm):` the layer; "
                 f"{_SRC}:890: `def convert_sync_batchnorm(cls, module, process_group=None):` the switch; "
                 f"{_SRC}:938: `module_output.weight = module.weight` it shares γ (and β); "
                 f"{_SRC}:940: `module_output.running_mean = module.running_mean` and the running statistics",
        "cpu": f"{_SRC}:837: `need_sync = (` synchronized in training mode only; "
               f"{_SRC}:841: `and torch.distributed.is_initialized()` with a process group; "
               f"{_SRC}:845: `if input.device.type not in [` cuda, hpu, xpu or PrivateUse1 only; "
               f"{_SRC}:852: `\"SyncBatchNorm expected input tensor to be on GPU or XPU or \"` the refusal",
        "shard_weighting": f"{_SYNC}:39: `mean, invstd = torch.batch_norm_stats(input, eps)` each rank's μ_r and "
                           "1/√(σ²_r + ε); "
                           f"{_SYNC}:43: `input.numel() // input.size(1),` its count m_r; "
                           f"{_SYNC}:49: `combined = torch.cat([mean, invstd, count], dim=0)` gathered together; "
                           f"{_SYNC}:59: `# Use allgather instead of allreduce because count could be different "
                           "across` the reason; "
                           f"{_SYNC}:83: `dist.all_gather(combined_list, combined, process_group, async_op=False)` "
                           "the gloo path; "
                           f"{_SYNC}:106: `mean, invstd = torch.batch_norm_gather_stats_with_counts(` combined; "
                           f"{_SYNC}:114: `counts,` with the counts (its CUDA kernel, "
                           "batch_norm_reduce_statistics_kernel in aten/src/ATen/native/cuda/Normalization.cuh, not "
                           "in the CPU wheel, merges the shards with factor 1/(n + count) and stores var_n/(n − 1))",
        "backward": f"{_SYNC}:145: `) = torch.batch_norm_backward_reduce(` each rank's Σ dy and Σ dy·(x − μ), dγ, dβ; "
                    f"{_SYNC}:160: `torch.distributed.all_reduce(` the two sums; "
                    f"{_SYNC}:162: `torch.distributed.ReduceOp.SUM,` summed; "
                    f"{_SYNC}:181: `# synchronizing of grad_weight / grad_bias is not needed as distributed` "
                    "dγ and dβ stay each rank's own",
        "saved_running": f"{_DDP}:987: `broadcast_buffers if broadcast_buffers is not None else True` the "
                         "default; "
                         f"{_DDP}:1781: `if self._check_sync_bufs_pre_fwd():` before every forward pass; "
                         f"{_DDP}:1782: `self._sync_buffers()` the buffers are broadcast; "
                         f"{_DDP}:2418: `authoritative_rank = 0` from rank 0",
        "engine": f"{_DDP}:466: `class DistributedDataParallel(Module, Joinable):` the engine; "
                  f"{_DDP}:550: `between different nodes are averaged). You should take this into` the gradients "
                  "are averaged over the ranks",
    },
    proofs={
        "shard_weighting": (f"{_TR}test_scratch_is_the_reference_on_every_case",
                            f"{_TR}test_scratch_weights_unequal_shards_by_count"),
        "cpu": (f"{_TR}test_builtin_synchronized_is_refused_on_cpu_with_torchs_message",),
        "saved_running": (f"{_TR}test_builtin_per_replica_is_the_reference_and_saves_replica0",
                          f"{_TD}test_local_ddp_averages_the_shards_gradients_and_saves_rank0s_running_stats"),
        "backward": (f"{_TR}test_scratch_backward_is_autograds_on_one_replica",
                     f"{_TR}test_scratch_is_the_reference_on_every_case"),
        "engine": (f"{_TR}test_one_run_starts_one_process_group_per_replica_count_and_leaves_no_process",
                   f"{_TR}test_a_failing_rank_is_a_one_line_runtime_error_and_no_process_is_left",
                   f"{_TD}test_sync_ddp_step_is_the_single_device_step_on_the_global_batch",
                   f"{_TD}test_a_dead_rank_and_a_closed_trainer_are_one_line_runtime_errors",
                   f"{_TD}test_a_rank_that_does_not_answer_times_out_in_one_line"),
        "layer": (f"{_TR}test_builtin_synchronized_is_refused_on_cpu_with_torchs_message",
                  f"{_TR}test_the_replica_convention_cites_the_installed_torch_and_its_proofs_exist"),
        "switch": (f"{_TD}test_sync_ddp_step_is_the_single_device_step_on_the_global_batch",),
    },
)
