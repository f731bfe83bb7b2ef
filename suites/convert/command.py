"""`bnparity convert SRC --from F --to G --out DST`: BatchNorm state from one framework's checkpoint into another's,
with the conventions converted (reference/conversion.py), then verified by running both (verify.py).

Momentum and ε are constructor arguments, in no file: --momentum and --eps give the source's (default: the source
framework's defaults, from its conventions row); the target's are printed as the constructor call to write, and
recorded, with everything else, in the sidecar JSON `DST.bnparity.json` (format bnparity-convert/1). --count m (the
values per channel of a training batch: N·H·W after a convolution, N after a dense layer) makes the running
variance's estimator conversion exact; with --arch (a reference.alexnet preset) it is the first BN layer's m, and
each layer's own m follows from the network's shapes. Exit code 0 when every gated agreement holds, 1 otherwise,
2 for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from pathlib import Path

import numpy as np

from bnparity.frameworks.checkpoints import (
    BNConventions,
    BNState,
    CheckpointFormat,
    LayerList,
    Unmapped,
    WeightTensor,
    alexnet_layers,
    alexnet_params,
    flatten_ambiguous,
    load_format,
    read_layers,
    write_layers,
)
from bnparity.frameworks.conventions import convention
from bnparity.frameworks.registry import Unavailable, display_name, framework_names
from bnparity.reference.conversion import convert_state
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, check_output_file, output_file, write_json

from .records import FORMAT, Agreement, BNConventionsRecord, BNLayerRecord, ConvertDoc, as_json
from .verify import LayerCheck, verify_alexnet, verify_layer

SIDECAR = ".bnparity.json"
DEFAULT_BATCH = 8  # the verification's batch when --count is not given (and its spatial size 4×4 after a conv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(framework_names())
    parser.add_argument("src", type=Path, metavar="SRC", help="the source checkpoint file")
    parser.add_argument("--from", dest="source", required=True, choices=framework_names(), metavar="F",
                        help=f"the source's framework ({names})")
    parser.add_argument("--to", dest="target", required=True, choices=framework_names(), metavar="G",
                        help=f"the target's framework ({names})")
    parser.add_argument("--out", required=True, type=Path, metavar="DST",
                        help="the converted checkpoint (must not exist); its sidecar JSON is DST" + SIDECAR)
    parser.add_argument("--count", type=int, metavar="M",
                        help="m, values per channel of a training batch (with --arch: the first BN layer's); makes "
                             "the running variance's estimator conversion exact")
    parser.add_argument("--momentum", metavar="X",
                        help="the source layers' momentum argument (default: the source framework's; 'none' for a "
                             "cumulative average where the framework has one)")
    parser.add_argument("--eps", type=float, metavar="E", help="the source layers' ε (default: the framework's)")
    parser.add_argument("--arch", metavar="PRESET", help="the AlexNet preset the checkpoint holds (tiny, cpu, paper)")
    parser.add_argument("--steps", type=int, default=3, metavar="K", help="training steps of the check (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the check's random tensors (default: 0)")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help="also write the record here" + JSON_TARGETS)


def _format(name: str) -> CheckpointFormat:
    fmt = load_format(name)
    if isinstance(fmt, Unavailable):
        raise UserError(fmt.reason)
    return fmt


def _conventions(framework: str, fmt: CheckpointFormat, momentum: str | None, eps: float | None) -> BNConventions:
    row = convention(framework)
    if momentum is None:
        value: float | None = row.momentum
    elif momentum.strip().lower() == "none":
        if not fmt.cumulative_average:
            raise UserError(f"--momentum none: {display_name(framework)}'s BatchNorm has no cumulative average")
        value = None
    else:
        try:
            value = float(momentum)
        except ValueError:
            raise UserError(f"--momentum takes a number in [0, 1] or 'none'. Received: {momentum!r}") from None
        if not 0.0 <= value <= 1.0:
            raise UserError(f"--momentum must be in [0, 1]. Received: {momentum}")
    if eps is not None and not eps > 0:
        raise UserError(f"--eps must be > 0. Received: {eps}")
    return BNConventions(momentum=value, momentum_weighs=row.momentum_weighs, eps=row.eps if eps is None else eps,
                         running_var=row.running_var)


def _arch(name: str | None) -> object | None:
    if name is None:
        return None
    from bnparity.reference.alexnet import ARCH_PRESETS, alexnet_spec

    if name not in ARCH_PRESETS:
        raise UserError(f"--arch must be one of {', '.join(ARCH_PRESETS)}. Received: {name!r}")
    return alexnet_spec(name, norm="bn")


def _read(fmt: CheckpointFormat, path: Path, arch: object | None, conventions: BNConventions) -> LayerList:
    tensors = fmt.read(path)
    if arch is None:
        return read_layers(fmt, tensors, conventions)
    params, batches = fmt.alexnet_read(arch, tensors)
    return alexnet_layers(arch, params, batches, conventions, native_layouts=(fmt.conv_layout, fmt.dense_layout))


def _shapes(layers: LayerList, arch: object | None, count: int | None) -> dict[str, tuple[int, ...]]:
    """Per BN layer, the verification's input shape (channels-first): m = N·spatial values per channel."""
    if arch is not None:
        from bnparity.reference.alexnet import BatchNorm, layer_shapes

        bn = [(s.layer.name, s.in_shape) for s in layer_shapes(arch) if isinstance(s.layer, BatchNorm)]
        spatial = int(np.prod(bn[0][1][1:]))
        if count is not None and (count % spatial or count < spatial):
            raise UserError(f"--count {count} is not a multiple of {bn[0][0]}'s {spatial} positions per image "
                            f"(m = batch × {spatial})")
        n = DEFAULT_BATCH if count is None else count // spatial
        return {name: (n, *shape) for name, shape in bn}
    shapes, previous = {}, "dense"
    for la in layers.layers:
        if isinstance(la, WeightTensor):
            previous = la.kind
        else:
            if count is not None:
                shapes[la.name] = (count, la.channels, 1, 1) if previous == "conv" else (count, la.channels)
            else:
                shapes[la.name] = ((DEFAULT_BATCH, la.channels, 4, 4) if previous == "conv"
                                   else (DEFAULT_BATCH * 4, la.channels))
    return shapes


def _record(c: BNConventions, batches: int | None) -> BNConventionsRecord:
    return BNConventionsRecord(momentum=c.momentum, momentum_weighs=c.momentum_weighs, eps=c.eps,
                               running_var=c.running_var, batches_tracked=batches)


def _write(fmt: CheckpointFormat, path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write next to `path` under a temporary name of the same ending, then rename (no half-written DST)."""
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        fmt.write(tmp, tensors)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def run(args: argparse.Namespace) -> int:
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1. Received: {args.steps}")
    if args.count is not None and args.count < 2:
        raise UserError(f"--count must be >= 2 (m/(m − 1) needs two values). Received: {args.count}")
    if args.source == args.target:
        raise UserError(f"--from and --to name the same framework ({args.source}): nothing to convert")
    out: Path = args.out
    sidecar = out.with_name(out.name + SIDECAR)
    for path in (out, sidecar):
        if os.path.lexists(path):
            raise UserError(f"--out: {path} exists; bnparity convert never overwrites a file")
    check_output_file(out)
    src, tgt = _format(args.source), _format(args.target)
    if not out.name.endswith(tuple(tgt.suffixes)):  # a suffix may have two parts (.weights.h5)
        raise UserError(f"--out must end in {' or '.join(tgt.suffixes)} for {display_name(args.target)}. "
                        f"Received: {out.name}")
    arch = _arch(args.arch)
    source_conv = _conventions(args.source, src, args.momentum, args.eps)
    row = convention(args.target)
    source = _read(src, args.src, arch, source_conv)
    shapes = _shapes(source, arch, args.count)

    # convert: BN conventions through reference/conversion.py, weights through the canonical layout
    converted: list[BNState | WeightTensor] = []
    records, approximations, checks = [], [], []
    ambiguous = set() if arch is not None or src.flatten_order == tgt.flatten_order else set(flatten_ambiguous(source))
    unmapped = list(source.unmapped)
    for la in source.layers:
        if isinstance(la, WeightTensor):
            if la.name in ambiguous:
                unmapped.append(Unmapped(la.name, f"a dense layer after a convolution: {display_name(args.source)} "
                                                  f"flattens {src.flatten_order}, {display_name(args.target)} "
                                                  f"{tgt.flatten_order}, and without --arch the feature map's (H, W) "
                                                  "is unknown, so its input columns cannot be permuted"))
            else:
                converted.append(la)
            continue
        m = int(np.prod(shapes[la.name])) // la.channels if args.count is not None else None
        conversion = convert_state(la.spec(), momentum_weighs=row.momentum_weighs, running_var=row.running_var,
                                   cumulative=tgt.cumulative_average, count=m, steps=args.steps)
        spec = conversion.spec
        dtype = np.asarray(la.running_var).dtype
        target_conv = BNConventions(momentum=spec.momentum, momentum_weighs=spec.momentum_weighs, eps=spec.eps,
                                    running_var=spec.running_var)
        batches = (la.batches_tracked or 0) if "batches_tracked" in tgt.bn_leaves else None
        state = dataclasses.replace(la, running_mean=np.asarray(spec.init_running_mean, dtype=dtype),
                                    running_var=np.asarray(spec.init_running_var, dtype=dtype),
                                    batches_tracked=batches, conventions=target_conv)
        converted.append(state)
        if la.batches_tracked is not None and batches is None:
            unmapped.append(Unmapped(f"{la.name}.num_batches_tracked",
                                     f"{display_name(args.target)} keeps no batch count ({la.batches_tracked}: in the "
                                     "sidecar JSON)"))
        approximations += [f"{la.name}: {text}" for text in conversion.approximations]
        records.append(BNLayerRecord(name=la.name, channels=la.channels, count=m,
                                     source=_record(la.conventions, la.batches_tracked),
                                     target=_record(target_conv, state.batches_tracked),
                                     constructor=tgt.constructor(state), exact=conversion.exact))
        checks.append(LayerCheck(la, state, shapes[la.name], m is not None and la.conventions.running_var
                                 != spec.running_var))
    target = LayerList(tuple(converted))
    if arch is not None:
        params, batches = alexnet_params(target)
        tensors = tgt.alexnet_write(arch, params, batches)
    else:
        tensors, dropped = write_layers(tgt, target)
        unmapped += dropped
    _write(tgt, out, tensors)

    # verify: on the file as written, read back
    written = _read(tgt, out, arch, convention_of(target))
    rng = np.random.default_rng(args.seed)
    agreement: list[Agreement] = []
    by_name = {la.name: la for la in written.bn}
    for check in checks:
        check = dataclasses.replace(check, target=dataclasses.replace(by_name[check.target.name],
                                                                      conventions=check.target.conventions))
        agreement += verify_layer(src, tgt, check, steps=args.steps, rng=rng)
    if arch is not None:
        held = alexnet_params(LayerList(tuple(
            dataclasses.replace(la, running_var=np.asarray(by_name[la.name].running_var)) if isinstance(la, BNState)
            else la for la in source.layers)))[0]
        agreement += verify_alexnet(src, tgt, arch, alexnet_params(source)[0], held, alexnet_params(written)[0],
                                    images=4, rng=rng, estimator_converted=any(c.estimator_converted for c in checks))
    doc = ConvertDoc(format=FORMAT, source_framework=args.source, target_framework=args.target,
                     source_path=str(args.src), target_path=str(out), arch=args.arch, count=args.count,
                     steps=args.steps, bn_layers=tuple(records),
                     weights=tuple(la.name for la in converted if isinstance(la, WeightTensor)),
                     unmapped=tuple(unmapped),
                     approximations=tuple(approximations), agreement=tuple(agreement))
    write_json(sidecar, as_json(doc))
    if args.json is not None:
        write_json(args.json, as_json(doc))
    _print(doc, sidecar)
    return 0 if doc.passed else 1


def convention_of(layers: LayerList) -> BNConventions:
    """The conventions the converted layers share (the first's; all BN layers of a conversion share them)."""
    bn = layers.bn
    return bn[0].conventions if bn else BNConventions(0.1, "new", 1e-5, "unbiased")


def _print(doc: ConvertDoc, sidecar: Path) -> None:
    s, t = display_name(doc.source_framework), display_name(doc.target_framework)
    print(f"{s} -> {t}: {doc.target_path} ({len(doc.bn_layers)} BatchNorm layers, {len(doc.weights)} "
          f"convolution/dense layers); sidecar {sidecar}")
    constructors = sorted({r.constructor.replace(f"({r.channels},", "(C,") for r in doc.bn_layers})
    for text in constructors:
        print(f"  build the {t} layers as: {text}")
    for u in doc.unmapped:
        print(f"  not converted: {u.name}: {u.reason}")
    for a in doc.approximations:
        print(f"  approximated: {a}")
    for a in doc.agreement:
        mark = "ok" if a.passed else ("FAILED" if a.gated else "differs")
        gate = "" if a.gated else " (not gated)"
        print(f"  {a.layer:>8} {a.quantity:<24} steps {a.steps} m {a.count:<7} max|Δ| {a.max_abs_err:.3g} "
              f"(allowed {a.allowed:.3g}, scale {a.scale:.3g}) {s} {a.source_value:.7g} {t} {a.target_value:.7g} "
              f"{mark}{gate}")
    print(f"verification: {'every gated agreement holds' if doc.passed else 'FAILED'}")
