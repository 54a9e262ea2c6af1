"""docs/speed.md generator: one table row per floor / pairs-per-second record."""

from __future__ import annotations

import json

from recbole_attn.benchmark.speed_report import render


def test_tables_from_floor_and_pairs_records(tmp_path):
    floor = {
        "benchmark": "floor", "date": "2026-12-01T12:00:00+00:00", "git_sha": "a" * 40, "git_dirty": False,
        "model": "AttnDIN", "dataset": "ml-100k", "batches": 4, "rows": 8192, "overrides": {"torch_compile": True},
        "median_s": {"runner": 2.0, "loop": 1.6, "loop_loader": 1.9, "loader": 0.2}, "ratio": 1.25, "loss_match": True,
        "times_s": {"runner": [2.0, 4.0, 1.0], "loop": [1.6, 1.6, 1.0]},  # per-round ratios 1.25, 2.5, 1.0
    }
    pairs = {
        "benchmark": "pairs_per_second", "time": "2026-12-01T11:00:00", "git_sha": "b" * 40, "git_dirty": True,
        "model": "BST", "dataset": "ml-100k", "users": 20, "items": 1683, "pairs_per_second": 2431.7,
        "labelled_eval": {"rows": 95243, "seconds": 40.0},
    }
    (tmp_path / "floor.json").write_text(json.dumps(floor))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pairs.json").write_text(json.dumps(pairs))
    (tmp_path / "other.json").write_text(json.dumps({"benchmark": "something else"}))
    doc = tmp_path / "speed.md"
    assert "2 records" in render([tmp_path], doc)
    text = doc.read_text()
    assert "| AttnDIN (torch_compile=True) | ml-100k | 4 (8192) | 2.00 | 1.60 | 1.90 | 0.20 | **1.25** | yes | `aaaaaaaa` |" in text
    assert "| BST | ml-100k | 20 x 1683 | 2,432 | `bbbbbbbb`* |" in text
    assert "| BST | ml-100k | 95,243 | 40.0 | 2,381 | `bbbbbbbb`* |" in text
    assert f"speed_report {tmp_path} --doc {doc}` from" in text  # the command that wrote it
    notes = tmp_path / "notes.md"
    notes.write_text("## Findings\n\nhand-written\n")
    render([tmp_path], doc, notes)
    text = doc.read_text()
    assert f"--doc {doc} --notes {notes}` from" in text and text.endswith("## Findings\n\nhand-written\n")


def test_compile_table_from_compile_records(tmp_path):
    record = {
        "benchmark": "compile", "date": "2026-12-01T12:00:00+00:00", "git_sha": "c" * 40, "git_dirty": False,
        "model": "SASRec", "dataset": "ml-100k", "batches": 10, "rows": 20480, "compile_mode": "default",
        "median_s": {"eager_runner": 2.0, "compiled_runner": 1.5, "eager_loop": 1.8, "compiled_loop": 1.2},
        "ratio": 0.75, "loop_ratio": 0.667, "compiles": {"warmup": 3, "timed": 0},
        "loss_abs_diff": {"runner": 0.0, "loop": 2.4e-7},
    }
    (tmp_path / "compile.json").write_text(json.dumps(record))
    doc = tmp_path / "speed.md"
    assert "1 records" in render([tmp_path], doc)
    text = doc.read_text()
    assert "## torch.compile: compiled vs eager training step" in text
    assert "| SASRec | ml-100k | 10 (20480) | default | 2.00 | 1.50 | **0.75** | 1.80 | 1.20 | 0.67 | 3 / 0 | 2.4e-07 | `cccccccc` |" in text
    assert "## Training step" not in text  # no floor records, no floor table
