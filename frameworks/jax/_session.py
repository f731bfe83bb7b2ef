"""The jitted steps (forward and jax.vjp backward) and the layer session of batchnorm.py's two adapters.

Private to this folder: JAX alone needs its layers as pure functions compiled by jax.jit.

A layer is given as one pure function ``apply(params, stats, x, *, train) -> (y, new_stats)``. Training
differentiates that same function with `jax.vjp`; eval calls it with ``train=False``. The steps are jitted
once per layer configuration and kept in a `StepCache` owned by the adapter; jax.jit then compiles once per
input shape and dtype, so every session of that configuration reuses the compilations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bnparity.frameworks.base import LayerSession, StepResult

from ._x64 import dtype_scope
from .convert import _as_dict, _linen_apply, _nnx_apply, _param_names, to_numpy, to_tensor

Tree = Any  # a pytree of arrays: a dict, or a flax.nnx.State


class Apply(Protocol):
    def __call__(self, params: Tree, stats: Tree, x: jax.Array, *, train: bool) -> tuple[jax.Array, Tree]:
        """y, and the running statistics after this call (updated in training, unchanged in eval)."""


@dataclass(frozen=True)
class Steps:
    """The jitted functions of one layer configuration.

    Attributes:
        train: (params, stats, x, dy) -> (y, dx, dparams, new_stats); batch statistics, vjp with dy.
        eval: (params, stats, x) -> y with the running statistics (eval with the batch's own statistics is the
            train step's y: see JaxLayer.eval).
    """

    train: Callable[..., tuple[jax.Array, jax.Array, Tree, Tree]]
    eval: Callable[..., jax.Array]


def jit_steps(apply: Apply, *, on_trace: Callable[[str], None]) -> Steps:
    """The jitted steps of `apply`; `on_trace(name)` runs each time jax traces one (never when it reuses one).

    Args:
        apply: the layer as a pure function (see the module docstring).
        on_trace: called with "train" or "eval" while that step is being traced.
    """

    def train(params: Tree, stats: Tree, x: jax.Array, dy: jax.Array):
        on_trace("train")

        def forward(p: Tree, s: Tree, x: jax.Array) -> tuple[jax.Array, Tree]:
            return apply(p, s, x, train=True)

        # stats are a primal too (their cotangent is dropped): flax.nnx may only update a variable at the
        # trace level it was created in, so they must enter at vjp's level, not as a closed-over value.
        y, vjp, new_stats = jax.vjp(forward, params, stats, x, has_aux=True)
        dparams, _, dx = vjp(dy)
        return y, dx, dparams, new_stats

    def evaluate(params: Tree, stats: Tree, x: jax.Array) -> jax.Array:
        on_trace("eval")
        return apply(params, stats, x, train=False)[0]

    return Steps(train=jax.jit(train), eval=jax.jit(evaluate))


class StepCache:
    """Jitted steps per layer configuration, and how often each step was traced (compiled).

    Attributes:
        traces: step name -> number of traces, over every configuration, shape and dtype.
    """

    def __init__(self) -> None:
        self._steps: dict[Hashable, Steps] = {}
        self.traces: Counter[str] = Counter()

    def get(self, key: Hashable, make_apply: Callable[[], Apply]) -> Steps:
        """The steps of configuration `key`, jitting `make_apply()` the first time the key is seen."""
        if key not in self._steps:
            self._steps[key] = jit_steps(make_apply(), on_trace=self._count)
        return self._steps[key]

    def _count(self, name: str) -> None:
        self.traces[name] += 1


class JaxLayer(LayerSession):
    """One layer's parameters and running statistics, run through its jitted steps.

    Args:
        steps: the jitted steps of the layer's configuration.
        params: the parameters ("scale" γ, "bias" β; empty when not affine).
        stats: the running statistics ("mean", "var").
        dtype: the dtype of inputs and outputs.
        track_running_stats: False: eval normalizes with the eval batch's statistics and no running
            statistics are reported.
        to_dict: turns a params or stats tree into a flat dict of arrays.
    """

    def __init__(self, steps: Steps, *, params: Tree, stats: Tree, dtype: np.dtype, track_running_stats: bool,
                 to_dict: Callable[[Tree], dict[str, jax.Array]]) -> None:
        self.steps, self.params, self.stats = steps, params, stats
        self.dtype, self.track, self.to_dict = dtype, track_running_stats, to_dict

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        with dtype_scope(self.dtype):
            y, dx, dparams, self.stats = self.steps.train(self.params, self.stats, to_tensor(x, self.dtype),
                                                          to_tensor(dy, self.dtype))
            grads = self.to_dict(dparams)
            return StepResult(y=to_numpy(y), dx=to_numpy(dx),
                              dgamma=to_numpy(grads["scale"]) if "scale" in grads else None,
                              dbeta=to_numpy(grads["bias"]) if "bias" in grads else None)

    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.track:
            return None
        stats = self.to_dict(self.stats)
        return to_numpy(stats["mean"]), to_numpy(stats["var"])

    def eval(self, x: np.ndarray) -> np.ndarray:
        with dtype_scope(self.dtype):
            xt = to_tensor(x, self.dtype)
            if self.track:
                return to_numpy(self.steps.eval(self.params, self.stats, xt))
            # Without running statistics, eval mode is the training forward on x itself (its own statistics, the
            # stats update dropped): the training step's program already computes it, so none is compiled for eval
            # (the layer-parity suite compiles a third fewer programs).
            y, *_ = self.steps.train(self.params, self.stats, xt, jnp.zeros_like(xt))
            return to_numpy(y)


def stateless_layer(api: str, layer: tuple[type[nn.Module], type[nnx.Module]], *, param_shape: tuple[int, ...],
                    options: dict[str, Any], values: dict[str, np.ndarray], dtype: np.dtype, cache: StepCache
                    ) -> JaxLayer:
    """A Flax layer that keeps no running statistics (LayerNorm, GroupNorm, InstanceNorm, RMSNorm) as a session.

    Args:
        api: "linen" or "nnx": which of `layer`'s two classes, (linen class, nnx class), is built with `options`.
        param_shape: the shape of γ and β; an nnx layer holds them flattened (its parameters are always 1-D, of
            length `num_features`), and its dγ, dβ are reshaped back.
        values: "scale" (γ) and "bias" (β); those `options` switch on are set, after the layer is created in
            `dtype` (float64 keeps every digit).
        cache: the adapter's jitted steps, keyed by the layer's configuration.
    """
    key = (api, layer[0].__name__, param_shape, tuple(sorted((k, str(v)) for k, v in options.items())))
    names = _param_names(options)
    with dtype_scope(dtype):
        if api == "linen":
            module = layer[0](**options)
            params: Tree = {name: to_tensor(values[name], dtype) for name in names}
            steps = cache.get(key, lambda: _linen_apply(module))
        else:
            instance = layer[1](int(np.prod(param_shape)), rngs=nnx.Rngs(0), **options)
            for name in names:
                getattr(instance, name).value = to_tensor(np.reshape(values[name], -1), dtype)
            graphdef, params = nnx.split(instance, nnx.Param)
            steps = cache.get(key, lambda: _nnx_apply(graphdef))

    def to_dict(tree: Tree) -> dict[str, jax.Array]:  # dγ and dβ in γ's shape
        return {k: v.reshape(param_shape) for k, v in _as_dict(tree).items()}

    return JaxLayer(steps, params=params, stats={}, dtype=dtype, track_running_stats=False, to_dict=to_dict)


def scratch_layer(spec: Any, values: dict[str, np.ndarray], *, dtype: np.dtype, cache: StepCache,
                  apply: Callable[[], Apply]) -> JaxLayer:
    """A scratch layer that keeps no running statistics (LayerNorm, GroupNorm, RMSNorm in jax.numpy) as a session.

    Args:
        spec: the layer's spec, the key of its jitted steps in `cache`.
        values: its parameters ("scale": γ, "bias": β: those the spec has), set in `dtype`.
        apply: makes the layer's function of the spec (called once per spec).
    """
    with dtype_scope(dtype):
        params = {name: to_tensor(value, dtype) for name, value in values.items()}
    return JaxLayer(cache.get(spec, apply), params=params, stats={}, dtype=dtype, track_running_stats=False,
                    to_dict=dict)
