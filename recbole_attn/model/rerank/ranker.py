"""The frozen ranker whose lists PRM re-ranks (``recbole_attn.model.rerank.prm``).

``load_ranker`` rebuilds it from a trusted checkpoint and checks that it fits this run
(same dataset and id mappings, split, fields, history length, full rankings);
``personal_vector_mode`` probes how its score can be split into PRM's personal vector.
See PRM's module docstring for the trust rule and the personal-vector deviation.
"""

from __future__ import annotations

import os
from logging import getLogger

import torch
from torch import nn

from recbole.model.abstract_recommender import AbstractRecommender, SequentialRecommender

from recbole_attn.errors import ConfigError


def _is_within(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def load_ranker(config, dataset, reranker: str, n_items: int) -> AbstractRecommender:
    """Rebuild the ranker from ``ranker_checkpoint`` for the re-ranker named ``reranker``
    on ``dataset`` (``n_items`` item ids incl. padding), checking trust and the dataset."""
    from recbole_attn.config import get_model
    from recbole_attn.trainer import load_checkpoint

    path = config["ranker_checkpoint"]
    if not path:
        raise ConfigError(
            "PRM needs an initial ranker: pass ranker_checkpoint=PATH (a RecBole or "
            "recbole-attn checkpoint trained on this dataset) or --ranker=SASRec to train one first"
        )
    path = str(path)
    if not os.path.isfile(path):
        raise ConfigError(f"ranker_checkpoint not found: {os.path.abspath(path)}")
    if not (config["trust_checkpoint"] or _is_within(path, config["checkpoint_dir"])):
        raise ConfigError(
            f"ranker_checkpoint {path} is outside checkpoint_dir ({config['checkpoint_dir']}); "
            "loading a RecBole checkpoint unpickles it, which can run code. If you trust the "
            "file, pass trust_checkpoint=True (or move it into checkpoint_dir)."
        )
    try:
        checkpoint = load_checkpoint(path, map_location="cpu")
        rconfig, state = checkpoint["config"], checkpoint["state_dict"]
        rname = rconfig["model"]
    except Exception as err:  # noqa: BLE001 - any failure to read is the same user error
        raise ConfigError(
            f"ranker_checkpoint {path} is unreadable ({type(err).__name__}: {err}); "
            "expected a checkpoint written by RecBole's or recbole-attn's trainer"
        ) from err
    if rname == reranker:
        raise ConfigError(
            f"ranker_checkpoint {path} is a {rname} checkpoint; the ranker must be a ranking model"
        )
    if rconfig["dataset"] != config["dataset"]:
        raise ConfigError(
            f"ranker_checkpoint {path} was trained on dataset '{rconfig['dataset']}', "
            f"not '{config['dataset']}': train the ranker on this dataset"
        )
    check_fingerprint(path, checkpoint, dataset)
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD", "LIST_SUFFIX", "ITEM_LIST_LENGTH_FIELD"):
        if rconfig[key] != config[key]:
            raise ConfigError(
                f"ranker_checkpoint {path}: field mismatch, {key}={rconfig[key]!r} in the "
                f"checkpoint vs {config[key]!r} here"
            )
    for key in ("split", "order"):  # another split could have trained the ranker on test items
        if rconfig["eval_args"][key] != config["eval_args"][key]:
            raise ConfigError(
                f"ranker_checkpoint {path} was trained with eval_args {key}="
                f"{rconfig['eval_args'][key]!r}, PRM runs with {config['eval_args'][key]!r}: "
                "the ranker must be trained on the same split (leave-one-out, order TO), "
                "or its training data may hold PRM's test items"
            )
    try:
        model_class = get_model(rname)
    except ConfigError as err:
        raise ConfigError(f"ranker_checkpoint {path}: {err}") from err
    if model_class.full_sort_predict is AbstractRecommender.full_sort_predict:
        raise ConfigError(
            f"ranker {rname} (from {path}) cannot produce full rankings: it has no "
            "full_sort_predict. Use a ranking model (e.g. SASRec, BPR, NOVABERT)."
        )
    if (
        issubclass(model_class, SequentialRecommender)
        and rconfig["MAX_ITEM_LIST_LENGTH"] != config["MAX_ITEM_LIST_LENGTH"]
    ):
        raise ConfigError(
            f"ranker {rname} was trained with MAX_ITEM_LIST_LENGTH={rconfig['MAX_ITEM_LIST_LENGTH']}, "
            f"PRM runs with {config['MAX_ITEM_LIST_LENGTH']}: pass "
            f"MAX_ITEM_LIST_LENGTH={rconfig['MAX_ITEM_LIST_LENGTH']}"
        )
    rconfig["device"] = config["device"]
    try:
        ranker = model_class(rconfig, dataset)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(
            f"cannot rebuild ranker {rname} from {path} on dataset '{config['dataset']}' "
            f"({type(err).__name__}: {err}); load the fields it was trained with (load_col)"
        ) from err
    own = ranker.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs dataset {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched or set(state) != set(own):
        detail = "; ".join(mismatched) or f"parameter names differ ({sorted(set(state) ^ set(own))[:5]})"
        raise ConfigError(
            f"ranker_checkpoint {path} does not fit dataset '{config['dataset']}' "
            f"({n_items} item ids incl. padding): item count / field mismatch: {detail}. "
            "It was trained on another dataset or other settings; train the ranker on this one."
        )
    ranker.load_state_dict(state)
    ranker.load_other_parameter(checkpoint.get("other_parameter"))
    return ranker.to(config["device"])


def check_fingerprint(path: str, checkpoint: dict, dataset) -> None:
    """The ranker's user/item id mappings must be this dataset's (same name is not enough)."""
    from recbole_attn.trainer import dataset_fingerprint

    theirs = checkpoint.get("dataset_fingerprint")
    if theirs is None:
        getLogger().warning(
            f"ranker_checkpoint {path} stores no dataset fingerprint (written by RecBole or an "
            "older recbole-attn): cannot check that it maps user/item ids as this dataset does"
        )
        return
    ours = dataset_fingerprint(dataset)
    if theirs["id_sha1"] != ours["id_sha1"]:
        raise ConfigError(
            f"ranker_checkpoint {path} was trained on dataset '{theirs['dataset']}' at "
            f"{theirs['data_path']} (id mapping {theirs['id_sha1']}), but this run's dataset "
            f"'{ours['dataset']}' at {ours['data_path']} maps user/item ids differently (id mapping "
            f"{ours['id_sha1']}): its scores would belong to other items. Train the ranker on this dataset."
        )


def probe_batch(dataset, device):
    """The first (up to) two rows of ``dataset`` on ``device``, to probe a ranker with."""
    index = torch.arange(min(2, len(dataset)))
    return dataset[index].to(device)


def personal_vector_mode(ranker: AbstractRecommender, probe, n_items: int, item_seq: str, item_seq_len: str) -> str:
    """How PRM's personal vector reads ``ranker``, checked on the rows ``probe`` (fields
    ``item_seq`` [B, L], ``item_seq_len`` [B]; ``n_items`` incl. padding): 'terms' when the
    ranker splits its score itself (``score_terms``); 'sequence' / 'user' when it exposes u
    and v_i with s_i = u . v_i; else 'score'. A ranker without full rankings is an error."""
    ranker.eval()
    try:
        with torch.no_grad():
            scores = ranker.full_sort_predict(probe)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(
            f"ranker {type(ranker).__name__} cannot produce full rankings on this dataset "
            f"(full_sort_predict raised {type(err).__name__}: {err})"
        ) from err
    if not torch.is_tensor(scores) or scores.numel() != len(probe) * n_items:
        raise ConfigError(
            f"ranker {type(ranker).__name__} cannot produce full rankings: full_sort_predict "
            f"returned {getattr(scores, 'shape', type(scores))}, expected [{len(probe)}, {n_items}]"
        )
    if callable(getattr(ranker, "score_terms", None)):
        return "terms"
    emb = getattr(ranker, "item_embedding", None)
    if not isinstance(emb, nn.Embedding) or emb.num_embeddings != n_items:
        return "score"
    if isinstance(ranker, SequentialRecommender):
        try:
            with torch.no_grad():
                u = ranker.forward(probe[item_seq], probe[item_seq_len])
        except Exception:  # noqa: BLE001 - forward has another signature: fall back
            u = None
        if torch.is_tensor(u) and tuple(u.shape) == (len(probe), emb.embedding_dim):
            return "sequence"
    user_emb = getattr(ranker, "user_embedding", None)
    if isinstance(user_emb, nn.Embedding) and user_emb.embedding_dim == emb.embedding_dim:
        return "user"
    return "score"
