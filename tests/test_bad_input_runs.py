"""Runs that go wrong (unwritable folders, failures while saving, Ctrl-C, bad --resume,
broken records, a ranker of another dataset): the message the user sees, and that nothing
good is lost or left half-written. ``CASES`` is the list docs/reliability.md is made from."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from bad_input import BadInput
from conftest import FIXTURES, TINY_YAML, build, train_tiny
from recbole_attn.benchmark import runner
from recbole_attn.cli import main
from recbole_attn.config import ConfigError
from recbole_attn.trainer import CheckpointError, CheckpointMixin, atomic_save, get_trainer

TINY = ["--model=AttRec", "--dataset=tiny", f"--data_path={FIXTURES}", f"--config_files={TINY_YAML}", "epochs=2"]
PRM_LOAD_COL = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "category"]}

CASES = [
    BadInput("checkpoint-dir-through-a-file", "checkpoint_dir=notes.txt/saved",
             "is not writable", "nothing trained or written: the error comes before the data is loaded"),
    BadInput("checkpoint-dir-read-only", "checkpoint_dir=/a/read-only/folder",
             "is not writable (Permission denied)", "nothing trained or written: checked before the data is loaded"),
    BadInput("log-dir-through-a-file", "log_dir=notes.txt/logs",
             "log_dir", "nothing trained or written: checked before the data is loaded"),
    BadInput("disk-full-while-saving-the-best", "a full disk while the best checkpoint is overwritten",
             "could not write checkpoint", "the previous best checkpoint, intact under its name; no temporary file left"),
    BadInput("exception-while-saving", "an exception inside torch.save (e.g. an unpicklable attribute)",
             "cannot pickle", "the previous best checkpoint, intact under its name; no temporary file left"),
    BadInput("ctrl-c-while-saving", "Ctrl-C while a checkpoint is written",
             "KeyboardInterrupt", "the previous checkpoint, intact under its name; no temporary file left"),
    BadInput("truncated-checkpoint-never-final", "a full disk while the first checkpoint is written",
             "nothing was written", "no truncated file under the checkpoint's name"),
    BadInput("ctrl-c-during-training", "Ctrl-C during epoch 2 of `recbole-attn --model=AttRec ...`",
             "resume with: recbole-attn", "the best checkpoint and the -last.pth of epoch 1 (exit 130, no traceback)"),
    BadInput("resume-missing-file", "--resume=nope.pth", "checkpoint not found", "nothing trained or written"),
    BadInput("resume-not-a-checkpoint", "--resume=notes.txt", "--resume: cannot read", "nothing trained or written"),
    BadInput("resume-other-model", "--model=SASRec --resume=<an AttRec checkpoint>",
             "is a checkpoint of --model=AttRec", "the checkpoint, unchanged; nothing trained"),
    BadInput("resume-with-nproc", "--resume=PATH --nproc=2", "--resume continues a run on one process",
             "nothing trained or written"),
    BadInput("resume-with-ranker", "--model=PRM --ranker=SASRec --resume=PATH", "--resume continues one run",
             "nothing trained or written"),
    BadInput("records-truncated-last-line", "recbole-attn report DIR (records.jsonl ends in a half line)",
             "records.jsonl:2: skipped a malformed record", "every complete record, in the report"),
    BadInput("records-line-not-an-object", "recbole-attn report DIR (a line holds [1, 2])",
             "a JSON list, not an object", "every other record, in the report"),
    BadInput("benchmark-resume-after-truncated-line", "recbole-attn benchmark --resume (records.jsonl ends in a half line)",
             "records.jsonl:2: skipped a malformed record",
             "the recorded runs are not rerun; the new record gets a line of its own"),
    BadInput("report-without-records", "recbole-attn report EMPTY_DIR", "no records under",
             "no empty report.md is written (exit 2)"),
    BadInput("report-only-malformed-records", "recbole-attn report DIR (its only line is truncated)",
             "no records under", "no empty report.md is written (exit 2)"),
    BadInput("prm-ranker-of-another-id-mapping", "--model=PRM ranker_checkpoint=<SASRec of another 'tiny'>",
             "maps user/item ids differently", "nothing trained; both datasets named"),
    BadInput("prm-ranker-without-fingerprint", "--model=PRM ranker_checkpoint=<an older checkpoint>",
             "stores no dataset fingerprint", "the run goes on, with a warning (not a refusal)"),
]
BY_ID = {case.id: case for case in CASES}


def case(case_id: str) -> BadInput:
    return BY_ID[case_id]


def test_every_case_is_tested_once():
    tested = {name[len("test_"):].replace("_", "-") for name in globals() if name.startswith("test_")}
    assert len(CASES) >= 10 and len(BY_ID) == len(CASES)
    assert set(BY_ID) <= tested, sorted(set(BY_ID) - tested)


def cli_error(capsys, *argv: str) -> str:
    """Run the CLI; it must exit 2 with a one-line message (returned)."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def no_files(folder: Path) -> bool:
    return not folder.exists() or not any(folder.rglob("*"))


# ---------------------------------------------------------------- folders


def test_checkpoint_dir_through_a_file(capsys, tmp_path):
    c = case("checkpoint-dir-through-a-file")
    (tmp_path / "notes.txt").write_text("x")
    folder = tmp_path / "notes.txt" / "saved"
    err = cli_error(capsys, *TINY, f"checkpoint_dir={folder}")
    assert c.message in err and str(folder) in err and "checkpoint_dir" in err
    assert not Path("log").exists()


def test_checkpoint_dir_read_only(capsys, tmp_path, monkeypatch):
    c = case("checkpoint-dir-read-only")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the folder refuse as a read-only one would
        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        err = cli_error(capsys, *TINY, f"checkpoint_dir={folder}")
    finally:
        folder.chmod(0o755)
    assert c.message in err and str(folder) in err
    assert no_files(folder) and not Path("log").exists()


def test_log_dir_through_a_file(capsys, tmp_path):
    c = case("log-dir-through-a-file")
    (tmp_path / "notes.txt").write_text("x")
    err = cli_error(capsys, *TINY, f"checkpoint_dir={tmp_path / 'saved'}", f"log_dir={tmp_path / 'notes.txt' / 'logs'}")
    assert c.message in err and "is not writable" in err and str(tmp_path / "notes.txt" / "logs") in err
    assert no_files(tmp_path / "saved")


# ---------------------------------------------------------------- saving


@pytest.fixture
def trainer(tmp_path):
    config, model, *_ = build("AttRec", checkpoint_dir=str(tmp_path / "saved"))
    return get_trainer(config["MODEL_TYPE"], "AttRec", type(model))(config, model)


def failing_save(monkeypatch, error: BaseException):
    """torch.save writes half of the file, then raises ``error``."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)
        f.seek(f.tell() // 2)
        f.truncate()
        raise error

    monkeypatch.setattr(torch, "save", save)


def assert_kept(trainer, path: str, weights: dict) -> None:
    state = torch.load(path, weights_only=False)["state_dict"]
    assert all(torch.equal(state[k], weights[k]) for k in weights)
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.endswith(".tmp")]


def save_best_then_fail(trainer, monkeypatch, error: BaseException) -> dict:
    trainer._save_checkpoint(0, verbose=False)
    kept = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)
    failing_save(monkeypatch, error)
    return kept


def test_disk_full_while_saving_the_best(trainer, monkeypatch):
    c = case("disk-full-while-saving-the-best")
    kept = save_best_then_fail(trainer, monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.raises(CheckpointError) as err:
        trainer._save_checkpoint(1, verbose=False)
    assert c.message in str(err.value) and trainer.saved_model_file in str(err.value)
    assert "No space left on device" in str(err.value) and "the previous file is unchanged" in str(err.value)
    assert_kept(trainer, trainer.saved_model_file, kept)


def test_exception_while_saving(trainer, monkeypatch):
    c = case("exception-while-saving")
    kept = save_best_then_fail(trainer, monkeypatch, TypeError("cannot pickle 'generator' object"))
    with pytest.raises(TypeError, match=c.message):
        trainer._save_checkpoint(1, verbose=False)
    assert_kept(trainer, trainer.saved_model_file, kept)


def test_ctrl_c_while_saving(trainer, monkeypatch):
    c = case("ctrl-c-while-saving")
    kept = save_best_then_fail(trainer, monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as err:
        trainer._save_checkpoint(1, verbose=False)
    assert c.message in repr(err.value)
    assert_kept(trainer, trainer.saved_model_file, kept)


def test_truncated_checkpoint_never_final(tmp_path, monkeypatch):
    c = case("truncated-checkpoint-never-final")
    failing_save(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    path = tmp_path / "model.pth"
    with pytest.raises(CheckpointError, match=c.message):
        atomic_save({"w": torch.zeros(1000)}, str(path))
    assert os.listdir(tmp_path) == []


def test_the_next_save_removes_what_a_process_killed_mid_save_left(tmp_path):
    path = tmp_path / "model.pth"
    (tmp_path / ".model.pth.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".other.pth.abc123.tmp").write_bytes(b"another file's")
    atomic_save({"w": torch.ones(3)}, str(path))
    assert sorted(os.listdir(tmp_path)) == [".other.pth.abc123.tmp", "model.pth"]
    assert torch.equal(torch.load(path, weights_only=False)["w"], torch.ones(3))


# ---------------------------------------------------------------- Ctrl-C, --resume


def test_ctrl_c_during_training(capsys, tmp_path, monkeypatch):
    c = case("ctrl-c-during-training")
    real = CheckpointMixin._train_epoch

    def interrupt_epoch_2(self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == 1:
            real(self, train_data, epoch_idx, *args, **kwargs)  # writes the -last.pth of epoch 0 first
            raise KeyboardInterrupt
        return real(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(CheckpointMixin, "_train_epoch", interrupt_epoch_2)
    saved = tmp_path / "saved"
    assert main([*TINY, f"checkpoint_dir={saved}"]) == 130
    err = capsys.readouterr().err
    assert c.message in err and "Traceback" not in err
    (last,) = saved.glob("AttRec-tiny-*-last.pth")
    best = Path(str(last).replace("-last.pth", ".pth"))
    assert f"best checkpoint: {best}" in err and f"last checkpoint: {last} (after epoch 0)" in err
    assert err.strip().endswith(f"--resume={last}")
    assert torch.load(last, weights_only=False)["epoch"] == 0 and torch.load(best, weights_only=False)["epoch"] == 0


def test_resume_missing_file(capsys, tmp_path):
    c = case("resume-missing-file")
    err = cli_error(capsys, *TINY, f"checkpoint_dir={tmp_path / 'saved'}", f"--resume={tmp_path / 'nope.pth'}")
    assert c.message in err and str(tmp_path / "nope.pth") in err
    assert no_files(tmp_path / "saved")


def test_resume_not_a_checkpoint(capsys, tmp_path):
    c = case("resume-not-a-checkpoint")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    err = cli_error(capsys, *TINY, f"checkpoint_dir={tmp_path / 'saved'}", f"--resume={tmp_path / 'notes.txt'}")
    assert c.message in err and str(tmp_path / "notes.txt") in err
    assert no_files(tmp_path / "saved")


def test_resume_other_model(capsys, tmp_path):
    c = case("resume-other-model")
    path = tmp_path / "AttRec-tiny.pth"
    torch.save({"config": {"model": "AttRec", "dataset": "tiny"}, "epoch": 0}, path)
    before = path.read_bytes()
    args = [a.replace("AttRec", "SASRec") for a in TINY]
    err = cli_error(capsys, *args, f"checkpoint_dir={tmp_path / 'saved'}", f"--resume={path}")
    assert c.message in err and "--model=SASRec" in err
    assert path.read_bytes() == before and no_files(tmp_path / "saved")


def test_resume_with_nproc(capsys, tmp_path):
    c = case("resume-with-nproc")
    err = cli_error(capsys, *TINY, "--nproc=2", f"--resume={tmp_path / 'x-last.pth'}")
    assert c.message in err


def test_resume_with_ranker(capsys, tmp_path):
    c = case("resume-with-ranker")
    err = cli_error(capsys, "--model=PRM", "--ranker=SASRec", "--dataset=tiny", f"--data_path={FIXTURES}",
                    f"--resume={tmp_path / 'x-last.pth'}")
    assert c.message in err


# ---------------------------------------------------------------- records.jsonl


def record(seed: int) -> dict:
    return {
        "kind": "train", "status": "ok", "model": "AttRec", "label": None, "dataset": "tiny", "seed": seed,
        "config_files": None, "overrides": [], "test": {"ndcg@5": 0.1 * seed}, "config": {"epochs": 1},
        "device": "CPU: x (2 cores)", "epochs_trained": 1, "median_epoch_s": 1.0,
        "peak_memory_bytes": 2**20, "peak_memory_kind": "cpu_max_rss", "parameters": 10,
    }


def test_records_truncated_last_line(capsys, tmp_path):
    c = case("records-truncated-last-line")
    (tmp_path / "records.jsonl").write_text(json.dumps(record(1)) + "\n" + json.dumps(record(2))[:40])
    assert main(["report", str(tmp_path)]) == 0
    assert c.message in capsys.readouterr().err
    assert "| AttRec | 1 |" in (tmp_path / "report.md").read_text()


def test_records_line_not_an_object(capsys, tmp_path):
    c = case("records-line-not-an-object")
    (tmp_path / "records.jsonl").write_text("[1, 2]\n" + json.dumps(record(1)) + "\n")
    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert c.message in err and "records.jsonl:1:" in err
    assert "| AttRec | 1 |" in (tmp_path / "report.md").read_text()


def test_benchmark_resume_after_truncated_line(capsys, tmp_path, monkeypatch):
    c = case("benchmark-resume-after-truncated-line")
    children, real = [], runner.subprocess.run

    def fake_child(cmd, **kwargs):  # the child run's last stdout line is its measurements
        if "--child" not in cmd:
            return real(cmd, **kwargs)
        children.append(json.loads(cmd[cmd.index("--child") + 1])["seed"])
        return runner.subprocess.CompletedProcess(cmd, 0, json.dumps({"device_type": "cpu", "test": {}}), "")

    monkeypatch.setattr(runner.subprocess, "run", fake_child)
    common = dict(models=["AttRec"], dataset="tiny", out_dir=tmp_path, show_progress=False)
    runner.run_benchmark(seeds=[1], **common)
    records_file = tmp_path / "records.jsonl"
    with open(records_file, "a") as f:
        f.write('{"kind": "train", "model": "AttRec", "se')  # what a killed run leaves
    runner.run_benchmark(seeds=[1, 2], resume=True, **common)
    assert c.message in capsys.readouterr().err
    assert children == [1, 2]  # seed 1 was recorded: not rerun
    lines = records_file.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["seed"] == 2
    assert [r["seed"] for r in runner.read_records(records_file)] == [1, 2]


def test_report_without_records(capsys, tmp_path):
    c = case("report-without-records")
    err = cli_error(capsys, "report", str(tmp_path))
    assert c.message in err and str(tmp_path) in err
    assert not (tmp_path / "report.md").exists()


def test_report_only_malformed_records(capsys, tmp_path):
    c = case("report-only-malformed-records")
    (tmp_path / "records.jsonl").write_text('{"kind": "tra')
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert c.message in err and "records.jsonl:1: skipped a malformed record" in err
    assert not (tmp_path / "report.md").exists()


# ---------------------------------------------------------------- PRM's ranker


@pytest.fixture(scope="module")
def ranker(tmp_path_factory):
    """A one-epoch SASRec on the tiny fixture: its checkpoint."""
    _, path = train_tiny(tmp_path_factory.mktemp("ranker"), "SASRec", epochs=1, load_col=PRM_LOAD_COL)
    return path


def prm(ranker_path: Path, **overrides):
    return build("PRM", load_col=PRM_LOAD_COL, checkpoint_dir=str(ranker_path.parent),
                 ranker_checkpoint=str(ranker_path), list_length=10, valid_metric="NDCG@5", **overrides)


def test_prm_ranker_of_another_id_mapping(ranker, tmp_path):
    c = case("prm-ranker-of-another-id-mapping")
    other = tmp_path / "data" / "tiny"  # the same files with items 21 and 23 swapped: same counts
    other.mkdir(parents=True)
    swap = {"21": "23", "23": "21"}
    for name in ("tiny.inter", "tiny.item"):
        rows = (FIXTURES / "tiny" / name).read_text().splitlines()
        col = 1 if name.endswith(".inter") else 0
        out = [rows[0]]
        for row in rows[1:]:
            cells = row.split("\t")
            cells[col] = swap.get(cells[col], cells[col])
            out.append("\t".join(cells))
        (other / name).write_text("\n".join(out) + "\n")
    fingerprint = torch.load(ranker, weights_only=False)["dataset_fingerprint"]
    assert fingerprint["dataset"] == "tiny" and len(fingerprint["id_sha1"]) == 16
    with pytest.raises(ConfigError) as err:
        prm(ranker, data_path=str(tmp_path / "data"))
    message = str(err.value)
    assert c.message in message and str(ranker) in message
    assert str(FIXTURES / "tiny") in message and str(other) in message  # both datasets named
    prm(ranker)  # the ranker's own dataset is accepted


def test_prm_ranker_without_fingerprint(ranker, tmp_path, caplog):
    c = case("prm-ranker-without-fingerprint")
    old = ranker.parent / "old-SASRec.pth"
    checkpoint = torch.load(ranker, weights_only=False)
    del checkpoint["dataset_fingerprint"]
    torch.save(checkpoint, old)
    with caplog.at_level("WARNING"):
        _, model, *_ = prm(old)
    assert c.message in caplog.text and str(old) in caplog.text
    assert model.ranker is not None
