"""A run's trained BN AlexNet folded in each framework: eval logits and test accuracy, folded against unfolded.

Each framework folds the checkpoint of its own BN run (the last epoch of "<framework>-bn-seed0", or of its first BN
run with a checkpoint) with its own fold (`Folds.alexnet_impl`: builtin where it has one), and evaluates the folded
BN-free network and the unfolded one, both its own AlexNet in float32 (the training dtype), on the first
`test_images` images of the run's test set. The float64 NumPy reference evaluates the unfolded network on the first
`reference_images` of them (it costs ~8 ms an image on this CPU).

Tolerance for |folded − unfolded| logits (both float32, in the same framework). Each is the same function as the
float64 reference computed in float32, so each is within the model-parity bound of it, rtol·max|logit| with
rtol = u·C_MODEL·D·√K (suites/model_parity/tolerance.py; K here the longest eval-mode sum, a layer's fan-in, as
batch = 1: eval mode sums nothing over the batch), and their difference within twice that. Folding changes which
roundings happen, not their count per layer; the folded weights are larger by |s|, but so are the unfolded
network's activations after BN by the same factor, relative to which the bound is stated.

"Identical accuracy" means no test image changes its predicted class; a change on a near-tie is recorded with the
unfolded network's margin between its top two logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnparity.frameworks.folding import Folds, load_folds
from bnparity.frameworks.registry import Unavailable
from bnparity.reference import alexnet_numpy as anp
from bnparity.reference.alexnet import AlexNetSpec, alexnet_spec, param_shapes
from bnparity.reference.fold import bn_pairs, folded_spec
from bnparity.suites.convergence.records import RunId, checkpoint_epochs, load_checkpoint, load_manifest
from bnparity.suites.model_parity.tolerance import model_rtol
from bnparity.suites.pitfalls.command import train_dir_of

from .records import AlexNetFoldRecord, AlexNetRecord, FoldSkip
from .tolerance import weight_bound, worst_ratio

DTYPE = "float32"  # the training dtype
BATCH = 250
REFERENCE_IMAGES = 250


@dataclass(frozen=True)
class RunData:
    """A run's BN checkpoints and test images.

    Attributes:
        arch: the trained network (with BN).
        checkpoints: framework -> (run name, epoch, canonical parameters) of its BN run's last checkpoint.
        images: the test images (NCHW, float32), the first `test_images`.
        labels: their labels.
    """

    arch: AlexNetSpec
    checkpoints: dict[str, tuple[str, int, dict[str, np.ndarray]]]
    images: np.ndarray
    labels: np.ndarray


def load_run_data(run_dir: Path, *, test_images: int) -> RunData:
    """The BN runs' last checkpoints of `run_dir` (a `bnparity run` or `bnparity train` directory) and its test
    set's first `test_images` images. Raises UserError when RUN_DIR holds no training run."""
    from bnparity.suites.data.fashion_mnist import load_fashion_mnist
    from bnparity.suites.data.pipeline import prepare

    train_dir = train_dir_of(run_dir)
    manifest = load_manifest(train_dir)
    preset = manifest.preset
    arch = alexnet_spec(preset.arch, batch_norm=True)
    checkpoints: dict[str, tuple[str, int, dict[str, np.ndarray]]] = {}
    for name in manifest.runs:
        run = RunId.parse(name)
        if run.variant != "bn" or run.framework in checkpoints or run.data_parallel:
            continue
        epochs = checkpoint_epochs(train_dir, run)
        if epochs:
            state, _ = load_checkpoint(train_dir, run, epochs[-1])
            checkpoints[run.framework] = (run.name, epochs[-1], {n: state[n] for n in param_shapes(arch)})
    data = load_fashion_mnist(Path(manifest.data_dir), allow_download=False, verify=manifest.verify_data)
    _, test = prepare(data, image_size=preset.image_size, train_subset=preset.train_subset,
                      test_subset=preset.test_subset, subset_seed=preset.subset_seed)
    n = min(test_images, len(test.labels))
    return RunData(arch=arch, checkpoints=checkpoints, images=test.images[:n], labels=test.labels[:n])


def _batched(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    return np.concatenate([fn(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])


def folded_weight_ratio(arch: AlexNetSpec, params: dict[str, np.ndarray], folded: dict[str, np.ndarray],
                        dtype: str) -> float:
    """The worst error / allowed of a framework's folded weights and biases against reference.fold's."""
    worst = 0.0
    for affine, norm in bn_pairs(arch):
        wb = weight_bound(dtype=dtype, weight=params[f"{affine}.weight"], bias=params[f"{affine}.bias"],
                          gamma=params[f"{norm}.gamma"], beta=params[f"{norm}.beta"],
                          running_mean=params[f"{norm}.running_mean"], running_var=params[f"{norm}.running_var"],
                          eps=arch.bn.eps)
        worst = max(worst, worst_ratio(folded[f"{affine}.weight"], wb.weight, wb.allowed_weight)[0],
                    worst_ratio(folded[f"{affine}.bias"], wb.bias, wb.allowed_bias)[0])
    return worst


def fold_one(folds: Folds, run: str, epoch: int, arch: AlexNetSpec, params: dict[str, np.ndarray],
             images: np.ndarray, labels: np.ndarray, *, reference_images: int = REFERENCE_IMAGES) -> AlexNetFoldRecord:
    """One framework's fold of one trained network, evaluated (module docstring)."""
    target = folded_spec(arch)
    folded = folds.fold_alexnet(arch, params, DTYPE)
    unfolded_logits = _batched(lambda x: folds.logits(arch, params, x, DTYPE), images)
    folded_logits = _batched(lambda x: folds.logits(target, folded, x, DTYPE), images)
    n_ref = min(reference_images, len(labels))
    ref = _batched(lambda x: anp.forward(arch, params, x, train=False).logits, images[:n_ref])
    scale = float(np.abs(ref).max())
    allowed = 2 * model_rtol(arch, DTYPE, batch=1) * scale
    changed = np.flatnonzero(unfolded_logits.argmax(1) != folded_logits.argmax(1))
    top2 = np.sort(unfolded_logits[changed], axis=1)[:, -2:] if len(changed) else np.zeros((0, 2))
    error = float(np.abs(folded_logits - unfolded_logits).max())
    return AlexNetFoldRecord(
        framework=folds.framework, impl=folds.alexnet_impl, run=run, epoch=epoch, dtype=DTYPE,
        test_images=len(labels), reference_images=n_ref, max_logit_error=error,
        max_logit_error_folded_ref=float(np.abs(folded_logits[:n_ref] - ref).max()),
        max_logit_error_unfolded_ref=float(np.abs(unfolded_logits[:n_ref] - ref).max()),
        logit_scale=scale, allowed_logit_error=allowed,
        max_weight_ratio=folded_weight_ratio(arch, params, folded, DTYPE),
        accuracy_unfolded=float((unfolded_logits.argmax(1) == labels).mean()),
        accuracy_folded=float((folded_logits.argmax(1) == labels).mean()),
        accuracy_reference=float((ref.argmax(1) == labels[:n_ref]).mean()),
        argmax_changes=int(len(changed)), flip_margins=tuple(float(m) for m in (top2[:, 1] - top2[:, 0])),
        passed=error <= allowed and len(changed) == 0)


def run_alexnet(frameworks: Iterable[str], data: RunData, *, load: Callable[[str], Folds | Unavailable] = load_folds,
                reference_images: int = REFERENCE_IMAGES,
                on_record: Callable[[AlexNetRecord], None] = lambda r: None) -> list[AlexNetRecord]:
    """Every framework's own BN checkpoint folded and evaluated; a framework without one, or not installed, a skip."""
    records: list[AlexNetRecord] = []
    for framework in frameworks:
        record: AlexNetRecord
        if framework not in data.checkpoints:
            record = FoldSkip(framework=framework, impl="-", case="alexnet",
                              reason=f"the run has no checkpoint of a {framework} BN run")
        else:
            folds = load(framework)
            run, epoch, params = data.checkpoints[framework]
            if isinstance(folds, Unavailable):
                record = FoldSkip(status="error" if folds.installed else "skipped", framework=framework, impl="-",
                                  case="alexnet", reason=folds.reason)
            else:
                try:
                    record = fold_one(folds, run, epoch, data.arch, params, data.images, data.labels,
                                      reference_images=reference_images)
                except Exception as e:  # noqa: BLE001 (recorded: the other frameworks still run)
                    record = FoldSkip(status="error", framework=framework, impl=folds.alexnet_impl, case="alexnet",
                                      reason=f"{type(e).__name__}: {e}".splitlines()[0])
        records.append(record)
        on_record(record)
    return records

