"""RecBole's ``Config``, taught to find plugin models, their YAML and CPU distributed runs.

Layering, lowest first (each later source wins):

1. RecBole's internal files (``overall.yaml``, the model's own YAML for a built-in,
   dataset presets, the quick-start files for the model type);
2. ours: ``properties/overall.yaml``, ``properties/model/<Class>.yaml`` for a plugin
   model, ``properties/dataset/<name>.yaml`` when we ship a preset (its top-level keys
   and its section for this model, see ``preset_for_model``);
3. the user's config files, then ``config_dict``, then ``--key=value`` on the command line.

Then the defaults that depend on the dataset's files (``recbole_attn.fields``): the time
field, RecBole's ``selected_features``, ATRank without a behaviour field, and a check
that every field a model option names is loaded.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import os
import warnings
from pathlib import Path

import recbole
import torch
import yaml

from recbole_attn import checks, compat
from recbole_attn.data.checks import check_atomic_files
from recbole_attn.errors import ConfigError, DatasetNotFoundError  # noqa: F401  (re-exported)

compat.apply()

from recbole.config import Config as RecBoleConfig  # noqa: E402
from recbole.utils import ModelType  # noqa: E402

from recbole_attn.fields import dataset_fields, set_field_defaults  # noqa: E402

PROPERTIES_DIR = Path(__file__).resolve().parent / "properties"


def plugin_models() -> dict[str, type]:
    """Name -> class of every plugin model."""
    from recbole_attn.model import MODELS

    return MODELS


# RecBole's model sub-packages, in the order recbole.utils.get_model searches them.
RECBOLE_MODEL_TYPES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)

# Built-ins that import packages outside RecBole's requirements when built or trained
# with their default options: model -> import names of the packages. Both decision-tree
# models need both packages: RecBole's exlib_recommender/__init__.py imports lightgbm and
# xgboost. (LDiffRec with n_cate > 1 needs kmeans_pytorch, NNCF with
# neigh_info_method=louvain needs networkx and python-louvain; only with that option.
# KGIN and MCCLK use torch_scatter where installed, recbole_attn.compat's stand-in if not.)
OPTIONAL_PACKAGES: dict[str, tuple[str, ...]] = {
    "LightGBM": ("lightgbm", "xgboost"),
    "XGBoost": ("xgboost", "lightgbm"),
    "KGAT": ("dgl",),
    "NCL": ("faiss",),
}


def pip_command(package: str) -> str:
    """The pip command that installs the optional package imported as ``package``."""
    if package == "faiss":  # RecBole's NCL asks faiss for GPU k-means (faiss.Kmeans(gpu=True))
        return "pip install faiss-gpu-cu12"
    if package == "dgl":  # DGL publishes builds per torch version on its own index
        return "pip install dgl (a build matching your torch: https://www.dgl.ai/pages/start.html)"
    return f"pip install {package}"


def missing_optional_packages(model: str) -> list[str]:
    """Import names of the optional packages ``model`` needs that are not installed."""
    return [p for p in OPTIONAL_PACKAGES.get(model, ()) if importlib.util.find_spec(p) is None]


def missing_packages_message(model: str, packages: list[str]) -> str:
    """One line: which optional packages ``model`` lacks and the pip command of each."""
    names = ", ".join(f"'{p}'" for p in packages)
    plural = "s" if len(packages) > 1 else ""
    return (
        f"model '{model}' needs the optional package{plural} {names}, not installed: "
        + "; ".join(pip_command(p) for p in packages)
    )


@functools.lru_cache(maxsize=None)
def builtin_models() -> dict[str, str]:
    """Class name -> module of every RecBole built-in model.

    Read from RecBole's sources with RecBole's own rule (class ``X`` defined in
    ``recbole/model/<type>/<x lower>.py``), without importing them, so the models of
    ``exlib_recommender`` are listed when lightgbm / xgboost are not installed.
    """
    spec = importlib.util.find_spec("recbole.model")
    root = Path(next(iter(spec.submodule_search_locations)))
    models: dict[str, str] = {}
    for sub in RECBOLE_MODEL_TYPES:
        for path in sorted((root / sub).glob("*.py")):
            with warnings.catch_warnings():  # RecBole's docstrings hold invalid escapes
                warnings.simplefilter("ignore", SyntaxWarning)
                tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name.lower() == path.stem:
                    models.setdefault(node.name, f"recbole.model.{sub}.{path.stem}")
    return models


def builtin_model_names() -> tuple[str, ...]:
    """Class names of RecBole's built-in models, sorted."""
    return tuple(sorted(builtin_models()))


def get_model(name: str) -> type:
    """Resolve a model name: plugin models first, then RecBole's built-ins.

    Raises:
        ConfigError: unknown name (the message lists plugin and built-in models), or a
            built-in whose optional package is not installed (the message names it and
            its pip command).
    """
    plugins = plugin_models()
    if name in plugins:
        return plugins[name]
    builtins = builtin_models()
    if name not in builtins:
        raise ConfigError(
            f"unknown model '{name}'. Plugin models: {', '.join(sorted(plugins))}. "
            f"RecBole built-in models: {', '.join(builtin_model_names())}"
        )
    missing = missing_optional_packages(name)
    if missing:
        raise ConfigError(missing_packages_message(name, missing))
    # sine.py, which turns anomaly mode on, was imported by compat
    return getattr(importlib.import_module(builtins[name]), name)


def _load_yaml(path: Path, loader) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f.read(), Loader=loader) or {}


def recbole_config_dir() -> str:
    """The folder of the installed ``recbole`` package."""
    import recbole

    return os.path.dirname(recbole.__file__)


def preset_for_model(preset: dict, model: str, path: Path) -> dict:
    """A dataset preset as ``model`` sees it: its top-level keys plus the section ``model:``.

    A preset key named after a model (capitalised, a mapping) is that model's section;
    the sections of other models are dropped, so their keys never reach this run.

    Raises:
        ConfigError: a section names no plugin or built-in model.
    """
    out = {}
    for key, value in preset.items():
        if not (isinstance(value, dict) and key[:1].isupper()):
            out[key] = value
        elif key not in plugin_models() and key not in builtin_model_names():
            raise ConfigError(f"{path}: section '{key}' names no plugin or built-in model")
    section = preset.get(model)
    if isinstance(section, dict):
        out.update(section)
    return out


class Config(RecBoleConfig):
    """``recbole.config.Config`` that also knows recbole-attn's models and presets.

    Args:
        model: a plugin or built-in model name, or a model class.
        dataset: dataset name; its atomic files live in ``<data_path>/<dataset>/``
            (``ml-100k`` is read from RecBole's wheel).
        config_file_list: YAML files, later ones win.
        config_dict: parameters, winning over files; ``--key=value`` wins over both.
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        try:
            super().__init__(model, dataset, config_file_list, config_dict)
        except ConfigError:
            raise
        except (KeyError, NotImplementedError, SyntaxError, TypeError, ValueError) as err:
            # RecBole's own checks of a configuration (before any data is read).
            raise ConfigError(f"invalid configuration: {err}") from err

    def _load_config_files(self, file_list):
        self.key_sources: dict[str, str] = {}
        return checks.load_config_files(file_list, self.yaml_loader, self.key_sources)

    def _get_model_and_dataset(self, model, dataset):
        if isinstance(model, str):
            model = get_model(model)
        elif model is None and isinstance(self.external_config_dict.get("model"), str):
            model = get_model(self.external_config_dict["model"])
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        self.plugin_defaults: dict = {}
        if model in plugin_models():
            model_yaml = PROPERTIES_DIR / "model" / f"{model}.yaml"
            if not model_yaml.is_file():
                raise FileNotFoundError(f"plugin model {model} has no YAML at {model_yaml}")
            self.plugin_defaults = _load_yaml(model_yaml, self.yaml_loader)
        overall = PROPERTIES_DIR / "overall.yaml"
        preset = PROPERTIES_DIR / "dataset" / f"{dataset}.yaml"
        self.internal_config_dict.update(_load_yaml(overall, self.yaml_loader))
        self.internal_config_dict.update(self.plugin_defaults)
        self.preset_dict = preset_for_model(_load_yaml(preset, self.yaml_loader), model, preset) if preset.is_file() else {}
        self.internal_config_dict.update(self.preset_dict)

    def _set_default_parameters(self):
        self._check_user_config()
        cfg = self.final_config_dict
        # RecBole 1.2.1's overall.yaml samples one training negative while its own check
        # requires none for a sequential model with CE loss, so `--model=SASRec` raises
        # unless the user disables sampling. Disable it unless the user set it.
        if (
            cfg.get("loss_type") == "CE"
            and cfg["MODEL_TYPE"] == ModelType.SEQUENTIAL
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            cfg["train_neg_sample_args"] = None
        super()._set_default_parameters()
        self._check_dataset_path()
        self.field_notes: list[str] = set_field_defaults(self, self._model_yaml_keys(), set(self.preset_dict), ConfigError)

    def _model_yaml_keys(self) -> set[str]:
        """Keys of the model's YAML: ours for a plugin model, RecBole's for a built-in."""
        if self.model in plugin_models():
            return set(self.plugin_defaults)
        path = Path(recbole_config_dir()) / "properties" / "model" / f"{self.model}.yaml"
        return set(_load_yaml(path, self.yaml_loader)) if path.is_file() else set()

    def _check_user_config(self) -> None:
        """Before RecBole reads any value: unknown keys, documented types and ranges, metrics."""
        cfg = self.final_config_dict
        folder = (
            os.path.join(os.path.dirname(recbole.__file__), "dataset_example", self.dataset)
            if self.dataset == "ml-100k"
            else os.path.join(str(cfg.get("data_path") or ""), self.dataset)
        )
        fields = dataset_fields(
            folder, self.dataset, str(cfg.get("field_separator") or "\t"), str(cfg.get("encoding") or "utf-8")
        )
        sources = {**getattr(self, "key_sources", {})}
        sources.update({k: "config_dict" for k in self.variable_config_dict})
        sources.update({k: "command line" for k in self.cmd_config_dict})
        checks.check_unknown_keys(self.external_config_dict, sources, cfg.get(checks.ALLOW_KEY), fields)
        specs = checks.specs_for(self.model, self.dataset, self.model in plugin_models())
        checks.check_values(cfg, specs, user_keys=list(self.external_config_dict))
        checks.check_metrics(cfg)

    def _check_dataset_path(self) -> None:
        path = Path(self.final_config_dict["data_path"])
        benchmark = self.final_config_dict.get("benchmark_filename")
        inter_files = (
            [path / f"{self.dataset}.{part}.inter" for part in benchmark]
            if benchmark
            else [path / f"{self.dataset}.inter"]
        )
        missing = [str(p.resolve()) for p in inter_files if not p.is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"dataset '{self.dataset}' not found: looked for {', '.join(missing)} "
                f"(data_path={self.external_config_dict.get('data_path', 'dataset/')!r} "
                f"from {os.getcwd()}). Put the atomic files in <data_path>/{self.dataset}/ "
                "or pass --data_path=DIR (the folder that holds the dataset's folder)."
            )
        check_atomic_files(self.final_config_dict, inter_files)

    def _init_device(self):
        """RecBole's device set-up, plus torch.distributed with gloo where CUDA is absent."""
        if "local_rank" not in self.final_config_dict or torch.cuda.is_available():
            return super()._init_device()
        cfg = self.final_config_dict
        cfg["gpu_id"] = str(cfg["gpu_id"])
        torch.distributed.init_process_group(
            backend="gloo",
            rank=cfg["local_rank"] + cfg["offset"],
            world_size=cfg["world_size"],
            init_method=f"tcp://{cfg['ip']}:{cfg['port']}",
        )
        cfg["device"] = torch.device("cpu")
        cfg["single_spec"] = False
        if cfg["local_rank"] != 0:
            cfg["state"] = "error"
            cfg["show_progress"] = False
            cfg["verbose"] = False
