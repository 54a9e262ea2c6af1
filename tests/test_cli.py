"""The command line: argument parsing, errors, a run, and a 2-process run on CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recbole_attn.cli import main, parse_overrides
from recbole_attn.config import ConfigError
from conftest import FIXTURES, REPO, TINY_YAML, free_port


def test_overrides_accept_bare_and_dashed_forms():
    assert parse_overrides(["epochs=1", "--learning_rate=0.01"]) == [
        "--epochs=1",
        "--learning_rate=0.01",
    ]
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_unknown_model_exits_2_with_the_model_lists(capsys):
    assert main(["--model=Nope", "--dataset=ml-100k"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'Nope'" in err and "AttRec" in err and "SASRec" in err


def test_missing_dataset_exits_2_naming_the_path(capsys, tmp_path):
    assert main(["--model=AttRec", "--dataset=nope", f"--data_path={tmp_path}"]) == 2
    assert str(tmp_path / "nope" / "nope.inter") in capsys.readouterr().err


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(REPO / "run_recbole_attn.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


TINY_ARGS = ["--dataset=tiny", f"--data_path={FIXTURES}", f"--config_files={TINY_YAML}", "epochs=1", "state=INFO"]


def test_cli_trains_a_plugin_model_and_prints_test_metrics(tmp_path):
    proc = _cli("--model=AttRec", *TINY_ARGS, f"checkpoint_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test result" in proc.stdout + proc.stderr


def test_cli_trains_with_two_processes_on_cpu(tmp_path):
    proc = _cli(
        "--model=AttRec", *TINY_ARGS, "--nproc=2", f"--port={free_port()}", f"checkpoint_dir={tmp_path}"
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "test result" in out
    assert "world_size = 2" in out or "world_size" in out


def test_subcommands_are_dispatched(capsys, tmp_path):
    assert main(["benchmark", "--models", "AttRec", "--dataset", "tiny", "--seeds", "1", "bad-arg"]) == 2
    assert "cannot read argument 'bad-arg'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "missing")])
    assert main(["report", str(tmp_path)]) == 2  # no records: an error, not an empty report
    assert "no records under" in capsys.readouterr().err and not (tmp_path / "report.md").exists()
