"""What RecBole's trainers lack: safe, resumable checkpoints with unique names
(``CheckpointMixin``), and ``get_trainer``, which puts it and the training recipe
(``recbole_attn.recipe.RecipeMixin``) in front of RecBole's trainer for every model.

RecBole 1.2.1 names checkpoints ``<model>-<Mon-DD-YYYY_HH-MM-SS>.pth``: two runs started
in the same second write (and reload) the same file. It writes them in place with
``torch.save`` (a full disk or a crash mid-save leaves a truncated file under the name of
the only good one), finds an unwritable ``checkpoint_dir`` only after the first epoch, and
keeps no state to continue an interrupted run. Its ``Trainer.evaluate`` and
``resume_checkpoint`` read checkpoints with ``torch.load``'s default, ``weights_only=True``
since torch 2.6, which cannot unpickle the ``Config`` stored inside (``UnpicklingError``).

``CheckpointMixin`` (put in front of RecBole's trainer by ``get_trainer``):

- names the best checkpoint ``<model>-<dataset>-<time>-<8 hex>.pth`` (the run's log file
  shares the stem), checks ``checkpoint_dir`` is writable before training, and writes
  every checkpoint to a temporary file in the same folder, then renames it over the old
  one (``os.replace``): a failure at any point leaves the previous file intact;
- stores a fingerprint of the dataset's user/item id mappings (``dataset_fingerprint``)
  in each checkpoint, which re-rankers check before using a ranker;
- keeps ``<stem>-last.pth``, the full trainer state after the latest finished epoch
  (weights, optimizer, LR scheduler, early-stopping counter, best score and result, the
  torch / numpy / random RNG states and the training loader's shuffling generator);
  ``resume_checkpoint`` on it continues to the result of an uninterrupted run with the
  same seed (CPU). It is removed when training ends normally;
- turns Ctrl-C during ``fit`` into ``TrainingInterrupted``, naming both checkpoints.

Only files this project writes are loaded with ``weights_only=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
import uuid
from functools import lru_cache

import numpy as np
import torch
import torch.distributed as dist

from recbole.trainer import Trainer
from recbole.utils import get_local_time, set_color
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_attn.errors import ConfigError
from recbole_attn.recipe import RecipeMixin

LAST_SUFFIX = "-last"


class CheckpointError(ConfigError, OSError):
    """A checkpoint (or log) folder or file that cannot be written or resumed from."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``fit``: where the best and the last checkpoint are (``None``: not written)."""

    def __init__(self, best: str | None, last: str | None, last_epoch: int | None):
        self.best, self.last, self.last_epoch = best, last, last_epoch
        super().__init__(f"training interrupted; best checkpoint: {best}, last checkpoint: {last}")


def load_checkpoint(path: str, map_location=None) -> dict:
    """Load a checkpoint written by RecBole's or this project's trainer.

    These files pickle the run's ``Config`` next to the weights, so they need
    ``weights_only=False``: only call this on files you wrote or trust.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


def unique_checkpoint_name(model: str, dataset: str) -> str:
    """``<model>-<dataset>-<local time>-<8 hex chars>.pth``: unique even within one second."""
    return f"{model}-{dataset}-{get_local_time()}-{uuid.uuid4().hex[:8]}.pth"


def last_checkpoint_path(best_path: str) -> str:
    """``<stem>-last.pth`` next to the best checkpoint ``<stem>.pth``."""
    stem, ext = os.path.splitext(best_path)
    return f"{stem}{LAST_SUFFIX}{ext or '.pth'}"


def check_writable(folder: str, key: str = "checkpoint_dir") -> None:
    """Create ``folder`` if needed and write (then remove) a probe file in it.

    Raises:
        CheckpointError: naming the folder and the option ``key`` that sets it.
    """
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise CheckpointError(
            f"{key} {os.path.abspath(folder)} is not writable ({err.strerror or err}): "
            f"pass {key}=<a folder you can write to>"
        ) from err


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in ``path``'s folder, then rename it to ``path``.

    A failure (full disk, exception, Ctrl-C) removes the temporary file and leaves any
    earlier file at ``path`` as it was; no partial file ever has the final name. The next
    save of ``path`` removes a temporary file left by a killed process.
    """
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    for stale in os.listdir(folder) if os.path.isdir(folder) else []:  # left by a process killed mid-save
        if stale.startswith(prefix) and stale.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, stale))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f, pickle_protocol=4)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what torch.save(path) would give
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        if isinstance(err, OSError):
            kept = "the previous file is unchanged" if os.path.exists(path) else "nothing was written"
            raise CheckpointError(f"could not write checkpoint {path} ({err.strerror or err}); {kept}") from err
        raise


def dataset_fingerprint(dataset) -> dict:
    """Name, folder and a hash of the user and item id mappings (``field2id_token``) of a dataset.

    Two datasets with the same name but other atomic files or filtering map raw ids to
    other internal ids; a model trained on one scores the wrong items on the other.
    """
    digest = hashlib.sha1()
    for field in (dataset.uid_field, dataset.iid_field):
        tokens = dataset.field2id_token.get(field) if field else None
        if tokens is None:
            continue
        digest.update(f"{field}\0{len(tokens)}\0".encode())
        digest.update("\x1f".join(map(str, tokens)).encode())
    return {
        "dataset": dataset.dataset_name,
        "data_path": str(dataset.config["data_path"]),
        "id_sha1": digest.hexdigest()[:16],
    }


def _rng_state(loader) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "random": random.getstate(),
        "loader": loader.generator.get_state() if getattr(loader, "generator", None) is not None else None,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, loader) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if state.get("loader") is not None and getattr(loader, "generator", None) is not None:
        loader.generator.set_state(state["loader"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class CheckpointMixin:
    """Put in front of a RecBole ``Trainer`` subclass; see the module docstring.

    ``config["checkpoint_name"]``, where set (``quick_start`` sets it so the log file
    shares the name), is used as the best checkpoint's file name.
    """

    def __init__(self, config, model):
        if config["single_spec"] or config["local_rank"] == 0:
            check_writable(config["checkpoint_dir"])
        super().__init__(config, model)
        name = config["checkpoint_name"] or unique_checkpoint_name(config["model"], config["dataset"])
        if not config["single_spec"]:  # every rank must read the file rank 0 writes
            shared = [name]
            dist.broadcast_object_list(shared, src=0)
            name = shared[0]
        self.saved_model_file = os.path.join(self.checkpoint_dir, name)
        self.last_checkpoint_file = last_checkpoint_path(self.saved_model_file)
        self.last_epoch: int | None = None  # epoch of the last checkpoint written or resumed
        self._saving = False
        self._fingerprint: dict | None = None
        self._pending_state: dict | None = None  # RNG / scheduler state to restore before the next epoch

    # ------------------------------------------------------------------ writing

    def _checkpoint_state(self, epoch: int) -> dict:
        """RecBole's checkpoint content, plus the dataset fingerprint."""
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }
        if self._fingerprint is not None:
            state["dataset_fingerprint"] = self._fingerprint
        return state

    def _is_writer(self) -> bool:
        return self.config["single_spec"] or self.config["local_rank"] == 0

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's ``_save_checkpoint``, written atomically (``atomic_save``)."""
        if not self._is_writer():
            return
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        atomic_save(self._checkpoint_state(epoch), saved_model_file)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    def _save_last_checkpoint(self, epoch: int, train_data) -> None:
        """The full trainer state after ``epoch``, to ``last_checkpoint_file``."""
        if not self._is_writer():
            return
        state = self._checkpoint_state(epoch)
        state.update(
            best_checkpoint=self.saved_model_file,
            best_valid_result=self.best_valid_result,
            train_loss_dict=dict(self.train_loss_dict),
            rng_state=_rng_state(train_data),
        )
        scheduler = getattr(self, "lr_scheduler", None)
        if scheduler is not None:
            state["lr_scheduler"] = scheduler.state_dict()
        atomic_save(state, self.last_checkpoint_file)
        self.last_epoch = epoch

    def _remove_last_checkpoint(self) -> None:
        if self._is_writer():
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.last_checkpoint_file)

    # ------------------------------------------------------------------ training

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's ``fit``, resumable; Ctrl-C raises ``TrainingInterrupted``.

        A resumed run whose ``epochs`` were all done returns its stored best at once
        (RecBole's would overwrite the best checkpoint with the last weights).
        """
        self._saving = saved
        dataset = getattr(train_data, "_dataset", None)
        if dataset is not None and hasattr(dataset, "field2id_token"):
            self._fingerprint = dataset_fingerprint(dataset)
        if self.start_epoch > 0 and self.start_epoch >= self.epochs:
            return self.best_valid_score, self.best_valid_result
        try:
            result = super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        except KeyboardInterrupt:
            best = self.saved_model_file if os.path.isfile(self.saved_model_file) else None
            last = self.last_checkpoint_file if os.path.isfile(self.last_checkpoint_file) else None
            raise TrainingInterrupted(best, last, self.last_epoch if last else None) from None
        self._remove_last_checkpoint()
        return result

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        """Before each epoch: restore a resumed state, or save the state the last epoch left.

        The state at the start of epoch k+1 is the state at the end of epoch k (its
        validation, early stopping and best checkpoint included).
        """
        if self._pending_state is not None:
            pending, self._pending_state = self._pending_state, None
            scheduler = getattr(self, "lr_scheduler", None)
            if scheduler is not None and pending.get("lr_scheduler") is not None:
                scheduler.load_state_dict(pending["lr_scheduler"])
            _set_rng_state(pending["rng_state"], train_data)
        elif self._saving and epoch_idx > self.start_epoch:
            self._save_last_checkpoint(epoch_idx - 1, train_data)
        return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    # ------------------------------------------------------------------ reading

    def _load_weights(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))

    def resume_checkpoint(self, resume_file) -> None:
        """RecBole's ``resume_checkpoint``, reading the file with ``load_checkpoint``.

        From a ``-last.pth`` checkpoint it restores the whole trainer state and keeps
        writing the run's best and last checkpoints; from a best checkpoint it does what
        RecBole does (weights, optimizer, counters; the RNG states are not stored there).

        Raises:
            CheckpointError: unreadable file, or a checkpoint of another model or dataset.
        """
        resume_file = str(resume_file)
        try:
            checkpoint = load_checkpoint(resume_file, map_location=self.device)
            saved_config = checkpoint["config"]
            model, dataset = saved_config["model"], saved_config["dataset"]
        except Exception as err:  # noqa: BLE001 - any failure to read is the same user error
            raise CheckpointError(
                f"cannot resume from {resume_file} ({type(err).__name__}: {err}); "
                "expected a checkpoint written by recbole-attn's or RecBole's trainer"
            ) from err
        if model.lower() != self.config["model"].lower() or dataset != self.config["dataset"]:
            raise CheckpointError(
                f"checkpoint {resume_file} is of --model={model} --dataset={dataset}, "
                f"not --model={self.config['model']} --dataset={self.config['dataset']}: resume with those"
            )
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self._load_weights(checkpoint)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if "rng_state" in checkpoint:  # a -last.pth checkpoint
            best = checkpoint["best_checkpoint"]
            self.saved_model_file = os.path.join(os.path.dirname(resume_file), os.path.basename(best))
            self.last_checkpoint_file = resume_file
            self.last_epoch = checkpoint["epoch"]
            self.best_valid_result = checkpoint["best_valid_result"]
            self.train_loss_dict = dict(checkpoint.get("train_loss_dict", {}))
            self._pending_state = {k: checkpoint.get(k) for k in ("rng_state", "lr_scheduler")}
        else:
            self.saved_model_file = resume_file
            self.last_checkpoint_file = last_checkpoint_path(resume_file)
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
    return type(base.__name__, (CheckpointMixin, RecipeMixin, base), {"__module__": __name__})


def get_trainer(model_type, model_name: str, model_class: type | None = None) -> type:
    """The trainer class for a model: the model's own ``trainer_class`` or RecBole's choice."""
    base = getattr(model_class, "trainer_class", None) or recbole_get_trainer(model_type, model_name)
    return _with_mixin(base)
