"""Bad configuration, data, files and checkpoints: exit 2 / ConfigError, a message naming the
key, field or file, and nothing written half (see docs/reliability.md, generated from CASES).

A case whose ``what`` starts with ``recbole-attn`` runs in-process through ``cli.main``;
``--data_path`` and ``--config_files`` of the tiny fixture are added where the case sets
neither. Any other ``what`` is a Python call, evaluated with ``load_data_and_model``.
``SETUP`` writes a case's files (``data/<name>/``, YAMLs, checkpoints) into the test's
own folder first.
"""

from __future__ import annotations

import hashlib
import shlex
import sys
import types
from pathlib import Path

import pytest
import torch

from bad_input import DOC, BadInput, render
from conftest import FIXTURES, TINY_YAML, tiny_config

NOTHING = "nothing written: stopped before any data is read (no log, no checkpoint)"
NO_TRAINING = "no checkpoint and no result: stopped before training (only the run's log is written)"
FILE_KEPT = "the file is left as it is; nothing else is written"
FILE_KEPT_LOG = "the file is left as it is; nothing but the run's log is written"

TINY = "recbole-attn --model=AttRec --dataset=tiny"
SEQ_BENCHMARK = "\"benchmark_filename=['train', 'valid', 'test']\""

CASES = [
    # unknown keys
    BadInput("typo-recbole-key", f"{TINY} epoch=3", "'epoch' (command line; did you mean `epochs`?)", NOTHING),
    BadInput("typo-plugin-key", f"{TINY} seq_windw=2", "'seq_windw' (command line; did you mean `seq_window`?)", NOTHING),
    BadInput("not-an-option", f"{TINY} output_dir=runs", "unknown config key 'output_dir'", NOTHING),
    BadInput("key-case", f"{TINY} max_item_list_length=20", "did you mean `MAX_ITEM_LIST_LENGTH`?", NOTHING),
    BadInput(
        "typo-in-config-file",
        f"{TINY} --config_files=my.yaml  # my.yaml: learning_rat: 0.01",
        "'learning_rat' (config file my.yaml; did you mean `learning_rate`?)",
        NOTHING,
    ),
    BadInput("allow-unknown-keys-type", f"{TINY} allow_unknown_keys=5", "allow_unknown_keys expects a list", NOTHING),
    # types
    BadInput("epochs-not-int", f"{TINY} epochs=one", "config key 'epochs' expects int", NOTHING),
    BadInput("eval-batch-size-not-int", f"{TINY} eval_batch_size=abc", "config key 'eval_batch_size' expects int", NOTHING),
    BadInput("topk-not-int", f"{TINY} topk=five", "config key 'topk' expects list or int", NOTHING),
    BadInput("learning-rate-not-float", f"{TINY} learning_rate=fast", "config key 'learning_rate' expects float", NOTHING),
    BadInput("plugin-key-type", f"{TINY} use_timing_signal=3", "config key 'use_timing_signal' expects bool", NOTHING),
    # ranges
    BadInput("epochs-zero", f"{TINY} epochs=0", "epochs must be >= 1, got 0", NOTHING),
    BadInput("epochs-negative", f"{TINY} epochs=-1", "epochs must be >= 1, got -1", NOTHING),
    BadInput("train-batch-size-zero", f"{TINY} train_batch_size=0", "train_batch_size must be >= 1, got 0", NOTHING),
    BadInput("learning-rate-zero", f"{TINY} learning_rate=0", "learning_rate must be > 0, got 0", NOTHING),
    BadInput("history-length-zero", f"{TINY} MAX_ITEM_LIST_LENGTH=0", "MAX_ITEM_LIST_LENGTH must be >= 1, got 0", NOTHING),
    BadInput("omega-out-of-range", f"{TINY} omega=5.0", "omega must be in [0, 1], got 5.0", NOTHING),
    BadInput("choice-not-listed", f"{TINY} score_mode=cosine", "score_mode must be one of dist, inner, got 'cosine'", NOTHING),
    BadInput("size-not-even", f"{TINY} embedding_size=7", "embedding_size must be even, got 7", NOTHING),
    BadInput(
        "heads-do-not-divide",
        "recbole-attn --model=NOVABERT --dataset=tiny n_heads=3",
        "n_heads (3) must divide hidden_size (16)",
        NOTHING,
    ),
    BadInput(
        "half-open-interval",
        "recbole-attn --model=NOVABERT --dataset=tiny mask_ratio=1.5",
        "mask_ratio must be in (0, 1], got 1.5",
        NOTHING,
    ),
    BadInput(
        "list-element-range",
        "recbole-attn --model=AttnDIN --dataset=tiny \"mlp_hidden_size=[80, 0]\"",
        "every element of mlp_hidden_size must be >= 1, got [80, 0]",
        NOTHING,
    ),
    # metrics
    BadInput("valid-metric-cutoff", f"{TINY} valid_metric=NDCG@10", "valid_metric 'NDCG@10' needs a cut-off from topk [5]", NOTHING),
    BadInput("valid-metric-not-in-metrics", f"{TINY} valid_metric=MRR@5", "valid_metric 'MRR@5' is not among metrics", NOTHING),
    BadInput("metrics-mixed", f"{TINY} \"metrics=['Recall', 'AUC']\"", "metrics mixes ranking metrics ['Recall'] and value metrics ['AUC']", NOTHING),
    BadInput("metric-unknown", f"{TINY} \"metrics=['Recal', 'NDCG']\"", "metrics ['Recal'] are not RecBole metrics", NOTHING),
    # RecBole's own checks, as one line
    BadInput("recbole-check", f"{TINY} repeatable=False", "Sequential models currently only support repeatable", NOTHING),
    BadInput(
        "negative-distribution",
        f"{TINY} \"train_neg_sample_args={{'distribution': 'gauss', 'sample_num': 1}}\"",
        "The distribution [gauss] of train_neg_sample_args",
        NOTHING,
    ),
    # files and the command line
    BadInput("config-file-missing", f"{TINY} --config_files=missing.yaml", "config file(s) not found: missing.yaml", NOTHING),
    BadInput(
        "config-file-broken",
        f"{TINY} --config_files=bad.yaml  # bad.yaml: epochs: 3 / topk: [5 / learning_rate: 0.1",
        "config file 'bad.yaml' is not valid YAML: line 3",
        NOTHING,
    ),
    BadInput("config-file-not-a-mapping", f"{TINY} --config_files=list.yaml  # list.yaml: - epochs", "config file 'list.yaml' must hold key: value lines", NOTHING),
    BadInput("nproc-zero", f"{TINY} --nproc=0", "--nproc=0: the number of processes on this machine must be >= 1", NOTHING),
    BadInput("world-size-below-nproc", f"{TINY} --nproc=2 --world_size=1", "--world_size=1 is smaller than --nproc=2", NOTHING),
    BadInput("argument-without-value", f"{TINY} epochs", "cannot read argument 'epochs'", NOTHING),
    BadInput("unknown-model", "recbole-attn --model=SASrec --dataset=tiny", "unknown model 'SASrec'", NOTHING),
    BadInput("dataset-missing", "recbole-attn --model=AttRec --dataset=nope --data_path=data", "dataset 'nope' not found", NOTHING),
    # data
    BadInput("inter-empty", "recbole-attn --model=SASRec --dataset=empty --data_path=data", "data/empty/empty.inter is empty", NOTHING),
    BadInput("inter-header-only", "recbole-attn --model=SASRec --dataset=hdr --data_path=data", "data/hdr/hdr.inter has a header but no interactions", NOTHING),
    BadInput("inter-header-untyped", "recbole-attn --model=SASRec --dataset=untyped --data_path=data", "column 'user_id' in the header of data/untyped/untyped.inter is not name:type", NOTHING),
    BadInput("one-interaction-per-user", "recbole-attn --model=SASRec --dataset=one --data_path=data", "the training split of dataset 'one' is empty", NO_TRAINING),
    BadInput("float-inf", "recbole-attn --model=SASRec --dataset=inf --data_path=data", "float field 'rating' of inf.inter has 1 inf or NaN value(s)", NO_TRAINING),
    BadInput(
        "benchmark-unseen-ids",
        f"recbole-attn --model=BPR --dataset=bm --data_path=data {SEQ_BENCHMARK}",
        "1 item_id value(s) of bm.test.inter never occur in bm.train.inter",
        NO_TRAINING,
    ),
    BadInput(
        "benchmark-sequential-without-list",
        f"recbole-attn --model=SASRec --dataset=bm --data_path=data {SEQ_BENCHMARK}",
        "has no item_id_list column",
        NOTHING,
    ),
    # checkpoints
    BadInput("checkpoint-missing", 'load_data_and_model("saved/none.pth")', "checkpoint saved/none.pth not found", NOTHING),
    BadInput("checkpoint-truncated", 'load_data_and_model("saved/truncated.pth")', "cannot read checkpoint saved/truncated.pth", FILE_KEPT),
    BadInput("checkpoint-not-a-checkpoint", 'load_data_and_model("notes.txt")', "cannot read checkpoint notes.txt", FILE_KEPT),
    BadInput("checkpoint-state-dict-only", 'load_data_and_model("saved/weights.pth")', "saved/weights.pth is not a checkpoint of RecBole or recbole-attn", FILE_KEPT),
    BadInput("checkpoint-old-classes", 'load_data_and_model("saved/old.pth")', "checkpoint saved/old.pth was written by another version", FILE_KEPT),
    BadInput("checkpoint-old-weights", 'load_data_and_model("saved/renamed.pth")', "checkpoint saved/renamed.pth does not fit model AttRec", FILE_KEPT_LOG),
]


# --------------------------------------------------------------------------- set-up

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def _inter(path: Path, rows: list[tuple], header: str = INTER_HEADER) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "".join("\t".join(map(str, r)) + "\n" for r in rows))


def _tiny_yaml_with(path: Path, extra: str) -> None:
    path.write_text(TINY_YAML.read_text() + extra)


def _benchmark(root: Path) -> None:
    users = range(10)
    _inter(root / "bm" / "bm.train.inter", [(u, (u + t) % 8, 3, t) for u in users for t in range(5)])
    _inter(root / "bm" / "bm.valid.inter", [(u, u % 8, 3, 10) for u in users])
    _inter(root / "bm" / "bm.test.inter", [(u, 99 if u == 3 else u % 8, 3, 11) for u in users])


def _checkpoint(name: str, state_dict: dict) -> None:
    from recbole_attn.config import Config

    config = Config(model="AttRec", dataset="tiny", config_dict=tiny_config())
    Path("saved").mkdir(exist_ok=True)
    torch.save({"config": config, "state_dict": state_dict, "other_parameter": None}, f"saved/{name}")


def _truncated() -> None:
    _checkpoint("truncated.pth", {"w": torch.zeros(1000)})
    data = Path("saved/truncated.pth").read_bytes()
    Path("saved/truncated.pth").write_bytes(data[: len(data) // 2])


def _old_classes() -> None:
    """A checkpoint whose pickled config class lives in a module that no longer exists."""
    module = types.ModuleType("recbole_attn_legacy")

    class Config:  # noqa: D401  (a stand-in for a moved class)
        pass

    Config.__module__, Config.__qualname__ = module.__name__, "Config"
    module.Config = Config
    sys.modules[module.__name__] = module
    try:
        Path("saved").mkdir(exist_ok=True)
        torch.save({"config": Config(), "state_dict": {}}, "saved/old.pth")
    finally:
        del sys.modules[module.__name__]


SETUP = {
    "typo-in-config-file": lambda: _tiny_yaml_with(Path("my.yaml"), "learning_rat: 0.01\n"),
    "config-file-broken": lambda: Path("bad.yaml").write_text("epochs: 3\ntopk: [5\nlearning_rate: 0.1\n"),
    "config-file-not-a-mapping": lambda: Path("list.yaml").write_text("- epochs\n- 3\n"),
    "inter-empty": lambda: (Path("data/empty").mkdir(parents=True), Path("data/empty/empty.inter").write_text("")),
    "inter-header-only": lambda: _inter(Path("data/hdr/hdr.inter"), []),
    "inter-header-untyped": lambda: _inter(Path("data/untyped/untyped.inter"), [(1, 2)], "user_id\titem_id\n"),
    "one-interaction-per-user": lambda: _inter(Path("data/one/one.inter"), [(u, u % 7, 3, u) for u in range(30)]),
    "float-inf": lambda: _inter(
        Path("data/inf/inf.inter"),
        [(u, (u + t) % 9, "inf" if (u, t) == (3, 2) else 3, t) for u in range(10) for t in range(6)],
    ),
    "benchmark-unseen-ids": lambda: _benchmark(Path("data")),
    "benchmark-sequential-without-list": lambda: _benchmark(Path("data")),
    "checkpoint-truncated": _truncated,
    "checkpoint-not-a-checkpoint": lambda: Path("notes.txt").write_text("not a checkpoint\n"),
    "checkpoint-state-dict-only": lambda: (Path("saved").mkdir(), torch.save({"w": torch.zeros(2)}, "saved/weights.pth")),
    "checkpoint-old-classes": _old_classes,
    "checkpoint-old-weights": lambda: _checkpoint("renamed.pth", {"old_name.weight": torch.zeros(2)}),
}


# --------------------------------------------------------------------------- running a case


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _cli_args(what: str) -> list[str]:
    args = shlex.split(what.split("  #")[0])
    assert args[0] == "recbole-attn"
    args = args[1:]
    if not any(a.startswith("--data_path=") for a in args):
        args.append(f"--data_path={FIXTURES}")
    if not any(a.startswith("--config_files=") for a in args):
        args.append(f"--config_files={TINY_YAML}")
    return args


def test_cases_have_unique_ids_and_a_setup_only_where_defined():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert set(SETUP) <= set(ids)
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: BadInput, tmp_path, capsys):
    from recbole_attn import load_data_and_model
    from recbole_attn.cli import main
    from recbole_attn.errors import ConfigError

    if case.id in SETUP:
        SETUP[case.id]()
    before = _files(tmp_path)
    capsys.readouterr()
    if case.what.startswith("recbole-attn"):
        assert main(_cli_args(case.what)) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("recbole-attn: error: ") and case.message in last, err
        if case.guarantee == NOTHING:
            assert len(err.strip().splitlines()) == 1, err
    else:
        with pytest.raises(ConfigError) as raised:
            eval(case.what, {"load_data_and_model": load_data_and_model})
        assert case.message in str(raised.value)
    after = _files(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"
    new = sorted(set(after) - set(before))
    assert not [f for f in new if f.endswith(".pth")], f"a checkpoint was written: {new}"
    if case.guarantee in (NOTHING, FILE_KEPT):
        assert not new, f"files were written: {new}"
    else:
        assert case.guarantee in (NO_TRAINING, FILE_KEPT_LOG)
        assert all(f.startswith("log") for f in new), f"files other than the log were written: {new}"


def test_debug_shows_the_traceback(capsys):
    from recbole_attn.cli import main

    assert main(_cli_args(f"{TINY} epochs=one --debug")) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err
    assert err.strip().splitlines()[-1].startswith("recbole-attn: error: config key 'epochs'")


def test_allow_unknown_keys_accepts_the_listed_keys_only():
    from recbole_attn.config import Config
    from recbole_attn.errors import ConfigError

    cfg = tiny_config(allow_unknown_keys=["my_key"], my_key=3)
    assert Config(model="AttRec", dataset="tiny", config_dict=cfg)["my_key"] == 3
    with pytest.raises(ConfigError, match="'other_key'"):
        Config(model="AttRec", dataset="tiny", config_dict=dict(cfg, other_key=1))


def test_dataset_fields_are_known_keys():
    from recbole_attn.config import Config

    # `behavior_type` is a column of tests/fixtures/tiny/tiny.inter, not an option.
    Config(model="AttRec", dataset="tiny", config_dict=tiny_config(behavior_type=None))


def test_reliability_doc_is_up_to_date():
    assert DOC.is_file(), "run python tests/bad_input.py --doc docs/reliability.md"
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/reliability.md is out of date: run python tests/bad_input.py --doc docs/reliability.md"
    )
