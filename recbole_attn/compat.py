"""Every fix that RecBole 1.2.1 needs to run soundly on today's numpy, pandas and torch.

`apply()` runs once, when `recbole_attn` is imported, before any RecBole module that
needs a fix is used. Each fix names the failure it prevents; `tests/test_compat.py` has a
test per fix that fails without it.

1. pandas >= 3: RecBole's chained ``df[col].fillna(..., inplace=True)`` silently does
   nothing under copy-on-write and its token_seq remapping raises, so we refuse to start
   (``check_pandas``) instead of producing silently wrong data.
2. numpy 2: ``recbole.config.Config`` runs ``np.float = np.float_`` (and friends) and
   raises, because numpy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``;
   RecBole's metrics, layers and dataset code then use ``np.float``/``np.long``. We
   provide the removed names with numpy 2 spellings of the same types.
3. ray: ``recbole.quick_start`` imports ray 2.6, which fails on numpy 2 (``np.bool8``)
   and on setuptools without ``pkg_resources``. This package never imports
   ``recbole.quick_start`` (see ``recbole_attn.quick_start``); nothing to patch here.
4. Anomaly mode: ``recbole/model/sequential_recommender/sine.py`` calls
   ``torch.autograd.set_detect_anomaly(True)`` at import, and every RecBole model lookup
   imports it, which slows every model's training 1.3-3x. We import it once here and
   switch anomaly mode off; the runner sets it from the ``detect_anomaly`` option.
5. GELU: RecBole's ``FeedForward.gelu`` computes ``x * 0.5 * (1 + erf(x / sqrt(2)))``
   in five separate kernels; ``torch.nn.functional.gelu`` is the same function
   (exact erf form) fused into one.
6. Distributed training on CPU: RecBole wraps the model in
   ``DistributedDataParallel(model, device_ids=[local_rank])``, which torch rejects for
   a CPU module; we drop ``device_ids`` for CPU modules (the gloo path). Process-group
   set-up for CPU lives in ``recbole_attn.config.Config``.
7. ``ensure_dir`` checks ``os.path.exists`` and then calls ``os.makedirs``: processes
   started together (``--nproc 2``, parallel benchmark runs) race and one dies with
   ``FileExistsError: './log'``. Replaced by ``os.makedirs(exist_ok=True)``.
8. RecBole 1.2.1's own defaults make ``--model=SASRec`` (any sequential model with CE
   loss) raise "train_neg_sample_args ... should be None"; fixed where the defaults are
   layered, in ``recbole_attn.config.Config``.

Checkpoint fixes (``weights_only`` on torch >= 2.6, unique file names) live in
``recbole_attn.trainer``, where the checkpoints are written and read.
"""

from __future__ import annotations

import importlib
import os
import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

# numpy names RecBole 1.2.1 reads (``Config.compatibility_settings`` and the modules it
# patches for) that numpy 2 removed, mapped to the numpy 2 spelling of the same type.
NUMPY_ALIASES: dict[str, object] = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "float": float,
    "int": int,
    "complex": complex,
    "object": object,
    "str": str,
    "long": np.int_,
    "bool": np.bool_,
}

_applied = False


def check_pandas(version: str | None = None) -> None:
    """Raise ImportError when pandas >= 3 is installed (fix 1)."""
    if version is None:
        import pandas

        version = pandas.__version__
    major = int(version.split(".")[0])
    if major >= 3:
        raise ImportError(
            f"recbole-attn needs pandas<3, found pandas {version}: RecBole 1.2.1's "
            "chained fillna(inplace=True) silently does nothing on pandas 3 and its "
            "token_seq remapping raises. Fix: pip install 'pandas<3'"
        )


def add_numpy_aliases() -> None:
    """Provide the numpy names numpy 2 removed and RecBole still uses (fix 2)."""
    for name, value in NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def fused_gelu(self, x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU in one fused kernel; replaces ``FeedForward.gelu`` (fix 5)."""
    return F.gelu(x)


def cpu_safe_ddp(module: torch.nn.Module, device_ids=None, **kwargs) -> DistributedDataParallel:
    """``DistributedDataParallel`` that drops ``device_ids`` for CPU modules (fix 6)."""
    first = next(module.parameters(), None)
    if first is not None and first.device.type == "cpu":
        device_ids = None
    return DistributedDataParallel(module, device_ids=device_ids, **kwargs)


def ensure_dir(dir_path: str) -> None:
    """Create a folder unless it exists, race-free (fix 7)."""
    os.makedirs(dir_path, exist_ok=True)


# Modules that bound RecBole's ensure_dir by name at import.
ENSURE_DIR_USERS = (
    "recbole.utils.utils",
    "recbole.utils",
    "recbole.utils.logger",
    "recbole.trainer.trainer",
    "recbole.data.utils",
    "recbole.data.dataset.dataset",
)


def apply() -> None:
    """Apply every fix once; safe to call again."""
    global _applied
    if _applied:
        return
    check_pandas()
    add_numpy_aliases()

    import recbole.model.layers as rb_layers
    import recbole.model.sequential_recommender  # noqa: F401  (imports sine.py: anomaly on)
    import recbole.trainer.trainer as rb_trainer

    torch.autograd.set_detect_anomaly(False)
    rb_layers.FeedForward.gelu = fused_gelu
    rb_trainer.DistributedDataParallel = cpu_safe_ddp
    for name in ENSURE_DIR_USERS:
        setattr(importlib.import_module(name), "ensure_dir", ensure_dir)
    _applied = True
