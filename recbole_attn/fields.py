"""Which fields a run loads and which each model reads, for any dataset.

Defaults are dataset-agnostic: every column of the atomic files is loaded
(``load_col: ~`` in ``properties/overall.yaml``) unless the user or a dataset preset
narrows it, and each model takes its inputs from the field types of what is loaded.
This module

- reads the atomic files' headers (``header_fields``: ``atomic_fields`` per source, so an
  error can list what the files hold, loaded or not; ``dataset_fields``, every file's
  field names, which the strict configuration accepts as keys);
- fills the defaults that depend on the dataset (``set_field_defaults``, called by
  ``Config``): the time field when the split or the model orders by time, RecBole's
  ``selected_features`` (SASRecF, FDSA, GRU4RecF) and ATRank without a behaviour field;
- checks the fields a model's options name (``check_model_fields``);
- describes the fields a built model reads (``fields_used``), logged once per run.
"""

from __future__ import annotations

from pathlib import Path

from recbole.utils import ModelType

SOURCES = ("inter", "item", "user")
SIDE_TYPES = ("token", "token_seq")

# Model option -> the atomic file whose fields it names (options of our model YAMLs and
# RecBole's; an option is checked only for a model whose YAML defines it).
FIELD_OPTIONS = {
    "item_fields": "item",
    "user_fields": "user",
    "item_side_fields": "item",
    "item_feature_fields": "item",
    "behavior_side_fields": "inter",
    "behavior_field": "inter",
    "selected_features": "item",
}


def header_fields(path: str | Path, separator: str = "\t", encoding: str = "utf-8") -> dict[str, str]:
    """{field: type} of an atomic file's header line (``name:type`` columns, in order)."""
    with open(path, encoding=encoding) as f:
        header = f.readline().rstrip("\r\n")
    columns = (c.partition(":") for c in header.split(separator) if c.strip())
    return {field.strip(): ftype.strip() for field, _, ftype in columns}


def atomic_fields(config) -> dict[str, dict[str, str]]:
    """source -> {field: type} read from the headers of ``<data_path>/<dataset>.<source>``.

    Sources without a file map to {}. With ``benchmark_filename`` the inter fields are
    those of the first part file.
    """
    folder = Path(config["data_path"])
    parts = config["benchmark_filename"]
    out: dict[str, dict[str, str]] = {}
    for source in SOURCES:
        name = f"{config['dataset']}.{parts[0]}.inter" if source == "inter" and parts else f"{config['dataset']}.{source}"
        path = folder / name
        out[source] = (
            header_fields(path, config["field_separator"] or "\t", config["encoding"] or "utf-8") if path.is_file() else {}
        )
    return out


def dataset_fields(folder: str | Path, dataset: str, separator: str = "\t", encoding: str = "utf-8") -> set[str]:
    """Field names in the headers of every ``<folder>/<dataset>.*`` atomic file (empty if
    none; a file that cannot be read as text is skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    fields: set[str] = set()
    for path in folder.iterdir():
        if not path.name.startswith(dataset + "."):
            continue
        try:
            fields.update(header_fields(path, separator, encoding))
        except (OSError, UnicodeDecodeError):
            continue
    return fields


def loaded_fields(config, files: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The part of ``files`` that ``load_col`` / ``unload_col`` let RecBole load (RecBole's rules)."""
    load_col, unload_col = config["load_col"], config["unload_col"] or {}
    out = {}
    for source, fields in files.items():
        if load_col is None or load_col.get(source) == "*":
            keep = set(fields)
        else:
            keep = set(load_col.get(source) or [])
        keep -= set(unload_col.get(source) or [])
        out[source] = {f: t for f, t in fields.items() if f in keep}
    return out


def describe_files(config, files: dict[str, dict[str, str]], loaded: dict[str, dict[str, str]]) -> str:
    """'tiny.inter: user_id:token, ... ; tiny.item: ... (not loaded: ...)' for error messages."""
    parts = []
    for source, fields in files.items():
        if not fields:
            continue
        text = ", ".join(f"{f}:{t}" for f, t in fields.items())
        skipped = [f for f in fields if f not in loaded[source]]
        if skipped:
            text += f" (not loaded: {', '.join(skipped)})"
        parts.append(f"{config['dataset']}.{source}: {text}")
    return "; ".join(parts) or f"no atomic files in {config['data_path']}"


class FieldDefaults:
    """Dataset-dependent defaults and field checks of one config (see ``set_field_defaults``)."""

    def __init__(self, config, model_keys: set[str], preset_keys: set[str], error: type[Exception]):
        self.config, self.cfg = config, config.final_config_dict
        self.model_keys, self.error = model_keys, error
        self.user_keys = set(config.external_config_dict) | set(preset_keys)
        self.files = atomic_fields(config)
        self.notes: list[str] = []

    @property
    def loaded(self) -> dict[str, dict[str, str]]:
        return loaded_fields(self.cfg, self.files)

    def where(self) -> str:
        return describe_files(self.cfg, self.files, self.loaded)

    def require(self, key: str, field: str, source: str, fix: str) -> None:
        """``field`` must be a loaded column of ``source``; the error lists the files' fields."""
        value = self.cfg[key] if key in self.cfg else field
        if field in self.loaded[source]:
            return
        model, dataset = self.cfg["model"], self.cfg["dataset"]
        ids = (self.cfg["USER_ID_FIELD"], self.cfg["ITEM_ID_FIELD"])
        available = ", ".join(f for f in self.loaded[source] if f not in ids) or "none"
        label = "interaction" if source == "inter" else source
        kind = "interaction field" if source == "inter" else f"{source} feature field"
        if field in self.files[source]:
            raise self.error(
                f"{model}: {key}={value!r} names {kind} '{field}', which {dataset}.{source} holds "
                f"but the config does not load. Available {label} fields: {available} (fields of "
                f"the files: {self.where()}). Add it to load_col: {{{source}: [..., {field}]}} "
                f"(or drop it from unload_col), or {fix}."
            )
        raise self.error(
            f"{model}: {key}={value!r} names {kind} '{field}', which is not a column of "
            f"{dataset}.{source}. Available {label} fields: {available} (fields of the files: "
            f"{self.where()}). {fix[0].upper() + fix[1:]}."
        )

    def time_field(self) -> None:
        """The time field is loaded when the split orders by time or the model is sequential."""
        order = (self.cfg["eval_args"] or {}).get("order")
        reasons = []
        if order == "TO":
            reasons.append("eval_args order: TO sorts each user's interactions by time")
        if self.cfg["MODEL_TYPE"] == ModelType.SEQUENTIAL:
            reasons.append(f"{self.cfg['model']} is sequential: RecBole orders histories by time")
        if not reasons:
            return
        field = self.cfg["TIME_FIELD"]
        fix = (
            "set TIME_FIELD to the interaction column that orders a user's interactions ("
            + "; ".join(reasons)
            + ")"
            + ("" if self.cfg["MODEL_TYPE"] == ModelType.SEQUENTIAL else ", or use eval_args order: RO")
        )
        if not field:
            raise self.error(f"{self.cfg['model']}: TIME_FIELD is not set; {fix} (fields of the files: {self.where()}).")
        load_col = self.cfg["load_col"]
        if field in self.files["inter"] and field not in self.loaded["inter"]:
            if isinstance(load_col, dict) and isinstance(load_col.get("inter"), list) and field not in (
                (self.cfg["unload_col"] or {}).get("inter") or []
            ):
                self.cfg["load_col"] = dict(load_col, inter=[*load_col["inter"], field])
                self.notes.append(f"time field {field} added to load_col inter ({'; '.join(reasons)})")
                return
        self.require("TIME_FIELD", field, "inter", fix)

    def selected_features(self) -> None:
        """RecBole's SASRecF/FDSA/GRU4RecF: default to the item token/token_seq features.

        RecBole's model YAMLs set ['class'] (ml-100k's genres); on any other dataset the
        default, unless the user or our dataset preset sets it, is every loaded item
        token/token_seq feature.
        """
        if "selected_features" not in self.model_keys or "selected_features" in self.user_keys:
            return
        if self.cfg["dataset"] == "ml-100k":
            return
        iid = self.cfg["ITEM_ID_FIELD"]
        features = [f for f, t in self.loaded["item"].items() if f != iid and t in SIDE_TYPES]
        if not features:
            raise self.error(
                f"{self.cfg['model']} reads item features (selected_features), but dataset "
                f"'{self.cfg['dataset']}' loads no item token or token_seq field (fields of the "
                f"files: {self.where()}). Set selected_features, or use a model without item "
                "features (e.g. SASRec)."
            )
        self.cfg["selected_features"] = features
        self.notes.append(f"selected_features (unset) = the item token/token_seq features: {', '.join(features)}")

    def behavior_field(self) -> None:
        """ATRank on data without its behaviour field: every behaviour is one action 'all'.

        Applies only when neither the user nor a preset set ``behavior_field`` and the
        files lack the default one: the action is then derived, as for a rating, from the
        time field by one range that holds every value, in one group ('ATRank with one
        group'). A behaviour field the files hold but the config does not load is an error.
        """
        if "behavior_field" not in self.model_keys or "behavior_field" in self.user_keys:
            return
        field = self.cfg["behavior_field"]
        if not field or field in self.files["inter"]:
            return
        time = self.cfg["TIME_FIELD"]
        sizes = self.cfg["group_embedding_size"]
        size = next(iter(sizes.values())) if isinstance(sizes, dict) and sizes else sizes
        self.cfg.update(
            behavior_field=time,
            rating_actions={"all": [float("-inf"), float("inf")]},
            behavior_groups={"all": ["all"]},
            single_group=True,
            target_action="all",
            group_embedding_size={"all": size},
        )
        self.notes.append(
            f"no behaviour field: '{field}' is not a column of {self.cfg['dataset']}.inter, so every "
            "behaviour is one action 'all' in one group (ATRank with one group); set behavior_field "
            "to the column holding the action to use one"
        )

    def model_fields(self) -> None:
        """Every field the model's options name is a loaded column of its file."""
        for key, source in FIELD_OPTIONS.items():
            if key not in self.model_keys or key not in self.cfg or self.cfg[key] is None:
                continue
            value = self.cfg[key]
            for field in [value] if isinstance(value, str) else list(value):
                self.require(key, str(field), source, f"set {key} to fields of the .{source} file")


def set_field_defaults(config, model_keys: set[str], preset_keys: set[str], error: type[Exception]) -> list[str]:
    """Fill the dataset-dependent defaults of ``config`` in place and check its fields.

    Args:
        config: a ``recbole_attn.config.Config`` whose final dict is built.
        model_keys: the keys of the model's YAML (ours for a plugin, RecBole's for a built-in).
        preset_keys: the keys our dataset preset set for this model.
        error: the exception type raised for a missing field.

    Returns:
        notes on what was defaulted, for the run's log.
    """
    defaults = FieldDefaults(config, model_keys, preset_keys, error)
    defaults.time_field()
    defaults.selected_features()
    defaults.behavior_field()
    defaults.model_fields()
    return defaults.notes


# ------------------------------------------------------------------ what a built model reads


def _source_name(source) -> str:
    value = source.value if hasattr(source, "value") else str(source)
    return {"inter": "interaction"}.get(value, value)


def fields_used(model, dataset) -> list[str]:
    """One line per recommender in ``model`` (PRM's ranker included) naming the fields it reads.

    A model may declare ``side_fields_used: dict[str, list[str]]`` (label -> fields);
    otherwise the fields are gathered from its ``FeatureTableEmbedding`` modules, its
    attributes named ``*fields`` / ``selected_features`` (lists or dicts of field names),
    RecBole's feature layers (``field_names``) and ATRank's behaviour vocabulary, and are
    grouped by the file they come from.
    """
    from recbole.model.abstract_recommender import AbstractRecommender

    from recbole_attn.layers import FeatureTableEmbedding

    lines = []
    nested = [
        (name, m)
        for name, m in model.named_modules()
        if name and isinstance(m, AbstractRecommender)
    ]
    for name, sub in nested:
        if not any(name.startswith(other + ".") for other, _ in nested):
            for line in fields_used(sub, dataset):
                lines.append(f"{type(model).__name__} {name}: {line}")
    label = type(model).__name__
    declared = getattr(model, "side_fields_used", None)
    if isinstance(declared, dict):
        text = "; ".join(
            f"{key.replace('_', ' ')}{'' if 'field' in key else ' side fields'}: {', '.join(map(str, v)) or 'none'}"
            for key, v in declared.items()
        )
        return [f"{label} {text}", *lines]

    used: dict[str, list[str]] = {}
    ids = {dataset.uid_field, dataset.iid_field}

    def add(fields) -> None:
        for field in fields:
            if field in dataset.field2source and field not in ids and field not in sum(used.values(), []):
                used.setdefault(_source_name(dataset.field2source[field]), []).append(field)

    skip = tuple(name + "." for name, _ in nested)
    for name, module in model.named_modules():
        if name.startswith(skip):
            continue
        if isinstance(module, FeatureTableEmbedding):
            add(module.fields)
        names = getattr(module, "field_names", None)  # RecBole's feature embedding layers
        if isinstance(names, dict):
            for fields in names.values():
                add(fields)
        elif isinstance(names, (list, tuple)):
            add(names)
    for attr, value in vars(model).items():
        if attr.endswith("fields") or attr == "selected_features":
            if isinstance(value, (list, tuple, dict)) and all(isinstance(v, str) for v in value):
                add(list(value))
    parts = [f"{source} features: {', '.join(fields)}" for source, fields in used.items()]
    vocab = getattr(model, "vocab", None)  # ATRank's actions
    if vocab is not None and getattr(vocab, "field", None) in dataset.field2type:
        if vocab.derived and vocab.actions == ["all"]:
            parts.append("behaviour field: none (every behaviour one action 'all', one group)")
        else:
            parts.append(f"behaviour field: {vocab.field} (actions: {', '.join(vocab.actions)}; groups: {', '.join(vocab.groups)})")
    text = "; ".join(parts) if parts else "no side features (item ids only)"
    return [f"{label} {text}", *lines]


