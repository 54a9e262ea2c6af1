"""Per-model reading of the attention recorded while scoring a batch of (history, item) rows.

``explain_batch(model, batch)`` runs ``model.predict(batch)`` once inside
``capture.recording`` and returns its scores with the attention maps of that pass. Each
map keeps every key position (padding included, weight 0) so that callers can check it;
``AttentionMap.layout`` says how to read it:

- ``target``: one query per row, the row's scored item: values [B, P, 1, K].
- ``position``: the same query for every row (NOVABERT's/AttnBERT4Rec's prediction
  position): values [B, P, 1, K], plotted with the P panels (layer x head) as rows.
- ``keys``: queries are the key positions (AttRec's window, PRM's list): [B, P, K, K].
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from recbole_attn.explain import capture

TARGET_SELF = -1  # key item id of BST's target slot (the row's own item)


@dataclass
class AttentionMap:
    name: str
    layout: str  # target | position | keys
    values: torch.Tensor  # [B, P, Q, K]
    panels: list[str]
    key_items: torch.Tensor  # [B, K] item ids (0 padding, model's mask token, TARGET_SELF)
    key_mask: torch.Tensor  # [B, K] True = real key
    normalised: bool  # each query's weights over the real keys sum to 1
    note: str = ""
    key_notes: list[str] | None = None  # one label per key position of row 0 (e.g. behaviour group)
    extra: dict = field(default_factory=dict)


def _predict(model, batch):
    with torch.no_grad(), capture.recording(model) as rec:
        scores = model.predict(batch)
    return scores, rec


def _history_mask(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    seq = batch[model.ITEM_SEQ]
    return seq, torch.arange(seq.shape[1], device=seq.device) < batch[model.ITEM_SEQ_LEN].unsqueeze(1)


def _din(model, batch):
    scores, rec = _predict(model, batch)
    seq, mask = _history_mask(model, batch)
    w = rec.last(model.attention)[:, None, None, :]
    note = "softmax over the real history" if model.attention.softmax else "raw weights (attention_softmax: False)"
    return scores, [AttentionMap("local activation weights", "target", w, ["all"], seq, mask, model.attention.softmax, note)]


def _dien(model, batch):
    scores, rec = _predict(model, batch)
    seq, mask = _history_mask(model, batch)
    maps = [AttentionMap("attention", "target", rec.last(model.attention)[:, None, None, :], ["all"], seq, mask, True,
                         "a_t of the target over the interest states")]
    gates = rec.of(model.evolver, "update_gate")
    if gates:  # one [B, H] (AGRU: [B, 1]) per step; a padded step leaves the state unchanged
        u = torch.stack([g.expand(g.shape[0], -1).mean(-1) for g in gates], 1) * mask
        maps.append(AttentionMap(f"{model.gru_type} update gates", "target", u[:, None, None, :], ["mean over units"],
                                 seq, mask, False, "u_t of the interest evolving GRU, mean over its units"))
    return scores, maps


def _bst(model, batch):
    scores, rec = _predict(model, batch)
    seq, mask = _history_mask(model, batch)
    per_layer, panels = [], []
    for i, block in enumerate(model.blocks):
        w = rec.last(block.attn)[:, :, -1, :]  # [B, h, T]: the target's query row
        hist = model.history_order(w[:, :, :-1], batch[model.ITEM_SEQ_LEN])
        per_layer.append(torch.cat([hist, w[:, :, -1:]], -1))
        panels += [f"layer {i + 1} head {h + 1}" for h in range(w.shape[1])]
    values = torch.cat(per_layer, 1).unsqueeze(2)  # [B, layers*h, 1, L + 1]
    items = torch.cat([seq, torch.full_like(seq[:, :1], TARGET_SELF)], 1)
    keys = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return scores, [AttentionMap("target-to-history attention", "target", values, panels, items, keys, True,
                                 "the target's row of each head; the last key is the target itself")]


def _atrank(model, batch):
    scores, rec = _predict(model, batch)
    seq, mask = _history_mask(model, batch)
    if model.vanilla_attention == "multihead":
        w = rec.last(model.vanilla_blocks[-1].attention)  # [B, K, 1, L]
    else:
        w = rec.last(model.vanilla).unsqueeze(1)  # [B, 1, 1, L]
    w = w * mask[:, None, None, :]
    actions = model.encoder.actions_of(batch[model.BEHAVIOR_LIST])
    groups = model.encoder.group_of[actions[0]].tolist()
    notes = [model.vocab.groups[g] if real and g >= 0 else "" for g, real in zip(groups, mask[0].tolist())]
    panels = [f"space {k + 1}" for k in range(w.shape[1])]
    return scores, [AttentionMap("target attention per latent space", "target", w, panels, seq, mask, True,
                                 "the target's vanilla attention over the encoded history (last block)", notes)]


@contextmanager
def _without_side_information(model):
    """NOVABERT with its side information ablated: no side embeddings reach the layers."""
    model.side.forward = lambda *args, **kwargs: []
    try:
        yield
    finally:
        del model.side.forward


def _nova(model, batch):
    from recbole_attn.model.cloze import inference_inputs

    seq, length = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    inputs = inference_inputs(seq, length, model._behavior_lists(batch), model.mask_token)
    query = inputs.masked.float().argmax(1)  # [B] the prediction position
    runs = [("", None)]
    if model.attention_type == "nova" and model.side.n_sides:  # NOVA: side information in Q, K only
        runs.append((" (side information ablated)", _without_side_information))
    out, scores, maps = {}, None, []
    for suffix, ablation in runs:
        if ablation is None:
            run_scores, rec = _predict(model, batch)
            scores = run_scores
        else:
            with ablation(model):
                run_scores, rec = _predict(model, batch)
            out["scores_side_ablated"] = run_scores
        rows, panels = [], []
        for i, layer in enumerate(model.layers):
            w = rec.last(layer)  # [B, h, L, L]
            rows.append(w[torch.arange(len(query)), :, query])  # [B, h, L]
            panels += [f"layer {i + 1} head {h + 1}" for h in range(w.shape[1])]
        values = torch.cat(rows, 1).unsqueeze(2)
        maps.append(AttentionMap("prediction-position attention" + suffix, "position", values, panels, inputs.items,
                                 inputs.items > 0, True, "the appended mask token's query row in each layer and head"))
    maps[-1].extra = out
    return scores, maps


def _attrec(model, batch):
    scores, rec = _predict(model, batch)
    items, mask = model.last_window(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
    w = rec.last(model).unsqueeze(1)  # [B, 1, L, L]
    after = model.diagonal_mask == "after_softmax"  # code: w_ii zeroed after the softmax, rows sum below 1
    note = ("rows: queries; each item's weight on itself is zeroed after the softmax (rows sum to less than 1)"
            if after else "rows: queries; the diagonal is masked before the softmax")
    return scores, [AttentionMap("short-term self-attention", "keys", w, ["window"], items, mask, not after,
                                 note + "; m is the mean of the attended rows")]


def _prm(model, batch):
    scores, rec = _predict(model, batch)
    _, items, list_scores = model.ranker_lists(batch)
    with torch.no_grad():
        logits = model.forward(items, model.personal_vectors(batch, items, list_scores))
    new_rank = torch.empty_like(items)
    order = logits.argsort(dim=1, descending=True, stable=True)
    new_rank.scatter_(1, order, torch.arange(items.shape[1], device=items.device).expand_as(order))
    rows, panels = [], []
    for i, layer in enumerate(model.encoder.layer):
        w = rec.last(layer.multi_head_attention)  # [B, h, K, K]
        rows.append(w)
        panels += [f"layer {i + 1} head {h + 1}" for h in range(w.shape[1])]
    notes = [f"#{a + 1}->#{b + 1}" for a, b in zip(range(items.shape[1]), new_rank[0].tolist())]
    return scores, [AttentionMap("attention among the list", "keys", torch.cat(rows, 1), panels, items,
                                 torch.ones_like(items, dtype=torch.bool), True,
                                 "the ranker's top-K in its order; notes: initial rank -> re-ranked rank", notes,
                                 {"prm_logits": logits})]


EXTRACTORS = {
    "AttnDIN": _din,
    "AttnDIEN": _dien,
    "BST": _bst,
    "ATRank": _atrank,
    "NOVABERT": _nova,  # AttnBERT4Rec too (a subclass)
    "AttRec": _attrec,
    "PRM": _prm,
}


def explain_batch(model, batch) -> tuple[torch.Tensor, list[AttentionMap]]:
    """``model.predict(batch)`` [B] and the attention maps of that forward pass (eval mode)."""
    for cls in type(model).__mro__:
        if cls.__name__ in EXTRACTORS:
            model.eval()
            return EXTRACTORS[cls.__name__](model, batch)
    raise ValueError(f"no attention explanation for model {type(model).__name__}; supported: {', '.join(EXTRACTORS)}")
