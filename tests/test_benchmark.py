"""recbole-attn benchmark / report: records per run, failures recorded, tables and plots."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from recbole_attn.benchmark.report import CONVERT, command, report_main, shell_quote, train_table
from recbole_attn.benchmark.summary import convergence, summarise
from recbole_attn.benchmark.runner import benchmark_main
from conftest import FIXTURES, REPO, TINY_YAML

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
        assert r["epoch_cap"] == 1 and r["stopped_early"] is False  # the cap, not early stopping, ended it
        (point,) = r["curve"]
        assert point["epoch"] == 0 and point["train_loss"] > 0 and point["wall_s"] > 0
        assert set(point["valid"]) == set(r["test"]) and point["valid"] == pytest.approx(r["best_valid"])
    # different seeds, different numbers
    assert records[0]["test"] != records[1]["test"] or records[0]["best_valid"] != records[1]["best_valid"]


def test_a_failed_run_is_recorded_and_the_others_go_on(tmp_path):
    code = benchmark_main(["--models", "NoSuchModel,AttRec", "--seeds", "1", "--out", str(tmp_path), "--no-progress", *TINY])
    assert code == 1
    failed, ok = _records(tmp_path)
    assert failed["status"] == "failed" and "unknown model 'NoSuchModel'" in failed["error"]
    assert ok["status"] == "ok" and ok["model"] == "AttRec"


def test_a_checkout_moved_during_the_run_keeps_the_starting_commit_and_marks_it_dirty(tmp_path, monkeypatch):
    import recbole_attn.benchmark.environment as environment
    import recbole_attn.benchmark.runner as runner

    monkeypatch.setattr(runner, "git_sha", lambda: ("a" * 40, False))  # when the run starts
    monkeypatch.setattr(environment, "git_sha", lambda repo=None: ("b" * 40, False))  # when it is recorded
    benchmark_main(["--models", "NoSuchModel", "--seeds", "1", "--out", str(tmp_path), "--no-progress", *TINY])
    (record,) = _records(tmp_path)
    assert record["git_sha"] == "a" * 40 and record["git_dirty"] is True and record["git_changed_during_run"] is True


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

    assert _best(s, "ndcg@10") == {"A"} and _best(s, "logloss") == {"B"}
    tied = summarise([rec("A", 1, 0.2, 0.5), rec("B", 1, 0.2, 0.6), rec("C", 1, 0.1, 0.4)])
    assert _best(tied, "ndcg@10") == {"A", "B"}  # equal means: both in bold


def test_resume_skips_recorded_runs_and_label_names_the_row(tmp_path):
    args = ["--models", "AttRec", "--seeds", "1", "--label", "AttRec-inner", "--out", str(tmp_path),
            "--no-progress", "--resume", *TINY, "score_mode=inner"]
    assert benchmark_main(args) == 0
    assert benchmark_main(args) == 0  # already recorded: nothing new
    (record,) = _records(tmp_path)
    assert record["label"] == "AttRec-inner" and record["config"]["score_mode"] == "inner"
    assert record["config_files"] == ["tests/fixtures/tiny.yaml"]  # relative to the repository
    assert benchmark_main([*args[:-1], "score_mode=dist"]) == 0  # other options: a new run
    assert len(_records(tmp_path)) == 2
    # a record marked superseded (its model changed since) is run again by --resume
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    first = {**json.loads(lines[0]), "superseded": "a fix"}
    (tmp_path / "records.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert benchmark_main(args) == 0
    again = [r for r in _records(tmp_path) if r["label"] == "AttRec-inner" and r["config"]["score_mode"] == "inner"]
    assert [bool(r.get("superseded")) for r in again] == [True, False]
    with pytest.raises(SystemExit):
        benchmark_main(["--models", "AttRec,SASRec", "--label", "x", "--out", str(tmp_path), *TINY])


# A benchmark child killed (SIGKILL) at the start of epoch 2, after its -last.pth of epoch 1.
KILLED_CHILD = """
import os, runpy, signal
from recbole.trainer import Trainer
train = Trainer._train_epoch
def killed(self, train_data, epoch_idx, *args, **kwargs):
    if epoch_idx == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return train(self, train_data, epoch_idx, *args, **kwargs)
Trainer._train_epoch = killed
runpy.run_module("recbole_attn.benchmark.runner", run_name="__main__")
"""


def test_an_interrupted_run_resumes_to_the_uninterrupted_record(tmp_path, monkeypatch):
    import recbole_attn.benchmark.runner as runner

    args = ["--models", "SASRec", "--seeds", "1", "--no-progress", *TINY[:-1], "epochs=4"]
    assert benchmark_main([*args, "--out", str(tmp_path / "whole")]) == 0
    (whole,) = _records(tmp_path / "whole")

    run = runner.subprocess.run
    killed = lambda cmd, **kw: run([cmd[0], "-c", KILLED_CHILD, *cmd[3:]], **kw)  # noqa: E731
    monkeypatch.setattr(runner.subprocess, "run", killed)
    out = tmp_path / "cut"
    assert benchmark_main([*args, "--out", str(out), "--resume"]) == 1  # killed: recorded as failed
    (progress,) = (out / "checkpoints").glob("run-*.json")
    assert json.loads(progress.read_text())["epoch"] == 1 and len(list((out / "checkpoints").glob("*-last.pth"))) == 1

    monkeypatch.setattr(runner.subprocess, "run", run)
    assert benchmark_main([*args, "--out", str(out), "--resume"]) == 0
    failed, resumed = _records(out)
    assert failed["status"] == "failed" and resumed["status"] == "ok" and resumed["resumed_at_epochs"] == [2]
    assert [{k: v for k, v in p.items() if k != "wall_s"} for p in resumed["curve"]] == [
        {k: v for k, v in p.items() if k != "wall_s"} for p in whole["curve"]]
    assert [p["wall_s"] for p in resumed["curve"]] == sorted(p["wall_s"] for p in resumed["curve"])
    assert (resumed["test"], resumed["best_valid_score"], resumed["epochs_trained"]) == (
        whole["test"], whole["best_valid_score"], whole["epochs_trained"])
    assert resumed["prior_run_time_s"] > 0 and resumed["run_time_s"] > resumed["prior_run_time_s"]
    # nothing of the interrupted run is left behind
    assert not list((out / "checkpoints").glob("run-*.json")) and not list((out / "checkpoints").glob("*-last.pth"))


def test_an_interrupted_run_of_other_code_or_config_starts_again(tmp_path, capsys):
    from recbole_attn.benchmark.progress import RunProgress

    last = tmp_path / "SASRec-tiny-last.pth"
    last.write_bytes(b"state")
    first = RunProgress(tmp_path, "abc", {"epochs": 4})
    first.path.write_text(json.dumps({**first.state, "last_checkpoint": str(last), "epoch": 1, "curve": [],
                                      "epoch_times": [], "run_time_s": 1.0}))
    assert RunProgress(tmp_path, "abc", {"epochs": 4}).load()["epoch"] == 1  # the same run: goes on
    assert RunProgress(tmp_path, "abc", {"epochs": 5}).load() is None
    assert "its config changed since; the run starts again" in capsys.readouterr().err
    assert not first.path.exists() and not last.exists()  # the stale state is removed


def test_report_rows_by_label_with_one_command_per_row(tmp_path):
    def rec(model, label, seed, ndcg, overrides, config_files=("benchmarks/presets/cpu-ml-100k.yaml",)):
        return {
            "kind": "train", "status": "ok", "model": model, "label": label, "dataset": "ml-100k",
            "seed": seed, "config_files": list(config_files), "overrides": overrides,
            "test": {"ndcg@10": ndcg}, "config": {"epochs": 5}, "device": "CPU: x (2 cores)",
            "epochs_trained": 5, "median_epoch_s": 1.0, "peak_memory_bytes": 2**20,
            "peak_memory_kind": "cpu_max_rss", "parameters": 10,
        }

    records = [rec("NOVABERT", None, s, 0.1 * s, []) for s in (1, 2)]
    records += [rec("NOVABERT", "NOVABERT-add", s, 0.2 * s, ["--fusion_type=add"]) for s in (1, 2)]
    records += [rec("SASRec", None, 1, 0.3, [], config_files=("other.yaml",))]
    old = [rec("NOVABERT", None, s, 0.05 * s, []) for s in (1, 2)]  # runs of the model before a fix
    records += [{**r, "superseded": "side LayerNorm", "git_sha": "0123456789abcdef"} for r in old]
    later = [rec("NOVABERT", None, s, 0.07 * s, []) for s in (1, 2)]  # between a first and a second fix
    records += [{**r, "superseded": "recipe", "superseded_tag": "no recipe, before fix", "git_sha": "fedcba9876543210"}
                for r in later]
    (tmp_path / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "scale").mkdir()  # another benchmark's JSON lines (benchmarks/scale.py): not runs
    (tmp_path / "scale" / "scale.jsonl").write_text(json.dumps({"benchmark": "scale", "model": "SASRec"}) + "\n")
    doc = tmp_path / "report.md"
    assert report_main([str(tmp_path), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "Failed runs" not in text
    # two config-file groups on one dataset: two tables, named by their config files
    assert "### ml-100k (cpu-ml-100k): test metrics" in text and "### ml-100k (other): test metrics" in text
    assert "| NOVABERT | 2 |" in text and "| NOVABERT-add | 2 | **0.3000 ± 0.1414** |" in text
    assert ("- NOVABERT-add: `recbole-attn benchmark --models NOVABERT --dataset ml-100k --seeds 1,2 "
            "--config_files benchmarks/presets/cpu-ml-100k.yaml --label NOVABERT-add --fusion_type=add`") in text
    assert "- NOVABERT: `recbole-attn benchmark --models NOVABERT --dataset ml-100k --seeds 1,2 --config_files" in text
    # superseded runs keep their own row, and their command runs on their own commit
    assert "| NOVABERT (before fix) | 2 | 0.0750 ± 0.0354 |" in text
    assert "| NOVABERT (no recipe, before fix) | 2 | 0.1050 ± 0.0495 |" in text
    assert "- NOVABERT (before fix): `git checkout 0123456789 && recbole-attn benchmark --models NOVABERT" in text
    assert (tmp_path / "ml-100k-cpu-ml-100k-metrics.png").is_file()


def test_reranker_variants_share_one_ranker_and_the_report_shows_its_initial_list(tmp_path):
    common = ["--models", "PRM", "--ranker", "SASRec", "--out", str(tmp_path), "--no-progress", *TINY, "list_length=10"]
    assert benchmark_main([*common, "--seeds", "1,2"]) == 0
    assert benchmark_main([*common, "--seeds", "1", "--label", "PRM-noPV", "--use_personal_vector=False"]) == 0
    prm1, prm2, nopv = _records(tmp_path)
    assert prm1["ranker"] == "SASRec" and prm1["config"]["use_personal_vector"] is True
    assert nopv["config"]["use_personal_vector"] is False
    # the variant re-ranks the very ranker of the same seed; another seed trains its own
    assert nopv["ranker_run"] == prm1["ranker_run"] and nopv["initial_test"] == prm1["initial_test"]
    assert prm2["ranker_run"]["checkpoint"] != prm1["ranker_run"]["checkpoint"]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "rankers").glob("*.pth")) == sorted(
        {r["ranker_run"]["checkpoint"].rsplit("/", 1)[-1] for r in (prm1, prm2)})
    # the initial list, measured by PRM's evaluator, is the ranker's own test result
    assert prm1["initial_test"] == pytest.approx(prm1["ranker_run"]["test"], abs=1e-4)
    assert prm1["ranker_run"]["epochs_trained"] == 1
    # the re-ranker and its ranker each record their own learning curve
    assert len(prm1["curve"]) == 1 and len(prm1["ranker_run"]["curve"]) == 1
    assert prm1["ranker_run"]["stopped_early"] is False and prm1["ranker_run"]["epoch_cap"] == 1
    doc = tmp_path / "report.md"
    assert report_main([str(tmp_path), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "| SASRec + PRM | 2 |" in text and "| SASRec + PRM-noPV | 1 |" in text
    assert "| SASRec (initial list) | 2 |" in text  # once per ranker, not once per variant
    # a ranker fixed since: its superseded records' initial lists get their own row
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    old = [json.dumps({**json.loads(line), "superseded": "a fix", "git_sha": "0123456789abcdef"}) for line in lines]
    (tmp_path / "records.jsonl").write_text("\n".join([*lines, *old]) + "\n")
    assert report_main([str(tmp_path), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "| SASRec (initial list) | 2 |" in text and "| SASRec (initial list, before fix) | 2 |" in text
    assert "| SASRec + PRM (before fix) | 2 |" in text
    assert "--models PRM --dataset tiny --seeds 1 --config_files" in text and "--ranker SASRec" in text
    with pytest.raises(SystemExit):
        benchmark_main(["--models", "SASRec", "--ranker", "SASRec", "--out", str(tmp_path), *TINY])


def test_ranker_trained_under_other_options_is_not_reused(tmp_path):
    common = ["--models", "PRM", "--ranker", "SASRec", "--seeds", "1", "--out", str(tmp_path), "--no-progress", *TINY,
              "list_length=10"]
    assert benchmark_main(common) == 0
    assert benchmark_main([*common, "--learning_rate=0.01"]) == 0  # read by the ranker too
    first, second = _records(tmp_path)
    assert first["ranker_run"]["options_sha1"] != second["ranker_run"]["options_sha1"]


def test_claims_are_judged_on_every_table_with_both_rows(tmp_path):
    def rec(model, seed, auc, logloss, dataset="d1"):
        return {
            "kind": "train", "status": "ok", "model": model, "label": None, "dataset": dataset,
            "seed": seed, "config_files": [], "overrides": [], "test": {"auc": auc, "logloss": logloss},
            "config": {}, "device": "CPU: x (2 cores)", "epochs_trained": 1, "median_epoch_s": 1.0,
            "peak_memory_bytes": 2**20, "peak_memory_kind": "cpu_max_rss", "parameters": 10,
        }

    records = [rec("A", 1, 0.80, 0.40), rec("A", 2, 0.82, 0.42), rec("B", 1, 0.70, 0.50), rec("B", 2, 0.72, 0.52)]
    records += [rec("A", 1, 0.70, 0.5, "d2"), rec("A", 2, 0.72, 0.5, "d2"), rec("B", 1, 0.71, 0.5, "d2"), rec("B", 2, 0.73, 0.5, "d2")]
    records += [rec("C", 1, 0.9, 0.1, "d2")]  # one run only: not judged
    (tmp_path / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "claims.yaml").write_text(
        "- {claim: A beats B, source: paper 1, better: A, worse: B, metric: AUC}\n"
        "- {claim: B beats A, source: paper 1, better: B, worse: A, metric: logloss}\n"
        "- {claim: C beats A, source: paper 2, better: C, worse: A, metric: auc}\n"
    )
    doc = tmp_path / "report.md"
    assert report_main([str(tmp_path), "--doc", str(doc)]) == 0
    rows = [line for line in doc.read_text().splitlines() if line.startswith("| ") and "beats" in line]
    assert rows[0].startswith("| A beats B | paper 1 | d1 | auc | A 0.8100 ± 0.0141 | B 0.7100 ± 0.0141 | +0.1000 | holds |")
    assert rows[1].startswith("| A beats B | paper 1 | d2 | auc |") and rows[1].endswith("| -0.0100 | tie (within one std) |")
    # logloss: smaller is better, so B (0.51) against A (0.41) fails on d1
    assert rows[2].startswith("| B beats A | paper 1 | d1 | logloss |") and rows[2].endswith("| -0.1000 | does not hold |")
    assert rows[3].startswith("| B beats A | paper 1 | d2 |") and "tie" in rows[3]
    assert rows[4].endswith("not measured: no table has both rows with >= 2 runs |") and len(rows) == 5

    (tmp_path / "bad.yaml").write_text("- {claim: x, source: y, better: A, metric: auc}\n")
    with pytest.raises(SystemExit, match="claim 1: missing worse"):
        report_main([str(tmp_path), "--doc", str(tmp_path / "r2.md"), "--claims", str(tmp_path / "bad.yaml")])
    with pytest.raises(SystemExit, match="--claims: no such file"):
        report_main([str(tmp_path), "--doc", str(tmp_path / "r2.md"), "--claims", str(tmp_path / "none.yaml")])
    assert not (tmp_path / "r2.md").exists()


def test_a_real_run_records_one_curve_point_per_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # a relative --data_path is read from here, and recorded as given
    data_path = f"--data_path={FIXTURES.relative_to(REPO)}"
    args = ["--models", "SASRec", "--seeds", "1", "--out", str(tmp_path), "--no-progress",
            "--dataset", "tiny", "--config_files", str(TINY_YAML), data_path, "epochs=3"]
    assert benchmark_main(args) == 0
    (record,) = _records(tmp_path)
    assert record["status"] == "ok" and record["overrides"] == [data_path, "--epochs=3"]
    curve = record["curve"]
    assert [p["epoch"] for p in curve] == [0, 1, 2] and record["epochs_trained"] == 3
    assert all(set(p["valid"]) == {"recall@5", "ndcg@5"} for p in curve)
    assert [p["wall_s"] for p in curve] == sorted(p["wall_s"] for p in curve)
    assert record["stopped_early"] is False and record["epoch_cap"] == 3
    # the best validation epoch of the curve is the one RecBole kept
    assert max(p["valid_score"] for p in curve) == pytest.approx(record["best_valid_score"])


def _curve_record(model, seed, stopped_early, epochs=3, **extra):
    curve = [{"epoch": e, "train_loss": 1.0 / (e + 1), "wall_s": 2.0 * (e + 1),
              "valid": {"ndcg@10": 0.1 * (e + 1) * seed}, "valid_score": 0.1 * (e + 1) * seed} for e in range(epochs)]
    record = {
        "kind": "train", "status": "ok", "model": model, "label": None, "dataset": "ml-100k", "seed": seed,
        "config_files": ["benchmarks/presets/ref-ml-100k.yaml"], "overrides": [], "test": {"ndcg@10": 0.1 * seed},
        "config": {"epochs": 3, "valid_metric": "NDCG@10"}, "device": "CPU: x (2 cores)", "epochs_trained": epochs,
        "median_epoch_s": 2.0, "peak_memory_bytes": 2**20, "peak_memory_kind": "cpu_max_rss", "parameters": 10,
        "curve": curve, "stopped_early": stopped_early, "epoch_cap": 3, **extra,
    }
    if stopped_early is None:  # a record from before curves were kept
        for key in ("curve", "stopped_early", "epoch_cap"):
            del record[key]
    return record


def test_rows_at_the_epoch_cap_are_marked_not_converged_and_curves_are_drawn(tmp_path):
    records = [_curve_record("Capped", s, False) for s in (1, 2)]
    records += [_curve_record("Stopped", s, True, epochs=2) for s in (1, 2)]
    records += [_curve_record("Old", s, None) for s in (1, 2)]
    (tmp_path / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    doc = tmp_path / "report.md"
    assert report_main([str(tmp_path), "--doc", str(doc)]) == 0
    text = doc.read_text()
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ") and " | 2 | " in line}
    assert "| not converged: 2/2 runs reached the cap of 3 epochs |" in rows["Capped"]
    assert "not converged" not in rows["Stopped"] and "| yes |" in rows["Stopped"]
    assert "| unknown (not recorded) |" in rows["Old"] and "yes" not in rows["Old"].split(" | ")[5]
    png = tmp_path / "ml-100k-curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert "](ml-100k-curves.png)" in text
    # mixed rows never claim convergence
    assert convergence([records[2], records[0]]) == "not converged: 1/2 runs reached the cap of 3 epochs"
    assert convergence([records[2], records[4]]) == "early-stopped: 1/2 runs; unknown for 1/2 (not recorded)"
    # an old record whose cap left early stopping no chance (3 epochs, patience 10) reached the cap
    old = {**records[4], "config": {"epochs": 3, "stopping_step": 10}}
    assert convergence([old]) == "not converged: 1/1 runs reached the cap of 3 epochs"
    assert convergence([{**old, "config": {"epochs": 12, "stopping_step": 10}}]) == "unknown (not recorded)"


def test_logloss_over_sampled_negatives_is_explained_under_its_table():
    sampled = {"eval_args": {"mode": {"valid": "uni100", "test": "uni100"}}, "train_neg_sample_args": {"sample_num": 1}}
    records = [_curve_record("DIN", s, True, test={"auc": 0.7 + s / 100, "logloss": 0.3}) for s in (1, 2)]
    for r in records:
        r["config"] = {**r["config"], **sampled}
    text = "\n".join(train_table("taobao", records))
    assert "its 100 sampled negatives (1 positive in 101), while training saw 1 negative(s) per positive" in text
    for r in records:  # full ranking, or no sampled negatives: no such note
        r["config"]["eval_args"] = {"mode": "full"}
    assert "sampled negatives" not in "\n".join(train_table("taobao", records))


def test_mean_curve_averages_the_seeds_that_reached_each_epoch():
    from recbole_attn.benchmark.plots import mean_curve

    c = mean_curve([_curve_record("A", 1, False), _curve_record("A", 2, True, epochs=2)], "ndcg@10")
    assert c["epoch"] == [0, 1, 2] and c["runs"] == [2, 2, 1]
    assert c["valid"] == pytest.approx([0.15, 0.3, 0.3]) and c["wall_s"] == pytest.approx([2, 4, 6])


def test_no_curve_plot_for_records_without_curves(tmp_path):
    (tmp_path / "records.jsonl").write_text(json.dumps(_curve_record("Old", 1, None)))
    doc = tmp_path / "report.md"
    assert report_main([str(tmp_path), "--doc", str(doc)]) == 0
    assert not list(tmp_path.glob("*-curves.png")) and "curves" not in doc.read_text()


def test_printed_commands_paste_into_bash():
    override = "--eval_args={'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'group_by': 'user', 'mode': 'full'}"
    records = [_curve_record("AttnDIN", 1, True, label="AttnDIN full",
                             overrides=["--data_path=/home/me/my data", override, "--topk=[10, 20]"],
                             config_files=["a b/x.yaml", "y.yaml"])]
    argv = shlex.split(command(records))
    assert argv[argv.index("--label") + 1] == "AttnDIN full"
    assert argv[argv.index("--config_files") + 1] == "a b/x.yaml y.yaml"
    assert argv[-3:] == ["--data_path=DATA", override, "--topk=[10, 20]"]
    assert f'"{override}"' in command(records)  # readable: no escaped single quotes
    for arg in ["--a=it's $HOME", 'x"y', "--b=`ls`", "plain", "--c=[1, 2]", "--d={'k': \"v\"}", "wow!'"]:
        assert shlex.split(shell_quote(arg)) == [arg]
    # and bash itself reads the printed command's words back
    printed = command(records).replace("recbole-attn benchmark", "printf '%s\\0'", 1)
    out = subprocess.run(["bash", "-c", printed], capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:-1] == argv[2:]


def test_printed_commands_name_the_data_folder_DATA_and_each_table_says_how_to_make_it():
    folder = "--data_path=/work/data/converted"  # a folder of the machine that ran them
    records = [_curve_record(m, s, True, dataset="beauty", overrides=[folder, "--topk=[10, 20]"])
               for m in ("AttnDIN", "DIN") for s in (1, 2)]
    for per_row in (False, True):
        text = "\n".join(train_table("beauty", records, per_row=per_row))
        assert "/work/data" not in text  # neither in the commands nor in the settings
        assert "overrides `--data_path=DATA '--topk=[10, 20]'`" in text
        printed = [line.split("`")[1] for line in text.splitlines() if "`recbole-attn benchmark" in line]
        assert printed and all("--data_path=DATA" in shlex.split(c) for c in printed)
        assert text.count(CONVERT["beauty"]) == 1  # said once per table
    # RecBole's bundled dataset folder stays as it is, and needs no note
    bundled = "--data_path=/opt/venv/lib/python3.11/site-packages/recbole/dataset_example/"
    ml = [_curve_record("SASRec", 1, True, overrides=[bundled])]
    assert shlex.split(command(ml))[-1] == bundled and "`DATA`" not in "\n".join(train_table("ml-100k", ml))
    # a dataset without a converter: the note says what DATA holds
    shop = [_curve_record("SASRec", 1, True, dataset="shop", overrides=["--data_path=data"])]
    assert "`DATA/shop/`, the dataset's RecBole atomic files" in "\n".join(train_table("shop", shop))
    # the converters' commands are README's (which writes to data/)
    readme = (REPO / "README.md").read_text()
    for dataset, convert in CONVERT.items():
        assert convert.replace("--out DATA", "--out data/") in readme, dataset


def test_train_losses_of_very_different_sizes_are_drawn_on_a_log_axis():
    from recbole_attn.benchmark.plots import loss_scale

    assert loss_scale([[27000.0, 6000.0], [350.0, 260.0]]) == "log"  # a summed pairwise loss beside a CE loss
    assert loss_scale([[350.0, 260.0], [70.0, 45.0]]) == "linear"  # within 10x of each other
    assert loss_scale([[1.0, -0.5], [300.0]]) == "linear"  # a negative loss has no log axis
    assert loss_scale([[float("nan"), 300.0], [20.0]]) == "log" and loss_scale([]) == "linear"
