"""Keras' own training loops against a bare loop of the same model and step, images/s per backend.

For each Keras backend (one process each: Keras fixes its backend at import), the same AlexNet (the preset's, BN
variant, canonical weights of seed 0), the same batches and dropout masks, SGD in PyTorch's formulation:
- bare: the Trainer's compiled step (tf.function / jax.jit / eager torch, as Keras compiles `fit` by default on the
  backend) called on tensors converted beforehand, nothing read back until the end (JAX: the state carried as arrays);
- trainer: frameworks/keras/train.py's Trainer.train_step on NumPy batches (what the convergence suite calls: the
  bare step plus the conversions in and the loss and logits read back);
- train_on_batch: `Model.compile(SGD, SparseCategoricalCrossentropy(from_logits=True))` then one
  `Model.train_on_batch` per batch, its masks as model inputs and λ·p as a `Layer.add_loss` term (½λ‖p‖²);
- fit: the same compiled model, one `Model.fit` over the epoch (batch_size, shuffle off, verbose 0).
Every loop is warmed up (compiled) on the first batch before it is timed. "overhead" is 1 − (img/s) / (bare img/s).

    .venv/bin/python benchmarks/keras_overhead.py --preset cpu --threads 1 [--backends tensorflow,jax,torch]
        [--train-subset 2560] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bnparity.suites.convergence.runner import thread_env

BACKENDS = ("tensorflow", "jax", "torch")


def _masked_model(keras, alexnet, weight_decay: float):
    """The Trainer's AlexNet as a keras.Model of inputs [images, *masks], with ½λ‖p‖² added as a loss."""

    class Masked(keras.Model):
        def __init__(self, net) -> None:
            super().__init__(dtype=net.net_dtype)
            self.net = net

        def call(self, inputs, training=False):
            x, *masks = inputs
            if weight_decay:
                self.add_loss(0.5 * weight_decay * sum(keras.ops.sum(keras.ops.square(v))
                                                       for v in self.net.trainable_variables))
            return self.net(x, training=training, dropout_masks=masks or None)

    return Masked(alexnet)


def _run_backend(args: argparse.Namespace) -> int:
    import numpy as np

    from bnparity.frameworks.training import SGDConfig, load_trainer
    from bnparity.reference.alexnet import init_params, variant_spec
    from bnparity.suites.convergence.presets import get_preset
    from bnparity.suites.convergence.runner import dropout_masks, dropout_shapes, mask_rng
    from bnparity.suites.data.fashion_mnist import load_fashion_mnist
    from bnparity.suites.data.pipeline import batches, prepare

    backend = os.environ["KERAS_BACKEND"]
    trainer_cls = load_trainer(f"keras-{backend}")
    import keras

    from bnparity.frameworks.keras.convert import to_numpy

    preset = get_preset(args.preset)
    if args.train_subset:
        preset = preset.replace(train_subset=args.train_subset)
    data = load_fashion_mnist(args.data_dir, verify=not args.no_verify_data)
    train, _ = prepare(data, image_size=preset.image_size, train_subset=preset.train_subset,
                       test_subset=preset.test_subset, subset_seed=preset.subset_seed)
    arch = variant_spec(preset.arch, "bn")
    params = init_params(arch, seed=0)
    sgd = SGDConfig(lr=preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay)
    prebuilt = list(batches(train, batch_size=preset.batch_size, seed=0, epoch=0))
    rng, shapes = mask_rng(seed=0, epoch=0), dropout_shapes(arch)
    masks = [dropout_masks(shapes, batch=len(labels), rng=rng) for _, labels in prebuilt]
    images = sum(len(labels) for _, labels in prebuilt[1:])  # the first batch is the warm-up

    def bare() -> float:
        trainer = trainer_cls(arch=arch, params=params, sgd=sgd)
        tensors = [trainer._inputs(x, y, m) for (x, y), m in zip(prebuilt, masks, strict=True)]
        if backend == "jax":
            model, opt = trainer.model, trainer.optimizer
            state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                     [v.value for v in opt.variables])
            state = trainer._jit_step(*state, *tensors[0])[:3]
            start = time.perf_counter()
            for t in tensors[1:]:
                *state, _, loss, _ = trainer._jit_step(*state, *t)
        else:
            trainer._step(True, *tensors[0])
            start = time.perf_counter()
            for t in tensors[1:]:
                _, loss, _ = trainer._step(True, *t)
        to_numpy(loss)  # wait for the last step
        return images / (time.perf_counter() - start)

    def trainer_loop() -> float:
        trainer = trainer_cls(arch=arch, params=params, sgd=sgd)
        trainer.train_step(*prebuilt[0], dropout_masks=masks[0])
        start = time.perf_counter()
        for (x, y), m in zip(prebuilt[1:], masks[1:], strict=True):
            trainer.train_step(x, y, dropout_masks=m)
        return images / (time.perf_counter() - start)

    def compiled():
        trainer = trainer_cls(arch=arch, params=params, sgd=sgd)
        model = _masked_model(keras, trainer.model, sgd.weight_decay)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=sgd.lr, momentum=sgd.momentum),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    def on_batch() -> float:
        model = compiled()
        (x, y), m = prebuilt[0], masks[0]
        model.train_on_batch([x, *m], y.astype(np.int32))
        start = time.perf_counter()
        for (x, y), m in zip(prebuilt[1:], masks[1:], strict=True):
            model.train_on_batch([x, *m], y.astype(np.int32))
        return images / (time.perf_counter() - start)

    def fit() -> float:
        model = compiled()
        xs = np.concatenate([x for x, _ in prebuilt[1:]])
        ms = [np.concatenate([m[i] for m in masks[1:]]) for i in range(len(masks[0]))]
        ys = np.concatenate([y for _, y in prebuilt[1:]]).astype(np.int32)
        (x, y), m = prebuilt[0], masks[0]
        model.fit([x, *m], y.astype(np.int32), batch_size=preset.batch_size, shuffle=False, verbose=0)
        start = time.perf_counter()
        model.fit([xs, *ms], ys, batch_size=preset.batch_size, shuffle=False, verbose=0)
        return images / (time.perf_counter() - start)

    loops = {"bare": bare, "trainer": trainer_loop, "train_on_batch": on_batch, "fit": fit}
    best = {name: max(loop() for _ in range(args.repeats)) for name, loop in loops.items()}
    cells = "  ".join(f"{name} {ips:7.1f}" + ("" if name == "bare" else f" ({1 - ips / best['bare']:+.1%})")
                      for name, ips in best.items())
    print(f"keras-{backend:<10} img/s  {cells}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="convergence preset (default: cpu)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated Keras backends (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="compute threads (default 1, as with --jobs 2)")
    parser.add_argument("--train-subset", type=int, default=2560, help="training images (default 2560: 20 steps)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each loop; the best is kept")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--no-verify-data", action="store_true")
    args = parser.parse_args(argv)
    if os.environ.get("KERAS_BACKEND") and os.environ.get("_BNPARITY_KERAS_OVERHEAD_CHILD"):
        return _run_backend(args)
    from bnparity.frameworks.registry import framework_environment

    print(f"preset {args.preset} (BN variant), {args.train_subset} training images, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.2f}; overhead in parentheses: 1 - img/s / bare img/s", flush=True)
    code = 0
    for backend in args.backends.split(","):
        env = {**os.environ, **framework_environment(f"keras-{backend.strip()}"),
               **thread_env(args.threads, dict(os.environ)), "_BNPARITY_KERAS_OVERHEAD_CHILD": "1"}
        code |= subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])],
                               env=env, check=False).returncode
    return code


if __name__ == "__main__":
    sys.exit(main())
