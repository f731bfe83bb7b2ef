"""`bnparity check`: the user's own tensor through every installed framework and the reference."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np

from bnparity.frameworks.registry import IMPLS, frameworks_help, parse_frameworks
from bnparity.reference.layout import channel_axis
from bnparity.reference.steps import LayerInputs
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, output_file
from bnparity.suites.records import write_json
from bnparity.suites.schema import PARITY_FORMAT, LayerRecord, to_dict

from .cases import ParityCase
from .command import explicitly_named, parity_doc, report_unavailable
from .harness import MODES, load_adapters, run_case
from .summary import format_table, gate_failures

_FLOATS = ("float16", "float32", "float64")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True,
                        help=".npz with x (N, C, ...) and optionally gamma (C,), beta (C,), dy (shape of x)")
    parser.add_argument("--axis", type=int, default=1, help="the channel axis of x (default 1; -1 for NHWC)")
    parser.add_argument("--frameworks", help=frameworks_help())
    parser.add_argument("--mode", choices=MODES, default="matched")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"write the records here (format {PARITY_FORMAT})" + JSON_TARGETS)


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
    c = x.shape[ax]
    if c == 0:
        raise UserError(f"x needs at least one channel on axis {axis}. Received: x.shape={x.shape}")
    m = x.size // c  # values per channel: N times the spatial size
    if m < 2:
        what = "a batch of at least 2 values per channel" if m == 0 else "at least 2 values"
        raise UserError(f"each channel needs {what} for the unbiased running variance (m = N·spatial size). "
                        f"Received: x.shape={x.shape}, m={m}")
    _finite("x", x, path)
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
    adapters, skipped, unavailable = load_adapters(frameworks, IMPLS, args.mode)
    records: list[LayerRecord] = [*skipped, *run_case(case, inputs, adapters, args.mode)]
    if args.json:
        write_json(args.json, to_dict(parity_doc(records, modes=(args.mode,), frameworks=frameworks, impls=IMPLS,
                                                 cases=[case], wall_time_s=None, complete=True,
                                                 input_path=args.input)))
    broken = {u.framework: u.reason for u in unavailable if u.installed}
    failed_import = report_unavailable(records, broken, named=explicitly_named(args.frameworks))
    print(format_table(records))
    failures = gate_failures(records)
    print(f"{'all implementations agree' if not failures else f'{len(failures)} comparisons disagree'} "
          f"with the float64 reference on {args.input} (x {inputs.xs[0].shape} {case.dtype}, axis {args.axis})")
    return 1 if failures or failed_import else 0
