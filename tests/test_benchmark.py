"""recbole-attn benchmark / report: records per run, failures recorded, tables and plots."""

from __future__ import annotations

import json

import pytest

from recbole_attn.benchmark.report import report_main, summarise
from recbole_attn.benchmark.runner import benchmark_main
from conftest import FIXTURES, TINY_YAML

TINY = ["--dataset", "tiny", "--config_files", str(TINY_YAML), f"--data_path={FIXTURES}", "epochs=1"]


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = benchmark_main(["--models", "AttRec,SASRec", "--seeds", "1,2", "--out", str(out), "--no-progress", *TINY])
    assert code == 0
    return out


def _records(out):
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def test_one_record_per_model_and_seed_with_its_context(bench_dir):
    records = _records(bench_dir)
    assert [(r["model"], r["seed"]) for r in records] == [
        ("AttRec", 1), ("AttRec", 2), ("SASRec", 1), ("SASRec", 2)
    ]
    for r in records:
        assert r["status"] == "ok"
        assert len(r["git_sha"]) == 40 or r["git_sha"] == "unknown"
        assert {"torch", "numpy", "pandas", "recbole", "recbole_attn"} <= set(r["versions"])
        assert r["device"].startswith("CPU")
        assert r["config"]["seed"] == r["seed"] and r["config"]["epochs"] == 1
        assert r["parameters"] > 0 and r["epochs_trained"] == 1
        assert r["median_epoch_s"] > 0 and r["peak_memory_bytes"] > 0
        assert set(r["test"]) == {"recall@5", "ndcg@5"} and set(r["best_valid"]) == set(r["test"])
    # different seeds, different numbers
    assert records[0]["test"] != records[1]["test"] or records[0]["best_valid"] != records[1]["best_valid"]


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path):
    code = benchmark_main(["--models", "NoSuchModel,AttRec", "--seeds", "1", "--out", str(tmp_path), "--no-progress", *TINY])
    assert code == 1
    failed, ok = _records(tmp_path)
    assert failed["status"] == "failed" and "unknown model 'NoSuchModel'" in failed["error"]
    assert ok["status"] == "ok" and ok["model"] == "AttRec"


def test_report_renders_tables_and_plots_from_the_records(bench_dir, tmp_path):
    doc = tmp_path / "report.md"
    assert report_main([str(bench_dir), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "### tiny: test metrics, mean ± std over seeds 1, 2" in text
    assert "| AttRec | 2 |" in text and "| SASRec | 2 |" in text
    assert "CPU" in text and "epochs=1" in text
    assert "Command: `recbole-attn benchmark --models AttRec,SASRec --dataset tiny --seeds 1,2 --config_files" in text
    assert text.count("**") >= 2  # best per column marked
    for name in ("tiny-metrics.png", "tiny-cost.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in text


def test_throughput_mode_records_loader_and_direct_steps(tmp_path):
    assert benchmark_main(["--models", "AttRec", "--seeds", "1", "--throughput", "--out", str(tmp_path), "--no-progress", *TINY]) == 0
    (record,) = _records(tmp_path)
    t = record["throughput"]
    assert record["kind"] == "throughput" and t["steps"] >= 1
    assert t["pipeline_s"] > 0 and t["direct_s"] > 0
    assert t["overhead_ratio"] == pytest.approx(t["pipeline_s"] / t["direct_s"])


def test_summary_means_stds_and_best_direction():
    def rec(model, seed, ndcg, logloss):
        return {
            "model": model, "seed": seed, "test": {"ndcg@10": ndcg, "logloss": logloss},
            "epochs_trained": 2, "median_epoch_s": 1.0, "peak_memory_bytes": 2**20,
            "peak_memory_kind": "cpu_max_rss", "parameters": 10,
        }

    s = summarise([rec("A", 1, 0.1, 0.5), rec("A", 2, 0.3, 0.7), rec("B", 1, 0.15, 0.4)])
    mean, std = s["A"]["test"]["ndcg@10"]
    assert mean == pytest.approx(0.2) and std == pytest.approx(0.1414, abs=1e-4)
    from recbole_attn.benchmark.report import _best

    assert _best(s, "ndcg@10") == "A" and _best(s, "logloss") == "B"
