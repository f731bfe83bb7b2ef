"""Training presets: every knob of a convergence run (data size, schedule, optimizer) as one frozen record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from bnparity.frameworks.training import BN_SYNC
from bnparity.seeds.tables import blog_points
from bnparity.suites.errors import UserError

VARIANTS = ("bn", "nobn", "gn")


@dataclass(frozen=True)
class TrainPreset:
    """One convergence configuration, the same for every framework, variant and seed.

    Attributes:
        name: the preset's name (``--preset``).
        arch: the AlexNet preset of bnparity.reference.alexnet ("tiny", "cpu" or "paper").
        image_size: side of the (resized) square input images.
        train_subset: how many training images (a fixed subset, the same for every run); None = all 60000.
        test_subset: how many test images every evaluation uses; None = all 10000.
        epochs: passes over the training subset.
        batch_size: training batch size (the last partial batch of an epoch is dropped).
        lr: SGD learning rate.
        momentum: SGD heavy-ball momentum.
        weight_decay: L2 weight decay, applied to every parameter.
        evals_per_epoch: evaluation points per epoch, evenly spaced; the last one is the epoch's end.
        seeds: default number of seeds (``--seeds``): seeds 0..seeds-1.
        targets: test accuracies for time-to-accuracy, ascending.
        eval_batch_size: batch size of evaluation (results do not depend on it: eval mode).
        subset_seed: the seed that picks the train/test subsets (fixed: all runs see the same images).
        published: (variant, epoch, test accuracy) points of the published run this preset reproduces.
        notes: why the numbers are what they are, and what was measured.
        variants: the variants trained when ``--variants`` is not given.
        batch_sizes: a batch-size sweep: one run per batch size b (and framework, variant, seed), each with
            ``lr * b / batch_size`` (the linear scaling rule; `batch_size` and `lr` are its reference point) and
            the same training images; () = no sweep, every run trains at `batch_size`. See `at_batch`.
        replicas: a data-parallel preset's R (>= 2, dividing `batch_size`): its data-parallel runs split every
            global batch of `batch_size` images into R shards of batch_size / R, one per replica
            (frameworks.training.DataParallelTrainer); 1 for a preset that is not data-parallel.
        bn_sync: the BatchNorm modes a data-parallel preset trains by default, some of frameworks.training.BN_SYNC:
            "local" (R replicas, each normalizing with its own shard's statistics), "sync" (R replicas with
            synchronized statistics, those of the global batch) and "single" (the plain Trainer on one device, on
            the same global batches); every mode has the same batches, learning rate and schedule. () = not a
            data-parallel preset.
    """

    name: str
    arch: str
    image_size: int
    train_subset: int | None
    test_subset: int | None
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    evals_per_epoch: int
    seeds: int
    targets: tuple[float, ...]
    eval_batch_size: int
    subset_seed: int = 0
    published: tuple[tuple[str, int, float], ...] = ()
    notes: str = ""
    variants: tuple[str, ...] = ("bn", "nobn")
    batch_sizes: tuple[int, ...] = ()
    replicas: int = 1
    bn_sync: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in ("image_size", "epochs", "batch_size", "evals_per_epoch", "seeds", "eval_batch_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1. Received: {field}={getattr(self, field)}")
        for field in ("train_subset", "test_subset"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ValueError(f"{field} must be >= 1 or None. Received: {field}={value}")
        if self.train_subset is not None and self.train_subset < self.batch_size:
            raise ValueError(f"train_subset must hold at least one batch. Received: "
                             f"train_subset={self.train_subset}, batch_size={self.batch_size}")
        if not self.lr > 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError(f"expected lr > 0, momentum >= 0, weight_decay >= 0. Received: lr={self.lr}, "
                             f"momentum={self.momentum}, weight_decay={self.weight_decay}")
        if list(self.targets) != sorted(self.targets) or not all(0 < t <= 1 for t in self.targets):
            raise ValueError(f"targets must be ascending accuracies in (0, 1]. Received: {self.targets}")
        if not self.variants:
            raise ValueError("variants must name at least one variant. Received: ()")
        sizes = self.batch_sizes
        if list(sizes) != sorted(set(sizes)) or any(b < 1 for b in sizes):
            raise ValueError(f"batch_sizes must be ascending distinct sizes >= 1. Received: {sizes}")
        if sizes and self.train_subset is not None and self.train_subset < sizes[-1]:
            raise ValueError(f"train_subset must hold at least one batch of every size. Received: "
                             f"train_subset={self.train_subset}, batch_sizes={sizes}")
        self._check_data_parallel()

    def _check_data_parallel(self) -> None:
        modes = self.bn_sync
        if len(set(modes)) != len(modes) or any(m not in BN_SYNC for m in modes):
            raise ValueError(f"bn_sync must be distinct modes among {', '.join(BN_SYNC)}. Received: {modes}")
        if not modes:
            if self.replicas != 1:
                raise ValueError(f"replicas must be 1 for a preset that is not data-parallel (bn_sync=()). "
                                 f"Received: replicas={self.replicas}")
            return
        if self.replicas < 2 or self.batch_size % self.replicas:
            raise ValueError(f"replicas must be >= 2 and divide the global batch size. Received: "
                             f"replicas={self.replicas}, batch_size={self.batch_size}")
        if self.batch_sizes:
            raise ValueError(f"a data-parallel preset cannot sweep batch sizes. Received: bn_sync={modes}, "
                             f"batch_sizes={self.batch_sizes}")

    @property
    def data_parallel(self) -> bool:
        """Whether this preset trains data-parallel runs (its bn_sync names modes)."""
        return bool(self.bn_sync)

    def at_batch(self, batch_size: int | None) -> TrainPreset:
        """The preset of one run of a sweep: `batch_size` with the linearly scaled learning rate
        ``lr * batch_size / self.batch_size``, and no sweep of its own. None: this preset unchanged.

        Raises:
            ValueError: `batch_size` is not one of `batch_sizes`.
        """
        if batch_size is None:
            return self
        if batch_size not in self.batch_sizes:
            raise ValueError(f"batch_size must be one of the preset's batch_sizes {self.batch_sizes}. "
                             f"Received: {batch_size}")
        return self.replace(batch_size=batch_size, lr=self.lr * batch_size / self.batch_size, batch_sizes=())

    def replace(self, **changes: object) -> TrainPreset:
        """A copy with some fields changed (e.g. ``epochs`` from ``--epochs``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> TrainPreset:
        """The inverse of `to_dict` (JSON turns tuples into lists; this turns them back)."""
        d = dict(d)
        d["targets"] = tuple(d["targets"])
        d["published"] = tuple(tuple(p) for p in d.get("published", ()))
        for key in ("variants", "batch_sizes", "bn_sync"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


_SMOKE = TrainPreset(
    name="smoke", arch="tiny", image_size=28, train_subset=256, test_subset=128, epochs=2, batch_size=32,
    lr=0.05, momentum=0.9, weight_decay=5e-4, evals_per_epoch=2, seeds=1, targets=(0.3, 0.5),
    eval_batch_size=64,
    notes="For tests: seconds per run. Works on a fake dataset of >= 256 train and >= 128 test images.",
)

_CPU = TrainPreset(
    name="cpu", arch="cpu", image_size=28, train_subset=30000, test_subset=2000, epochs=5, batch_size=128,
    lr=0.02, momentum=0.0, weight_decay=5e-4, evals_per_epoch=3, seeds=1, targets=(0.80, 0.85, 0.88),
    eval_batch_size=500,
    notes=("The main job's default: 3 frameworks x {bn, nobn}, one seed, --jobs 2 on 2 cores in about 12 min. "
           "5 epochs of a 30000-image subset (1170 iterations, 150k images per run), 3 evaluations per epoch on "
           "2000 test images (16 points per curve). Plain SGD, as in the paper preset (the seed blog), at lr "
           "0.02. Measured on this 2-core machine on 2026-11-29 (bnparity run, --jobs 2, one thread per run): "
           "training took 10 min 46 s at torch 1018/1183, mxnet 811/937, jax 523/610 images/s (bn/nobn); final "
           "test accuracy bn/nobn torch 0.8895/0.8085, mxnet 0.8925/0.8065, jax 0.8920/0.8095; BN reaches 0.80 "
           "in 4.7-7x fewer iterations and 0.85 within 1.7 epochs, which no-BN never reaches; the three "
           "frameworks' curves agree within 0.024 (bn) and 0.010 (nobn) at every point. With --seeds 3 (18 runs, "
           "33 min 14 s): final bn/nobn torch 0.888+-0.006/0.817+-0.008, mxnet 0.883+-0.009/0.816+-0.008, jax "
           "0.892+-0.004/0.817+-0.006."),
)

_CPU_LONG = TrainPreset(
    name="cpu-long", arch="cpu", image_size=28, train_subset=None, test_subset=None, epochs=15,
    batch_size=128, lr=0.01, momentum=0.9, weight_decay=5e-4, evals_per_epoch=2, seeds=3,
    targets=(0.80, 0.85, 0.88, 0.90), eval_batch_size=1000,
    notes=("All 60000/10000 images for 15 epochs (7020 iterations), 3 seeds: 18 runs. SGD with momentum 0.9 "
           "at lr 0.01 to plateau sooner: measured here on the cpu preset's subset (2026-11-29), the no-BN "
           "network reaches test accuracy 0.83 (torch 0.8295, mxnet 0.827) after 2 epochs with it, where plain "
           "SGD at lr 0.02 reaches 0.81 after 5. Measured (2026-11-29, --frameworks torch --seeds 1 --jobs 2): "
           "torch's two runs took 18 min 23 s; bn/nobn reach 0.90 after 3 and 5 epochs and end at 0.912/0.913 "
           "(best 0.919/0.918). All 18 runs: about 3.5 hours with --jobs 2 on this 2-core machine, estimated "
           "from that and the cpu preset's throughputs (per seed: torch ~18 min, mxnet ~20 min, jax ~30 min)."),
)

_PAPER = TrainPreset(
    name="paper", arch="paper", image_size=224, train_subset=None, test_subset=None, epochs=40,
    batch_size=128, lr=0.01, momentum=0.0, weight_decay=0.0, evals_per_epoch=4, seeds=1,
    targets=(0.80, 0.85, 0.88, 0.90, 0.92), eval_batch_size=250,
    published=blog_points((1, 40)),  # the seed blog's test accuracy after epochs 1 and 40 (bnparity.seeds)
    notes=("For a GPU (--device gpu): full AlexNet on Fashion-MNIST resized to 224x224, batch 128, "
           "plain SGD lr 0.01, 40 epochs, as in the seed blog post; `published` holds its test accuracies "
           "after epochs 1 and 40 (bnparity.seeds)."),
)

_SMALL_BATCH = TrainPreset(
    name="small-batch", arch="cpu", image_size=28, train_subset=5120, test_subset=1000, epochs=2, batch_size=32,
    lr=0.005, momentum=0.9, weight_decay=5e-4, evals_per_epoch=2, seeds=1, targets=(), eval_batch_size=500,
    variants=("bn", "gn", "nobn"), batch_sizes=(2, 4, 8, 32),
    notes=("The batch-size sweep of Wu & He (2018, GroupNorm, figure 1), CPU-sized: BN, GroupNorm and no "
           "normalization at 2, 4, 8 and 32 images per SGD step, 3 frameworks, one seed: 36 runs. Every run sees "
           "the same 10240 training images (2 epochs of a fixed 5120-image subset, divisible by every batch size) "
           "and is evaluated on the same 1000 test images (5 points: before training, then twice an epoch); BN "
           "evaluates with its running statistics (eval mode). Learning rate: the linear scaling rule, as in the "
           "paper (0.1·b/32 there), lr = 0.005·b/32 here with momentum 0.9, so that every batch size takes the "
           "same total step per image. 0.005 at batch 32 was chosen on this 2-core machine (PyTorch, 2026-12-02, "
           "best test accuracy after 10240 images BN/GN/none): 0.005 -> 0.807/0.760/0.710, 0.01 -> 0.778/0.708/0.758, "
           "0.02 -> 0.773/0.624/0.743, 0.05: GN and no-BN diverge. At batch 2 with 0.0003125: BN 0.280 (its Dense "
           "layers normalize 2 values per feature, i.e. to ±1), GN 0.772. Cost: batch 2 is overhead-bound; a "
           "training step (one thread, no other load) takes about 10/12/15/35 ms (PyTorch), 13-18/13-20/14-23/"
           "32-43 ms (MXNet), 10-16/11-19/13-20/42-54 ms (JAX) at batch 2/4/8/32, i.e. 200, 110-150 and 130-210 "
           "images/s at batch 2; estimated 12-14 min for the whole sweep with --jobs 2 on an otherwise idle "
           "2-core machine (about 1250 core-seconds of training, plus process start, JAX compilation and "
           "evaluation, ~7 s a run). An opt-in preset: bnparity train --preset small-batch --jobs 2."),
)

_SMOKE_SWEEP = TrainPreset(
    name="smoke-sweep", arch="tiny", image_size=28, train_subset=64, test_subset=64, epochs=2, batch_size=8,
    lr=0.05, momentum=0.9, weight_decay=5e-4, evals_per_epoch=1, seeds=1, targets=(0.5,), eval_batch_size=64,
    variants=("bn", "nobn"), batch_sizes=(2, 8),
    notes="For tests: the small-batch sweep's mechanics in seconds (a fake dataset of >= 64 train and test images).",
)

_DP_CPU = TrainPreset(
    name="dp-cpu", arch="cpu", image_size=28, train_subset=15360, test_subset=2000, epochs=2, batch_size=128,
    lr=0.02, momentum=0.0, weight_decay=5e-4, evals_per_epoch=3, seeds=1, targets=(0.75, 0.80, 0.85),
    eval_batch_size=500, variants=("bn",), replicas=4, bn_sync=("local", "sync", "single"),
    notes=("Data-parallel BatchNorm on the CPU: the cpu preset's AlexNet (28px, plain SGD lr 0.02, weight decay "
           "5e-4) with BN, every global batch of 128 images split over R = 4 replicas of the framework's own "
           "distributed engine (32 images each), trained three ways on the same global batches, weights and "
           "dropout masks: per-replica BatchNorm statistics (local: what data parallelism gives without "
           "synchronization, each replica normalizing its 32 images), synchronized statistics (sync: the global "
           "batch's, as on one device) and the plain single-device Trainer on the global batch (single). The "
           "gradient is the mean over replicas either way; the modes differ only in BatchNorm's statistics. "
           "Budget: 2 epochs of a fixed 15360-image subset (240 iterations of 128), 3 evaluations per epoch on "
           "2000 test images, one seed: 3 runs per framework. An opt-in preset: bnparity train --preset dp-cpu "
           "--jobs 1 (a data-parallel run gives each of its R replicas cpus/(jobs*R) threads, at least one, so it "
           "oversubscribes 2 cores; --replicas overrides R). Run time and accuracies: not yet measured."),
)

_DP_GPU = TrainPreset(
    name="dp-gpu", arch="paper", image_size=224, train_subset=None, test_subset=None, epochs=10, batch_size=256,
    lr=0.01, momentum=0.0, weight_decay=0.0, evals_per_epoch=2, seeds=1, targets=(0.85, 0.88, 0.90),
    eval_batch_size=250, variants=("bn",), replicas=8, bn_sync=("local", "sync", "single"),
    notes=("Data-parallel BatchNorm on a real multi-device machine: needs --device gpu and 8 GPUs (a machine "
           "without them fails every data-parallel run at its start, with the framework's one-line reason). The "
           "paper preset's AlexNet (224px, plain SGD lr 0.01) with BN on all 60000/10000 images for 10 epochs, "
           "global batch 256 = 8 replicas x 32, trained per-replica (local), synchronized (sync) and on one device "
           "(single, the plain Trainer on the global batch of 256). Run time and accuracies: not yet measured."),
)

_SMOKE_DP = TrainPreset(
    name="smoke-dp", arch="tiny", image_size=28, train_subset=64, test_subset=64, epochs=2, batch_size=8, lr=0.05,
    momentum=0.9, weight_decay=5e-4, evals_per_epoch=1, seeds=1, targets=(0.5,), eval_batch_size=64,
    variants=("bn",), replicas=2, bn_sync=("local", "sync", "single"),
    notes="For tests: the data-parallel mechanics in seconds (a fake dataset of >= 64 train and test images).",
)

PRESETS: dict[str, TrainPreset] = {p.name: p for p in (_SMOKE, _CPU, _CPU_LONG, _PAPER, _SMALL_BATCH, _SMOKE_SWEEP,
                                                       _DP_CPU, _DP_GPU, _SMOKE_DP)}


def get_preset(name: str) -> TrainPreset:
    """The preset called `name`. Raises UserError naming the known presets if there is none."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None


def data_parallel_presets() -> str:
    """The names of the data-parallel presets, comma-separated (for messages)."""
    return ", ".join(name for name, p in PRESETS.items() if p.data_parallel)


def parse_bn_sync(text: str | None, preset: TrainPreset) -> tuple[str, ...]:
    """'sync,single' -> ('sync', 'single'), some of frameworks.training.BN_SYNC in that order; None -> the
    preset's modes (() for a preset that is not data-parallel). Raises UserError for an unknown mode, or any
    --bn-sync on a preset that is not data-parallel."""
    if text is None:
        return preset.bn_sync
    if not preset.data_parallel:
        raise UserError(f"--bn-sync needs a data-parallel preset ({data_parallel_presets()}); preset "
                        f"{preset.name} trains on one device")
    names = {n.strip() for n in text.split(",") if n.strip()}
    if not names or names - set(BN_SYNC):
        raise UserError(f"--bn-sync takes some of {','.join(BN_SYNC)}. Received: {text!r}")
    return tuple(m for m in BN_SYNC if m in names)


def parse_variants(text: str | None, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """'bn,nobn' -> ('bn', 'nobn'); None or '' -> `default` (a preset's `variants`; None: every variant);
    'all' -> every variant. Raises UserError for an unknown variant."""
    if text is None or not text.strip():
        text = ",".join(default) if default is not None else "all"
    if text.strip() == "all":
        return VARIANTS
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise UserError(f"unknown variant {', '.join(unknown) or repr(text)}; expected some of "
                        f"{', '.join(VARIANTS)}")
    return names
