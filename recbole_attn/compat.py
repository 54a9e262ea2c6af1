"""Every fix that RecBole 1.2.1 needs to run soundly on today's numpy, pandas, scipy,
torch and hyperopt.

`apply()` runs once, when `recbole_attn` is imported, before any RecBole module that
needs a fix is used. Each fix names the failure it prevents; `tests/test_compat.py` has a
test per fix that fails without it.

1. pandas >= 3 (copy-on-write, new ``Series.agg``): RecBole's chained
   ``feat[col].fillna(..., inplace=True)`` silently does nothing, which leaves NaN in
   the token and float columns of users and items missing from the feature files (and
   makes an empty token_seq value raise on read), and ``feat[col].agg(len)`` returns the
   column's length instead of each row's, so token_seq/float_seq remapping raises. We
   replace ``Dataset._fill_nan`` by a copy that assigns its result (same values on
   every pandas), and while RecBole builds a dataset (``Dataset._from_scratch``,
   ``SequentialDataset._benchmark_presets``) ``Series.agg(len)`` counts per row and
   ``read_csv`` reads an empty sequence value as "" (``pandas_compat``), which also keeps
   pandas' ChainedAssignmentError warning about that no-op out of every run's output.
   Under copy-on-write ``Series.values`` is a read-only view of the DataFrame's memory,
   which RecBole's ``_dataframe_to_interaction`` wraps in tensors without a copy: torch
   warns "The given NumPy array is not writable" in every run, and a write into such a
   tensor changes every DataFrame sharing that memory. RecBole's conversion reads writable
   copies of the columns instead (``owned_columns``): every tensor owns its memory.
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
8. scipy (1.17 here): RecBole builds its user-item graphs (LightGCN, NGCF, NCL, GCMC,
   SpectralCF, KGIN, MCCLK) with ``dok_matrix._update(dict)``, a private method scipy
   removed (``AttributeError: 'dok_matrix' object has no attribute '_update'``). We give
   ``dok_matrix`` back an ``_update`` with the old meaning (set each ``(row, col)`` key to
   its value; a later duplicate key wins), written with public fancy assignment.
9. torch >= 2.6 loads with ``weights_only=True`` by default, which refuses RecBole's own
   checkpoints (they pickle the run's ``Config``). Models that start from weights the
   user names in the config (``pre_model_path`` of S3Rec, RaCT, ConvNCF; NAIS's
   ``pretrain_path``; NeuMF's ``mf_pretrain_path`` / ``mlp_pretrain_path``; KD_DAGFM's
   ``warm_up``) read them with a bare ``torch.load`` in ``__init__``; there it defaults to
   ``weights_only=False`` (``trusted_torch_load``), as it did before torch 2.6.
10. KSR: RecBole's preloaded vectors are float64 (``Dataset._preload_weight_matrix``
    fills ``np.zeros``), and KSR keeps its relation matrix as such, so its first forward raises
    ``expected m1 and m2 to have the same dtype, but got: float != double`` on any stack.
    After ``KSR.__init__`` the relation matrix has the dtype of the model's parameters
    (``ksr_float_relations``), as its entity vectors already have (copied into an
    ``nn.Embedding``).
11. hyperopt >= 0.2.7 samples with a numpy ``Generator`` (``rng.integers``); RecBole's
    ``HyperTuning(algo="exhaustive")``, its default, hands it a ``RandomState`` and fails
    with ``'RandomState' object has no attribute 'integers'``. ``exhaustive_search``
    replaces RecBole's with a ``Generator`` (``random`` and ``bayes`` are hyperopt's own).
12. KGIN and MCCLK aggregate with ``torch_scatter`` (``scatter_mean``, ``scatter_softmax``),
    a compiled package with no build for recent torch. Where it is not installed, their
    ``Aggregator.forward`` runs with a stand-in module of the same two functions in pure
    torch (``torch_scatter_fallback``; same values), present in ``sys.modules`` only
    during that call.
13. RecBole 1.2.1's own defaults make ``--model=SASRec`` (any sequential model with CE
    loss) raise "train_neg_sample_args ... should be None"; fixed where the defaults are
    layered, in ``recbole_attn.config.Config``.

The trainer's checkpoint fixes (``weights_only`` on torch >= 2.6, unique file names) live in
``recbole_attn.trainer``, where the checkpoints are written and read.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
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
CHAINED_ASSIGNMENT = getattr(pd.errors, "ChainedAssignmentError", None) or type("NoChainedAssignmentError", (Warning,), {})


@contextlib.contextmanager
def pandas_compat() -> Iterator[None]:
    """pandas < 3 semantics of what RecBole's dataset code relies on, for its duration (fix 1).

    ``Series.agg(len)`` -> [R] int64 length of each row's sequence (pandas 3 calls
    ``len`` on the whole column); ``read_csv`` -> sequence columns (header ``name:token_seq``
    or ``name:float_seq``) with empty values as "" instead of NaN.
    """
    agg, read_csv = pd.Series.agg, pd.read_csv

    def agg_len_per_row(series, func=None, *args, **kwargs):
        if func is len:
            return np.fromiter(map(len, series), dtype=np.int64, count=series.shape[0])
        return agg(series, func, *args, **kwargs)

    def read_csv_empty_seq(*args, **kwargs):
        df = read_csv(*args, **kwargs)
        for column in df.columns:
            if str(column).endswith("_seq"):
                df[column] = df[column].fillna("")
        return df

    pd.Series.agg, pd.read_csv = agg_len_per_row, read_csv_empty_seq
    try:
        with warnings.catch_warnings():
            # RecBole's ``df[field].fillna(value="", inplace=True)`` in ``_load_feat`` is a
            # no-op under copy-on-write, and pandas says so in every run: the sequence
            # columns are already filled by ``read_csv_empty_seq`` above
            warnings.filterwarnings("ignore", category=CHAINED_ASSIGNMENT, module=r"recbole\.data\.dataset\.dataset")
            yield
    finally:
        pd.Series.agg, pd.read_csv = agg, read_csv


class OwnedColumns:
    """``data``'s columns as RecBole's ``_dataframe_to_interaction`` reads them
    (``for k in data``, ``data[k].values``), each ``values`` a writable copy (fix 1)."""

    def __init__(self, data: pd.DataFrame):
        self.data = data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __getitem__(self, field: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(values=self.data[field].to_numpy(copy=True))


def owned_columns(convert: Callable) -> Callable:
    """RecBole's ``Dataset._dataframe_to_interaction`` over copies of the columns (fix 1)."""

    @functools.wraps(convert)
    def wrapper(self, data: pd.DataFrame):
        return convert(self, OwnedColumns(data))

    return wrapper


def with_pandas_compat(method: Callable) -> Callable:
    """``method`` run inside ``pandas_compat`` (fix 1)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with pandas_compat():
            return method(*args, **kwargs)

    return wrapper


def fill_nan(self) -> None:
    """RecBole's ``Dataset._fill_nan`` with its results assigned, not chained inplace (fix 1).

    Missing token -> 0 ([PAD]), missing float -> the column mean, missing sequence ->
    an empty array.
    """
    from recbole.utils import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                empty = np.array([], dtype=dtype)
                feat[field] = feat[field].apply(lambda x: empty.copy() if isinstance(x, float) else x)


def dok_update(self, data: dict) -> None:
    """``dok_matrix._update`` as scipy had it while ``dok_matrix`` was a dict (fix 8).

    ``self[r, c] = v`` for each ``(r, c): v`` of ``data``, in one vectorised assignment
    (a key given twice in ``data`` cannot happen: it is a dict).
    """
    if not data:
        return
    keys = np.fromiter((k for key in data for k in key), dtype=np.int64, count=2 * len(data))
    values = np.fromiter(data.values(), dtype=self.dtype, count=len(data))
    self[keys[0::2], keys[1::2]] = values


@contextlib.contextmanager
def trusted_torch_load() -> Iterator[None]:
    """``torch.load`` defaulting to ``weights_only=False`` for its duration (fix 9)."""
    load = torch.load

    def load_trusted(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return load(*args, **kwargs)

    torch.load = load_trusted
    try:
        yield
    finally:
        torch.load = load


def with_trusted_torch_load(method: Callable) -> Callable:
    """``method`` run inside ``trusted_torch_load`` (fix 9)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with trusted_torch_load():
            return method(*args, **kwargs)

    return wrapper


# RecBole models whose __init__ reads pretrained weights named in the config (fix 9).
PRETRAINED_WEIGHT_READERS = {
    "recbole.model.general_recommender.convncf": "ConvNCF",
    "recbole.model.general_recommender.nais": "NAIS",
    "recbole.model.general_recommender.neumf": "NeuMF",
    "recbole.model.general_recommender.ract": "RaCT",
    "recbole.model.context_aware_recommender.kd_dagfm": "KD_DAGFM",
    "recbole.model.sequential_recommender.s3rec": "S3Rec",
}


def ksr_float_relations(init: Callable) -> Callable:
    """KSR's ``__init__``, then its relation matrix [R, K] in its parameters' dtype (fix 10)."""

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.relation_Matrix = self.relation_Matrix.to(self.item_embedding.weight.dtype)

    return wrapper


def exhaustive_search(new_ids, domain, trials, seed, nbMaxSucessiveFailures: int = 1000) -> list:
    """RecBole's ``exhaustive_search`` (hyperopt ``algo``) drawing with a numpy Generator (fix 11).

    Each new trial is a point of the grid not tried yet, drawn at random; ``[]`` (hyperopt
    stops) after ``nbMaxSucessiveFailures`` draws in a row hit tried points.
    """
    from hyperopt import pyll
    from hyperopt.base import miscs_update_idxs_vals

    def point(vals: dict) -> frozenset:
        return frozenset((name, value[0] if len(value) else None) for name, value in vals.items())

    tried = {point(trial["misc"]["vals"]) for trial in trials.trials}
    rng = np.random.default_rng(seed)
    docs = []
    for new_id in new_ids:
        for _ in range(nbMaxSucessiveFailures + 1):
            memo = {domain.s_new_ids: [new_id], domain.s_rng: rng}
            idxs, vals = pyll.rec_eval(domain.s_idxs_vals, memo=memo)
            if point(vals) not in tried:
                break
        else:
            return []
        tried.add(point(vals))
        misc = dict(tid=new_id, cmd=domain.cmd, workdir=domain.workdir)
        miscs_update_idxs_vals([misc], idxs, vals)
        docs.extend(trials.new_trial_docs([new_id], [None], [domain.new_result()], [misc]))
    return docs


def scatter_mean(src: torch.Tensor, index: torch.Tensor, dim: int = -1, dim_size: int | None = None) -> torch.Tensor:
    """torch_scatter's ``scatter_mean`` (its signature's defaults), for ``dim=0`` only (fix 12).

    src [E, d], index [E] -> [dim_size, d]: row n is the mean of the rows of ``src`` whose
    index is n; 0 where none is.
    """
    if dim != 0:
        raise NotImplementedError("scatter_mean stand-in: dim=0 only (as KGIN and MCCLK call it)")
    size = int(index.max()) + 1 if dim_size is None else dim_size
    out = src.new_zeros((size, *src.shape[1:]))
    index = index.view(-1, *[1] * (src.dim() - 1)).expand_as(src)
    return out.scatter_reduce(0, index, src, reduce="mean", include_self=False)


def scatter_softmax(src: torch.Tensor, index: torch.Tensor, dim: int = -1, dim_size: int | None = None) -> torch.Tensor:
    """torch_scatter's ``scatter_softmax`` (its signature's defaults), for ``dim=0`` only (fix 12).

    src [E, d], index [E] -> [E, d]: softmax of each column over the rows of ``src``
    sharing an index.
    """
    if dim != 0:
        raise NotImplementedError("scatter_softmax stand-in: dim=0 only (as MCCLK calls it)")
    size = int(index.max()) + 1 if dim_size is None else dim_size
    index = index.view(-1, *[1] * (src.dim() - 1)).expand_as(src)
    group_max = src.new_zeros((size, *src.shape[1:])).scatter_reduce(0, index, src, reduce="amax", include_self=False)
    exp = (src - group_max.gather(0, index)).exp()
    group_sum = src.new_zeros((size, *src.shape[1:])).scatter_add(0, index, exp)
    return exp / group_sum.gather(0, index)


@contextlib.contextmanager
def torch_scatter_fallback() -> Iterator[None]:
    """``import torch_scatter`` gives the stand-ins above for its duration, unless the
    package is installed (fix 12)."""
    if "torch_scatter" in sys.modules or importlib.util.find_spec("torch_scatter") is not None:
        yield
        return
    module = types.ModuleType("torch_scatter", "recbole_attn.compat stand-in: scatter_mean, scatter_softmax")
    module.scatter_mean, module.scatter_softmax = scatter_mean, scatter_softmax
    sys.modules["torch_scatter"] = module
    try:
        yield
    finally:
        sys.modules.pop("torch_scatter", None)


def with_torch_scatter_fallback(method: Callable) -> Callable:
    """``method`` run inside ``torch_scatter_fallback`` (fix 12)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with torch_scatter_fallback():
            return method(*args, **kwargs)

    return wrapper


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
    add_numpy_aliases()

    from recbole.data.dataset import Dataset, SequentialDataset
    import recbole.model.layers as rb_layers
    import recbole.model.sequential_recommender  # noqa: F401  (imports sine.py: anomaly on)
    from recbole.model.sequential_recommender.ksr import KSR
    import recbole.trainer.hyper_tuning as rb_hyper_tuning
    import recbole.trainer.trainer as rb_trainer

    Dataset._fill_nan = fill_nan
    Dataset._dataframe_to_interaction = owned_columns(Dataset._dataframe_to_interaction)
    Dataset._from_scratch = with_pandas_compat(Dataset._from_scratch)
    SequentialDataset._benchmark_presets = with_pandas_compat(SequentialDataset._benchmark_presets)
    torch.autograd.set_detect_anomaly(False)
    rb_layers.FeedForward.gelu = fused_gelu
    rb_trainer.DistributedDataParallel = cpu_safe_ddp
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = dok_update
    for module, name in PRETRAINED_WEIGHT_READERS.items():
        model = getattr(importlib.import_module(module), name)
        model.__init__ = with_trusted_torch_load(model.__init__)
    rb_hyper_tuning.exhaustive_search = exhaustive_search
    KSR.__init__ = ksr_float_relations(KSR.__init__)
    for module in ("kgin", "mcclk"):
        aggregator = importlib.import_module(f"recbole.model.knowledge_aware_recommender.{module}").Aggregator
        aggregator.forward = with_torch_scatter_fallback(aggregator.forward)
    for name in ENSURE_DIR_USERS:
        setattr(importlib.import_module(name), "ensure_dir", ensure_dir)
    _applied = True
