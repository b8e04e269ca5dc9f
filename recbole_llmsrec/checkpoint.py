"""Plugin checkpoints: trainable tensors in safetensors; config, training state and fingerprints as JSON.

The frozen LLM and teacher are never written (they are rebuilt from ``llm_path`` and
``teacher_checkpoint``), and loading never unpickles anything. While a run is unfinished
its checkpoint also holds a resume state (``resume.*`` tensors: the latest weights,
optimizer moments and random generator states), which the finished run drops.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from recbole_llmsrec.distributed import DISTRIBUTED_KEYS
from recbole_llmsrec.fingerprints import check_fingerprints

FORMAT = "recbole_llmsrec.checkpoint/1"
RESUME_PREFIX = "resume."
OPTIMIZER_PREFIX = "optimizer."  # under RESUME_PREFIX; also in checkpoints written before resume states existed
METADATA_KEYS = ("config", "training", "fingerprints", "resume")


def rebuild_config_dict(config) -> dict[str, Any]:
    """The plain settings that rebuild this run's ``Config``: files, dict and command line, merged.

    How the run was launched (ranks, world size, rendezvous) is left out: the weights are the
    same from any number of ranks, and a reload or a resume runs in one process.
    """
    settings = {key: value for key, value in config.external_config_dict.items() if key not in DISTRIBUTED_KEYS}
    settings.update(model=config["model"], dataset=config["dataset"], teacher_checkpoint=config["teacher_checkpoint"])
    return json.loads(json.dumps(settings, default=str))


def cpu_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of a module's state dict."""
    return {name: value.detach().cpu().clone().contiguous() for name, value in module.state_dict().items()}


# ---------------------------------------------------------------------- optimizer and random generators
def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The optimizer's per-parameter tensors by ``optimizer.<index>.<slot>``, and its param groups."""
    state = optimizer.state_dict()
    tensors = {
        f"{OPTIMIZER_PREFIX}{index}.{name}": value.detach().cpu().contiguous()
        for index, slots in state["state"].items()
        for name, value in slots.items()
        if isinstance(value, torch.Tensor)
    }
    return tensors, state["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], param_groups: list[dict]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(OPTIMIZER_PREFIX):
            index, slot = name[len(OPTIMIZER_PREFIX):].split(".", 1)
            state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch (CPU and CUDA), numpy and Python random generator states, as tensors and JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, python_state, gauss_next = random.getstate()
    return tensors, {"numpy": [kind, position, has_gauss, cached_gaussian], "python": [version, list(python_state), gauss_next]}


def set_rng_state(tensors: Mapping[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[name] for name in sorted(n for n in tensors if n.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    version, python_state, gauss_next = state["python"]
    random.setstate((version, tuple(python_state), gauss_next))


# ---------------------------------------------------------------------- files
def save_checkpoint(
    path: str | os.PathLike,
    weights: torch.nn.Module | Mapping[str, torch.Tensor],
    config,
    training_state: dict[str, Any],
    fingerprints: dict[str, str] | None = None,
    resume: tuple[Mapping[str, torch.Tensor], dict[str, Any]] | None = None,
) -> None:
    """Write ``weights`` (a module's or a state dict) atomically to ``path``.

    ``resume`` = (tensors, JSON state) of an unfinished run, stored under ``resume.``.
    """
    if isinstance(weights, torch.nn.Module):
        weights = cpu_tensors(weights)
    tensors = dict(weights)
    resume_state = None
    if resume is not None:
        resume_tensors, resume_state = resume
        tensors.update({RESUME_PREFIX + name: value.contiguous() for name, value in resume_tensors.items()})
    parts = {"config": rebuild_config_dict(config), "training": training_state,
             "fingerprints": fingerprints or {}, "resume": resume_state}
    metadata = {"format": FORMAT, **{key: json.dumps(value, default=float) for key, value in parts.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    save_file(tensors, str(staging), metadata=metadata)
    os.replace(staging, path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON parts of a checkpoint: ``config``, ``training``, ``fingerprints`` and ``resume``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a complete plugin checkpoint (e.g. truncated by a full disk).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for unreadable files
        raise ValueError(f"{path} is not a readable safetensors checkpoint ({error}): it may be truncated; "
                         "use another checkpoint or train again.") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a recbole_llmsrec checkpoint (format {metadata.get('format')!r}).")
    return {key: json.loads(metadata[key]) if key in metadata else None for key in METADATA_KEYS}


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model tensors of a checkpoint and its resume tensors (prefix removed)."""
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as error:
        raise ValueError(f"{path}: its tensors cannot be read ({error}); the file may be truncated.") from None
    weights = {name: value for name, value in tensors.items() if not name.startswith((RESUME_PREFIX, OPTIMIZER_PREFIX))}
    resume = {name[len(RESUME_PREFIX):]: value for name, value in tensors.items() if name.startswith(RESUME_PREFIX)}
    return weights, resume


def load_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, fingerprints: dict[str, str] | None = None
) -> dict[str, Any]:
    """Load the weights of ``path`` into ``model``; return the metadata.

    Raises:
        ValueError: the file is not a readable checkpoint, or it was trained on other data,
            teacher or LLM than ``fingerprints`` (by default the model's own, if it has them).
    """
    metadata = read_metadata(path)
    check_fingerprints(metadata["fingerprints"], fingerprints or getattr(model, "fingerprints", {}), f"Checkpoint {path}")
    weights, _ = read_tensors(path)
    model.load_state_dict(weights)
    return metadata
