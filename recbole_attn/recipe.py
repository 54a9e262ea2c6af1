"""The training recipe RecBole's trainers lack: AdamW without decay on norms/biases,
learning-rate schedules with warm-up, ``clip_grad_norm`` given as a number.

RecBole 1.2.1 has no learning-rate schedule, and its ``learner: adamw`` decays every
parameter. ``RecipeMixin`` (see its docstring) adds both, for every model;
``recbole_attn.trainer.get_trainer`` puts it in front of RecBole's trainer, behind the
checkpoint handling.
"""

from __future__ import annotations

import math

from torch import nn, optim

from recbole_attn.errors import ConfigError

LR_SCHEDULERS = ("constant", "linear", "cosine")
DECAY_EXCLUSIONS = ("layer_norm", "bias", "embedding")
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of ``learning_rate`` for optimizer step ``step`` (0 = the first update).

    As BERT4Rec's ``optimization.py`` (``polynomial_decay`` then warm-up): the decay runs
    over all ``total_steps`` from step 0, ``linear`` = 1 - step/total, ``cosine`` =
    (1 + cos(pi step/total)) / 2, 0 from ``total_steps`` on; for ``step < warmup_steps``
    the warm-up step/warmup replaces it. ``constant`` = 1 after the warm-up.
    """
    if step < warmup_steps:
        return step / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(step, total_steps) / max(total_steps, 1)
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def decay_exclusion(module: nn.Module, name: str) -> str | None:
    """The kind of ``module``'s own parameter ``name`` in ``DECAY_EXCLUSIONS``, or None.

    ``layer_norm``: any normalisation layer's parameter (LayerNorm, BatchNorm, GroupNorm);
    ``bias``: a name containing "bias" (as BERT's regex, so ``output_bias`` too);
    ``embedding``: an ``nn.Embedding``'s table.
    """
    if isinstance(module, NORM_TYPES):
        return "layer_norm"
    if "bias" in name:
        return "bias"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return None


def decay_groups(model: nn.Module, excluded) -> tuple[list[str], list[str]]:
    """(names of decayed parameters, names of the others) of ``model``'s trainable ones."""
    decay, no_decay, seen = [], [], set()
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{prefix}.{name}" if prefix else name
            kind = decay_exclusion(module, name)
            (no_decay if kind in excluded else decay).append(full)
    return decay, no_decay


class RecipeMixin:
    """Training-recipe options for any RecBole ``Trainer`` (keys in properties/overall.yaml).

    - ``learner: adamw``: ``torch.optim.AdamW`` (decoupled decay ``weight_decay``, epsilon
      ``adamw_epsilon``) with no decay on the parameter kinds in ``weight_decay_exclude``
      (BERT4Rec's ``AdamWeightDecayOptimizer`` excludes LayerNorm and bias). Torch's AdamW
      corrects the moment bias, BERT's optimizer does not.
    - ``learner: adagrad``: RecBole's Adagrad plus ``adagrad_initial_accumulator`` (AttRec's
      code starts it at 0.05). Other learners: RecBole's.
    - ``lr_scheduler`` with ``warmup_steps``: the learning rate times ``lr_factor`` of the
      number of optimizer steps done, over ``epochs`` x batches per epoch steps; stepped by
      an optimizer step hook, so RecBole's ``_train_epoch`` runs unchanged.
    - ``clip_grad_norm``: RecBole's dict of ``clip_grad_norm_`` arguments (applied in its
      ``_train_epoch``); a number is read as ``{max_norm: number}``.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.clip_grad_norm = _clip_args(config["clip_grad_norm"])
        self.lr_scheduler_kind = config["lr_scheduler"] or "constant"
        if self.lr_scheduler_kind not in LR_SCHEDULERS:
            raise ConfigError(
                f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, "
                f"got {self.lr_scheduler_kind!r}"
            )
        self.warmup_steps = config["warmup_steps"] or 0
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be an int >= 0, got {self.warmup_steps!r}")
        self.lr_scheduler = None
        self._lr_hook = None

    def _build_optimizer(self, **kwargs):
        learner = kwargs.get("learner", self.learner)
        if str(learner).lower() == "adagrad" and "params" not in kwargs:
            return optim.Adagrad(
                self.model.parameters(),
                lr=kwargs.get("learning_rate", self.learning_rate),
                weight_decay=kwargs.get("weight_decay", self.weight_decay) or 0.0,
                initial_accumulator_value=self.config["adagrad_initial_accumulator"] or 0.0,
            )
        if str(learner).lower() != "adamw" or "params" in kwargs:
            return super()._build_optimizer(**kwargs)
        excluded = list(self.config["weight_decay_exclude"] or [])
        unknown = [k for k in excluded if k not in DECAY_EXCLUSIONS]
        if unknown:
            raise ConfigError(
                f"weight_decay_exclude: unknown kind(s) {unknown}; choose from "
                f"{', '.join(DECAY_EXCLUSIONS)}"
            )
        decay, no_decay = decay_groups(self.model, excluded)
        self.decay_parameter_names = decay
        params = dict(self.model.named_parameters())
        weight_decay = kwargs.get("weight_decay", self.weight_decay) or 0.0
        groups = [
            {"params": [params[n] for n in decay], "weight_decay": weight_decay},
            {"params": [params[n] for n in no_decay], "weight_decay": 0.0},
        ]
        eps = self.config["adamw_epsilon"]
        return optim.AdamW(
            groups,
            lr=kwargs.get("learning_rate", self.learning_rate),
            eps=1e-8 if eps is None else eps,
        )

    def attach_lr_scheduler(self, steps_per_epoch: int) -> None:
        """Schedule ``self.optimizer`` over ``epochs`` x ``steps_per_epoch`` steps."""
        if self._lr_hook is not None:
            self._lr_hook.remove()
            for group in self.optimizer.param_groups:  # undo the previous schedule
                group["lr"] = group.get("initial_lr", group["lr"])
        self.lr_scheduler = self._lr_hook = None
        if self.lr_scheduler_kind == "constant" and not self.warmup_steps:
            return
        total = self.epochs * steps_per_epoch
        kind, warmup = self.lr_scheduler_kind, self.warmup_steps
        done = self.start_epoch * steps_per_epoch  # resumed runs continue the schedule
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.lr_scheduler = optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, total, warmup, kind), last_epoch=done - 1
        )
        self._lr_hook = self.optimizer.register_step_post_hook(
            lambda *_: self.lr_scheduler.step()
        )

    def fit(self, train_data, *args, **kwargs):
        self.attach_lr_scheduler(len(train_data))
        return super().fit(train_data, *args, **kwargs)


def _clip_args(value) -> dict | None:
    """``clip_grad_norm`` as ``clip_grad_norm_`` keyword arguments (None = no clipping)."""
    if value is None or value is False:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"max_norm": float(value)}
    if isinstance(value, dict) and "max_norm" in value:
        return dict(value)
    raise ConfigError(
        f"clip_grad_norm must be a number (max_norm) or a dict of clip_grad_norm_ arguments "
        f"with max_norm, e.g. {{max_norm: 5.0}}, got {value!r}"
    )
