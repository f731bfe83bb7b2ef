"""The PyTorch Trainer: model.train()/eval(), F.cross_entropy (batch mean), torch.optim.SGD.

torch.optim.SGD is the reference formulation (frameworks.training.SGDConfig): v ← μ·v + (g + λ·p),
p ← p − lr·v, on every parameter. Dropout uses torch's global generator, seeded at construction; its state
is part of `state()`, so a resumed run draws the same masks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bnparity.frameworks import training
from bnparity.reference.alexnet import (
    AlexNetSpec,
    check_params,
    momentum_key,
    params_fingerprint,
    trainable_names,
    training_dtype,
)

from .alexnet import AlexNet, from_canonical, to_canonical
from .convert import framework_device

RNG_KEY = "rng.torch_cpu"
STEP_KEY = "step"


class Trainer(training.Trainer):
    """AlexNet in PyTorch with torch.optim.SGD.

    Args:
        arch: the AlexNetSpec.
        params: canonical initial parameters.
        sgd: learning rate, momentum, weight decay.
        device: "cpu" or "gpu".
        seed: seeds torch's global generator (dropout). Default: derived from `params`.
        dtype: "float32" (training) or "float64" (model-parity checks); arrays come back in it.
    """

    framework = "torch"

    def __init__(self, *, arch: AlexNetSpec, params: dict[str, np.ndarray], sgd: training.SGDConfig,
                 device: str = "cpu", seed: int | None = None, dtype: str = "float32") -> None:
        check_params(arch, params)
        self.arch, self.sgd = arch, sgd
        self.device = framework_device(device)
        self.dtype = training_dtype(dtype)
        torch.manual_seed(params_fingerprint(params) if seed is None else seed)
        self.model: AlexNet = from_canonical(arch, params, dtype=self.dtype, device=device)
        self._tensors = self.model.by_name()
        self._trainable = trainable_names(arch)
        self.optimizer = torch.optim.SGD([self._tensors[n] for n in self._trainable], lr=sgd.lr,
                                         momentum=sgd.momentum, weight_decay=sgd.weight_decay)
        self.steps = 0

    def _inputs(self, x: np.ndarray, labels: np.ndarray,
                masks: list[np.ndarray] | None) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=self.dtype)).to(self.device)
        yt = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        mt = None if masks is None else [torch.from_numpy(np.asarray(m, dtype=self.dtype)).to(self.device)
                                         for m in masks]
        return xt, yt, mt

    def _forward_backward(self, x: np.ndarray, labels: np.ndarray,
                          masks: list[np.ndarray] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xt, yt, mt = self._inputs(x, labels, masks)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(xt, mt)
        loss = F.cross_entropy(logits, yt)  # mean over the batch
        loss.backward()
        return logits, loss, yt

    def train_step(self, x: np.ndarray, labels: np.ndarray, *,
                   dropout_masks: list[np.ndarray] | None = None) -> training.StepStats:
        logits, loss, yt = self._forward_backward(x, labels, dropout_masks)
        self.optimizer.step()
        self.steps += 1
        return training.StepStats(loss=float(loss.item()), correct=int((logits.argmax(1) == yt).sum().item()))

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        xt, yt, _ = self._inputs(x, labels, None)
        self.model.eval()
        with torch.no_grad():
            logits = self.model(xt)
            loss_sum = F.cross_entropy(logits, yt, reduction="sum")
        return float(loss_sum.item()), int((logits.argmax(1) == yt).sum().item())

    def gradients(self, x: np.ndarray, labels: np.ndarray, *,
                  dropout_masks: list[np.ndarray] | None = None) -> training.Gradients:
        logits, loss, _ = self._forward_backward(x, labels, dropout_masks)
        grads = {n: self._tensors[n].grad.detach().cpu().numpy().copy() for n in self._trainable}
        return training.Gradients(logits=logits.detach().cpu().numpy(), loss=float(loss.item()), grads=grads)

    def state(self) -> dict[str, np.ndarray]:
        state = to_canonical(self.arch, self.model)
        if self.sgd.momentum:
            for n in self._trainable:
                buf = self.optimizer.state.get(self._tensors[n], {}).get("momentum_buffer")
                state[momentum_key(n)] = (np.zeros_like(state[n]) if buf is None
                                          else buf.detach().cpu().numpy().copy())
        state[RNG_KEY] = torch.get_rng_state().numpy().copy()
        state[STEP_KEY] = np.array(self.steps, dtype=np.int64)
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        check_params(self.arch, {n: state[n] for n in self._tensors if n in state})
        self.model.load(state)
        if self.sgd.momentum:
            for n in self._trainable:
                buf = torch.from_numpy(np.array(state[momentum_key(n)], dtype=self.dtype)).to(self.device)
                self.optimizer.state[self._tensors[n]]["momentum_buffer"] = buf
        torch.set_rng_state(torch.from_numpy(np.asarray(state[RNG_KEY], dtype=np.uint8)))
        self.steps = int(state[STEP_KEY])
