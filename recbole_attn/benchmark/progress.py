"""An interrupted benchmark run goes on where it stopped (``recbole-attn benchmark --resume``).

While a run trains, ``<checkpoint_dir>/run-<id>.json`` (``id``: a hash of the run's record
key) holds what its record needs from the epochs done so far (learning curve, epoch times,
training seconds) and names the trainer's ``-last.pth`` checkpoint, which holds the full
trainer state, RNG states included, so the run goes on to the uninterrupted result (CPU,
same seed). The file is rewritten just before each ``-last.pth`` (so it always covers that
checkpoint's epochs) and removed once the run is measured.

A later ``--resume`` continues from that checkpoint only when nothing that decides the
result has changed: the commit, the uncommitted diff, the package versions and the run's
resolved config. Otherwise the run starts again and says why on stderr. The record lists
the epochs it was resumed at (``resumed_at_epochs``); its times leave out the work lost in
the interrupted epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from recbole_attn.benchmark.environment import REPO, git_sha, versions


def run_id(key: tuple) -> str:
    """The id of a run's progress file: a hash of its record key (model, seed, options)."""
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:12]


def _code_state() -> dict:
    """The commit, a hash of the uncommitted diff of tracked files, and the package versions."""
    sha, dirty = git_sha()
    diff = ""
    if dirty:
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    return {"git_sha": sha, "diff_sha1": hashlib.sha1(diff.encode()).hexdigest(), "versions": versions()}


class RunProgress:
    """The progress file of one run; ``config``: the run's resolved config as recorded."""

    def __init__(self, folder: str | Path, rid: str, config: dict):
        self.path = Path(folder) / f"run-{rid}.json"
        self.state = {"code": _code_state(), "config": config}
        self.resumed_at: list[int] = []

    def load(self) -> dict | None:
        """The saved progress if the run can go on from it; else None, the stale files removed."""
        if not self.path.is_file():
            return None
        try:
            saved = json.loads(self.path.read_text())
            last = Path(saved["last_checkpoint"])
            changed = [k for k in ("code", "config") if saved[k] != self.state[k]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            saved, last, changed = {}, Path(), [f"unreadable ({type(err).__name__})"]
        why = (f"its {' and '.join(changed)} changed since" if changed
               else None if last.is_file() else f"its checkpoint {last} is gone")
        if why is None:
            self.resumed_at = list(saved.get("resumed_at_epochs", []))
            return saved
        print(f"benchmark: not resuming {self.path}: {why}; the run starts again", file=sys.stderr)
        self.discard()
        return None

    def track(self, trainer, curve: list[dict], epoch_times: list[float], prior_s: float = 0.0) -> None:
        """Rewrite the progress file before each of the trainer's ``-last.pth`` checkpoints."""
        save_last = trainer._save_last_checkpoint
        start = time.perf_counter()

        def save(epoch: int, train_data) -> None:
            state = {**self.state, "epoch": epoch, "last_checkpoint": trainer.last_checkpoint_file,
                     "curve": curve, "epoch_times": epoch_times, "resumed_at_epochs": self.resumed_at,
                     "run_time_s": prior_s + time.perf_counter() - start}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.path)
            save_last(epoch, train_data)

        trainer._save_last_checkpoint = save

    def resume(self, trainer, saved: dict) -> tuple[list[dict], list[float]]:
        """Continue ``trainer`` from the saved checkpoint; the curve points and epoch times of
        the epochs that checkpoint holds, for ``record_curve`` and ``time_epochs`` to go on from."""
        trainer.resume_checkpoint(saved["last_checkpoint"])
        done = trainer.start_epoch
        self.resumed_at.append(done)
        return [p for p in saved["curve"] if p["epoch"] < done], saved["epoch_times"][:done]

    def discard(self) -> None:
        """Remove the progress file and the ``-last.pth`` checkpoint it names (if any)."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            os.remove(json.loads(self.path.read_text())["last_checkpoint"])
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
