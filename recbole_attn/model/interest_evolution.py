"""DIEN's interest-evolving layer and the negatives of its auxiliary loss, for AttnDIEN.

- :class:`AttentionalGRU`: the GRU, AGRU and AUGRU cells (eq. 1-4, 9-11 of Zhou et al.,
  AAAI 2019), batch-vectorised and looped over time; a padded step keeps the state.
- :func:`evolve` and :func:`evolve_shared`: the interest-evolving layer (attention to the
  target, eq. 8, then GRU + attention pooling, AIGRU, AGRU or AUGRU), for one target per
  row and for every row against every candidate.
- :func:`unclicked_negatives`: a negative item per history position for the auxiliary
  loss (eq. 6-7), redrawn while it is an item the same user clicked in the batch.

The model, its equation -> method map and its deviations are documented in
``recbole_attn.model.context_aware_recommender.dien``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole_attn.errors import ConfigError
from recbole_attn.explain import capture
from recbole_attn.layers import TargetAttention

GRU_TYPES = ("GRU", "AIGRU", "AGRU", "AUGRU")
CELL_KINDS = ("GRU", "AGRU", "AUGRU")


class AttentionalGRU(nn.Module):
    r"""A GRU (paper convention h_t = (1 - u_t) h_{t-1} + u_t \tilde h_t) whose update gate
    can be driven by an attention score, looped over time and vectorised over the batch.

    - ``GRU``:   u_t = sigmoid(W_u i_t + U_u h_{t-1} + b_u)                (eq. 1-4)
    - ``AGRU``:  u_t = a_t (the attention score replaces the update gate)  (eq. 9)
    - ``AUGRU``: u_t = a_t * sigmoid(W_u i_t + U_u h_{t-1} + b_u)          (eq. 10-11)

    r_t = sigmoid(W_r i_t + U_r h_{t-1} + b_r); \tilde h_t = tanh(W_h i_t + r_t * (U_h h_{t-1}) + b_h).
    A step whose mask is False leaves the state unchanged.
    """

    def __init__(self, input_size: int, hidden_size: int, kind: str = "GRU"):
        super().__init__()
        if kind not in CELL_KINDS:
            raise ConfigError(f"cell kind must be one of {', '.join(CELL_KINDS)}, got {kind!r}")
        self.kind = kind
        self.hidden_size = hidden_size
        self.n_gates = 2 if kind == "AGRU" else 3  # [r, h~] or [r, h~, u]
        self.input_proj = nn.Linear(input_size, self.n_gates * hidden_size)
        self.hidden_proj = nn.Linear(hidden_size, self.n_gates * hidden_size, bias=False)

    def forward(
        self,
        inputs: torch.Tensor,
        mask: torch.Tensor,
        attention: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs [B, L, I], mask [B, L] bool (True = real), attention [B, L] (AGRU/AUGRU).

        Returns:
            states [B, L, H] (a padded step repeats the previous state) and the state
            after the last real step [B, H].
        """
        return self.recur(self.input_proj(inputs), mask, attention)

    def recur(self, projected: torch.Tensor, mask: torch.Tensor, attention: torch.Tensor | None = None, all_states: bool = True):
        """The loop of ``forward`` on input projections [..., L, G*H]; mask [..., L] and
        attention [..., L] broadcast against them (e.g. [B, 1, L, G*H] projections of a
        history shared by [B, C, L] candidates' attention) -> ([..., L, H] or None without
        ``all_states``, [..., H])."""
        if self.kind != "GRU" and attention is None:
            raise ValueError(f"{self.kind} needs attention scores")
        length = projected.shape[-2]
        # input projections of all steps at once; unbind (not x[:, t]) so that backward
        # stacks L gradients instead of filling a full [B, L, G*H] tensor per step
        steps = projected.unbind(-2)  # L x [..., G*H]
        keeps = mask.unsqueeze(-1).unbind(-2)  # L x [..., 1]
        scores = attention.unsqueeze(-1).unbind(-2) if attention is not None else [None] * length
        lead = projected.shape[:-2] if attention is None else torch.broadcast_shapes(projected.shape[:-2], attention.shape[:-1])
        h = projected.new_zeros(*lead, self.hidden_size)
        states = []
        for x_t, keep, a_t in zip(steps, keeps, scores):
            gx = x_t.chunk(self.n_gates, dim=-1)
            gh = self.hidden_proj(h).chunk(self.n_gates, dim=-1)
            r = torch.sigmoid(gx[0] + gh[0])
            candidate = torch.tanh(gx[1] + r * gh[1])
            if self.kind == "AGRU":
                u = a_t
            else:
                u = torch.sigmoid(gx[2] + gh[2])
                if self.kind == "AUGRU":
                    u = a_t * u
            capture.record(self, u, "update_gate")
            h = torch.where(keep, h + u * (candidate - h), h)
            if all_states:
                states.append(h)
        return (torch.stack(states, dim=-2) if all_states else None), h


def evolve(
    gru_type: str, evolver: AttentionalGRU, attention: TargetAttention, h: torch.Tensor, mask: torch.Tensor, query: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interest-evolving layer for each row's attention query q [B, D] over the interest
    states h [B, L, D] (mask [B, L]); ``gru_type`` one of :data:`GRU_TYPES`.

    Returns:
        final interest h'_T [B, D] and attention weights a [B, L] (0 at padding, sum 1).
    """
    if gru_type == "GRU":
        states, _ = evolver(h, mask)
        weights = attention(states, query, mask)[1]
        final = (weights.unsqueeze(-1) * states * mask.unsqueeze(-1)).sum(1)
        return final, weights
    weights = attention(h, query, mask)[1]
    if gru_type == "AIGRU":
        _, final = evolver(h * weights.unsqueeze(-1), mask)
    else:
        _, final = evolver(h, mask, weights)
    return final, weights


def evolve_shared(
    gru_type: str, evolver: AttentionalGRU, attention: TargetAttention, h: torch.Tensor, mask: torch.Tensor, query: torch.Tensor
) -> torch.Tensor:
    """:func:`evolve` of every row's history h [B, L, D] against every candidate's query
    q [C, D] -> h'_T [B, C, D]; what depends only on the history (the second GRU of
    ``GRU``, the evolving GRU's input projections, the attention's history term) once
    per row. Equal to :func:`evolve` pair by pair in eval mode."""
    if gru_type == "GRU":
        states, _ = evolver(h, mask)  # [B, L, D]
        weights = attention.shared(states, query, mask)[1]  # [B, C, L]
        return torch.einsum("bcl,bld->bcd", weights, states * mask.unsqueeze(-1))
    weights = attention.shared(h, query, mask)[1]
    proj = evolver.input_proj
    if gru_type == "AIGRU":  # W (a_t h_t) + b = a_t (W h_t) + b
        projected = weights.unsqueeze(-1) * F.linear(h, proj.weight).unsqueeze(1) + proj.bias
        return evolver.recur(projected, mask.unsqueeze(1), all_states=False)[1]
    return evolver.recur(proj(h).unsqueeze(1), mask.unsqueeze(1), weights, all_states=False)[1]


def unclicked_negatives(
    user: torch.Tensor,
    item_seq: torch.Tensor,
    mask: torch.Tensor,
    clicked_targets: tuple[torch.Tensor, torch.Tensor],
    n_items: int,
    max_tries: int,
    rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A negative for every history position of ``rows`` (default: all), drawn now on
    ``item_seq``'s device, uniformly over the real items 1..n_items-1.

    Args:
        user: [B] user id of each row; item_seq: [B, L] histories; mask: [B, L] True = real.
        clicked_targets: (users [P], items [P]) of the rows whose target was clicked.
        max_tries: draws per position; a draw that hits a clicked item is redrawn.

    Returns:
        negatives [R, L] (item ids) and valid [R, L] bool: True where the position has a
        next item (t+1 real) and the draw is no item this user clicked in the batch (in
        the history of any of the user's rows, or a clicked target).
    """
    n = n_items
    # sorted keys user * n + item of everything the batch shows as clicked
    clicked = [(user.unsqueeze(1) * n + item_seq)[mask], clicked_targets[0] * n + clicked_targets[1]]
    keys = torch.unique(torch.cat(clicked))  # sorted
    if rows is not None:
        user, mask = user[rows], mask[rows]
    row_key = (user * n).unsqueeze(1)

    def is_clicked(items: torch.Tensor) -> torch.Tensor:
        query = row_key + items
        idx = torch.searchsorted(keys, query).clamp(max=keys.numel() - 1)
        return keys[idx] == query

    negatives = torch.randint(1, n, mask.shape, device=item_seq.device)
    bad = is_clicked(negatives)
    for _ in range(max_tries - 1):
        redraw = torch.randint(1, n, mask.shape, device=item_seq.device)
        negatives = torch.where(bad, redraw, negatives)
        bad = is_clicked(negatives)
    has_next = torch.zeros_like(mask)
    has_next[:, :-1] = mask[:, 1:]
    return negatives, has_next & ~bad
