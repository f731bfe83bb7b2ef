"""MXNet Gluon's BatchNorm conventions (mxnet 1.9.1, CPU), as data. Proved by tests/test_mxnet_conventions.py."""

from bnparity.frameworks.conventions import Convention

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
