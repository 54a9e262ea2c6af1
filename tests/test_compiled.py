"""``torch_compile``: the model's loss and scoring methods go through ``torch.compile``."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.config as inductor_config

from recbole_attn import compiled
from recbole_attn.errors import ConfigError
from test_din import din


def test_torch_compile_wraps_the_loss_and_scoring_methods(monkeypatch):
    seen = []

    def fake_compile(fn, mode="default"):
        seen.append((fn.__name__, mode))

        def wrapped(*args, **kwargs):
            wrapped.calls += 1
            return fn(*args, **kwargs)

        wrapped.calls = 0
        return wrapped

    monkeypatch.setattr(compiled.torch, "compile", fake_compile)
    monkeypatch.setattr(inductor_config, "fallback_random", False)
    _, model, train_data, _, _ = din(torch_compile=True, torch_compile_mode="max-autotune")
    assert seen == [(name, "max-autotune") for name in compiled.COMPILED_METHODS]
    assert inductor_config.fallback_random  # compiled dropout draws eager's masks
    batch = next(iter(train_data))
    loss = model.calculate_loss(batch)
    assert model.calculate_loss.calls == 1 and torch.isfinite(loss)
    assert set(model.state_dict()) == set(din()[1].state_dict())  # checkpoints unchanged


def test_torch_compile_is_off_by_default(monkeypatch):
    monkeypatch.setattr(compiled.torch, "compile", lambda *a, **k: pytest.fail("compiled although off"))
    config, model, _, _, _ = din()
    assert config["torch_compile"] is False
    assert "calculate_loss" not in vars(model)


def test_unknown_compile_mode_names_the_key():
    with pytest.raises(ConfigError, match="torch_compile_mode"):
        compiled.compile_model(torch.nn.Linear(1, 1), mode="fast")
