"""benchmarks/scale.py runs only what it is told to: the grid takes hours."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO


def _scale():
    spec = importlib.util.spec_from_file_location("scale_script", REPO / "benchmarks" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_action_prints_usage_and_exits_2(tmp_path, capsys, monkeypatch):
    scale = _scale()
    monkeypatch.setattr(scale, "measure", lambda *a: pytest.fail("a run started without --runs or --run-grid"))
    assert scale.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and "--run-grid" in err
    assert not (tmp_path / "out").exists()


def test_the_grid_needs_its_flag_and_runs_list_what_they_run(tmp_path, monkeypatch):
    scale = _scale()
    ran = []

    def measure(kind, millions, args):
        ran.append(f"{kind}:{millions:g}")
        return {"build_s": 1.0, "peak_rss_after_build_mib": 1.0, "train_s_per_million_samples": 1.0}

    monkeypatch.setattr(scale, "measure", measure)
    assert scale.main(["--runs", "lean:1", "--out", str(tmp_path)]) == 0
    assert ran == ["lean:1"]
    ran.clear()
    assert scale.main(["--run-grid", "--out", str(tmp_path)]) == 0
    assert ran == list(scale.GRID)
    with pytest.raises(SystemExit) as exit_info:
        scale.main(["--runs", "lean:1", "--run-grid"])
    assert exit_info.value.code == 2
