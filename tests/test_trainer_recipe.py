"""The training recipe for any model: AdamW without decay on norms/biases, lr schedules, clipping."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_attn.config import ConfigError, get_model
from recbole_attn.recipe import lr_factor
from recbole_attn.trainer import get_trainer
from conftest import build


def trainer_for(name: str, tmp_path, **overrides):
    config, model, train, valid, _ = build(name, checkpoint_dir=str(tmp_path), **overrides)
    cls = get_trainer(config["MODEL_TYPE"], name, get_model(name) if name != "SASRec" else None)
    return cls(config, model), train, valid


# ---------------------------------------------------------------- schedule


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_lr_factor_at_start_warmup_end_and_last_step(kind):
    total, warmup = 1000, 100
    assert lr_factor(0, total, warmup, kind) == 0.0
    assert lr_factor(50, total, warmup, kind) == pytest.approx(0.5)
    end_of_warmup = {"linear": 1 - 0.1, "cosine": 0.5 * (1 + math.cos(0.1 * math.pi))}
    assert lr_factor(warmup, total, warmup, kind) == pytest.approx(end_of_warmup[kind])
    assert lr_factor(total, total, warmup, kind) == pytest.approx(0.0, abs=1e-12)
    assert 0 < lr_factor(total - 1, total, warmup, kind) < 1e-2
    assert lr_factor(0, total, 0, kind) == 1.0  # no warm-up: full rate at the first step


def test_constant_schedule_is_constant_after_warmup():
    assert [lr_factor(s, 10, 2, "constant") for s in (0, 1, 2, 9)] == [0.0, 0.5, 1.0, 1.0]


def test_trainer_steps_the_schedule_once_per_batch(tmp_path):
    epochs = 3
    trainer, train, valid = trainer_for(
        "SASRec", tmp_path, lr_scheduler="linear", warmup_steps=2, epochs=epochs,
        learning_rate=0.01, stopping_step=100,
    )
    seen = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, *_: seen.append(opt.param_groups[0]["lr"])
    )
    trainer.fit(train, valid, saved=False, show_progress=False)
    total = epochs * len(train)
    assert len(seen) == total >= 4
    expected = [0.01 * lr_factor(s, total, 2, "linear") for s in range(total)]
    assert seen == pytest.approx(expected)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_resumed_run_continues_the_schedule(tmp_path):
    trainer, _, _ = trainer_for(
        "SASRec", tmp_path, lr_scheduler="linear", warmup_steps=5, epochs=4, learning_rate=0.01
    )
    trainer.start_epoch = 2  # as after resume_checkpoint of epoch 1
    trainer.attach_lr_scheduler(10)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - 20 / 40))
    trainer.start_epoch = 0
    trainer.attach_lr_scheduler(10)  # attaching again replaces the schedule
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0


def test_builtin_sasrec_trains_with_linear_schedule_and_adamw(tmp_path):
    trainer, train, valid = trainer_for(
        "SASRec", tmp_path, lr_scheduler="linear", warmup_steps=3, learner="adamw",
        weight_decay=0.01, epochs=4, learning_rate=0.01, stopping_step=100,
    )
    trainer.fit(train, valid, saved=False, show_progress=False)
    losses = trainer.train_loss_dict
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert losses[max(losses)] < losses[0], losses


def test_default_recipe_is_recboles_adam_at_constant_rate(tmp_path):
    trainer, train, valid = trainer_for("SASRec", tmp_path, epochs=1)
    assert type(trainer.optimizer) is torch.optim.Adam
    trainer.fit(train, valid, saved=False, show_progress=False)
    assert trainer.lr_scheduler is None
    assert trainer.optimizer.param_groups[0]["lr"] == 0.001


@pytest.mark.parametrize("name", ["AttRec", "SASRec"])
def test_adagrad_starts_from_the_configured_accumulator(name, tmp_path):
    trainer, _, _ = trainer_for(name, tmp_path, learner="adagrad", learning_rate=0.05,
                                adagrad_initial_accumulator=0.05, weight_decay=0.0)
    assert type(trainer.optimizer) is torch.optim.Adagrad
    assert trainer.optimizer.defaults["initial_accumulator_value"] == 0.05
    p = next(trainer.model.parameters())
    assert torch.all(trainer.optimizer.state[p]["sum"] == 0.05)
    if name == "SASRec":  # no accumulator of its own: RecBole's 0
        default, _, _ = trainer_for(name, tmp_path, learner="adagrad")
        assert default.optimizer.defaults["initial_accumulator_value"] == 0.0


# ---------------------------------------------------------------- decay


def test_adamw_does_not_decay_layer_norm_and_bias(tmp_path):
    trainer, _, _ = trainer_for(
        "NOVABERT", tmp_path, learner="adamw", weight_decay=0.1, learning_rate=0.5,
        lr_scheduler="constant",
    )
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: only the decoupled decay moves a weight
    trainer.optimizer.step()
    kept = {n for n, p in model.named_parameters() if torch.equal(p, before[n])}
    norm_or_bias = {
        n for n, _ in model.named_parameters() if "norm" in n or "bias" in n
    }
    assert norm_or_bias and norm_or_bias <= kept
    assert "output_bias" in norm_or_bias and "input_norm.weight" in norm_or_bias
    decayed = model.item_embedding.weight  # embeddings are decayed (BERT4Rec's code)
    assert torch.allclose(decayed, before["item_embedding.weight"] * (1 - 0.5 * 0.1))
    assert torch.allclose(
        model.layers[0].query.weight, before["layers.0.query.weight"] * 0.95
    )


def test_embeddings_can_be_excluded_from_decay(tmp_path):
    trainer, _, _ = trainer_for(
        "NOVABERT", tmp_path, learner="adamw", weight_decay=0.1,
        weight_decay_exclude=["layer_norm", "bias", "embedding"],
    )
    assert "item_embedding.weight" not in trainer.decay_parameter_names
    assert "layers.0.query.weight" in trainer.decay_parameter_names


# ---------------------------------------------------------------- clipping


@pytest.mark.parametrize("clip", [{"max_norm": 1e-3}, 1e-3])
def test_clip_grad_norm_is_applied(clip, tmp_path):
    trainer, train, valid = trainer_for("SASRec", tmp_path, clip_grad_norm=clip, epochs=1)
    norms = []

    def record(opt, *_):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    trainer.optimizer.register_step_pre_hook(record)
    trainer.fit(train, valid, saved=False, show_progress=False)
    assert norms and max(norms) <= 1e-3 * 1.001


def test_bad_recipe_options_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="lr_scheduler must be one of constant, linear, cosine"):
        trainer_for("SASRec", tmp_path, lr_scheduler="step")
    with pytest.raises(ConfigError, match="clip_grad_norm"):
        trainer_for("SASRec", tmp_path, clip_grad_norm={"norm_type": 2})
    with pytest.raises(ConfigError, match="weight_decay_exclude"):
        trainer_for("SASRec", tmp_path, learner="adamw", weight_decay_exclude=["norm"])
