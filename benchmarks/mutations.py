"""Mutation testing of the gate: put one realistic porting bug at a time into a copy of the repository and run the
checks that should catch it.

Usage: .venv/bin/python benchmarks/mutations.py [--only NAME,...] [--list] [--first-kill] [--verbose] [--keep DIR]
                                               [--base REV --overlay PATH ...]

1. The repository is copied to a scratch directory: the git-tracked files plus the working tree's changes
   (`git ls-files --cached --others --exclude-standard`, contents as they are on disk). With --base REV the files
   are those of commit REV instead (`git archive`), and the working tree's versions of the --overlay paths are
   copied over them (to measure a few files against a commit while other files are being edited).
2. The copy's code is what runs: a shim directory on PYTHONPATH holds `bnparity/__init__.py` and one symlink per
   sub-package of pyproject.toml's `[tool.setuptools] package-dir`, pointing into the copy; the regular package
   found on PYTHONPATH wins over the editable install's finder (appended to sys.meta_path), in every
   subprocess too. The script proves it once: it prints `bnparity.reference.__file__` from the scratch run and
   checks that a probe line added to the copy's reference/spec.py is what the scratch run imports.
3. Every check is first run on the unmutated copy, where it must pass; a check that fails there is broken and
   kills nothing.
4. Each mutation (file, exact old snippet, new snippet, description) is applied to a fresh copy; a snippet that is
   not found makes the mutation "not applicable" (the files are being edited). Its checks run on that copy: a
   check that fails (non-zero exit; for pytest exit 1 or 2, exit 5 means no test was selected) kills it.

Prints one line per mutation (killed / survived / not applicable, by what, seconds), then "N of M mutations
killed" and the total wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)
BNPARITY = PYTHON.with_name("bnparity")
SHIM = ".mutation-shim"
PROBE = "_MUTATION_PROBE"


@dataclass(frozen=True)
class Check:
    """A command run in the scratch copy; a non-zero exit (for pytest: 1 or 2) means it caught the mutation."""

    label: str
    argv: tuple[str, ...]
    pytest: bool = False

    def command(self) -> list[str]:
        return [str(PYTHON), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *self.argv] if self.pytest \
            else [str(BNPARITY), *self.argv]


def gate(frameworks: str, cases: str, impls: str = "builtin,scratch") -> Check:
    """`bnparity parity` in matched mode on some frameworks, implementations and cases (hard inputs excluded)."""
    return Check(f"gate[{frameworks}/{impls}: {cases}]",
                 ("parity", "--mode", "matched", "--no-hard", "--frameworks", frameworks, "--impls", impls,
                  "--cases", cases))


def tests(path: str, select: str | None = None) -> Check:
    """pytest on one file (-x -q), optionally only the tests whose names match `select` (pytest -k)."""
    return Check(f"{path}" + (f" -k '{select}'" if select else ""),
                 (path, *(("-k", select) if select else ())), pytest=True)


@dataclass(frozen=True)
class Mutation:
    """One realistic bug: replace `old` by `new` in `file` (the first of several alternatives that is found)."""

    name: str
    file: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    description: str
    checks: tuple[Check, ...]

    def apply(self, root: Path) -> bool:
        """Apply to the copy at `root`; False when no alternative's snippet is in the file (not applicable)."""
        path = root / self.file
        if not path.exists():
            return False
        text = path.read_text()
        for old, new in zip(self.old, self.new, strict=True):
            if text.count(old) == 1:
                path.write_text(text.replace(old, new))
                return True
        return False


def _m(name: str, file: str, old: str | tuple[str, ...], new: str | tuple[str, ...], description: str,
       *checks: Check) -> Mutation:
    olds = (old,) if isinstance(old, str) else old
    news = (new,) * len(olds) if isinstance(new, str) else new
    return Mutation(name, file, olds, news, description, checks)


BN = "frameworks/{}/batchnorm.py"
GATE_TESTS = "tests/test_gate.py"
# The gated cases that target porters' bugs (suites/parity/cases.py), and the checks shared by the mutations: the
# gate on them per framework (both implementations), and tests/test_gate.py's tests of that framework.
BUG_CASES = "momentum_old,init0.5,offset100,momentum0.3"
TORCH, MXNET, JAX = "torch", "mxnet", "jax"


def norm_gate(frameworks: str, norms: str, cases: str = "", impls: str = "builtin,scratch") -> Check:
    """`bnparity parity` in matched mode on some normalizations (hard inputs excluded; `cases`: name filters)."""
    return Check(f"gate[{frameworks}/{impls}: {norms}{' ' + cases if cases else ''}]",
                 ("parity", "--mode", "matched", "--no-hard", "--frameworks", frameworks, "--impls", impls,
                  "--norms", norms, *(("--cases", cases) if cases else ())))


def gate_of(framework: str) -> Check:
    return gate(framework, BUG_CASES)


def tests_of(framework: str) -> Check:
    return tests(GATE_TESTS, framework)


TOLERANCE_TESTS = tests(GATE_TESTS, "tolerance")

MUTATIONS: tuple[Mutation, ...] = (
    # 1. momentum passed on without converting its meaning
    _m("torch-momentum-unconverted", BN.format(TORCH),
       ("momentum=framework_momentum(spec))", "momentum=spec.new_weight)"), "momentum=spec.momentum)",
       "torch builtin: BatchNorm(momentum=spec.momentum) whatever the momentum weighs",
       gate_of(TORCH), tests_of(TORCH)),
    _m("mxnet-momentum-unconverted", BN.format(MXNET),
       ("options.update(momentum=framework_momentum(spec), epsilon=spec.eps)",
        "options.update(momentum=_momentum(spec), epsilon=spec.eps)"),
       "options.update(momentum=spec.momentum, epsilon=spec.eps)",
       "mxnet builtin: gluon BatchNorm(momentum=spec.momentum) whatever the momentum weighs",
       gate_of(MXNET), tests_of(MXNET)),
    _m("jax-momentum-unconverted", BN.format(JAX),
       ("options.update(momentum=framework_momentum(spec),", "options.update(momentum=_momentum(spec),"),
       "options.update(momentum=spec.momentum,",
       "jax builtin: flax BatchNorm(momentum=spec.momentum) whatever the momentum weighs",
       gate_of(JAX), tests_of(JAX)),
    _m("mxnet-momentum-helper-unconverted", f"frameworks/{MXNET}/convert.py",
       "return float(np.float32(1.0 - spec.new_weight))", "return float(np.float32(spec.momentum))",
       "mxnet: the momentum helper unconverted, so that realize() reports a wrong spec as well",
       gate_of(MXNET), tests_of(MXNET)),
    # 2. initial running statistics ignored
    _m("torch-init-ignored", BN.format(TORCH),
       "module.running_mean.fill_(spec.init_running_mean)\n"
       "                module.running_var.fill_(spec.init_running_var)",
       "pass",
       "torch builtin: the spec's initial running statistics are not written into the module",
       gate_of(TORCH), tests_of(TORCH)),
    _m("torch-scratch-init-ignored", BN.format(TORCH),
       "np.full(channels, spec.init_running_mean)", "np.zeros(channels)",
       "torch scratch: the running mean starts at 0 whatever the spec says",
       gate_of(TORCH), tests_of(TORCH)),
    _m("mxnet-init-ignored", BN.format(MXNET),
       "        if not use_defaults:\n            block.running_mean.set_data(",
       "        if False:\n            block.running_mean.set_data(",
       "mxnet builtin: the spec's initial moving statistics are not set",
       gate_of(MXNET), tests_of(MXNET)),
    _m("jax-init-ignored", BN.format(JAX),
       'for name, value in (("mean", spec.init_running_mean), ("var", spec.init_running_var))',
       'for name, value in (("mean", 0.0), ("var", 1.0))',
       "jax builtin: batch_stats start at Flax's 0 and 1 whatever the spec says",
       gate_of(JAX), tests_of(JAX)),
    # 3. one-pass variance in matched mode
    _m("torch-scratch-one-pass-variance", BN.format(TORCH),
       "var = ((x - mu.view(shape)) ** 2).mean(dim=axes)", "var = (x * x).mean(dim=axes) - mu * mu",
       "torch scratch: σ²_B = E[x²] − E[x]²",
       gate_of(TORCH), tests_of(TORCH)),
    _m("jax-scratch-one-pass-variance", BN.format(JAX),
       "var = jnp.mean(jnp.square(x - mu.reshape(shape)), axis=axes)",
       "var = jnp.mean(jnp.square(x), axis=axes) - jnp.square(mu)",
       "jax scratch: σ²_B = E[x²] − E[x]²",
       gate_of(JAX), tests_of(JAX)),
    _m("flax-fast-variance-matched", BN.format(JAX),
       ('use_fast_variance=spec.variance == "fast"', "use_fast_variance=False"), "use_fast_variance=True",
       "jax builtin in matched mode: Flax's use_fast_variance=True (E[x²] − E[x]²)",
       gate_of(JAX), tests_of(JAX)),
    # 4. the tolerance looser than documented, or κ growing differently with |μ|/σ
    _m("tolerance-c-acc-x10", "suites/parity/tolerance.py", "C_ACC = 32.0", "C_ACC = 320.0",
       "tolerance: C_ACC ten times larger than documented (looser)",
       TOLERANCE_TESTS),
    _m("condition-factor-sqrt", "reference/batchnorm.py", "    return 1.0 + worst\n",
       "    return 1.0 + worst ** 0.5\n", "condition factor 1 + √(|μ|/σ) instead of 1 + |μ|/σ (tighter)",
       gate_of(MXNET), TOLERANCE_TESTS),
    _m("condition-factor-squared", "reference/batchnorm.py", "    return 1.0 + worst\n",
       "    return (1.0 + worst) ** 2\n", "condition factor κ² instead of κ (looser)",
       TOLERANCE_TESTS),
    # the reference itself
    _m("reference-momentum-convention-swapped", "reference/batchnorm.py", "w = spec.new_weight",
       "w = spec.momentum", "reference: momentum always read as the new batch's weight",
       gate_of(TORCH), tests_of(TORCH)),
    _m("spec-new-weight-swapped", "reference/spec.py",
       'return self.momentum if self.momentum_weighs == "new" else 1.0 - self.momentum',
       'return self.momentum if self.momentum_weighs == "old" else 1.0 - self.momentum',
       "BNSpec.new_weight swapped (the reference and every adapter alike: the gate cannot see it)",
       tests("tests/test_reference.py", "momentum")),
    _m("reference-unbiased-dropped", "reference/batchnorm.py", "    return var * m / (m - 1)\n",
       "    return var\n", "reference: the running variance stored biased even when the spec says unbiased",
       gate_of(TORCH), tests_of(TORCH)),
    # 5. the frameworks trained on different batches beyond iteration 0
    _m("data-order-per-framework", "suites/convergence/runner.py", "epoch=epoch - 1), start=1)",
       "epoch=epoch - 1 + (epoch > 1) * sum(map(ord, run.framework))), start=1)",
       "training: from epoch 2 on each framework gets its own shuffle order (epoch 1 identical)",
       tests("tests/test_convergence.py", "smoke_every_framework")),
    # 6. a report figure computed from the wrong field
    _m("report-final-is-best", "reports/train_sections.py",
       ("\"–\" if final.mean is None else f\"{final.mean:.4f}\"",
        "\"–\" if final[\"mean\"] is None else f\"{final['mean']:.4f}\""),
       ("\"–\" if final.mean is None else f\"{c.best_test_accuracy:.4f}\"",
        "\"–\" if final[\"mean\"] is None else f\"{c['best_test_accuracy']:.4f}\""),
       "report: the 'final test accuracy' column shows the best accuracy",
       tests("tests/test_record_format.py", "final_not_best")),
    # 7. the other normalizations: a convention dropped in an adapter, a formula wrong in the reference
    _m("flax-layernorm-fast-variance-matched", "frameworks/jax/layernorm.py",
       'options.update(epsilon=spec.eps, use_fast_variance=spec.variance == "fast")',
       "options.update(epsilon=spec.eps, use_fast_variance=True)",
       "jax builtin LayerNorm in matched mode: Flax's use_fast_variance=True (E[x²] − E[x]²)",
       norm_gate(JAX, "layer", "offset100", impls="builtin")),
    _m("torch-groupnorm-eps-ignored", "frameworks/torch/groupnorm.py", "options.update(eps=spec.eps)",
       "options.update()", "torch builtin GroupNorm: the spec's ε not passed (PyTorch's 1e-5 used whatever is asked)",
       norm_gate(TORCH, "group", "eps1e-3", impls="builtin"),
       tests("tests/test_adapter_contract.py", "torch-groupnorm-builtin")),
    _m("reference-groupnorm-interleaved", "reference/groupnorm.py",
       "    return a.reshape(n, spec.groups, c // spec.groups, *spatial)",
       "    return a.reshape(n, c // spec.groups, spec.groups, *spatial).swapaxes(1, 2)",
       "reference GroupNorm: channel c in group c mod G (a (C/G, G) reshape) instead of c // (C/G)",
       norm_gate(TORCH, "group", "g2"), tests("tests/test_reference_norms.py", "groupnorm")),
    _m("reference-rmsnorm-eps-outside-root", "reference/rmsnorm.py",
       "    r = 1.0 / np.sqrt((x**2).mean(axis=normalized_axes(x.ndim, spec), keepdims=True) + spec.eps)",
       "    r = 1.0 / (np.sqrt((x**2).mean(axis=normalized_axes(x.ndim, spec), keepdims=True)) + spec.eps)",
       "reference RMSNorm: x / (RMS(x) + ε) instead of x / √(mean(x²) + ε)",
       norm_gate(TORCH, "rms", "float64"), tests("tests/test_reference_norms.py", "rms")),
)


def _tracked_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         capture_output=True, check=True).stdout.decode()
    return sorted({p for p in out.split("\0") if p})


def make_base(dest: Path, *, base: str | None, overlay: list[str]) -> None:
    """Copy the repository to `dest`: the working tree's tracked and untracked files, or commit `base` plus the
    working tree's versions of `overlay`."""
    dest.mkdir(parents=True)
    if base is None:
        for rel in _tracked_files(ROOT):
            src = ROOT / rel
            if src.is_file():  # a tracked file deleted in the working tree is left out
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
        return
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", base],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    for rel in overlay:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)


def install_shim(root: Path) -> Path:
    """A directory for PYTHONPATH whose `bnparity` package maps pyproject's sub-packages to the copy at `root`."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    package = root / SHIM / "bnparity"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""bnparity, mapped to a scratch copy by benchmarks/mutations.py."""\n')
    for name, folder in mapping.items():
        parent, _, child = name.rpartition(".")
        if parent != "bnparity" or not child:
            raise ValueError(f"package-dir entries must be bnparity.<name>. Received: {name!r}")
        (package / child).symlink_to(root / folder, target_is_directory=True)
    return root / SHIM


def environment(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / SHIM), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing cached between copies
    return env


def copy_of(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest, symlinks=False, ignore=shutil.ignore_patterns(SHIM))
    install_shim(dest)
    return dest


def verify_isolation(base: Path, scratch: Path) -> str:
    """Prove that the scratch copy's code is what runs: its module paths, and a probe line added to it."""
    probe = copy_of(base, scratch / "probe")
    with (probe / "reference" / "spec.py").open("a") as f:
        f.write(f"\n{PROBE} = {str(probe)!r}\n")
    code = ("import bnparity.reference, bnparity.reference.spec as s, bnparity.suites.cli, os; "
            f"print(bnparity.reference.__file__); print(os.path.realpath(bnparity.suites.cli.__file__)); "
            f"print(s.{PROBE})")
    out = subprocess.run([str(PYTHON), "-c", code], cwd=probe, env=environment(probe), capture_output=True,
                         text=True)
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 3 or lines[2] != str(probe) or not lines[1].startswith(str(probe)):
        raise RuntimeError(f"the scratch copy is not what runs: {out.stdout.strip()} {out.stderr.strip()[-500:]}")
    shutil.rmtree(probe)
    return f"scratch run imports bnparity.reference from {lines[0]} (cli: {lines[1]}); the probe line is seen"


def run_check(check: Check, root: Path, timeout: float) -> tuple[bool, str, float]:
    """(caught, one-line detail, seconds) of `check` on the copy at `root`."""
    start = time.perf_counter()
    try:
        out = subprocess.run(check.command(), cwd=root, env=environment(root), capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    text = (out.stdout + out.stderr).strip().splitlines()
    if check.pytest:
        caught = out.returncode in (1, 2)
        detail = next((t for t in text if t.startswith(("FAILED", "ERROR"))), text[-1] if text else "")
        why = next((t[1:].strip() for t in text if t.startswith("E ")), "")  # pytest's first "E" line: the assertion
        detail = f"{detail} [{why}]" if why else detail
        if out.returncode == 5:
            detail = "no test selected"
    else:
        caught = out.returncode != 0
        detail = next((t for t in text if t.startswith("FAIL")), text[-1] if text else "")
    return caught, f"exit {out.returncode}: {detail[:240]}", seconds


def _mutate(i: int, m: Mutation, *, base: Path, scratch: Path, broken: dict[Check, str],
            args: argparse.Namespace) -> bool | None:
    """Apply `m` to a fresh copy and run its checks; print its line. True killed, False survived, None n/a."""
    t0 = time.perf_counter()
    root = copy_of(base, scratch / f"m{i:02d}")
    try:
        if not m.apply(root):
            print(f"not applicable  {m.name}: snippet not found in {m.file}", flush=True)
            return None
        by, details = [], []
        for check in m.checks:
            if check in broken:
                details.append(f"{check.label}: broken on the unmutated copy")
                continue
            caught, detail, seconds = run_check(check, root, args.timeout)
            details.append(f"{check.label} {'caught it' if caught else 'passed'} in {seconds:.1f} s ({detail})")
            if caught:
                by.append(check.label)
                if args.first_kill:
                    break
        print(f"{'killed  ' if by else 'SURVIVED'}  {m.name}  {time.perf_counter() - t0:.1f} s  "
              + (f"by {' and '.join(by)}" if by else "by nothing")
              + ("".join(f"\n    {d}" for d in details) if args.verbose else ""), flush=True)
        return bool(by)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated mutation names (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--first-kill", action="store_true", help="stop a mutation's checks at the first kill")
    parser.add_argument("--base", help="copy commit BASE (git archive) instead of the working tree")
    parser.add_argument("--overlay", nargs="*", default=[], help="with --base: working-tree files to copy over it")
    parser.add_argument("--keep", type=Path, help="scratch directory to use and keep (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per check")
    parser.add_argument("--verbose", action="store_true", help="print each check's outcome under its mutation")
    parser.add_argument("--jobs", type=int, default=2, help="mutations checked at once (default 2)")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name}: {m.description} [{m.file}]")
        return 0
    chosen = MUTATIONS
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {m.name for m in MUTATIONS}
        if unknown:
            parser.error(f"unknown mutation {', '.join(sorted(unknown))}; see --list")
        chosen = tuple(m for m in MUTATIONS if m.name in names)
    start = time.perf_counter()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="bnparity-mutations-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        base = scratch / "base"
        if base.exists():
            shutil.rmtree(base)
        make_base(base, base=args.base, overlay=args.overlay)
        install_shim(base)
        print(verify_isolation(base, scratch), flush=True)
        # Every check must pass on the unmutated copy, or it proves nothing.
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            checks = list(dict.fromkeys(c for m in chosen for c in m.checks))
            broken: dict[Check, str] = {}
            for check, (caught, detail, seconds) in zip(checks, pool.map(lambda c: run_check(c, base, args.timeout),
                                                                          checks), strict=True):
                print(f"baseline {'FAILS' if caught else 'passes'} {check.label} ({seconds:.1f} s)"
                      + (f": {detail}" if caught else ""), flush=True)
                if caught:
                    broken[check] = detail
            results = list(pool.map(lambda im: _mutate(*im, base=base, scratch=scratch, broken=broken, args=args),
                                    enumerate(chosen)))
            applicable = [r for r in results if r is not None]
            killed = sum(applicable)
        total = time.perf_counter() - start
        print(f"{killed} of {len(applicable)} mutations killed ({len(chosen) - len(applicable)} not applicable); "
              f"wall time {total:.0f} s")
        return 0 if killed == len(applicable) else 1
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
