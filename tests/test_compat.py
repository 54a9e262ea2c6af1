"""One test per fix in recbole_attn.compat (and the checkpoint fixes in trainer.py).

Where a fix patches RecBole, a second test shows the failure it prevents, in a fresh
interpreter that never imports recbole_attn.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.utils import FeatureType

from recbole_attn import compat
from conftest import REPO, free_port, tiny_config


# numpy 2's spellings of the names RecBole 1.2.1 needs to start (fix 2), as source code.
NUMPY_ALIAS_CODE = {
    "float_": "np.float64",
    "complex_": "np.complex128",
    "unicode_": "np.str_",
    "float": "float",
    "int": "int",
    "long": "np.int_",
    "bool": "np.bool_",
}


def run_fresh(code: str) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter without recbole_attn."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )


# -- pandas ----------------------------------------------------------------------------


def test_agg_len_counts_per_row_inside_pandas_compat_only():
    import pandas as pd

    original = pd.Series.agg
    column = pd.Series([np.array([4, 5]), np.array([6]), np.array([], dtype=np.int64)])
    with compat.pandas_compat():
        assert list(column.agg(len)) == [2, 1, 0]  # pandas 3 alone: 3 (the column's length)
        assert list(column.agg(np.concatenate)) == [4, 5, 6]
    assert pd.Series.agg is original


GAPS_CONFIG = {
    "load_col": {
        "inter": ["user_id", "item_id", "timestamp"],
        "item": ["item_id", "brand", "price", "tags"],
    },
    "normalize_all": False,
    "filter_inter_by_user_or_item": False,  # keep the interactions of i4, which has no .item row
    "state": "ERROR",
}


def write_gaps_dataset(root, i3_tags: str = "") -> None:
    """Atomic files 'gaps': items with empty token, float and (by default) token_seq
    values, and i4 with no .item row at all."""
    folder = root / "gaps"
    folder.mkdir()
    rows = [f"u{u}\ti{i}\t{u * 10 + i}" for u in (1, 2, 3) for i in (1, 2, 3, 4)]
    (folder / "gaps.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n"
    )
    (folder / "gaps.item").write_text(
        "item_id:token\tbrand:token\tprice:float\ttags:token_seq\n"
        "i1\tb1\t10\tt1 t2\n"
        "i2\tb2\t\tt3\n"
        f"i3\t\t30\t{i3_tags}\n"
    )


def test_missing_and_empty_feature_values_are_filled_as_recbole_intends(tmp_path):
    """token -> [PAD], float -> the column mean, token_seq -> empty (RecBole's _fill_nan)."""
    from recbole.data import create_dataset

    from recbole_attn.config import Config

    write_gaps_dataset(tmp_path)
    config = Config(
        model="BPR", dataset="gaps", config_dict={"data_path": str(tmp_path), **GAPS_CONFIG}
    )
    dataset = create_dataset(config)
    feat = dataset.item_feat
    row = {i: dataset.token2id("item_id", i) for i in ("i1", "i2", "i3", "i4")}
    price = {i: float(feat["price"][r]) for i, r in row.items()}
    assert price == {"i1": 10.0, "i2": 20.0, "i3": 30.0, "i4": 20.0}
    brand = {i: int(feat["brand"][r]) for i, r in row.items()}
    assert brand["i1"] > 0 and brand["i2"] > 0 and brand["i3"] == 0 and brand["i4"] == 0
    tags = {i: int((feat["tags"][r] > 0).sum()) for i, r in row.items()}
    assert tags == {"i1": 2, "i2": 1, "i3": 0, "i4": 0}
    assert dataset.id2token("tags", feat["tags"][row["i1"]][:2]).tolist() == ["t1", "t2"]


@pytest.mark.skipif(int(pd.__version__.split(".")[0]) < 3, reason="pandas 2 warns only in copy-on-write mode")
def test_no_chained_assignment_warning_from_recboles_no_op_fillna(tmp_path):
    """RecBole's ``df[field].fillna(inplace=True)`` on a token_seq column warns on pandas 3
    (a no-op there; pandas_compat has filled the column): the warning is kept out of runs."""
    import warnings

    from recbole.data import create_dataset

    from recbole_attn.config import Config

    write_gaps_dataset(tmp_path)
    config = Config(model="BPR", dataset="gaps", config_dict={"data_path": str(tmp_path), **GAPS_CONFIG})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        create_dataset(config)
    assert not [w for w in seen if issubclass(w.category, compat.CHAINED_ASSIGNMENT)]
    with warnings.catch_warnings(record=True) as seen:  # RecBole's own call warns without the filter
        warnings.simplefilter("always")
        df = pd.DataFrame({"tags": ["a", None]})
        df["tags"].fillna(value="", inplace=True)
    assert [w for w in seen if issubclass(w.category, compat.CHAINED_ASSIGNMENT)]


def test_interaction_tensors_own_their_memory(tmp_path):
    """RecBole wraps ``Series.values`` in tensors without a copy; under pandas 3 those are
    read-only views of the DataFrame (torch warns "not writable"): the fix converts copies."""
    from recbole.data.dataset import Dataset

    df = pd.DataFrame({"user_id": np.arange(4, dtype=np.int64), "score": np.ones(4, dtype=np.float32)})
    shell = types.SimpleNamespace(
        field2type={"user_id": FeatureType.TOKEN, "score": FeatureType.FLOAT},
        config={"numerical_features": []}, field2seqlen={},
    )
    inter = Dataset._dataframe_to_interaction(shell, df)
    inter["user_id"][0], inter["score"][0] = 7, 5.0
    assert df["user_id"].tolist() == [0, 1, 2, 3] and df["score"].tolist() == [1.0] * 4
    raw = Dataset._dataframe_to_interaction.__wrapped__(shell, df)  # RecBole's own: a view
    raw["user_id"][0] = 7
    assert df["user_id"][0] == 7


@pytest.mark.skipif(int(pd.__version__.split(".")[0]) < 3, reason="RecBole 1.2.1 reads this dataset on pandas 2")
@pytest.mark.parametrize(
    "i3_tags, error",
    [("", "'float' object has no attribute 'split'"), ("t4", "Length of values")],
)
def test_recbole_alone_cannot_read_missing_values_on_pandas_3(tmp_path, i3_tags, error):
    """An empty token_seq value raises on read; otherwise the token_seq remapping raises."""
    write_gaps_dataset(tmp_path, i3_tags)
    aliases = ", ".join(f"{k!r}: {v}" for k, v in NUMPY_ALIAS_CODE.items())
    proc = run_fresh(
        "import numpy as np\n"
        f"for k, v in {{{aliases}}}.items():\n"
        "    np.__dict__.setdefault(k, v)\n"
        "from recbole.config import Config\n"
        "from recbole.data import create_dataset\n"
        f"cfg = dict({GAPS_CONFIG!r}, data_path={str(tmp_path)!r})\n"
        "create_dataset(Config(model='BPR', dataset='gaps', config_dict=cfg))\n"
    )
    assert proc.returncode != 0 and error in proc.stderr


# -- numpy 2 ---------------------------------------------------------------------------


@pytest.mark.skipif(np.lib.NumpyVersion(np.__version__) < "2.0.0", reason="numpy 1 has the names")
def test_recbole_config_fails_on_numpy2_without_the_aliases():
    proc = run_fresh(
        "from recbole.config.configurator import Config\nConfig.compatibility_settings(None)"
    )
    assert proc.returncode != 0 and "float_" in proc.stderr


def test_recbole_config_and_metrics_work_with_the_aliases():
    from recbole.config.configurator import Config as RecBoleConfig
    from recbole.evaluator.metrics import NDCG

    RecBoleConfig.compatibility_settings(None)  # np.float = np.float_ ...
    metric = NDCG({"topk": [2], "metric_decimal_place": 4})
    pos_index = np.array([[True, False], [False, True]])
    pos_len = np.array([1, 1])
    result = metric.metric_info(pos_index, pos_len)  # uses np.float
    assert result[:, 1] == pytest.approx([1.0, 1 / np.log2(3)])


# -- ray -------------------------------------------------------------------------------


def test_a_run_never_imports_ray_or_recbole_quick_start(tmp_path):
    from recbole_attn import run

    run("AttRec", "tiny", config_dict=tiny_config(epochs=1, checkpoint_dir=str(tmp_path)))
    assert "ray" not in sys.modules
    assert "recbole.quick_start" not in sys.modules


# -- anomaly mode ----------------------------------------------------------------------


def test_recbole_model_import_turns_anomaly_mode_on_without_the_fix():
    proc = run_fresh(
        "import torch, recbole.model.sequential_recommender\n"
        "print(torch.is_anomaly_enabled())"
    )
    assert proc.stdout.strip().endswith("True"), proc.stderr


def test_anomaly_mode_is_off_after_any_model_lookup():
    from recbole_attn.config import get_model

    assert "recbole.model.sequential_recommender.sine" in sys.modules
    assert not torch.is_anomaly_enabled()
    get_model("SINE")
    get_model("SASRec")
    assert not torch.is_anomaly_enabled()


def test_detect_anomaly_option_turns_it_on(tmp_path):
    from recbole_attn import run

    run(
        "AttRec",
        "tiny",
        config_dict=tiny_config(epochs=1, detect_anomaly=True, checkpoint_dir=str(tmp_path)),
    )
    assert torch.is_anomaly_enabled()


# -- GELU ------------------------------------------------------------------------------


def test_feedforward_gelu_is_fused_and_equal_to_recboles():
    from recbole.model.layers import FeedForward

    ff = FeedForward(8, 16, 0.0, "gelu", 1e-12)
    x = torch.randn(64, 16, requires_grad=True)
    out = ff.intermediate_act_fn(x)
    assert out.grad_fn.name() == "GeluBackward0"  # one fused op, not RecBole's 5
    reference = x * 0.5 * (1.0 + torch.erf(x / np.sqrt(2.0)))
    assert torch.allclose(out, reference, atol=1e-6)


# -- distributed on CPU ----------------------------------------------------------------


def test_recbole_ddp_accepts_a_cpu_model():
    import torch.distributed as dist
    import recbole.trainer.trainer as rb_trainer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        model = torch.nn.Linear(3, 2)
        with pytest.raises(ValueError):  # what RecBole's call does without the fix
            torch.nn.parallel.DistributedDataParallel(model, device_ids=[0])
        ddp = rb_trainer.DistributedDataParallel(model, device_ids=[0])
        assert ddp(torch.ones(1, 3)).shape == (1, 2)
    finally:
        dist.destroy_process_group()


# -- checkpoints (recbole_attn.trainer) --------------------------------------------------


def _checkpoint(tmp_path) -> str:
    from recbole_attn import run

    run("AttRec", "tiny", config_dict=tiny_config(epochs=1, checkpoint_dir=str(tmp_path)))
    (path,) = tmp_path.glob("AttRec-*.pth")
    return str(path)


@pytest.mark.skipif(
    tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 6),
    reason="torch < 2.6 loads with weights_only=False by default",
)
def test_default_torch_load_rejects_recbole_checkpoints(tmp_path):
    path = _checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_own_checkpoint_is_reloaded_after_training(tmp_path):
    from recbole_attn.trainer import load_checkpoint

    path = _checkpoint(tmp_path)  # run() reloaded it for the test evaluation
    checkpoint = load_checkpoint(path)
    assert checkpoint["config"]["model"] == "AttRec" and "state_dict" in checkpoint


def test_checkpoint_names_are_unique_within_one_second(tmp_path):
    from recbole_attn.trainer import get_trainer
    from conftest import build

    config, model, *_ = build("AttRec", checkpoint_dir=str(tmp_path))
    trainer_class = get_trainer(config["MODEL_TYPE"], "AttRec", type(model))
    names = {trainer_class(config, model).saved_model_file for _ in range(5)}
    assert len(names) == 5


# -- ensure_dir race ---------------------------------------------------------------------


def test_ensure_dir_tolerates_a_folder_created_concurrently(tmp_path, monkeypatch):
    import os

    import recbole.utils.logger as rb_logger

    target = tmp_path / "log"
    real_exists = os.path.exists
    # Another process creates the folder between RecBole's exists() check and makedirs().
    monkeypatch.setattr(os.path, "exists", lambda p: (target.mkdir(exist_ok=True), False)[1] if str(p) == str(target) else real_exists(p))
    rb_logger.ensure_dir(str(target))  # RecBole's version raises FileExistsError here
    assert target.is_dir()


def test_training_resumes_from_an_own_checkpoint(tmp_path):
    from recbole_attn.trainer import get_trainer
    from conftest import build

    path = _checkpoint(tmp_path)
    config, model, *_ = build("AttRec", checkpoint_dir=str(tmp_path))
    trainer = get_trainer(config["MODEL_TYPE"], "AttRec", type(model))(config, model)
    trainer.resume_checkpoint(path)  # RecBole's version raises UnpicklingError on torch >= 2.6
    assert trainer.start_epoch == 1 and trainer.saved_model_file == path
    state = torch.load(path, weights_only=False)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# -- scipy dok_matrix._update -------------------------------------------------------------


def test_recbole_graph_construction_fails_on_this_scipy_without_the_fix():
    proc = run_fresh(
        "import numpy as np, scipy.sparse as sp\n"
        "sp.dok_matrix((2, 2), dtype=np.float32)._update({(0, 1): 1})\n"
    )
    if proc.returncode == 0:
        pytest.skip("this scipy still has dok_matrix._update")
    assert "no attribute '_update'" in proc.stderr


def test_dok_update_sets_keys_as_a_dict_update_would():
    import scipy.sparse as sp

    data = {(0, 1): 1, (2, 3): 2, (1, 0): 1}
    data[(0, 1)] = 5  # a key set twice: the dict keeps the last value
    matrix = sp.dok_matrix((3, 4), dtype=np.float32)
    matrix[2, 2] = 7  # entries already there stay
    compat.dok_update(matrix, data)
    expected = np.zeros((3, 4), dtype=np.float32)
    expected[2, 2] = 7
    for (r, c), v in data.items():
        expected[r, c] = v
    assert np.array_equal(matrix.toarray(), expected)
    compat.dok_update(matrix, {})
    assert np.array_equal(matrix.toarray(), expected)


def test_lightgcn_graph_is_the_normalised_bipartite_adjacency():
    """LightGCN's A_hat = D^-1/2 A D^-1/2 of A = [[0, R], [R^T, 0]], R the binary
    user-item matrix of the training split, built densely here."""
    from conftest import build

    config, model, train_data, *_ = build("LightGCN", epochs=1)
    inter = train_data._dataset.inter_matrix(form="coo")
    n_users, n_items = model.n_users, model.n_items
    R = np.zeros((n_users, n_items), dtype=np.float32)
    R[inter.row, inter.col] = 1
    A = np.block([[np.zeros((n_users, n_users)), R], [R.T, np.zeros((n_items, n_items))]])
    d = np.power(A.sum(axis=1) + 1e-7, -0.5)
    expected = d[:, None] * A * d[None, :]
    got = model.norm_adj_matrix.to_dense().numpy()
    assert R.sum() > 100
    assert np.allclose(got, expected, atol=1e-6)


# -- pretrained weights, KSR ---------------------------------------------------------------


def test_trusted_torch_load_reads_recbole_checkpoints_and_restores_torch_load(tmp_path):
    path = _checkpoint(tmp_path)
    load = torch.load
    with compat.trusted_torch_load():
        assert torch.load(path)["config"]["model"] == "AttRec"
    assert torch.load is load


# S3Rec and RaCT fine-tuning from their pre-trained files: tests/test_builtins.py.


def test_ksr_relation_matrix_has_the_dtype_of_its_parameters():
    from conftest import build
    from test_builtins import model_config

    cfg = model_config("KSR")
    overrides = {k: v for k, v in cfg.items() if k not in ("model", "dataset", "data_path")}
    _, model, train_data, *_ = build("KSR", **overrides)
    assert train_data._dataset.get_preload_weight("rel_id").dtype == np.float64  # RecBole's
    assert model.relation_Matrix.dtype == model.item_embedding.weight.dtype == torch.float32


# -- HyperTuning on today's hyperopt ----------------------------------------------------


def test_recbole_exhaustive_search_fails_on_todays_hyperopt_without_the_fix():
    pytest.importorskip("hyperopt", reason="hyperopt is not installed (pip install hyperopt)")
    aliases = ", ".join(f"{k!r}: {v}" for k, v in NUMPY_ALIAS_CODE.items())
    proc = run_fresh(
        "import numpy as np\n"
        f"for k, v in {{{aliases}}}.items():\n"
        "    np.__dict__.setdefault(k, v)\n"
        "from recbole.trainer.hyper_tuning import HyperTuning\n"
        "result = {'model': 'm', 'best_valid_score': 1.0, 'valid_score_bigger': True}\n"
        "HyperTuning(lambda c, f: result, params_dict={'choice': {'x': [1, 2]}}).run()\n"
    )
    if proc.returncode == 0:
        pytest.skip("this hyperopt accepts RecBole's RandomState")
    assert "RandomState' object has no attribute 'integers'" in proc.stderr


def _hyper_tuning(tmp_path, algo: str, **kwargs):
    """RecBole's HyperTuning over two learning rates of AttRec on the tiny fixture."""
    import yaml
    from recbole.trainer import HyperTuning

    from recbole_attn import objective_function

    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump(tiny_config(model="AttRec", dataset="tiny", epochs=1, checkpoint_dir=str(tmp_path))))
    params = tmp_path / "lr.hyper"
    params.write_text("learning_rate choice [0.01,0.001]\n")
    tuner = HyperTuning(
        objective_function, algo=algo, params_file=str(params), fixed_config_file_list=[str(fixed)], **kwargs
    )
    tuner.run()
    return tuner


def test_hyper_tuning_exhaustive_tries_each_learning_rate_once(tmp_path):
    pytest.importorskip("hyperopt", reason="hyperopt is not installed (pip install hyperopt)")
    tuner = _hyper_tuning(tmp_path, "exhaustive")
    assert sorted(tuner.params2result) == ["learning_rate:0.001", "learning_rate:0.01"]
    scores = {p: r["best_valid_score"] for p, r in tuner.params2result.items()}
    assert tuner.best_score == max(scores.values())
    assert tuner.params2str(tuner.best_params) == max(scores, key=scores.get)
    for result in tuner.params2result.values():
        assert result["model"] == "AttRec" and set(result["test_result"]) == {"recall@5", "ndcg@5"}


@pytest.mark.parametrize("algo", ["random", "bayes"])
def test_hyper_tuning_random_and_bayes_run(tmp_path, algo):
    pytest.importorskip("hyperopt", reason="hyperopt is not installed (pip install hyperopt)")
    tuner = _hyper_tuning(tmp_path, algo, max_evals=2)
    assert len(tuner.score_list) == 2
    assert set(tuner.params2result) <= {"learning_rate:0.001", "learning_rate:0.01"}


def test_example_hyper_params_file_parses():
    pytest.importorskip("hyperopt", reason="hyperopt is not installed (pip install hyperopt)")
    import yaml
    from recbole.trainer.hyper_tuning import HyperTuning, _spacesize

    space = HyperTuning._build_space_from_file(str(REPO / "benchmarks" / "hyper" / "AttRec.hyper"))
    assert set(space) == {"learning_rate", "seq_window"} and _spacesize(space) == 4
    fixed = yaml.safe_load((REPO / "benchmarks" / "hyper" / "AttRec-ml-100k.yaml").read_text())
    assert fixed["model"] == "AttRec" and fixed["dataset"] == "ml-100k"


# -- torch_scatter stand-in (KGIN, MCCLK) --------------------------------------------------


def _scatter_case():
    torch.manual_seed(0)
    index = torch.tensor([2, 0, 2, 2, 0, 4])  # rows 1 and 3 receive nothing
    return torch.randn(6, 3, dtype=torch.float64), index


def test_scatter_mean_stand_in_is_the_mean_per_index():
    src, index = _scatter_case()
    out = compat.scatter_mean(src=src, index=index, dim_size=5, dim=0)
    expected = torch.zeros(5, 3, dtype=torch.float64)
    for n in (0, 2, 4):
        expected[n] = src[index == n].mean(dim=0)
    assert torch.allclose(out, expected)


def test_scatter_softmax_stand_in_is_a_softmax_per_index():
    src, index = _scatter_case()
    src = src.requires_grad_()
    out = compat.scatter_softmax(src, index=index, dim=0)
    for n in (0, 2, 4):
        assert torch.allclose(out[index == n], torch.softmax(src[index == n], dim=0))
    out.sum().backward()  # differentiable; each group sums to 1, so the gradient is 0
    assert torch.allclose(src.grad, torch.zeros_like(src), atol=1e-12)


def test_torch_scatter_stand_in_is_importable_only_inside_the_fallback():
    import importlib.util

    if importlib.util.find_spec("torch_scatter") is not None:
        pytest.skip("torch_scatter is installed: the real package is used")
    with compat.torch_scatter_fallback():
        from torch_scatter import scatter_mean, scatter_softmax

        assert scatter_mean is compat.scatter_mean and scatter_softmax is compat.scatter_softmax
    assert "torch_scatter" not in sys.modules
    with pytest.raises(ImportError):
        import torch_scatter  # noqa: F401
