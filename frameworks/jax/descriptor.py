"""JAX/Flax, as bnparity sees it (data only: jax and flax are not imported here)."""

from bnparity.frameworks.descriptor import NORMALIZATION_MODULES, Framework, ModelLayout, standard_layers

DESCRIPTOR = Framework(
    name="jax",
    display_name="JAX/Flax",
    order=2,
    pip_extra="jax",
    distributions=("jax", "jaxlib", "flax", "optax"),
    color="#009E73",  # Okabe-Ito bluish green
    native_axis=-1,
    layers=standard_layers(NORMALIZATION_MODULES),
    parity_cost=10.0,  # measured 2026-12-02: ~10x PyTorch's time per case, nearly all of it tracing and compiling
    model_layout=ModelLayout(conv_kernel="(kh, kw, in, out) HWIO: `w.transpose(2, 3, 1, 0)`",
                             dense_weight="(in, out) kernel: `w.T`",
                             bn_params="`scale`, `bias` (collection `params`)",
                             bn_stats="`mean`, `var` (collection `batch_stats`)", activations="NHWC"),
    replica_impls=("builtin", "scratch"),
    replica_env=(("XLA_FLAGS", "{existing} --xla_force_host_platform_device_count={replicas}"),),
)
