"""The environment manifest every record file carries: versions, machine, threads, commit, time."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

_PACKAGES = ("bnparity", "numpy", "matplotlib")


def package_versions() -> dict[str, str | None]:
    """Installed versions of bnparity, numpy, matplotlib and every module a framework's descriptor imports, read from
    package metadata (nothing is imported)."""
    from bnparity.frameworks.registry import descriptors

    names = [*_PACKAGES, *(dist for d in descriptors() for dist in d.distributions)]
    # a descriptor names what its folder imports; the distribution that installs it may be named otherwise
    # (tensorflow is installed by tensorflow-cpu here)
    installers = metadata.packages_distributions()
    versions: dict[str, str | None] = {}
    for name in dict.fromkeys(names):
        for dist in (name, *installers.get(name, ())):
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the checkout this package runs from ("<sha>-dirty" with uncommitted changes to tracked
    files), or None outside a git checkout."""
    here = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def short_commit(commit: object) -> str:
    """A recorded git_commit as a reader sees it: 12 hex digits, "-dirty" kept, "unknown" when absent."""
    if not commit:
        return "unknown"
    sha, dirty, _ = str(commit).partition("-dirty")
    return sha[:12] + ("-dirty" if dirty else "")


def environment() -> dict[str, object]:
    """What a reader needs to reproduce or judge a result."""
    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "packages": package_versions(),
        "git_commit": git_commit(),
    }
