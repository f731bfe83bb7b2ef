"""Keras 3, as bnparity sees it (data only: keras is not imported here).

Keras runs one layer definition on several backends and fixes its backend when it is first imported (it reads
KERAS_BACKEND then, keras/src/backend/config.py). Each backend is therefore a framework of its own, named
``keras-<backend>`` on the command line and in records, and runs in a process of its own: keras-tensorflow,
keras-jax and keras-torch, one DESCRIPTORS variant each, all from this folder.
"""

from bnparity.frameworks.descriptor import NORMALIZATION_MODULES, Framework, Lack, ModelLayout, standard_layers

_LAYOUT = ModelLayout(conv_kernel="(kh, kw, in, out) HWIO: `w.transpose(2, 3, 1, 0)`",
                      dense_weight="(in, out) kernel: `w.T`", bn_params="`gamma`, `beta`",
                      bn_stats="`moving_mean`, `moving_variance`", activations="NHWC")

# (backend, the library it needs besides keras (import names), display name, colour (Okabe-Ito))
_BACKENDS = (
    ("tensorflow", ("tensorflow",), "Keras 3 (TensorFlow)", "#E69F00"),  # orange
    ("jax", ("jax", "jaxlib"), "Keras 3 (JAX)", "#56B4E9"),  # sky blue
    ("torch", ("torch",), "Keras 3 (PyTorch)", "#CC79A7"),  # reddish purple
)

# Per backend: the layers it lacks (each with its reason), the relative wall time of its parity cases, and its
# cross-replica engine (Framework.replica_impls / replica_env).
_NO_TORCH_DISTRIBUTION = ("Keras has no distribution support on the torch backend "
                          "(keras/src/backend/__init__.py:47: distribution_lib = None)")
_LACKS: dict[str, tuple[Lack, ...]] = {"tensorflow": (), "jax": (), "torch": tuple(
    Lack("sync-batchnorm", impl, _NO_TORCH_DISTRIBUTION) for impl in ("builtin", "scratch"))}
# `bnparity run` without --frameworks runs the fastest backend only, and it sits out the training step and the
# data-parallel step: with its training (~1,045 images/s on one thread here, against ~800 on JAX and ~600 on PyTorch)
# the main job took 17 min 54 s on this 2-core machine, and without it 15 min 12 s, 70 s of it keras-tensorflow's
# dp-parity (2026-12-02), over its 15-minute budget. `bnparity run --frameworks all` runs and trains every backend.
_MAIN_JOB = {"tensorflow": True, "jax": False, "torch": False}
_PARITY_COST = {"tensorflow": 1.0, "jax": 2.0, "torch": 1.0}  # measured 2026-12-02 (JAX jit-compiles each layer)
_REPLICA_IMPLS: dict[str, tuple[str, ...]] = {"tensorflow": ("builtin", "scratch"), "jax": ("builtin", "scratch"),
                                               "torch": ()}  # Keras has no torch distribution (replicas.py)
_REPLICA_ENV: dict[str, tuple[tuple[str, str], ...]] = {
    "tensorflow": (("BNPARITY_KERAS_TF_CPUS", "{replicas}"),),  # logical CPUs, set up by replicas.py at import
    "jax": (("XLA_FLAGS", "{existing} --xla_force_host_platform_device_count={replicas}"),), "torch": ()}

DESCRIPTORS = tuple(
    Framework(
        name=f"keras-{backend}",
        display_name=display,
        order=3 + i,
        pip_extra="keras",
        distributions=("keras", *libraries),
        color=color,
        native_axis=-1,
        layers=tuple(x for x in standard_layers(NORMALIZATION_MODULES)
                     if not any((x.normalization, x.impl) == (lack.normalization, lack.impl)
                                for lack in _LACKS[backend])),
        lacks=_LACKS[backend],
        parity_cost=_PARITY_COST[backend],
        model_layout=_LAYOUT,
        replica_impls=_REPLICA_IMPLS[backend],
        replica_env=_REPLICA_ENV[backend],
        folder="keras",
        # TF_CPP_MIN_LOG_LEVEL=2: TensorFlow's C++ INFO and WARNING lines (oneDNN, CPU features) stay off stderr
        environment=(("KERAS_BACKEND", backend), ("TF_CPP_MIN_LOG_LEVEL", "2")),
        fixed_at_import="keras",
        imported_with="keras.config:backend",
        main_job=_MAIN_JOB[backend],
        main_job_sits_out=("train", "dp-parity"),
    )
    for i, (backend, libraries, display, color) in enumerate(_BACKENDS))
