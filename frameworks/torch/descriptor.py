"""PyTorch, as bnparity sees it (data only: torch is not imported here)."""

from bnparity.frameworks.descriptor import NORMALIZATION_MODULES, Framework, ModelLayout, standard_layers

DESCRIPTOR = Framework(
    name="torch",
    display_name="PyTorch",
    order=0,
    pip_extra="torch",
    distributions=("torch",),
    color="#D55E00",  # Okabe-Ito vermillion
    native_axis=1,
    layers=standard_layers(NORMALIZATION_MODULES),
    model_layout=ModelLayout(conv_kernel="(out, in, kh, kw) OIHW", dense_weight="(out, in)",
                             bn_params="`weight`, `bias`", bn_stats="`running_mean`, `running_var`",
                             activations="NCHW"),
    baseline=True,  # PyTorch's defaults are the canonical convention of the parity cases
    replica_impls=("builtin", "scratch"),
)
