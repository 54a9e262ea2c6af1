"""What every benchmark record states about where and with what it ran."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def git_sha(repo: Path = REPO) -> tuple[str, bool]:
    """(HEAD commit, whether tracked files have uncommitted changes); ("unknown", False) outside git.

    Untracked files do not count: records written into the work tree would otherwise mark
    every later run of a benchmark as dirty."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    sha = git("rev-parse", "HEAD")
    return (sha, bool(git("status", "--porcelain", "--untracked-files=no"))) if sha else ("unknown", False)


def device_name(device: str = "cpu") -> str:
    """'CPU: <model> (<n> cores, torch threads: <t>)' or 'CUDA: <gpu name>'."""
    import torch

    if str(device).startswith("cuda"):
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {name} ({os.cpu_count()} cores, torch threads: {torch.get_num_threads()})"


def versions() -> dict[str, str]:
    import numpy
    import pandas
    import recbole
    import torch

    import recbole_attn

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "recbole": recbole.__version__,
        "recbole_attn": recbole_attn.__version__,
    }


def child_env() -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH, for child runs."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)


def repo_path(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (so a record's command works in any
    clone), else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def environment(device: str = "cpu") -> dict:
    """git SHA, dirty flag, package versions, device and date, for a record."""
    sha, dirty = git_sha()
    return {
        "date": now(),
        "git_sha": sha,
        "git_dirty": dirty,
        "versions": versions(),
        "device": device_name(device),
    }
