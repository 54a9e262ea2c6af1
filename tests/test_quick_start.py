"""The runner: plugin and built-in models, results, save -> load, seeds, HyperTuning."""

from __future__ import annotations

import pytest
import torch

from recbole_attn import load_data_and_model, objective_function, run
from conftest import tiny_config

RESULT_KEYS = {"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}


@pytest.mark.parametrize("model", ["AttRec", "SASRec"])
def test_run_returns_recboles_result_dict(model, tmp_path):
    result = run(model, "tiny", config_dict=tiny_config(checkpoint_dir=str(tmp_path)))
    assert set(result) == RESULT_KEYS
    assert set(result["test_result"]) == {"recall@5", "ndcg@5"}
    assert all(isinstance(v, float) for v in result["test_result"].values())
    assert result["valid_score_bigger"] is True


@pytest.mark.parametrize("model", ["AttRec", "SASRec"])
def test_same_seed_same_numbers(model, tmp_path):
    cfg = tiny_config(epochs=3, checkpoint_dir=str(tmp_path))
    first, second = run(model, "tiny", config_dict=cfg), run(model, "tiny", config_dict=cfg)
    assert first["best_valid_result"] == second["best_valid_result"]
    assert first["test_result"] == second["test_result"]


@pytest.mark.parametrize("model", ["AttRec", "SASRec"])
def test_save_load_gives_identical_scores(model, tmp_path):
    from recbole.data.interaction import Interaction

    run(model, "tiny", config_dict=tiny_config(checkpoint_dir=str(tmp_path)))
    (path,) = tmp_path.glob(f"{model}-*.pth")
    config, net, dataset, train_data, valid_data, test_data = load_data_and_model(str(path))
    assert config["model"] == model
    net.eval()
    batch = next(iter(test_data))[0]
    with torch.no_grad():
        scores = net.full_sort_predict(batch)
    # A second load from the same file scores identically, and matches the stored weights.
    _, net2, *_ = load_data_and_model(str(path))
    net2.eval()
    with torch.no_grad():
        assert torch.equal(scores, net2.full_sort_predict(batch))
    state = torch.load(path, weights_only=False)["state_dict"]
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert isinstance(batch, Interaction)


def test_loaded_model_reproduces_the_reported_test_metrics(tmp_path):
    from recbole_attn.trainer import get_trainer

    result = run("AttRec", "tiny", config_dict=tiny_config(epochs=3, checkpoint_dir=str(tmp_path)))
    (path,) = tmp_path.glob("AttRec-*.pth")
    config, net, _, _, _, test_data = load_data_and_model(str(path))
    trainer = get_trainer(config["MODEL_TYPE"], "AttRec", type(net))(config, net)
    again = trainer.evaluate(test_data, load_best_model=False)
    assert {k: float(v) for k, v in again.items()} == result["test_result"]


def test_objective_function_returns_what_hypertuning_reads(tmp_path):
    cfg = tiny_config(model="AttRec", dataset="tiny", epochs=1, checkpoint_dir=str(tmp_path))
    result = objective_function(config_dict=cfg)
    assert result["model"] == "AttRec"
    assert RESULT_KEYS <= set(result)
    assert isinstance(result["best_valid_score"], float)


def test_ml_100k_from_recboles_wheel_trains_one_epoch(tmp_path):
    """The embedded default dataset: AttRec for one epoch through the whole pipeline."""
    result = run(
        "AttRec",
        "ml-100k",
        config_dict={"epochs": 1, "show_progress": False, "state": "WARNING", "checkpoint_dir": str(tmp_path)},
    )
    assert 0.0 < result["test_result"]["ndcg@10"] < 1.0
