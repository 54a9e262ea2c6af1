"""The "Reference results" page (report --results) and PRM's control, on hand-made records."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

from recbole_attn.benchmark.report import _settings, initial_lists, report_main
from recbole_attn.benchmark.results import is_reference, load_paper_claims
from recbole_attn.benchmark.runner import benchmark_main
from recbole_attn.data.rerank import train_and_validation_loaders, validation_point_loaders
from recbole_attn.errors import ConfigError
from conftest import FIXTURES, TINY_YAML, build

REF = ["benchmarks/presets/ref-ml-100k.yaml"]


def rec(model, seed, ndcg, stopped_early=True, label=None, config_files=REF, epochs=3, **extra):
    """A hand-made record of one run with a learning curve of ``epochs`` epochs."""
    curve = [{"epoch": e, "train_loss": 1.0 / (e + 1), "wall_s": 2.0 * (e + 1),
              "valid": {"ndcg@10": ndcg * (e + 1) / epochs}, "valid_score": ndcg * (e + 1) / epochs}
             for e in range(epochs)]
    return {
        "kind": "train", "status": "ok", "model": model, "label": label, "dataset": "ml-100k", "seed": seed,
        "config_files": config_files, "overrides": ["--data_path=benchmarks/scratch/data"],
        "test": {"ndcg@10": ndcg, "recall@10": 2 * ndcg},
        "config": {"epochs": 200, "stopping_step": 10, "valid_metric": "NDCG@10"}, "device": "CPU: x (2 cores)",
        "epochs_trained": epochs, "median_epoch_s": 2.0, "peak_memory_bytes": 2**20,
        "peak_memory_kind": "cpu_max_rss", "parameters": 10, "curve": curve, "stopped_early": stopped_early,
        "epoch_cap": 200, **extra,
    }


def prm_rec(ranker, seed, prm, initial, control):
    """A PRM record of ``--ranker_control``: PRM's, the initial list's and the control's NDCG@10."""
    run = {"model": ranker, "options_sha1": f"{ranker}{seed}", "parameters": 5, "epochs_trained": 20,
           "median_epoch_s": 1.0, "epoch_cap": 200, "stopped_early": True, "curve": None,
           "checkpoint": "x.pth", "test": {"ndcg@10": initial}}
    control_run = {**run, "options_sha1": f"{ranker}{seed}c", "trained_on": "train + validation",
                   "stopped_early": False, "test": {"ndcg@10": control, "ndcg@20": 0.9}}
    return rec("PRM", seed, prm, config_files=["benchmarks/presets/ref-prm-ml-100k.yaml"], ranker=ranker,
               ranker_config_files=REF, ranker_control=True, ranker_run=run, control_run=control_run,
               initial_test={"ndcg@10": initial, "recall@10": 2 * initial})


CLAIMS = """\
- {claim: NOVA-BERT beats BERT4Rec, source: NOVA, better: NOVABERT, worse: BERT4Rec, metric: ndcg@10}
- {claim: SASRec beats GRU4Rec, source: SASRec, better: SASRec, worse: GRU4Rec, metric: ndcg@10}
- {claim: FDSA beats SASRec, source: FDSA, better: FDSA, worse: SASRec, metric: ndcg@10}
- {claim: Caser beats SASRec, source: Caser, better: Caser, worse: SASRec, metric: ndcg@10}
- {claim: re-ranking beats the initial list, source: PRM, better: SASRec + PRM, worse: SASRec (initial list),
   metric: ndcg@10}
- {claim: re-ranking beats the control, source: PRM, better: SASRec + PRM, worse: SASRec (train + validation),
   metric: ndcg@10}
"""
PAPER = """\
- {claim: NOVA-BERT beats BERT4Rec, citation: "Liu et al., AAAI 2021", dataset: MovieLens-1m,
   figure: "0.3 vs 0.2", where: Table 9}
- {claim: SASRec beats GRU4Rec, citation: "Kang and McAuley, ICDM 2018", dataset: Beauty, figure: ~,
   note: not checked}
"""


@pytest.fixture
def records_dir(tmp_path):
    records = []
    for s in (1, 2, 3):
        records += [rec("NOVABERT", s, 0.30 + 0.001 * s), rec("BERT4Rec", s, 0.20 + 0.001 * s),
                    rec("SASRec", s, 0.25 + 0.001 * s, stopped_early=(s != 2)),  # seed 2 reached the cap
                    rec("GRU4Rec", s, 0.10 + 0.001 * s)]
        records.append(prm_rec("SASRec", s, prm=0.30 + 0.001 * s, initial=0.25, control=0.31 + 0.001 * s))
    records.append(rec("FDSA", 1, 0.5))  # one seed: no claim is judged on it
    records.append(rec("NotReference", 1, 0.9, config_files=["benchmarks/presets/cpu-ml-100k.yaml"]))
    records.append({**rec("BERT4Rec", 4, 0.0), "status": "failed", "error": "Traceback\nRuntimeError: boom"})
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (tmp_path / "claims.yaml").write_text(CLAIMS)
    (tmp_path / "paper_claims.yaml").write_text(PAPER)
    return tmp_path


def _rows(text: str) -> dict[str, str]:
    return {line.split(" | ")[0][2:]: line for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| model") and " | " in line}


def test_results_page_from_the_reference_records_only(records_dir, tmp_path):
    doc = tmp_path / "docs" / "results.md"
    assert report_main([str(records_dir), "--results", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Reference results")
    assert "NotReference" not in text  # a record of another preset is not a reference result
    # one table per dataset and protocol, the protocol named in its header
    assert "### ml-100k, protocol ref-ml-100k: test metrics, mean ± std over seeds 1, 2, 3" in text
    assert "### ml-100k, protocol ref-prm-ml-100k: test metrics" in text
    rows = _rows(text)
    assert rows["NOVABERT"].startswith("| NOVABERT | 3 | 0.3020 ± 0.0010 |") and "| yes |" in rows["NOVABERT"]
    assert "| not converged: 1/3 runs reached the cap of 200 epochs |" in rows["SASRec"]
    assert rows["FDSA"].startswith("| FDSA | 1 | **0.5000** |")  # one seed: no ±
    # a command per row, pasting into bash
    commands = [line for line in text.splitlines() if line.startswith("- NOVABERT: `")]
    argv = shlex.split(commands[0].split("`")[1])
    assert argv[:4] == ["recbole-attn", "benchmark", "--models", "NOVABERT"]
    assert "benchmarks/presets/ref-ml-100k.yaml" in argv and "--data_path=DATA" in argv  # a folder of that machine
    assert "`DATA` (`--data_path`): the folder that holds `DATA/ml-100k/`" in text
    # the curves of every table, drawn and linked
    for png in ("ml-100k-protocol-ref-ml-100k-curves.png", "ml-100k-protocol-ref-prm-ml-100k-curves.png"):
        path = tmp_path / "docs" / "img" / "ref" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"](img/ref/{png})" in text
    # the overview counts the rows that converged
    assert "| ml-100k, protocol ref-ml-100k | 5 | 13 | 1/3 | 4/5 |" in text
    assert "- BERT4Rec on ml-100k, seed 4: `RuntimeError: boom`" in text


def test_a_setting_the_rows_do_not_share_is_stated_per_row():
    """The cloze models read one position more: the header says which rows read 21, not nothing."""
    def length(r, n):
        return {**r, "config": {**r["config"], "MAX_ITEM_LIST_LENGTH": n}}
    records = [length(rec("SASRec", 1, 0.1), 20), length(rec("GRU4Rec", 1, 0.1), 20),
               length(rec("BERT4Rec", 1, 0.1), 21), length(rec("BERT4Rec", 2, 0.1), 21)]
    text = _settings(records)
    assert "MAX_ITEM_LIST_LENGTH=20 (GRU4Rec, SASRec) or 21 (BERT4Rec)" in text
    assert "epochs=200" in text  # a shared value stays one value
    assert "train_batch_size" not in text  # a key no record has is not a setting
    assert "MAX_ITEM_LIST_LENGTH=20;" in _settings(records[:2]) + ";"
    budgets = [{**r, "config": {**r["config"], "epochs": n}} for r, n in zip(records, (35, 5, 35, 5))]
    assert "epochs=5 (BERT4Rec, GRU4Rec) or 35 (BERT4Rec, SASRec)" in _settings(budgets)  # ties by value, not text


def test_results_page_says_how_much_of_the_grid_is_recorded(records_dir, tmp_path):
    """A grid.txt (benchmarks/reference.sh's job names) under the records: the page counts the
    jobs whose folder holds an ok run and lists the others; a complete grid is not "partial"."""
    grid = records_dir / "grid"
    for name, status in (("ml-100k/SASRec/seed1", "ok"), ("ml-100k/SASRec/seed2", "failed")):
        (grid / name).mkdir(parents=True)
        (grid / name / "records.jsonl").write_text(json.dumps({**rec("SASRec", 1, 0.2), "status": status}) + "\n")
    names = ["ml-100k/SASRec/seed1", "ml-100k/SASRec/seed2", "ml-100k/SASRec/seed3", "ml-100k-ctr/DIN/seed1",
             "ml-100k/Caser/seed1"]
    (grid / "grid.txt").write_text("\n".join(names) + "\n")
    doc = tmp_path / "docs" / "results.md"
    assert report_main([str(records_dir), "--results", str(doc)]) == 0
    text = doc.read_text()
    assert "**Partial: the grid has not run to the end**" in text.split("## ")[0]  # said at the top
    assert "`../grid/grid.txt` (5 runs): **1 of 5 recorded**; not yet recorded (table/row: seeds):" in text
    assert "- ml-100k/SASRec: 2, 3\n- ml-100k-ctr/DIN: 1\n- ml-100k/Caser: 1\n" in text  # a failed run is not recorded
    assert "| no row Caser recorded yet (the grid is partial) |" in text  # a claim's row comes with its job
    (grid / "grid.txt").write_text("\n".join(names[:-1]) + "\n")  # partial, but no job brings Caser
    assert report_main([str(records_dir), "--results", str(doc)]) == 0
    text = doc.read_text()
    assert "**Partial" in text and "| not in the reference grid: no row Caser |" in text
    # a run of a model fixed since (superseded) does not count: the job has to run again
    seed1 = grid / "ml-100k/SASRec/seed1" / "records.jsonl"
    seed1.write_text(json.dumps({**rec("SASRec", 1, 0.2), "status": "ok", "superseded": "a fix",
                                 "git_sha": "0123456789abcdef"}) + "\n")
    assert report_main([str(records_dir), "--results", str(doc)]) == 0
    assert "(4 runs): **0 of 4 recorded**" in doc.read_text()
    seed1.write_text(json.dumps({**rec("SASRec", 1, 0.2), "status": "ok"}) + "\n")
    (grid / "grid.txt").write_text("ml-100k/SASRec/seed1\n")
    assert report_main([str(records_dir), "--results", str(doc)]) == 0
    text = doc.read_text()
    assert "**1 of 1 recorded**, every run of the grid." in text and "Partial" not in text
    assert "| not in the reference grid: no row Caser |" in text
    # no grid file: no progress section
    (grid / "grid.txt").unlink()
    assert report_main([str(records_dir), "--results", str(doc)]) == 0
    assert "Grid progress" not in doc.read_text()


def test_claims_are_judged_beside_the_papers_figures(records_dir, tmp_path):
    doc = tmp_path / "results.md"
    assert report_main([str(records_dir), "--results", str(doc)]) == 0
    claims = {line.split(" | ")[0][2:]: line for line in doc.read_text().split("## Papers' claims")[-1].splitlines()
              if line.startswith("| ") and " | " in line}
    nova = claims["NOVA-BERT beats BERT4Rec"]
    assert "| Liu et al., AAAI 2021 | 0.3 vs 0.2 (Table 9); dataset: MovieLens-1m | ml-100k, protocol ref-ml-100k |" in nova
    assert nova.endswith("| +0.1000 | holds |")
    sasrec = claims["SASRec beats GRU4Rec"]  # SASRec has a run at the cap: the verdict says so
    assert "no figure: not checked; dataset: Beauty" in sasrec and sasrec.endswith("| holds (a row is not converged) |")
    assert claims["FDSA beats SASRec"].endswith("not measured: no table has both rows with >= 2 runs |")
    assert claims["Caser beats SASRec"].endswith("| not in the reference grid: no row Caser |")
    assert "| no figure recorded |" in claims["FDSA beats SASRec"]
    # PRM against the initial list, and against its control (the ranker retrained on train + validation)
    assert claims["re-ranking beats the initial list"].endswith("| +0.0520 | holds |")
    assert claims["re-ranking beats the control"].endswith("| -0.0100 | does not hold (a row is not converged) |")


def test_prm_control_row_beside_the_initial_list(records_dir, tmp_path):
    doc = tmp_path / "results.md"
    assert report_main([str(records_dir), "--results", str(doc)]) == 0
    rows = _rows(doc.read_text())
    assert rows["SASRec (initial list)"].startswith("| SASRec (initial list) | 3 | 0.2500 ± 0.0000 |")
    control = rows["SASRec (train + validation)"]
    assert control.startswith("| SASRec (train + validation) | 3 | **0.3120 ± 0.0010** |")
    assert "not converged: 3/3 runs" in control and "0.9" not in control  # only the re-ranker's metrics
    assert rows["SASRec + PRM"].startswith("| SASRec + PRM | 3 | 0.3020 ± 0.0010 |")
    assert "- SASRec (train + validation): `recbole-attn benchmark --models PRM" in doc.read_text()
    assert "--ranker SASRec --ranker_config_files benchmarks/presets/ref-ml-100k.yaml --ranker_control" in doc.read_text()
    # one control row per ranker checkpoint, not one per re-ranker variant
    first = prm_rec("SASRec", 1, 0.3, 0.25, 0.31)
    variant = {**first, "label": "PRM-no-personal-vector"}
    assert [r["row"] for r in initial_lists([first, variant])] == ["SASRec (initial list)", "SASRec (train + validation)"]


def test_no_reference_records_and_bad_paper_claims(records_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "records.jsonl").write_text(json.dumps(rec("SASRec", 1, 0.2, config_files=["cpu-ml-100k.yaml"])))
    with pytest.raises(ConfigError, match="no reference records under .*ref-\\*.yaml"):
        report_main([str(other), "--results", str(tmp_path / "r.md")])
    assert is_reference(rec("A", 1, 0.1, config_files=["x/ref-ml-100k.yaml", "ref-len50.yaml"]))
    assert not is_reference(rec("A", 1, 0.1, config_files=[])) and not is_reference(
        rec("A", 1, 0.1, config_files=["ref-ml-100k.yaml", "cpu-ml-100k.yaml"]))
    claims = [{"claim": "A beats B"}]
    bad = tmp_path / "paper.yaml"
    for text, message in [
        ("- {claim: C beats D, citation: x, dataset: y, figure: '1 vs 2', where: T1}", "'C beats D' is not in the claims"),
        ("- {claim: A beats B, dataset: y, figure: '1 vs 2'}", "entry 1: missing citation"),
        ("- {claim: A beats B, citation: x, dataset: y, figure: ~}", "no figure: give figure and where, or a note"),
        ("{claim: A beats B}", "must hold a YAML list"),
        ("- claim: A beats B\n  note: not entered: x", "not valid YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_paper_claims(bad, claims)
    with pytest.raises(SystemExit):
        report_main([str(records_dir), "--paper_claims", str(bad)])  # needs --results


def test_the_shipped_claims_and_papers_figures_load():
    from recbole_attn.benchmark.claims import load_claims
    from conftest import REPO

    claims = load_claims(REPO / "benchmarks" / "records" / "claims.yaml")
    paper = load_paper_claims(REPO / "benchmarks" / "records" / "paper_claims.yaml", claims)
    assert paper["BST beats DIN"]["figure"].startswith("offline AUC 0.7894 (BST, b=1) vs 0.7866 (DIN)")
    controls = [c for c in claims if c["worse"].endswith("(train + validation)")]
    assert {c["better"] for c in controls} == {"SASRec + PRM", "AttRec + PRM"}


def test_control_loaders_add_the_validation_rows_prm_trains_on():
    config, _, train_data, valid_data, _ = build("SASRec")
    prm_train, prm_hold = validation_point_loaders(config, valid_data, 0.25)
    train, hold = train_and_validation_loaders(config, train_data, valid_data, 0.25)
    n_train, n_prm = len(train_data.dataset), len(prm_train.dataset)
    assert len(train.dataset) == n_train + n_prm
    inter = train.dataset.inter_feat
    # its first rows are the ranker's own, the rest are exactly PRM's training rows
    assert torch.equal(inter["item_id"][:n_train], train_data.dataset.inter_feat["item_id"])
    for field in ("user_id", "item_id", "item_id_list", "item_length"):
        assert torch.equal(inter[field][n_train:], prm_train.dataset.inter_feat[field])
    # early stopping on the same held-out users as PRM's
    assert torch.equal(hold.dataset.inter_feat["user_id"], prm_hold.dataset.inter_feat["user_id"])
    assert set(hold.dataset.inter_feat["user_id"].tolist()).isdisjoint(inter["user_id"][n_train:].tolist())


def test_benchmark_ranker_control_records_the_retrained_ranker(tmp_path):
    with pytest.raises(SystemExit):
        benchmark_main(["--models", "SASRec", "--ranker_control", "--dataset", "tiny", "--out", str(tmp_path)])
    args = ["--models", "PRM", "--ranker", "SASRec", "--ranker_control", "--seeds", "1", "--out", str(tmp_path),
            "--no-progress", "--dataset", "tiny", "--config_files", str(TINY_YAML), f"--data_path={FIXTURES}",
            "epochs=1", "list_length=10"]
    assert benchmark_main(args) == 0
    (record,) = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    run, control = record["ranker_run"], record["control_run"]
    assert record["ranker_control"] is True and control["trained_on"] == "train + validation"
    assert control["checkpoint"] != run["checkpoint"] and control["options_sha1"] != run["options_sha1"]
    assert set(control["test"]) >= set(record["initial_test"])  # measured on the re-ranker's metrics
    assert len(control["curve"]) == 1 and control["epoch_cap"] == 1
    assert benchmark_main([*args, "--resume"]) == 0  # recorded: not run again
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 1


def _grid(**env) -> dict[str, list[str]]:
    """benchmarks/reference.sh's jobs (DRY_RUN=1): job name -> its `recbole-attn benchmark` arguments."""
    import os
    import subprocess

    from conftest import REPO

    out = subprocess.run(["bash", str(REPO / "benchmarks" / "reference.sh")], capture_output=True, text=True,
                         check=True, env={**os.environ, "DRY_RUN": "1", **env}).stdout
    return {words[0]: words[1:] for words in map(shlex.split, out.splitlines())}


SEQUENTIAL = ["SASRec", "SASRecF", "GRU4Rec", "FDSA", "AttRec", "BERT4Rec", "AttnBERT4Rec", "NOVABERT",
              "NOVABERT-invasive"]
LABELLED = ["AttnDIN", "AttnDIEN", "BST", "ATRank", "DIN", "DIEN"]


def test_reference_grid_is_the_issues_grid():
    seeds = (1, 2, 3)
    expected = {f"ml-100k/{m}/seed{s}" for m in [*SEQUENTIAL, "NOVABERT-behavior"] for s in seeds}
    expected |= {f"{t}/{m}/seed{s}" for t in ("ml-100k-ctr", "taobao-ctr") for m in LABELLED for s in seeds}
    expected |= {f"ml-100k-prm/{r}/seed{s}" for r in ("SASRec", "AttRec") for s in seeds}
    cpu = _grid(GPU="False")
    # on a CPU only, Beauty gets the models of the NOVABERT claims at one seed
    assert set(cpu) == expected | {f"beauty/{m}/seed1" for m in ("NOVABERT", "NOVABERT-invasive", "AttnBERT4Rec", "SASRecF")}
    for name, args in cpu.items():
        cloze = name.split("/")[1] in ("BERT4Rec", "AttnBERT4Rec", "NOVABERT", "NOVABERT-invasive", "NOVABERT-behavior")
        length = [a for a in args if a.startswith("--MAX_ITEM_LIST_LENGTH=")]
        assert length == (["--MAX_ITEM_LIST_LENGTH=21"] if cloze else []), name  # 20 items read by every model
        assert all(Path(f).name.startswith("ref-") for f in args[args.index("--config_files") + 1].split())
        assert ("--ranker_control" in args) == name.startswith("ml-100k-prm/"), name
    assert "--attention_type=invasive" in cpu["ml-100k/NOVABERT-invasive/seed1"]
    assert "--behavior_side_fields=['rating', 'timestamp']" in cpu["ml-100k/NOVABERT-behavior/seed2"]
    # on a GPU: Beauty's sequential grid at 3 seeds, and both sequential grids at 50 positions
    gpu = _grid(GPU="True")
    beauty = {f"{t}/{m}/seed{s}" for t in ("beauty", "beauty-len50") for m in SEQUENTIAL for s in seeds}
    len50 = {f"ml-100k-len50/{m}/seed{s}" for m in [*SEQUENTIAL, "NOVABERT-behavior"] for s in seeds}
    assert set(gpu) == expected | beauty | len50
    assert "--MAX_ITEM_LIST_LENGTH=51" in gpu["ml-100k-len50/BERT4Rec/seed1"]
    # the smoke run: one job of each kind, seed 1, one epoch
    smoke = _grid(GPU="False", SMOKE="1")
    assert set(smoke) == {"ml-100k/SASRec/seed1", "ml-100k/NOVABERT-behavior/seed1", "ml-100k-ctr/AttnDIN/seed1",
                          "taobao-ctr/AttnDIN/seed1", "ml-100k-prm/SASRec/seed1", "beauty/SASRecF/seed1"}
    assert all(args[-1] == "--epochs=1" and args[args.index("--seeds") + 1] == "1" for args in smoke.values())
    # ONLY: a part of the grid, by job name
    assert set(_grid(GPU="False", ONLY="^ml-100k/SASRec/")) == {f"ml-100k/SASRec/seed{s}" for s in seeds}
    assert set(_grid(GPU="False", ONLY="/NOVABERT/seed1/")) == {"ml-100k/NOVABERT/seed1", "beauty/NOVABERT/seed1"}


def test_reference_grid_converts_only_the_data_its_jobs_read(tmp_path):
    """With ONLY, a missing raw file of a dataset no chosen job reads is not needed."""
    import os
    import subprocess

    from conftest import REPO

    env = {**os.environ, "GPU": "False", "RAW": str(tmp_path / "none"), "OUT": str(tmp_path / "out")}
    run = lambda only: subprocess.run(["bash", str(REPO / "benchmarks" / "reference.sh")], capture_output=True,
                                      text=True, env={**env, "ONLY": only, "DATA": str(tmp_path / "data")})
    nothing = run("^no-such-table/")
    assert nothing.returncode == 0 and "reference.sh: 0 jobs" in nothing.stdout, nothing.stderr
    # grid.txt names every job of the grid, whatever ONLY chose (the results page's progress)
    assert (tmp_path / "out" / "grid.txt").read_text().split() == list(_grid(GPU="False"))
    taobao = run("^taobao-ctr/AttnDIN/seed1/")
    assert taobao.returncode == 2 and "UserBehavior_head.csv (set TAOBAO_CSV" in taobao.stderr
    assert not (tmp_path / "data").exists()


def test_a_claims_row_is_pending_only_if_a_grid_job_brings_it():
    """A re-ranking job (``ml-100k-prm/SASRec``) brings ``SASRec + PRM`` and the ranker's rows,
    not an ablation the grid never runs."""
    from recbole_attn.benchmark.results import _pending

    pending = {"SASRec", "NOVABERT"}
    assert _pending("SASRec + PRM", pending) and _pending("SASRec (train + validation)", pending)
    assert _pending("NOVABERT", pending) and not _pending("NOVABERT-noLN", pending)
    assert not _pending("AttRec + PRM", pending)
