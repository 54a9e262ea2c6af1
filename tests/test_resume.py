"""A killed training run (SIGINT, SIGKILL between epochs) resumes to the uninterrupted result.

The run trains in a subprocess that pauses right after writing the ``-last.pth`` checkpoint
of epoch 0 (so the signal lands between epochs, at a known point); it is then resumed from
that file and must end with the same metrics and the same best weights as a run that was
never interrupted (same seed, CPU).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recbole_attn.cli import main
from recbole_attn.quick_start import run
from conftest import FIXTURES, REPO, TINY_YAML, tiny_config, train_tiny

EPOCHS = 3
# The child pauses after the first -last.pth is written, until the test's signal arrives.
# It takes Ctrl-C's default handler: a shell starts background jobs with SIGINT ignored,
# and the test must not depend on how pytest itself was started.
CHILD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from recbole_attn.trainer import CheckpointMixin
save = CheckpointMixin._save_last_checkpoint
def save_then_wait(self, *args, **kwargs):
    save(self, *args, **kwargs)
    time.sleep(120)
CheckpointMixin._save_last_checkpoint = save_then_wait
from recbole_attn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli_args(checkpoint_dir: Path) -> list[str]:
    return [
        "--model=AttRec", "--dataset=tiny", f"--data_path={FIXTURES}", f"--config_files={TINY_YAML}",
        f"epochs={EPOCHS}", "state=INFO", f"checkpoint_dir={checkpoint_dir}",
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(result, best weights) of the run never interrupted."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    result, best = train_tiny(folder, "AttRec", epochs=EPOCHS, state="INFO")
    assert not list(folder.glob("*-last.pth")), "a finished run keeps no -last checkpoint"
    return result, torch.load(best, weights_only=False)["state_dict"]


def interrupt(checkpoint_dir: Path, sig: int) -> tuple[subprocess.CompletedProcess, Path]:
    """Start the run, send ``sig`` once epoch 0's -last.pth exists; (the process, that file)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *cli_args(checkpoint_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=checkpoint_dir.parent,
    )
    deadline = time.monotonic() + 300
    while not list(checkpoint_dir.glob("*-last.pth")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no -last.pth checkpoint appeared"
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    (last,) = checkpoint_dir.glob("*-last.pth")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), last


def same_weights(path: Path, expected: dict) -> bool:
    state = torch.load(path, weights_only=False)["state_dict"]
    return state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)


def test_sigkill_between_epochs_then_resume_gives_the_uninterrupted_result(uninterrupted, tmp_path):
    result, best_weights = uninterrupted
    proc, last = interrupt(tmp_path / "saved", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(last, weights_only=False)["epoch"] == 0
    assert not list((tmp_path / "saved").glob(".*.tmp")), "no temporary file is left behind"

    resumed = run("AttRec", "tiny", config_dict=tiny_config(epochs=EPOCHS, checkpoint_dir=str(tmp_path / "saved")),
                  resume=str(last))
    assert resumed == result
    (best,) = (tmp_path / "saved").glob("AttRec-tiny-*[0-9a-f].pth")
    assert same_weights(best, best_weights)
    assert not last.exists(), "the finished run removed its -last checkpoint"


def test_ctrl_c_exits_130_with_the_resume_command_which_reaches_the_same_result(uninterrupted, tmp_path):
    result, best_weights = uninterrupted
    proc, last = interrupt(tmp_path / "saved", signal.SIGINT)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"last checkpoint: {last}" in proc.stderr
    best = Path(str(last).replace("-last.pth", ".pth"))
    assert f"best checkpoint: {best}" in proc.stderr and best.is_file()
    (command,) = re.findall(r"resume with: (.+)", proc.stderr)
    words = shlex.split(command)
    assert words[0] == "recbole-attn" and words[-1] == f"--resume={last}"

    assert main(words[1:]) == 0  # the printed command, as the user would run it
    log = Path("log", "AttRec", best.with_suffix(".log").name)
    (test_line,) = [line for line in log.read_text().splitlines() if "test result" in line]
    assert eval(test_line.split("test result: ")[1], {"OrderedDict": dict}) == dict(result["test_result"])
    assert same_weights(best, best_weights)
