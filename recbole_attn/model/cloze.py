"""BERT4Rec's cloze task on RecBole's sequential rows: append the target or [mask], mask items.

A RecBole training row is a history ``item_id_list`` [B, L] with ``item_length`` [B] and
the next item ``item_id`` [B]. The cloze models (NOVABERT, AttnBERT4Rec) append the next
item after the history so every item, the last included, can be a cloze target
(``cloze_inputs``); at inference they append the mask token after the most recent items
and read the output there (``inference_inputs``). A row whose history fills L drops its
oldest item to make room. Masking is drawn on the inputs' device with torch's global
generator, fresh every batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def append_at_end(seq: torch.Tensor, length: torch.Tensor, value: torch.Tensor):
    """Write ``value`` right after each row's last real element, shifting full rows left.

    Args:
        seq: [B, L] left-aligned rows, zero padded.
        length: [B] number of real elements per row (0..L).
        value: [B] element to append (same dtype as ``seq`` after casting).

    Returns:
        ([B, L] rows with ``value`` at index ``min(length, L-1)``, [B] new lengths
        ``min(length + 1, L)``). A row with ``length == L`` loses its first (oldest)
        element; every other element is kept.
    """
    batch, max_len = seq.shape
    full = torch.cat([seq, seq.new_zeros(batch, 1)], dim=1)  # [B, L+1]
    full = full.scatter(1, length.unsqueeze(1), value.to(seq.dtype).unsqueeze(1))
    shift = (length >= max_len).long().unsqueeze(1)  # [B, 1]
    index = torch.arange(max_len, device=seq.device).unsqueeze(0) + shift  # [B, L]
    return full.gather(1, index), torch.clamp(length + 1, max=max_len)


def cloze_mask(
    length: torch.Tensor, max_len: int, mask_ratio: float, mask_last_ratio: float
) -> torch.Tensor:
    """Positions to mask for the cloze task, drawn on ``length``'s device.

    Each real position (index < length) is masked with probability ``mask_ratio``; a row
    that draws none gets its real position with the smallest draw (so every row with a
    real item has at least one mask, uniformly placed). A share ``mask_last_ratio`` of
    the rows masks only its last real item instead. Padding is never masked.

    Args:
        length: [B] real items per row (>= 1).
        max_len: L.

    Returns:
        [B, L] bool, True = masked.
    """
    device = length.device
    positions = torch.arange(max_len, device=device).unsqueeze(0)  # [1, L]
    real = positions < length.unsqueeze(1)  # [B, L]
    draw = torch.rand(length.shape[0], max_len, device=device).masked_fill(~real, 2.0)
    random_mask = (draw < mask_ratio) | (positions == draw.argmin(dim=1, keepdim=True))
    last_only = torch.rand(length.shape[0], 1, device=device) < mask_last_ratio  # [B, 1]
    last = positions == (length - 1).unsqueeze(1)
    return torch.where(last_only, last, random_mask) & real


class ClozeInputs(NamedTuple):
    """One batch of encoder inputs: ``items`` [B, L] (mask token where masked), ``behavior``
    field -> [B, L] values, ``visible`` [B, L] (real and unmasked), and ``masked`` [B, L]
    (training: the cloze targets, labels ``labels`` [K]; inference: the [mask] position)."""

    items: torch.Tensor
    behavior: dict[str, torch.Tensor]
    visible: torch.Tensor
    masked: torch.Tensor
    labels: torch.Tensor | None


def _real(length: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=length.device).unsqueeze(0) < length.unsqueeze(1)


def cloze_inputs(
    seq: torch.Tensor,
    length: torch.Tensor,
    target: torch.Tensor,
    behavior: dict[str, tuple[torch.Tensor, torch.Tensor]],
    mask_token: int,
    mask_ratio: float,
    mask_last_ratio: float,
) -> ClozeInputs:
    """Training inputs: history plus target, then masked (``cloze_mask``).

    Args:
        seq: [B, L] history, ``length`` [B] its lengths, ``target`` [B] the next item.
        behavior: field -> ([B, L] values of the history, [B] value of the target).
    """
    items, new_len = append_at_end(seq, length, target)
    values = {f: append_at_end(v, length, t)[0] for f, (v, t) in behavior.items()}
    masked = cloze_mask(new_len, items.shape[1], mask_ratio, mask_last_ratio)
    visible = _real(new_len, items.shape[1]) & ~masked
    inputs = items.masked_fill(masked, mask_token)
    return ClozeInputs(inputs, values, visible, masked, items[masked])


def inference_inputs(
    seq: torch.Tensor, length: torch.Tensor, behavior: dict[str, torch.Tensor], mask_token: int
) -> ClozeInputs:
    """Inference inputs: the mask token after the most recent items (a full history drops
    its oldest item); behaviour values at the mask are hidden. ``labels`` is None."""
    items, new_len = append_at_end(seq, length, torch.full_like(length, mask_token))
    values = {f: append_at_end(v, length, torch.zeros_like(length))[0] for f, v in behavior.items()}
    visible = _real(new_len - 1, items.shape[1])
    positions = torch.arange(items.shape[1], device=seq.device).unsqueeze(0)
    masked = positions == (new_len - 1).unsqueeze(1)
    return ClozeInputs(items, values, visible, masked, None)
