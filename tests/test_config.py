"""Config layering, model resolution and the bad inputs Config rejects."""

from __future__ import annotations

import re
import sys

import pytest
import yaml

from recbole_attn.config import (
    PROPERTIES_DIR,
    Config,
    ConfigError,
    DatasetNotFoundError,
    builtin_model_names,
    plugin_models,
)
from conftest import REPO, tiny_config


def test_plugin_yaml_is_loaded_on_top_of_recboles_defaults():
    config = Config(model="AttRec", dataset="tiny", config_dict={"data_path": tiny_config()["data_path"]})
    assert config["embedding_size"] == 150  # our AttRec.yaml (RecBole: 64)
    assert config["learner"] == "adagrad" and config["learning_rate"] == 0.05  # ours over RecBole's adam, 0.001
    assert config["seq_window"] == 5
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}  # RecBole's sequential preset
    assert config["train_neg_sample_args"]["sample_num"] == 1  # ours, over RecBole's `~`
    assert config["detect_anomaly"] is False  # our overall.yaml


def test_files_then_dict_then_command_line_win(tmp_path, monkeypatch):
    f = tmp_path / "user.yaml"
    f.write_text("embedding_size: 32\nseq_window: 3\nomega: 0.1\n")
    monkeypatch.setattr(sys, "argv", ["x", "--omega=0.9"])
    config = Config(
        model="AttRec",
        dataset="tiny",
        config_file_list=[str(f)],
        config_dict={"data_path": tiny_config()["data_path"], "seq_window": 4},
    )
    assert config["embedding_size"] == 32  # file over our YAML
    assert config["seq_window"] == 4  # dict over file
    assert config["omega"] == 0.9  # command line over everything


def test_builtin_model_gets_recboles_own_yaml():
    config = Config(model="SASRec", dataset="tiny", config_dict={"data_path": tiny_config()["data_path"]})
    assert config["n_layers"] == 2 and config["hidden_act"] == "gelu"
    assert config["detect_anomaly"] is False


def test_plugin_names_never_shadow_builtins():
    builtins = {name.lower() for name in builtin_model_names()}
    assert "sasrec" in builtins and "din" in builtins
    for name in plugin_models():
        assert name.lower() not in builtins


def test_unknown_model_lists_plugin_and_builtin_models():
    with pytest.raises(ConfigError) as err:
        Config(model="NoSuchModel", dataset="ml-100k")
    message = str(err.value)
    assert "NoSuchModel" in message and "AttRec" in message and "SASRec" in message


def test_missing_dataset_names_the_paths_searched(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        Config(model="AttRec", dataset="nowhere", config_dict={"data_path": str(tmp_path)})
    assert str(tmp_path / "nowhere" / "nowhere.inter") in str(err.value)


@pytest.mark.parametrize(
    "key, value", [("seq_window", "five"), ("omega", "high"), ("use_timing_signal", 3)]
)
def test_wrong_type_for_a_plugin_key_names_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        Config(model="AttRec", dataset="tiny", config_dict=tiny_config(**{key: value}))


def test_wrong_type_in_a_yaml_file_names_the_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("seq_window: [1, 2]\n")
    with pytest.raises(ConfigError, match="'seq_window'.*AttRec.yaml"):
        Config(model="AttRec", dataset="tiny", config_file_list=[str(f)], config_dict=tiny_config())


def test_int_is_accepted_for_a_float_key():
    config = Config(model="AttRec", dataset="tiny", config_dict=tiny_config(omega=1))
    assert config["omega"] == 1


def _model_yamls():
    return sorted((PROPERTIES_DIR / "model").glob("*.yaml"))


@pytest.mark.parametrize("path", _model_yamls(), ids=lambda p: p.stem)
def test_every_yaml_key_is_commented_with_its_type(path):
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert re.search(r"#\s*\((int|float|str|bool|dict|list)\)", line), line


@pytest.mark.parametrize("name", sorted(plugin_models()))
def test_every_key_a_plugin_model_reads_is_in_its_yaml_or_recboles(name):
    import inspect

    from recbole.config import Config as RecBoleConfig

    source = inspect.getsource(sys.modules[plugin_models()[name].__module__])
    read = set(re.findall(r"config\[\"(\w+)\"\]", source))
    ours = set(yaml.safe_load((PROPERTIES_DIR / "model" / f"{name}.yaml").read_text()))
    recbole = set(RecBoleConfig(model="BPR", dataset="ml-100k").final_config_dict)
    missing = read - ours - recbole
    assert not missing, f"{name} reads keys no YAML defines: {missing}"


def test_properties_are_at_the_top_level_and_in_the_package():
    assert (REPO / "properties" / "model" / "AttRec.yaml").is_file()
    assert (PROPERTIES_DIR / "model" / "AttRec.yaml").is_file()
    assert PROPERTIES_DIR.parent.name == "recbole_attn"


def test_sequential_ce_model_needs_no_negative_sampling_setting():
    # RecBole 1.2.1 alone raises "train_neg_sample_args ... should be None" for SASRec.
    config = Config(model="SASRec", dataset="ml-100k")
    assert config["train_neg_sample_args"]["distribution"] == "none"
    with pytest.raises(ValueError, match="should be None"):
        Config(
            model="SASRec",
            dataset="ml-100k",
            config_dict={"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
        )


def _all_yamls():
    return sorted(PROPERTIES_DIR.rglob("*.yaml"))


@pytest.mark.parametrize("path", _all_yamls(), ids=lambda p: str(p.relative_to(PROPERTIES_DIR)))
def test_every_range_in_our_yamls_parses(path):
    """Each `[range]` ending a key's comment (nested keys too) is one the checks enforce."""
    from recbole_attn.checks import Range, trailing_range

    for line in path.read_text().splitlines():
        if "#" not in line or line.lstrip().startswith("#") or ":" not in line.split("#")[0]:
            continue
        text = trailing_range(line.split("#", 1)[1].strip())
        if text:
            Range(text)  # raises ValueError naming the range


@pytest.mark.parametrize("path", _all_yamls(), ids=lambda p: str(p.relative_to(PROPERTIES_DIR)))
def test_every_default_fits_its_documented_type_and_range(path):
    from recbole_attn.checks import yaml_specs

    specs = yaml_specs(path)
    defaults = {key: spec.default for key, spec in specs.items()}
    assert specs or path.name == "overall.yaml"
    for spec in specs.values():
        assert spec.problem(spec.default, defaults) is None, spec


@pytest.mark.parametrize(
    "text, good, bad",
    [
        ("[>=1]", [1, 7], [0, -1]),
        ("[>0]", [0.1, 3], [0, -2.0]),
        ("[0, 1]", [0, 0.5, 1], [-0.1, 1.5]),
        ("[0, 1)", [0, 0.99], [1, 2]),
        ("(0, 1]", [0.01, 1], [0, 1.01]),
        ("[1, number of items]", [1, 10**9], [0]),
        ("[>=2, even]", [2, 100], [1, 7]),
        ("[each >=1]", [[1, 2], [80]], [[1, 0]]),
        ("[dist, inner]", ["dist", "inner"], ["Dist", "cosine"]),
    ],
)
def test_ranges_accept_and_refuse(text, good, bad):
    from recbole_attn.checks import Range

    r = Range(text)
    assert all(r.problem("k", v, {}) is None for v in good)
    assert all(r.problem("k", v, {}) for v in bad)


def test_cross_key_ranges_read_the_other_key():
    from recbole_attn.checks import Range

    assert Range("[>=1, divides hidden_size]").problem("n", 3, {"hidden_size": 16}) == "n (3) must divide hidden_size (16)"
    assert Range("[>=1, divides hidden_size]").problem("n", 4, {"hidden_size": 16}) is None
    assert Range("[>=1, divisible by n_heads]").problem("h", 30, {"n_heads": 4})


def test_a_range_in_a_later_yaml_replaces_an_earlier_one_and_none_keeps_it():
    from recbole_attn.checks import specs_for

    specs = specs_for("AttRec", "tiny", plugin=True)
    assert specs["embedding_size"].range.text == "[>=2, even]"
    assert specs["train_batch_size"].range.text == "[>=1]"  # AttRec.yaml documents none


def test_known_keys_are_derived_from_yamls_and_code():
    from recbole_attn.checks import known_keys

    keys = known_keys()
    assert {"epochs", "seq_window", "omega", "MAX_ITEM_LIST_LENGTH", "nproc", "local_rank"} <= keys
    assert {"list_length", "trust_checkpoint", "allow_unknown_keys", "train_samples"} <= keys
    assert "epoch" not in keys and "seq_windw" not in keys


def _fake_dataset(root, name):
    """Headers (and one row) of the atomic files the presets name, so Config finds the dataset."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\tbehavior_type:token\n1\t1\t1\t1\tpv\n"
    )
    (folder / f"{name}.item").write_text("item_id:token\tcategories:token_seq\tcategory:token\n1\t1 2\tc\n")


PRESET_RUNS = [
    ("cpu-{}.yaml", ("ml-100k", "beauty"), ("SASRec", "SASRecF", "GRU4Rec", "BERT4Rec", "FDSA", "AttRec", "NOVABERT", "AttnBERT4Rec"), {}),
    ("cpu-{}.yaml", ("ml-100k",), ("NOVABERT",), {"fusion_type": "add", "attention_type": "invasive"}),
    ("cpu-{}.yaml", ("ml-100k",), ("AttnBERT4Rec",), {"item_side_fields": [], "train_samples": "window"}),
    (
        "cpu-{}.yaml",
        ("ml-100k",),
        ("AttnDIN", "AttnDIEN", "ATRank", "BST"),
        {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}},
    ),
    ("cpu-ctr-{}.yaml", ("ml-100k", "taobao"), ("AttnDIN", "AttnDIEN", "ATRank", "BST", "DIN", "DIEN"), {}),
    ("cpu-ctr-{}.yaml", ("beauty",), ("AttnDIN", "AttnDIEN", "BST", "DIN", "DIEN"), {}),  # no action field: no ATRank
    ("cpu-ctr-{}.yaml", ("ml-100k",), ("ATRank",), {"single_group": True, "use_time": False}),
    ("cpu-ctr-{}.yaml", ("ml-100k",), ("AttnDIN",), {"activation": "prelu", "attention_activation": "prelu", "reg_type": "l2"}),
    ("cpu-prm-{}.yaml", ("ml-100k", "beauty"), ("PRM",), {"use_personal_vector": False, "use_rank_embedding": False}),
    # the reference protocol (benchmarks/reference.sh)
    ("ref-{}.yaml", ("ml-100k", "beauty"), ("SASRec", "SASRecF", "GRU4Rec", "FDSA", "AttRec", "NOVABERT"), {}),
    ("ref-{}.yaml", ("ml-100k",), ("BERT4Rec", "AttnBERT4Rec"), {"MAX_ITEM_LIST_LENGTH": 21}),
    ("ref-{}.yaml", ("beauty",), ("BERT4Rec",), {"MAX_ITEM_LIST_LENGTH": 21}),
    ("ref-{}.yaml", ("beauty",), ("AttnBERT4Rec",), {"MAX_ITEM_LIST_LENGTH": 21, "item_side_fields": []}),
    ("ref-{}.yaml", ("ml-100k", "beauty"), ("NOVABERT",), {"MAX_ITEM_LIST_LENGTH": 21, "attention_type": "invasive"}),
    ("ref-{}.yaml", ("ml-100k",), ("NOVABERT",), {"MAX_ITEM_LIST_LENGTH": 21, "behavior_side_fields": ["rating", "timestamp"]}),
    ("ref-len50.yaml", ("ml-100k",), ("SASRec", "BERT4Rec"), {"MAX_ITEM_LIST_LENGTH": 51}),
    ("ref-ctr-{}.yaml", ("ml-100k", "taobao"), ("AttnDIN", "AttnDIEN", "ATRank", "BST", "DIN", "DIEN"), {}),
    ("ref-prm-{}.yaml", ("ml-100k",), ("PRM",), {"use_personal_vector": False}),
]


@pytest.mark.parametrize("preset, datasets, models, overrides", PRESET_RUNS, ids=lambda v: v if isinstance(v, str) else None)
def test_presets_pass_the_strict_checks(preset, datasets, models, overrides, tmp_path):
    """Every benchmark preset with the models (and overrides) benchmarks/*.sh run it with."""
    for dataset in datasets:
        if dataset != "ml-100k":
            _fake_dataset(tmp_path, dataset)
        files = [str(REPO / "benchmarks" / "presets" / preset.format(dataset))]
        for model in models:
            Config(model=model, dataset=dataset, config_file_list=files, config_dict={"data_path": str(tmp_path), **overrides})


def test_prm_ranker_config_reads_the_rerankers_keys():
    """The ranker of a PRM run reads PRM's config dict and files: PRM's keys are known to it."""
    from recbole_attn.quick_start import ranker_config

    cfg = tiny_config(list_length=10, prm_holdout_ratio=0.2)
    rerank = Config(model="PRM", dataset="tiny", config_dict=cfg)
    assert ranker_config(rerank, "SASRec", config_dict=cfg)["list_length"] == 10
