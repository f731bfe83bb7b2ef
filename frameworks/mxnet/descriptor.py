"""MXNet Gluon, as bnparity sees it (data only: mxnet is not imported here)."""

from bnparity.frameworks.descriptor import NORMALIZATION_MODULES, Framework, Lack, ModelLayout, standard_layers

DESCRIPTOR = Framework(
    name="mxnet",
    display_name="MXNet Gluon",
    order=1,
    pip_extra="mxnet",
    distributions=("mxnet",),
    color="#0072B2",  # Okabe-Ito blue
    native_axis=1,
    layers=tuple(x for x in standard_layers(NORMALIZATION_MODULES)
                 if (x.normalization, x.impl) != ("rmsnorm", "builtin")),
    lacks=(Lack("rmsnorm", "builtin", "MXNet 1.9 has no RMSNorm layer (gluon.nn has LayerNorm, GroupNorm and "
                                      "InstanceNorm); only the scratch RMSNorm runs"),),
    parity_cost=2.0,  # measured 2026-12-02: ~2x PyTorch's time per case
    model_layout=ModelLayout(conv_kernel="OIHW", dense_weight="(out, in)", bn_params="`gamma`, `beta`",
                             bn_stats="`running_mean`, `running_var`", activations="NCHW"),
    replica_impls=("builtin", "scratch"),
    # SyncBatchNorm blocks an engine thread per context in a barrier: every context needs a worker thread and a
    # temporary-workspace copy of its own, or the barrier deadlocks (frameworks/mxnet/data_parallel.py)
    replica_env=(("MXNET_CPU_WORKER_NTHREADS", "{replicas}"), ("MXNET_CPU_TEMP_COPY", "{replicas}")),
)
