"""What RecBole's trainers lack: unique checkpoint names and loading their own checkpoints.

RecBole 1.2.1 names checkpoints ``<model>-<Mon-DD-YYYY_HH-MM-SS>.pth``: two runs started
in the same second write (and reload) the same file. And its ``Trainer.evaluate`` and
``resume_checkpoint`` read checkpoints with ``torch.load``'s default, ``weights_only=True``
since torch 2.6, which cannot unpickle the ``Config`` stored inside (``UnpicklingError``).

``get_trainer`` returns RecBole's trainer for the model (or the plugin model's own
``trainer_class``) with ``CheckpointMixin`` in front. Only files this project writes are
loaded with ``weights_only=False``.
"""

from __future__ import annotations

import os
import uuid
from functools import lru_cache

import torch
import torch.distributed as dist

from recbole.trainer import Trainer
from recbole.utils import get_local_time
from recbole.utils import get_trainer as recbole_get_trainer


def load_checkpoint(path: str, map_location=None) -> dict:
    """Load a checkpoint written by RecBole's or this project's trainer.

    These files pickle the run's ``Config`` next to the weights, so they need
    ``weights_only=False``: only call this on files you wrote or trust.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


def unique_checkpoint_name(model: str) -> str:
    """``<model>-<local time>-<8 hex chars>.pth``: RecBole's name plus a random suffix."""
    return f"{model}-{get_local_time()}-{uuid.uuid4().hex[:8]}.pth"


class CheckpointMixin:
    """Put in front of a RecBole ``Trainer`` subclass; see the module docstring."""

    def __init__(self, config, model):
        super().__init__(config, model)
        name = unique_checkpoint_name(config["model"])
        if not config["single_spec"]:  # every rank must read the file rank 0 writes
            shared = [name]
            dist.broadcast_object_list(shared, src=0)
            name = shared[0]
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)

    def _load_weights(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))

    def resume_checkpoint(self, resume_file) -> None:
        """RecBole's ``resume_checkpoint``, reading the file with ``load_checkpoint``."""
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                f"checkpoint {resume_file} is of model {checkpoint['config']['model']}, "
                f"not {self.config['model']}: loading its weights may fail"
            )
        self.saved_model_file = resume_file
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self._load_weights(checkpoint)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if load_best_model and eval_data:
            if not self.config["single_spec"]:
                dist.barrier()  # rank 0 may still be writing the best checkpoint
            checkpoint_file = model_file or self.saved_model_file
            self._load_weights(load_checkpoint(checkpoint_file, map_location=self.device))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)


@lru_cache(maxsize=None)
def _with_mixin(base: type) -> type:
    if not issubclass(base, Trainer):
        return base
    return type(base.__name__, (CheckpointMixin, base), {"__module__": __name__})


def get_trainer(model_type, model_name: str, model_class: type | None = None) -> type:
    """The trainer class for a model: the model's own ``trainer_class`` or RecBole's choice."""
    base = getattr(model_class, "trainer_class", None) or recbole_get_trainer(model_type, model_name)
    return _with_mixin(base)
