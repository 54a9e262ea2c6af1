"""PNG heatmaps of ``AttentionMap``s, readable without the JSON: item names on the axes,
the scored target marked on each row, the weight written in each cell."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from recbole_attn.explain.extract import AttentionMap

MAX_LABEL = 28


def short(text: str, limit: int = MAX_LABEL) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _grid(ax, values: np.ndarray, rows: list[str], cols: list[str], title: str, vmin: float, vmax: float) -> None:
    ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), [short(c) for c in cols], rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [short(r, MAX_LABEL + 20) for r in rows], fontsize=7)
    ax.set_title(title, fontsize=9)
    if values.size <= 600:
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5.5,
                    color="black" if v > vmin + 0.6 * (vmax - vmin) else "white")


def write_png(
    amap: AttentionMap, path: str, title: str, label: Callable[[int], str], targets: list[str], rows: list[int]
) -> str:
    """Draw ``amap`` to ``path``.

    Args:
        label: item id -> axis label (name or raw token).
        targets: one label per batch row ("target: <item> (score)"), for the ``target`` layout.
        rows: the batch rows to draw in the ``target`` layout (others use row 0).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = amap.key_mask[0].cpu().numpy()
    keys = [k for k, r in zip(amap.key_items[0].tolist(), real) if r]
    notes = [n for n, r in zip(amap.key_notes, real) if r] if amap.key_notes else [""] * len(keys)
    cols = [f"[{n}] {label(k)}" if n else label(k) for k, n in zip(keys, notes)]
    values = amap.values.float().cpu().numpy()[..., real]  # [B, P, Q, K_real]
    if amap.layout == "keys":
        q = values[0][:, real]  # [P, K, K] real queries only
        panels = [(q[p], cols, amap.panels[p]) for p in range(q.shape[0])]
    elif amap.layout == "position":
        panels = [(values[0, :, 0], amap.panels, "")]
    else:
        panels = [(values[rows, p, 0], [targets[r] for r in rows], amap.panels[p]) for p in range(values.shape[1])]
    n = len(panels)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    width = max(6.5 / ncols, 0.32 * len(cols) + 2.5)
    height = max(2.5, 0.28 * max(len(p[1]) for p in panels) + 2.5)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    vmin = min(float(values.min()), 0.0)  # raw (unnormalised) weights can be negative
    vmax = max(float(values.max()), vmin + 1e-6)
    for ax, (grid, row_labels, panel) in zip(axes.flat, panels):
        _grid(ax, grid, row_labels, cols, panel, vmin, vmax)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{title}\n{amap.note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
