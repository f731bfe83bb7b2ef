"""`bnparity check`: the user's own tensor through every installed framework and the reference."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np

from bnparity.frameworks.registry import IMPLS, parse_frameworks
from bnparity.reference.layout import channel_axis
from bnparity.reference.steps import LayerInputs
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.records import write_json

from .cases import ParityCase
from .command import FORMAT
from .harness import MODES, load_adapters, run_case
from .summary import format_table, gate_failures

_FLOATS = ("float16", "float32", "float64")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True,
                        help=".npz with x (N, C, ...) and optionally gamma (C,), beta (C,), dy (shape of x)")
    parser.add_argument("--axis", type=int, default=1, help="the channel axis of x (default 1; -1 for NHWC)")
    parser.add_argument("--frameworks", help="comma-separated: torch,mxnet,jax (default: all)")
    parser.add_argument("--mode", choices=MODES, default="matched")
    parser.add_argument("--json", type=Path, help="write the records here (format bnparity-parity/1)")


def _finite(name: str, a: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(a)):
        raise UserError(f"{path}: {name} must be finite. Received: {int(np.sum(~np.isfinite(a)))} NaN/Inf values")


def load_check_input(path: Path, *, axis: int) -> tuple[ParityCase, LayerInputs]:
    """Read and validate the user's .npz; every problem is a one-line UserError."""
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read {path} as .npz: {reason}") from None
    if "x" not in arrays:
        raise UserError(f"{path} must hold an array named 'x'. Received: {sorted(arrays) or 'no arrays'}")
    x = arrays["x"]
    if x.dtype.name not in _FLOATS:
        raise UserError(f"x must be float16, float32 or float64. Received: x.dtype={x.dtype}")
    try:
        ax = channel_axis(x.ndim, axis)
    except ValueError as e:
        raise UserError(str(e)) from None
    _finite("x", x, path)
    c = x.shape[ax]
    rng = np.random.default_rng(0)
    gamma = arrays.get("gamma", np.ones(c))
    beta = arrays.get("beta", np.zeros(c))
    dy = arrays.get("dy", rng.standard_normal(x.shape).astype(x.dtype))
    for name, a in (("gamma", gamma), ("beta", beta)):
        if a.shape != (c,):
            raise UserError(f"{name} must have shape ({c},) to match x's {c} channels on axis {axis}. "
                            f"Received: {name}.shape={a.shape}")
        _finite(name, a, path)
    if dy.shape != x.shape:
        raise UserError(f"dy must have the shape of x {x.shape}. Received: dy.shape={dy.shape}")
    _finite("dy", dy, path)
    case = ParityCase(name=path.stem, shape=tuple(x.shape), axis=axis, dtype=x.dtype.name, steps=1,
                      note=f"user input {path.name}")
    inputs = LayerInputs(xs=(x,), dys=(dy.astype(x.dtype),), x_eval=x,
                         gamma=gamma.astype(x.dtype).astype(np.float64),
                         beta=beta.astype(x.dtype).astype(np.float64))
    return case, inputs


def run(args: argparse.Namespace) -> int:
    try:
        frameworks = parse_frameworks(args.frameworks)
    except ValueError as e:
        raise UserError(str(e)) from None
    case, inputs = load_check_input(args.input, axis=args.axis)
    adapters, records = load_adapters(frameworks, IMPLS, args.mode)
    records += list(run_case(case, inputs, adapters, args.mode))
    if args.json:
        write_json(args.json, {"format": FORMAT, "meta": {**environment(), "modes": [args.mode],
                                                         "input": str(args.input), "complete": True},
                               "records": records})
    for r in records:
        if r.get("case") is None:
            print(f"skipped {r['framework']}/{r['impl']}: {r['reason']}")
    print(format_table(records))
    failures = gate_failures(records)
    print(f"{'all implementations agree' if not failures else f'{len(failures)} comparisons disagree'} "
          f"with the float64 reference on {args.input} (x {inputs.xs[0].shape} {case.dtype}, axis {args.axis})")
    return 1 if failures else 0
