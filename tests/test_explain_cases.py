"""benchmarks/explain_cases.py: the budget words under each model's heading and the
training schedule of ``--jobs`` (PRM after its AttRec), with a stand-in training."""

from __future__ import annotations

import importlib.util
import threading
import time

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def cases():
    spec = importlib.util.spec_from_file_location("explain_cases", REPO / "benchmarks" / "explain_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = {"epochs": 40, "stopping_step": 10, "eval_step": 1}


def test_budget_early_stopped_or_cap(cases):
    # best epoch 20 (1-based), patience 10: RecBole stops at epoch 31 <= 40
    assert "not converged" not in cases.budget(CONFIG, 20, fixed=False)
    assert "best validation epoch 20" in cases.budget(CONFIG, 20, fixed=False)
    # best epoch 30: the 11th validation without improvement would be epoch 41 > cap
    assert cases.budget(CONFIG, 30, fixed=False).endswith("cap reached: not converged")
    assert cases.budget(CONFIG, 29, fixed=False).endswith("best validation epoch 29")
    assert cases.budget(CONFIG, 3, fixed=True) == "40 epoch(s), fixed (not converged)"


def _stand_in(log: list, running: list, peak: list, lock: threading.Lock):
    def train_one(model, ranker):
        with lock:
            log.append(("start", model, ranker))
            running.append(model)
            peak[0] = max(peak[0], len(running))
        time.sleep(0.05 if model != "AttRec" else 0.15)
        with lock:
            running.remove(model)
            log.append(("end", model))
        return (f"{model}.pth", "budget", "command")
    return train_one


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_train_all_prm_after_attrec(cases, jobs):
    log, running, peak, lock = [], [], [0], threading.Lock()
    models = ["AttRec", "AttnDIN", "BST", "NOVABERT", "PRM"]
    out = cases.train_all(models, jobs, _stand_in(log, running, peak, lock))
    assert out == {m: (f"{m}.pth", "budget", "command") for m in models}
    assert peak[0] == min(jobs, len(models) - 1)  # jobs trainings at a time, no more
    prm_start = log.index(("start", "PRM", "AttRec.pth"))  # PRM gets AttRec's checkpoint
    assert log.index(("end", "AttRec")) < prm_start
    assert all(entry[2] is None for entry in log if entry[0] == "start" and entry[1] != "PRM")


def test_train_all_failure_raises(cases):
    def train_one(model, ranker):
        if model == "BST":
            raise RuntimeError("BST failed")
        return (model, "", "")
    with pytest.raises(RuntimeError, match="BST failed"):
        cases.train_all(["AttRec", "BST", "PRM"], 2, train_one)
