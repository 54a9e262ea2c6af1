"""``explain``: a user's history, the model's top-k items and the attention behind each score.

``recbole-attn explain CHECKPOINT --user U [--items I1,I2] [--k 10] [--out DIR]`` writes
``<Model>-user<U>.json`` and one PNG per attention map into DIR.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
from pathlib import Path

import torch

from recbole.data.interaction import Interaction

from recbole_attn.errors import ConfigError
from recbole_attn.explain.extract import TARGET_SELF, AttentionMap, explain_batch

NAME_FIELDS = re.compile(r"(title|name)", re.IGNORECASE)


def item_names(config, dataset) -> dict[str, str]:
    """Raw item token -> name, read from the dataset's ``.item`` file when it has a title or
    name column (ml-100k: ``movie_title``); {} otherwise. Read from the file so that the
    model's inputs (``load_col``) stay as they are."""
    path = Path(config["data_path"]) / f"{config['dataset']}.item"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=config["field_separator"] or "\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader, [])]
        if dataset.iid_field not in header:
            return {}
        named = [i for i, h in enumerate(header) if NAME_FIELDS.search(h) and h != dataset.iid_field]
        if not named:
            return {}
        iid, col = header.index(dataset.iid_field), named[0]
        return {row[iid]: row[col] for row in reader if len(row) > max(iid, col)}


def _token_id(dataset, field: str, token, what: str) -> int:
    try:
        return int(dataset.token2id(field, str(token)))
    except ValueError:
        known = ", ".join(map(str, dataset.field2id_token[field][1:6]))
        raise ConfigError(f"{what} '{token}' is not a {field} of dataset '{dataset.dataset_name}' (e.g. {known})") from None


def user_row(data, user) -> Interaction:
    """The last row of ``user`` (raw token) in a split's data: their history as the model sees it there."""
    ds = data._dataset if hasattr(data, "_dataset") else data
    uid = _token_id(ds, ds.uid_field, user, "user")
    rows = (ds.inter_feat[ds.uid_field] == uid).nonzero().flatten()
    if not len(rows):
        raise ConfigError(f"user '{user}' has no row in this split; choose a user with a held-out interaction")
    return ds.inter_feat[rows[-1:]]


def _load(checkpoint_or_model, data):
    if isinstance(checkpoint_or_model, (str, os.PathLike)):
        from recbole_attn.quick_start import load_data_and_model

        config, model, dataset, _, _, test_data = load_data_and_model(os.fspath(checkpoint_or_model))
        return config, model, test_data if data is None else data
    if data is None:
        raise ConfigError("explain(model, ...) needs data=: the split's dataloader (e.g. test_data) of the user's history")
    ds = data._dataset if hasattr(data, "_dataset") else data
    return ds.config, checkpoint_or_model, data


def _top_k(model, row: Interaction, k: int, seen: list[int]) -> list[int]:
    with torch.no_grad():
        scores = model.full_sort_predict(row).view(-1).float().clone()
    scores[[0, *seen]] = -torch.inf
    return scores.topk(min(k, int(torch.isfinite(scores).sum()))).indices.tolist()


def explain(
    checkpoint_or_model, user, items=None, k: int = 10, *, data=None, out_dir=None, held_out: bool = False
) -> dict:
    """Explain the scores of one user.

    Args:
        checkpoint_or_model: a checkpoint path (dataset and splits are rebuilt from its
            config), or a model (then ``data`` is the split's dataloader or dataset).
        user: the user's raw token (e.g. ml-100k's ``'196'``).
        items: raw item tokens to explain besides the top-k.
        k: how many top items (by ``full_sort_predict``, history items excluded).
        held_out: explain the user's held-out item of the split too.
        out_dir: write the JSON and the PNG heatmaps there.

    Returns:
        the JSON-able explanation; scores are ``predict``'s, from the forward pass that
        recorded the attention.
    """
    config, model, data = _load(checkpoint_or_model, data)
    ds = data._dataset if hasattr(data, "_dataset") else data
    device = next(model.parameters()).device
    row = user_row(data, user).to(device)
    model.eval()
    seq, length = row[model.ITEM_SEQ][0], int(row[model.ITEM_SEQ_LEN][0])
    history = seq[:length].tolist()
    given = [_token_id(ds, ds.iid_field, t, "item") for t in (items or [])]
    if held_out:
        given.append(int(row[ds.iid_field][0]))
    ranked = _top_k(model, row, k, history)
    candidates = ranked + [i for i in dict.fromkeys(given) if i not in ranked]
    batch = row.repeat(len(candidates))
    batch.update(Interaction({ds.iid_field: torch.tensor(candidates, device=device)}))
    scores, maps = explain_batch(model, batch)

    names = item_names(config, ds)
    tokens = ds.field2id_token[ds.iid_field]

    def item(i: int) -> dict:
        token = str(tokens[i]) if 0 < i < len(tokens) else None
        return {"id": i, "token": token, "name": names.get(token)}

    def label(i: int) -> str:
        if i == TARGET_SELF:
            return "(target itself)"
        if i >= len(tokens):
            return "[predict]"
        info = item(i)
        return info["name"] or info["token"] or "[pad]"

    explained = [
        {**item(c), "rank": ranked.index(c) + 1 if c in ranked else None, "score": float(s)}
        for c, s in zip(candidates, scores.tolist())
    ]
    result = {
        "model": type(model).__name__,
        "dataset": config["dataset"],
        "user": {"id": int(row[ds.uid_field][0]), "token": str(user)},
        "history": [item(i) for i in history],
        "held_out_item": item(int(row[ds.iid_field][0])),
        "items": explained,
        "attention": [_map_json(m, item) for m in maps],
    }
    if out_dir is not None:
        result["files"] = _write(result, maps, out_dir, label)
    return result


def _map_json(amap: AttentionMap, item) -> dict:
    real = amap.key_mask[0]
    keys = [item(int(k)) if k > 0 else {"id": int(k)} for k in amap.key_items[0][real].tolist()]
    values = amap.values[..., real]
    if amap.layout != "target":
        values = values[:1]
    if amap.layout == "keys":
        values = values[:, :, real]
    out = {"name": amap.name, "layout": amap.layout, "note": amap.note, "normalised": amap.normalised,
           "panels": amap.panels, "keys": keys, "weights": values.tolist()}
    if amap.key_notes:
        notes = [n for n, r in zip(amap.key_notes, real.tolist()) if r]
        out["key_notes"] = notes
        out["sum_by_note"] = {n: values[..., [j for j, m in enumerate(notes) if m == n]].sum(-1).tolist()
                              for n in dict.fromkeys(notes)}
    out.update({k: v.tolist() for k, v in amap.extra.items()})
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _write(result: dict, maps: list[AttentionMap], out_dir, label) -> list[str]:
    from recbole_attn.explain.plot import short, write_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{result['model']}-user{_slug(result['user']['token'])}"
    targets = [f"target: {short(label(e['id']))} ({e['score']:.3g})" for e in result["items"]]
    files = []
    for amap in maps:
        title = f"{result['model']} on {result['dataset']}, user {result['user']['token']}: {amap.name}"
        path = out / f"{stem}-{_slug(amap.name)}.png"
        files.append(str(write_png(amap, str(path), title, label, targets, list(range(len(targets))))))
    json_path = out / f"{stem}.json"
    files.insert(0, str(json_path))
    json_path.write_text(json.dumps({**result, "files": [os.path.basename(f) for f in files]}, indent=1))
    return files


def explain_main(argv: list[str]) -> int:
    """``recbole-attn explain CHECKPOINT --user U [--items I1,I2] [--k 10] [--out DIR] [--held-out]``."""
    p = argparse.ArgumentParser(
        prog="recbole-attn explain",
        description="The user's history, the model's top-k items with their scores and, for each recommended or "
        "given item, the attention that produced the score: a JSON file and PNG heatmaps.",
    )
    p.add_argument("checkpoint", help="a checkpoint written by recbole-attn (load only files you trust)")
    p.add_argument("--user", required=True, help="the user's raw token (e.g. 196)")
    p.add_argument("--items", default=None, help="raw item tokens to explain besides the top-k, comma-separated")
    p.add_argument("--k", type=int, default=10, help="how many top items (history items excluded)")
    p.add_argument("--out", default="explain", help="folder for the JSON and the PNGs")
    p.add_argument("--held-out", action="store_true", help="explain the user's held-out (test) item too")
    args = p.parse_args(argv)
    if args.k < 0:
        raise ConfigError(f"--k must be >= 0, got {args.k}")
    items = [t for t in args.items.split(",") if t] if args.items else None
    result = explain(args.checkpoint, args.user, items, args.k, out_dir=args.out, held_out=args.held_out)
    for path in result["files"]:
        print(path)
    return 0
