"""LLMSRec checkpoints: trainable tensors in safetensors, the config and training state as JSON.

The frozen LLM and teacher are never written (they are rebuilt from ``llm_path`` and
``teacher_checkpoint``), and loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

FORMAT = "recbole_llmsrec.checkpoint/1"
OPTIMIZER_PREFIX = "optimizer."


def rebuild_config_dict(config) -> dict[str, Any]:
    """The plain settings that rebuild this run's ``Config``: files, dict and command line, merged."""
    settings = dict(config.external_config_dict)
    settings.update(model=config["model"], dataset=config["dataset"], teacher_checkpoint=config["teacher_checkpoint"])
    return json.loads(json.dumps(settings, default=str))


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors = {
        f"{OPTIMIZER_PREFIX}{index}.{name}": value.detach().cpu().contiguous()
        for index, slots in state["state"].items()
        for name, value in slots.items()
        if isinstance(value, torch.Tensor)
    }
    return tensors, {"param_groups": state["param_groups"]}


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    config,
    training_state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write the trainable tensors (and optimizer moments) atomically to ``path``."""
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    optimizer_meta = None
    if optimizer is not None:
        optimizer_tensors, optimizer_meta = _optimizer_tensors(optimizer)
        tensors.update(optimizer_tensors)
    metadata = {
        "format": FORMAT,
        "config": json.dumps(rebuild_config_dict(config)),
        "training": json.dumps(training_state, default=float),
        "optimizer": json.dumps(optimizer_meta),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    save_file(tensors, str(staging), metadata=metadata)
    os.replace(staging, path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON parts of a checkpoint: ``config``, ``training``, ``optimizer``."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a recbole_llmsrec checkpoint (format {metadata.get('format')!r}).")
    return {key: json.loads(metadata[key]) for key in ("config", "training", "optimizer")}


def load_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load weights (and optimizer moments) from ``path`` into ``model``; return the metadata."""
    metadata = read_metadata(path)
    tensors = load_file(str(path), device="cpu")
    model_tensors = {name: value for name, value in tensors.items() if not name.startswith(OPTIMIZER_PREFIX)}
    model.load_state_dict(model_tensors)
    if optimizer is not None and metadata["optimizer"] is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith(OPTIMIZER_PREFIX):
                index, slot = name[len(OPTIMIZER_PREFIX) :].split(".", 1)
                state.setdefault(int(index), {})[slot] = value
        optimizer.load_state_dict({"state": state, "param_groups": metadata["optimizer"]["param_groups"]})
    return metadata
