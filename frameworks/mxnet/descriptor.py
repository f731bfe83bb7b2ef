"""MXNet Gluon, as bnparity sees it (data only: mxnet is not imported here)."""

from bnparity.frameworks.descriptor import Framework, LayerImpl, ModelLayout

DESCRIPTOR = Framework(
    name="mxnet",
    display_name="MXNet Gluon",
    order=1,
    pip_extra="mxnet",
    distributions=("mxnet",),
    color="#0072B2",  # Okabe-Ito blue
    native_axis=1,
    layers=(LayerImpl("batchnorm", "builtin", "batchnorm", "BuiltinBatchNorm"),
            LayerImpl("batchnorm", "scratch", "batchnorm", "ScratchBatchNorm")),
    model_layout=ModelLayout(conv_kernel="OIHW", dense_weight="(out, in)", bn_params="`gamma`, `beta`",
                             bn_stats="`running_mean`, `running_var`", activations="NCHW"),
)
