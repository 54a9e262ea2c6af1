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


def _explanation(model: str) -> dict:
    item = {"rank": 1, "name": "Toy Story (1995)", "token": "1", "score": 0.5}
    held = {"rank": None, "name": "Heat (1995)", "token": "6", "score": 0.1}
    return {"model": model, "held_out_item": held, "items": [item, held],
            "attention": [{"name": "weights", "note": "rows: items"}], "files": [f"{model}-user1.json", f"{model}-user1-w.png"]}


def test_page_keeps_each_models_own_budget_across_runs(cases, tmp_path):
    import argparse
    import json

    for model, fixed in [("AttRec", False), ("BST", True)]:
        (tmp_path / f"{model}-user1.json").write_text(json.dumps(_explanation(model)))
        case = {"model": model, "user": "1", "k": 5, "command": f"python run_recbole_attn.py --model={model}",
                "budget": "1 epoch(s), fixed (not converged)" if fixed else "early stopping (patience 10, cap 300), best validation epoch 20",
                "fixed": fixed, "git_sha": "abc", "git_dirty": fixed}
        cases.case_path(tmp_path, model, "1").write_text(json.dumps(case))
    found = cases.load_cases(tmp_path, "1", 5)
    assert [c["model"] for c, _ in found] == ["AttRec", "BST"]  # ORDER, only the models with files
    text = cases.page(argparse.Namespace(user="1", k=5), found)
    assert text == cases.page(argparse.Namespace(user="1", k=5), cases.load_cases(tmp_path, "1", 5))  # files -> page
    readme, fixed, missing = (next(line for line in text.splitlines() if line.startswith(start))
                              for start in ("Trained with the README", "Trained for a **fixed", "Not explained yet"))
    assert readme.endswith(": AttRec.") and fixed.endswith(": BST.")
    assert "AttnDIN" in missing and "AttRec" not in missing and "BST" not in missing
    assert ("## BST\n\nTrained with `python run_recbole_attn.py --model=BST`: 1 epoch(s), fixed (not converged) "
            "(commit abc, with uncommitted changes)") in text
    assert "best validation epoch 20 (commit abc)." in text
    with pytest.raises(SystemExit, match="--k 5, not 10: add AttRec to --models"):
        cases.load_cases(tmp_path, "1", 10)
