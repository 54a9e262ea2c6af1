"""Attention weights recorded from the forward pass that produces a score.

Inside ``with recording(model) as rec:`` every attention module of ``model`` stores the
weights of each of its calls, and ``rec.of(module)`` returns them in call order. Nothing
is recomputed: the attention code of the models calls ``record`` on the tensor it uses.

- Our modules call ``record(self, weights)`` (``TargetAttention``, ``MultiSpaceAttention``,
  ``AttentionalGRU``'s update gates, AttRec's short-term attention) or compute attention
  through ``scaled_dot_product_attention`` below (NOVA's layers), which materialises the
  softmax while recording and uses it for the output.
- Modules of torch and RecBole get hooks while recording: ``nn.MultiheadAttention`` (BST)
  is asked for per-head weights and returns the head average its caller asked for;
  RecBole's ``MultiHeadAttention`` (PRM) has its softmax read at the input of its
  attention dropout.

Outside ``recording`` ``record`` is a no-op and no hook is installed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVE: list[Recording] = []


def active() -> bool:
    """True inside ``recording``."""
    return bool(_ACTIVE)


def record(owner: nn.Module, tensor: torch.Tensor, tag: str = "weights") -> None:
    """Store ``tensor`` (detached) as ``owner``'s ``tag`` of this call; no-op unless recording."""
    if _ACTIVE:
        _ACTIVE[-1].add(owner, tag, tensor)


def scaled_dot_product_attention(
    owner: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with a bool ``attn_mask`` (True = may attend).

    While recording, the same attention is computed with its weights softmax(q k^T / sqrt(d))
    [..., Lq, Lk] materialised, recorded as ``owner``'s and used for the output.
    q [..., Lq, d], k [..., Lk, d], v [..., Lk, dv] -> [..., Lq, dv].
    """
    if not _ACTIVE:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    weights = logits.masked_fill(~attn_mask, float("-inf")).softmax(-1)
    record(owner, weights)
    return F.dropout(weights, dropout_p) @ v


class Recording:
    """Tensors recorded per (module, tag) while ``recording`` a model."""

    def __init__(self):
        self._store: dict[tuple[int, str], list[torch.Tensor]] = {}

    def add(self, owner: nn.Module, tag: str, tensor: torch.Tensor) -> None:
        self._store.setdefault((id(owner), tag), []).append(tensor.detach())

    def of(self, owner: nn.Module, tag: str = "weights") -> list[torch.Tensor]:
        """What ``owner`` recorded under ``tag``, one tensor per call (empty if nothing)."""
        return self._store.get((id(owner), tag), [])

    def last(self, owner: nn.Module, tag: str = "weights") -> torch.Tensor:
        """The tensor of ``owner``'s last call; a clear error when it recorded none."""
        found = self.of(owner, tag)
        if not found:
            raise RuntimeError(f"{type(owner).__name__} recorded no '{tag}' in this forward pass")
        return found[-1]


def _per_head_request(module, args, kwargs):
    """Pre-hook of ``nn.MultiheadAttention``: ask for per-head weights, remember the call's wish."""
    module._explain_wish.append((kwargs.get("need_weights", True), kwargs.get("average_attn_weights", True)))
    return args, {**kwargs, "need_weights": True, "average_attn_weights": False}


def _per_head_record(module, args, kwargs, output):
    """Hook of ``nn.MultiheadAttention``: record [B, h, Lq, Lk], return what the caller asked for."""
    need, average = module._explain_wish.pop()
    out, weights = output
    record(module, weights)
    if not need:
        return out, None
    return out, weights.mean(1) if average else weights


def _softmax_record(owner: nn.Module):
    """Hook of RecBole's ``MultiHeadAttention.attn_dropout``: its input is the softmax [B, h, L, L]."""

    def hook(_dropout, inputs, _output):
        record(owner, inputs[0])

    return hook


@contextmanager
def recording(model: nn.Module) -> Iterator[Recording]:
    """Record the attention of ``model``'s modules during the block (nestable)."""
    from recbole.model.layers import MultiHeadAttention

    rec = Recording()
    handles = []
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            module._explain_wish = []
            handles.append(module.register_forward_pre_hook(_per_head_request, with_kwargs=True))
            handles.append(module.register_forward_hook(_per_head_record, with_kwargs=True))
        elif isinstance(module, MultiHeadAttention):
            handles.append(module.attn_dropout.register_forward_hook(_softmax_record(module)))
    _ACTIVE.append(rec)
    try:
        yield rec
    finally:
        _ACTIVE.remove(rec)
        for handle in handles:
            handle.remove()
