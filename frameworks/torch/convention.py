"""PyTorch's BatchNorm conventions (torch 2.13), as data. Proved by the tests in its `proofs`."""

from bnparity.frameworks.conventions import Convention

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
