"""``torch_compile``: opt-in ``torch.compile`` of a model's training and scoring methods.

RecBole's trainer calls ``model.calculate_loss``, its evaluators ``model.predict`` and
``model.full_sort_predict``; those call ``self.forward`` on the module itself, so
compiling the module (``torch.compile(model)``, which compiles only ``__call__``) would
leave them eager. Here each of the three methods is replaced on the instance by its
compiled version: weights, ``state_dict`` keys and checkpoints are unchanged. Inductor's
``fallback_random`` is switched on (process-wide), so compiled dropout draws its masks from
torch's generator as eager does and a seed gives the eager run's numbers up to the order of
float sums (inductor's own generator would draw other masks). Off by default: on a CPU it
measured faster on AttRec and AttnDIN, slower on SASRec and ATRank, and mixed on NOVABERT
(compiled / eager: 0.89 through the runner, 1.10 in the plain loop; docs/speed.md).
"""

from __future__ import annotations

import torch
from torch import nn

from recbole_attn.errors import ConfigError

COMPILED_METHODS = ("calculate_loss", "predict", "full_sort_predict")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def compile_model(model: nn.Module, mode: str = "default") -> nn.Module:
    """Replace ``model``'s ``COMPILED_METHODS`` (those it has) by ``torch.compile``d ones; returns it."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"torch_compile_mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    import torch._inductor.config as inductor_config  # here: importing it costs seconds

    inductor_config.fallback_random = True
    for name in COMPILED_METHODS:
        method = getattr(model, name, None)
        if method is not None:
            setattr(model, name, torch.compile(method, mode=mode))
    return model
