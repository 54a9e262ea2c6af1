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
    with inductor_config.patch(fallback_random=False):  # (monkeypatch's undo deletes config keys)
        _, model, train_data, _, _ = din(torch_compile=True, torch_compile_mode="max-autotune")
        assert inductor_config.fallback_random  # compiled dropout draws eager's masks
    assert seen == [(name, "max-autotune") for name in compiled.COMPILED_METHODS]
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


def test_floor_compile_times_eager_and_compiled_passes_from_the_same_state(monkeypatch, tmp_path):
    """``benchmarks/floor.py --compile``: compiled passes call the compiled loss, eager ones the
    model's own; every pass starts from the same state, so all summed losses agree."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "floor.py"
    spec = importlib.util.spec_from_file_location("floor_bench", path)
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)
    calls = []

    def fake_compile(fn, mode="default"):
        def wrapped(*args, **kwargs):
            calls.append(mode)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(torch, "compile", fake_compile)
    overrides = {"seed": 2020, "torch_threads": 1, "show_progress": False, "state": "WARNING", "device": "cpu",
                 "use_gpu": False, "train_batch_size": 256, "MAX_ITEM_LIST_LENGTH": 5, "epochs": 1,
                 "checkpoint_dir": str(tmp_path)}
    with inductor_config.patch(fallback_random=False):
        record = floor.measure_compile("SASRec", "ml-100k", [], overrides, batches=2, rounds=2,
                                       mode="max-autotune", fallback_random=True)
        assert inductor_config.fallback_random
    assert record["benchmark"] == "compile" and record["batches"] == 2 and record["compile_mode"] == "max-autotune"
    # warm-up: 2 compiled passes of each kind; timing: 2 rounds; 2 batches per pass
    assert len(calls) == (2 * 2 + 2 * 2) * 2
    assert record["fallback_random"]
    assert set(record["times_s"]) == set(floor.COMPILE_PASSES)
    assert all(len(v) == 2 for v in record["times_s"].values())
    assert record["loss_identical"] and record["loss_match"]  # the fake compile is the eager loss
    assert record["compiles"] == {"warmup": 0, "timed": 0}
    losses = {x for v in record["losses"].values() for x in v}
    assert max(losses) - min(losses) < 1e-5  # runner (float64 sum of .item()) vs loop (float32 sum)
