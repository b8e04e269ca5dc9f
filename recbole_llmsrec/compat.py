"""Compatibility layer that lets RecBole 1.2.1 run on numpy 2 and torch >= 2.6, and its
distributed mode on CPU ranks (its process-group start is the plugin ``Config``'s, through
:func:`recbole_llmsrec.distributed.init_device`).

RecBole's last release predates both. Each shim below is the smallest change that
makes RecBole's own code path work again; :func:`apply` runs them once, on import of
:mod:`recbole_llmsrec`. ``recbole.quick_start`` is never imported: it imports ray at
module level, which needs ``pkg_resources`` and ``np.bool8`` (both gone).

pandas 3 is not shimmed but excluded by the package requirements (``pandas<3``): its
copy-on-write turns RecBole's chained in-place ``fillna`` into a silent no-op.
"""

from __future__ import annotations

import types
import warnings
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

# numpy 2 removed these aliases; RecBole uses them at run time (``np.float`` in the
# dataset and evaluator, ``np.long`` in the embedding layers) and its ``Config``
# re-creates the short names from the underscore ones (``np.float = np.float_``).
NUMPY_ALIASES: dict[str, Any] = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
}


def add_numpy_aliases() -> None:
    """Restore the numpy 1 scalar aliases RecBole refers to (only those missing)."""
    for name, value in NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


class _TrustedCheckpointTorch(types.ModuleType):
    """``torch`` as seen by RecBole's trainer module, with its own checkpoint loads allowed.

    RecBole checkpoints pickle the ``Config`` object; torch >= 2.6 refuses that by default
    (``weights_only=True``). Only ``recbole.trainer.trainer`` sees this module, so the
    unpickling stays limited to the checkpoints RecBole itself wrote and reloads.
    """

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("weights_only", False)
        return torch.load(f, *args, **kwargs)


def allow_recbole_checkpoint_loads() -> None:
    """Let ``Trainer.resume_checkpoint`` and ``Trainer.evaluate(load_best_model=True)`` load."""
    import recbole.trainer.trainer as recbole_trainer

    if not isinstance(recbole_trainer.torch, _TrustedCheckpointTorch):
        recbole_trainer.torch = _TrustedCheckpointTorch()


def import_sequential_models_without_anomaly_detection() -> None:
    """Import RecBole's sequential models, then undo SINE's global anomaly detection.

    ``recbole/model/sequential_recommender/sine.py`` calls
    ``torch.autograd.set_detect_anomaly(True)`` at import time, and the package
    ``__init__`` imports every model, so merely loading SASRec slows every backward
    pass in the process several-fold.
    """
    was_enabled = torch.is_anomaly_enabled()
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(was_enabled)


def silence_recbole_future_warnings() -> None:
    """Hide FutureWarnings raised inside RecBole's own code.

    They announce pandas 3 (chained ``fillna(inplace=True)``, ``agg(len)``) and torch's
    renamed ``GradScaler``: on pandas < 3 (which the package requires) and this torch the
    code still does what RecBole means, and a user cannot act on them.
    """
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")


def distributed_data_parallel(module: torch.nn.Module, device_ids: list[int] | None = None, **kwargs: Any):
    """RecBole's ``DistributedDataParallel(model, device_ids=[local_rank])``, for CPU ranks and frozen models.

    DDP refuses ``device_ids`` for a CPU module and any module without a trainable tensor
    (a frozen teacher evaluated beside LLMSRec); such a model has nothing to synchronise.
    """
    if not any(parameter.requires_grad for parameter in module.parameters()):
        return None
    on_cpu = next(module.parameters()).device.type == "cpu"
    return DistributedDataParallel(module, device_ids=None if on_cpu else device_ids, **kwargs)


class _SilentWriter:
    """A TensorBoard writer that writes nothing: every method is a no-op."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def run_distributed_trainers() -> None:
    """Let RecBole's trainers run on CPU ranks, with one TensorBoard writer per run (rank 0's)."""
    import recbole.trainer.trainer as recbole_trainer

    from recbole_llmsrec.distributed import is_main_process

    recbole_get_tensorboard = recbole_trainer.get_tensorboard
    recbole_trainer.DistributedDataParallel = distributed_data_parallel
    recbole_trainer.get_tensorboard = lambda logger: recbole_get_tensorboard(logger) if is_main_process() else _SilentWriter()


_applied = False


def apply() -> None:
    """Apply every shim once; later calls do nothing."""
    global _applied
    if _applied:
        return
    add_numpy_aliases()
    silence_recbole_future_warnings()
    allow_recbole_checkpoint_loads()
    run_distributed_trainers()
    import_sequential_models_without_anomaly_detection()
    _applied = True
