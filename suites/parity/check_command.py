"""`bnparity check`: the user's own tensor through every installed framework and the reference."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np

from bnparity.frameworks.registry import IMPLS, frameworks_help, named_frameworks, parse_frameworks
from bnparity.reference.layout import channel_axis
from bnparity.reference.normalization import normalization, parse_normalizations, short_name
from bnparity.reference.spec import LayerSpec
from bnparity.reference.steps import LayerInputs
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, output_file
from bnparity.suites.records import write_json
from bnparity.suites.schema import PARITY_FORMAT, LayerRecord, to_dict

from .cases import ParityCase, case_normalizations
from .command import parity_doc, report_unavailable
from .harness import MODES, load_adapters, run_case
from .summary import format_table, gate_failures

_FLOATS = ("float16", "float32", "float64")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True,
                        help=".npz with x (N, C, ...) and optionally gamma, beta (the layer's parameter shape, e.g. "
                             "(C,)) and dy (shape of x)")
    parser.add_argument("--norm", default="batch",
                        help=f"one of {', '.join(short_name(n) for n in case_normalizations())} (default: batch)")
    parser.add_argument("--axis", type=int, default=None,
                        help="the channel axis of x (default 1; -1 for NHWC; always -1 for layer and rms)")
    parser.add_argument("--groups", type=int, default=None, help="GroupNorm's G (default 1)")
    parser.add_argument("--normalized-dims", type=int, default=None,
                        help="LayerNorm's and RMSNorm's number of normalized trailing axes (default 1)")
    parser.add_argument("--frameworks", help=frameworks_help())
    parser.add_argument("--mode", choices=MODES, default="matched")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"write the records here (format {PARITY_FORMAT})" + JSON_TARGETS)


def _finite(name: str, a: np.ndarray, path: Path) -> None:
    if not np.all(np.isfinite(a)):
        raise UserError(f"{path}: {name} must be finite. Received: {int(np.sum(~np.isfinite(a)))} NaN/Inf values")


def check_spec(norm: str, *, axis: int | None = None, groups: int | None = None,
               normalized_dims: int | None = None) -> LayerSpec:
    """The spec `bnparity check` runs: the normalization at the baseline's (PyTorch's) defaults, with the options
    the user gave. Every problem is a one-line UserError."""
    try:
        (name,) = parse_normalizations(norm, option="--norm")
    except ValueError as e:
        raise UserError(str(e)) from None
    spec_type = normalization(name).spec_type
    options = {"axis": axis, "groups": groups, "normalized_dims": normalized_dims}
    fields = spec_type.__dataclass_fields__
    for option, value in options.items():
        if value is not None and option not in fields:
            raise UserError(f"--{option.replace('_', '-')} does not apply to --norm {norm}")
    try:
        return spec_type(**{k: v for k, v in options.items() if v is not None})
    except ValueError as e:
        raise UserError(str(e)) from None


def load_check_input(path: Path, *, axis: int | None = None, spec: LayerSpec | None = None
                     ) -> tuple[ParityCase, LayerInputs]:
    """Read and validate the user's .npz for `spec` (default: BatchNorm on channel axis `axis`); every problem is
    a one-line UserError."""
    if spec is None:
        spec = check_spec("batch", axis=1 if axis is None else axis)
    axis = spec.axis
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
    if spec.track_running_stats and spec.normalization == "batchnorm":
        m = x.size // c  # values per channel: N times the spatial size
        if m < 2:
            what = "a batch of at least 2 values per channel" if m == 0 else "at least 2 values"
            raise UserError(f"each channel needs {what} for the unbiased running variance (m = N·spatial size). "
                            f"Received: x.shape={x.shape}, m={m}")
    try:
        param_shape = spec.param_shape(tuple(x.shape))
    except ValueError as e:
        raise UserError(f"x.shape={x.shape}: {e}") from None
    _finite("x", x, path)
    rng = np.random.default_rng(0)
    gamma = arrays.get("gamma", np.ones(param_shape))
    beta = arrays.get("beta", np.zeros(param_shape))
    dy = arrays.get("dy", rng.standard_normal(x.shape).astype(x.dtype))
    for name, a in (("gamma", gamma), ("beta", beta)):
        if a.shape != param_shape:
            raise UserError(f"{name} must have shape {param_shape} to match x {x.shape} (axis {axis}). "
                            f"Received: {name}.shape={a.shape}")
        _finite(name, a, path)
    if dy.shape != x.shape:
        raise UserError(f"dy must have the shape of x {x.shape}. Received: dy.shape={dy.shape}")
    _finite("dy", dy, path)
    case = ParityCase(name=path.stem, shape=tuple(x.shape), spec=spec, dtype=x.dtype.name, steps=1,
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
    spec = check_spec(args.norm, axis=args.axis, groups=args.groups, normalized_dims=args.normalized_dims)
    case, inputs = load_check_input(args.input, spec=spec)
    adapters, skipped, unavailable = load_adapters(frameworks, IMPLS, args.mode, normalization=spec.normalization)
    records: list[LayerRecord] = [*skipped, *run_case(case, inputs, adapters, args.mode)]
    if args.json:
        write_json(args.json, to_dict(parity_doc(records, modes=(args.mode,), frameworks=frameworks, impls=IMPLS,
                                                 cases=[case], wall_time_s=None, complete=True,
                                                 input_path=args.input)))
    broken = {u.framework: u.reason for u in unavailable if u.installed}
    failed_import = report_unavailable(records, broken, named=bool(named_frameworks(args.frameworks)))
    print(format_table(records))
    failures = gate_failures(records)
    print(f"{'all implementations agree' if not failures else f'{len(failures)} comparisons disagree'} "
          f"with the float64 reference on {args.input} (x {inputs.xs[0].shape} {case.dtype}, {spec.normalization}, "
          f"axis {spec.axis})")
    return 1 if failures or failed_import else 0
