"""Shared fixtures: the tiny atomic dataset in tests/fixtures/tiny and small configs."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import yaml

import recbole_attn  # noqa: F401  (applies compat before RecBole is used)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


TINY_YAML = FIXTURES / "tiny.yaml"


def tiny_config(**overrides) -> dict:
    """A config dict for the tiny dataset (tests/fixtures/tiny.yaml) that trains in about a second."""
    cfg = yaml.safe_load(TINY_YAML.read_text())
    cfg["data_path"] = str(FIXTURES)
    cfg.update(overrides)
    return cfg


def train_tiny(folder: Path, model: str, **overrides) -> tuple[dict, Path]:
    """Train ``model`` on the tiny fixture inside ``folder`` (RecBole writes log/ there, the
    checkpoint goes there too); (the run's result, its checkpoint). For module-scoped
    fixtures, which run before each test's own folder is set up."""
    from recbole_attn.quick_start import run

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = run(model, "tiny", config_dict=tiny_config(checkpoint_dir=str(folder), **overrides))
    finally:
        os.chdir(cwd)
    (path,) = folder.glob(f"{model}-tiny-*[0-9a-f].pth")
    return result, path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: the test models are tiny, and on a busy 2-core machine torch's
    thread pool made each small op ~100x slower than one thread (spawned runs set their own)."""
    import os

    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # so prepare() keeps the one thread (torch_threads)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def _bare_argv():
    """RecBole's Config reads ``--key=value`` from sys.argv: pytest's own options (e.g.
    ``--durations=10``) must not reach the module-scoped fixtures that build configs."""
    argv, sys.argv = sys.argv, ["pytest"]
    yield
    sys.argv = argv


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test runs in its own folder (RecBole writes log/, saved/ there) with a bare argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    yield
    import torch

    torch.autograd.set_detect_anomaly(False)


@pytest.fixture
def tiny_cfg():
    return tiny_config


def build(model: str, **overrides):
    """(config, model, train_data, valid_data, test_data) for the tiny dataset."""
    from recbole.utils import init_seed

    from recbole_attn.config import Config
    from recbole_attn.quick_start import prepare

    config = Config(model=model, dataset="tiny", config_dict=tiny_config(**overrides))
    init_seed(config["seed"], config["reproducibility"])
    _, train_data, valid_data, test_data, net, _ = prepare(config, log=False, with_trainer=False)
    return config, net, train_data, valid_data, test_data


def scramble_padding(batch, **fields):
    """A copy of ``batch`` whose padded history positions (index >= item_length) hold other
    values: ``fields`` maps a ``_list`` field to ``n -> n replacement values``."""
    import torch

    seq, length = batch["item_id_list"], batch["item_length"]
    pad = torch.arange(seq.shape[1]).unsqueeze(0) >= length.unsqueeze(1)
    assert pad.any(), "the batch has no padding to scramble"
    noisy = type(batch)({k: v.clone() for k, v in batch.interaction.items()})
    for field, draw in fields.items():
        noisy[field][pad] = draw(int(pad.sum())).to(noisy[field].dtype)
    return noisy


def pytest_terminal_summary(terminalreporter) -> None:
    """After the run: which RecBole built-ins tests/test_builtins.py trained, which it
    skipped and why (the missing optional package)."""
    prefix = "test_builtins.py::test_builtin_trains_one_epoch_through_our_runner["

    def models(outcome: str) -> list:
        return [
            (r.nodeid.split(prefix, 1)[1].rstrip("]"), r)
            for r in terminalreporter.stats.get(outcome, [])
            if prefix in getattr(r, "nodeid", "") and r.when in ("setup", "call")
        ]

    ran, skipped, failed = models("passed"), models("skipped"), models("failed")
    if not (ran or skipped or failed):
        return
    write = terminalreporter.write_line
    terminalreporter.section("RecBole built-ins through recbole_attn")
    write(f"trained one epoch ({len(ran)}): {', '.join(name for name, _ in ran)}")
    if failed:
        write(f"FAILED ({len(failed)}): {', '.join(name for name, _ in failed)}")
    for name, report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        write(f"skipped {name}: {reason.removeprefix('Skipped: ')}")
