"""Every RecBole 1.2.1 built-in trains one epoch on the tiny fixture through our runner.

The model names come from RecBole's own sources (``recbole_attn.config.builtin_models``),
not from a list kept here; a model is skipped only where its optional package is not
installed, and the skip reason names the package. ``tests/conftest.py`` prints the models
that ran and the ones skipped at the end of ``pytest -q``.
"""

from __future__ import annotations

import ast
import importlib
import math
import pkgutil
import warnings
from pathlib import Path

import pytest

from conftest import tiny_config
from recbole_attn import config as rc
from recbole_attn import objective_function
from recbole_attn.config import (
    ConfigError,
    builtin_models,
    missing_optional_packages,
    missing_packages_message,
    pip_command,
)

# Top-level imports of RecBole's model sources that RecBole and this package require.
REQUIRED_IMPORTS = {"recbole", "torch", "numpy", "scipy", "sklearn", "math", "random", "copy",
                    "sys", "os", "warnings", "typing", "logging", "itertools", "enum",
                    "collections", "__future__"}
# Imported only with a non-default option (LDiffRec n_cate > 1; NNCF neigh_info_method=louvain),
# or provided by recbole_attn.compat where not installed (torch_scatter: KGIN, MCCLK).
OPTION_ONLY_IMPORTS = {"kmeans_pytorch", "networkx", "community", "torch_scatter"}

# Sizes small enough that one epoch of each of ~90 models fits in a CI minute or two.
TINY_SIZES = {
    "epochs": 1,
    "embedding_size": 8,
    "hidden_size": 8,
    "inner_size": 16,
    "kg_embedding_size": 8,
    "train_batch_size": 128,
    "eval_batch_size": 128,
    "reproducibility": True,
}
RANKING_METRICS = {"recall", "ndcg", "mrr", "hit", "precision", "map"}
LABELLED = {"metrics": ["AUC", "LogLoss"], "valid_metric": "AUC"}
ITEM_CATEGORY = {"item": ["item_id", "category"]}
INTER = ["user_id", "item_id", "rating", "timestamp"]
KG = {"kg": ["head_id", "relation_id", "tail_id"], "link": ["item_id", "entity_id"]}

# What each RecBole model package needs of the dataset (RecBole's quick-start files set the
# split and protocol by model type; these add the fixture's fields and matching metrics).
BY_TYPE = {
    "general_recommender": {},
    "sequential_recommender": {
        "load_col": {"inter": INTER, **ITEM_CATEGORY},
        "selected_features": ["category"],
        "item_attribute": "category",
    },
    "context_aware_recommender": {
        "load_col": {"inter": INTER, **ITEM_CATEGORY},
        "threshold": {"rating": 4},
        **LABELLED,
    },
    "knowledge_aware_recommender": {"load_col": {"inter": INTER, **KG}},
    "exlib_recommender": {"load_col": {"inter": INTER, **ITEM_CATEGORY}, "threshold": {"rating": 4}, **LABELLED},
}
# GRU4RecKG and KSR skip RecBole's sequential quick-start file, which sets this split.
SEQUENTIAL_SPLIT = {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"}}
# Models that need more than their package's settings: labelled metrics (DIN, DIEN),
# pretrained entity (and relation) vectors, or sizes the tiny ones break.
BY_MODEL = {
    "DIN": LABELLED,
    "DIEN": LABELLED,
    "ConvNCF": {"embedding_size": 64, "cnn_channels": [1, 4, 4, 4, 4]},  # strides 4, 4, 2, 2: 64 -> 1
    "FEARec": {"n_layers": 2},  # its filter slide step divides by n_layers - 1
    "GRU4RecCPR": {"reranker_CAN_NUM": 20},  # top-k candidates, at most the 61 item ids
    "SASRecCPR": {"reranker_CAN_NUM": 20},
    "RaCT": {"metrics_k": 10},  # its critic's NDCG@k, at most the 61 item ids
    "GRU4RecKG": {
        "load_col": {"inter": INTER, **KG, "ent": ["ent_id", "ent_emb"]},
        "additional_feat_suffix": ["ent"],
        "alias_of_item_id": ["ent_id"],
        "preload_weight": {"ent_id": "ent_emb"},
        **SEQUENTIAL_SPLIT,
    },
    "KSR": {
        "load_col": {
            "inter": INTER,
            **KG,
            "ent": ["ent_id", "ent_emb"],
            "rel": ["rel_id", "rel_emb"],
        },
        "additional_feat_suffix": ["ent", "rel"],
        "alias_of_entity_id": ["ent_id"],
        "alias_of_relation_id": ["rel_id"],
        "preload_weight": {"ent_id": "ent_emb", "rel_id": "rel_emb"},
        **SEQUENTIAL_SPLIT,
    },
}
# Models trained in stages, each from the weights the previous one saved
# (``<model>-tiny-<epoch>.pth`` in checkpoint_dir); the last stage is the one checked.
STAGES = {"S3Rec": ["pretrain", "finetune"], "RaCT": ["actor_pretrain", "critic_pretrain", "finetune"]}


def model_config(model: str, **overrides) -> dict:
    """The config dict that trains ``model`` one epoch on the tiny fixture."""
    package = builtin_models()[model].split(".")[2]
    cfg = dict(tiny_config(), model=model, dataset="tiny", **TINY_SIZES)
    for part in (BY_TYPE[package], BY_MODEL.get(model, {}), overrides):
        cfg.update(part)
    return cfg


def check_metrics(result: dict, cfg: dict) -> None:
    """Valid and test results hold every configured metric, each a finite number."""
    expected = {
        f"{m.lower()}@{k}" if m.lower() in RANKING_METRICS else m.lower()
        for m in cfg["metrics"] for k in (cfg["topk"] if m.lower() in RANKING_METRICS else [None])
    }
    for part in ("best_valid_result", "test_result"):
        metrics = result[part]
        assert metrics and set(metrics) == expected, f"{part}: {metrics}, expected {expected}"
        assert all(math.isfinite(v) for v in metrics.values()), f"{part}: {metrics}"


@pytest.mark.parametrize("model", sorted(builtin_models()))
def test_builtin_trains_one_epoch_through_our_runner(model, tmp_path):
    missing = missing_optional_packages(model)
    if missing:
        pytest.skip(missing_packages_message(model, missing))
    cfg = model_config(model, checkpoint_dir=str(tmp_path))
    *pretraining, last = STAGES.get(model, [None])
    for stage in pretraining:
        objective_function(config_dict=dict(cfg, train_stage=stage, pretrain_epochs=1, save_step=1), saved=False)
        cfg["pre_model_path"] = str(tmp_path / f"{model}-tiny-1.pth")
    if last is not None:
        cfg["train_stage"] = last
    check_metrics(objective_function(config_dict=cfg, saved=False), cfg)


# -- model lookup ----------------------------------------------------------------------


def test_builtin_models_are_recboles_registry_including_the_decision_tree_ones():
    """The static read finds what importing RecBole's packages finds, plus exlib's models."""
    from recbole.model.abstract_recommender import AbstractRecommender

    imported = {}
    for sub in rc.RECBOLE_MODEL_TYPES[:-1]:  # exlib_recommender imports lightgbm / xgboost
        package = importlib.import_module(f"recbole.model.{sub}")
        for mod in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{mod.name}")
            imported.update(
                (name, module.__name__)
                for name, obj in vars(module).items()
                if isinstance(obj, type) and issubclass(obj, AbstractRecommender)
                and obj.__module__ == module.__name__ and name.lower() == mod.name
            )
    exlib = {"LightGBM": "recbole.model.exlib_recommender.lightgbm",
             "XGBoost": "recbole.model.exlib_recommender.xgboost"}
    assert builtin_models() == {**imported, **exlib}
    assert len(imported) > 80


def test_every_optional_import_of_recboles_models_is_known():
    """A RecBole model module importing a package outside RecBole's requirements is either
    in OPTIONAL_PACKAGES (checked at lookup) or needs it only with a non-default option."""
    root = Path(importlib.util.find_spec("recbole.model").submodule_search_locations[0])
    optional = {}
    # exlib_recommender/__init__.py imports both of its models: either needs both packages
    exlib = "\n".join(p.read_text() for p in sorted((root / "exlib_recommender").glob("*.py")))
    for name, module in builtin_models().items():
        source = (root / module.split(".")[2] / f"{module.split('.')[3]}.py").read_text()
        if "exlib_recommender" in module:
            source += "\n" + exlib
        with warnings.catch_warnings():  # RecBole's docstrings hold invalid escapes
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(source)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for top in {n.split(".")[0] for n in names} - REQUIRED_IMPORTS - OPTION_ONLY_IMPORTS:
                optional.setdefault(name, set()).add(top)
    assert optional == {model: set(packages) for model, packages in rc.OPTIONAL_PACKAGES.items()}


def test_missing_optional_package_fails_before_any_data_is_loaded(monkeypatch):
    import recbole_attn.quick_start as qs

    monkeypatch.setitem(rc.OPTIONAL_PACKAGES, "BPR", ("no_such_package",))
    monkeypatch.setattr(qs, "create_dataset", lambda config: pytest.fail("data was loaded"))
    with pytest.raises(ConfigError) as error:
        objective_function(config_dict=model_config("BPR"), saved=False)
    message = str(error.value)
    assert "\n" not in message
    assert message == "model 'BPR' needs the optional package 'no_such_package', not installed: pip install no_such_package"


@pytest.mark.skipif(
    any(importlib.util.find_spec(p) for p in ("lightgbm", "xgboost")), reason="lightgbm or xgboost is installed"
)
def test_decision_tree_models_without_their_packages_name_both():
    with pytest.raises(ConfigError) as error:
        rc.get_model("LightGBM")
    assert str(error.value) == (
        "model 'LightGBM' needs the optional packages 'lightgbm', 'xgboost', not installed: "
        "pip install lightgbm; pip install xgboost"
    )


def test_pip_command_of_a_package():
    assert pip_command("lightgbm") == "pip install lightgbm"
    assert "dgl.ai" in pip_command("dgl")
