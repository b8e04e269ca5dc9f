"""The teacher stage: a RecBole sequential model (SASRec by default) trained once, then frozen.

The teacher is trained on each user's training sequence once, with the next-item loss at
every position (the original SASRec objective), instead of RecBole's default of one
sequence per prefix: the same model class and weights, ~L times fewer sequence passes.
Trained teachers are cached by dataset, split and teacher config and reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from recbole.data.utils import get_dataloader
from recbole.utils import init_seed
from recbole.utils.argument_list import dataset_arguments, evaluation_arguments

from recbole_llmsrec.checkpoint import read_metadata, read_tensors
from recbole_llmsrec.config import PriorityDictConfig
from recbole_llmsrec.data_preparation import last_prefix_per_user
from recbole_llmsrec.distributed import DISTRIBUTED_KEYS, barrier, broadcast_object, is_main_process
from recbole_llmsrec.fingerprints import check_fingerprints, data_fingerprint
from recbole_llmsrec.trainer import TeacherTrainer, all_positions
from recbole_llmsrec.utils import get_model

logger = logging.getLogger(__name__)

# Settings the teacher must share with the LLMSRec run: the data, split, evaluation and seed.
SHARED_KEYS = tuple(k for k in dataset_arguments + evaluation_arguments if k != "eval_batch_size") + (
    "seed", "reproducibility", "checkpoint_dir", "show_progress", "state", "gpu_id", "use_gpu",
)


# Settings of an LLM profile that a CF baseline takes from ``teacher_config`` instead (the
# quick-start profile's ``epochs: 1`` is LLMSRec's budget, not SASRec's). The batch size also
# matters to RecBole's Pop, which counts an item at most once per training batch.
CF_BUDGET_KEYS = ("epochs", "stopping_step", "train_batch_size")
# An LLM profile's training samples (e.g. the converged profile's ``train_samples: 3``) are its
# budget too: a CF baseline trains on the whole training split, every prefix of every user
# (RecBole's default), as its teacher does, and Pop counts every training interaction.
CF_TRAINING_DATA = {"train_samples": "all", "train_users": None}


def cf_budget(config) -> dict[str, Any]:
    """The training budget a CF baseline of this run takes: the whole training split
    (:data:`CF_TRAINING_DATA`) and ``teacher_config``'s :data:`CF_BUDGET_KEYS`."""
    budget = config["teacher_config"] or {}
    return {**CF_TRAINING_DATA, **{key: budget[key] for key in CF_BUDGET_KEYS if key in budget}}


def sibling_config(config, model: str, settings: dict[str, Any] | None = None) -> PriorityDictConfig:
    """Config of another model on the run's data, split, evaluation and seed, with ``settings`` on top."""
    overrides = {key: config[key] for key in SHARED_KEYS if config[key] is not None}
    if not config["single_spec"]:  # it trains and evaluates on the run's ranks
        overrides.update({key: config[key] for key in DISTRIBUTED_KEYS})
    if "data_path" in config.external_config_dict:  # as given: RecBole appends the dataset name to the final value
        overrides["data_path"] = config.external_config_dict["data_path"]
    overrides.update(settings or {})
    return PriorityDictConfig(
        model=model,
        dataset=config["dataset"],
        config_file_list=config.config_file_list,
        config_dict=overrides,
    )


def teacher_config(config) -> PriorityDictConfig:
    """Config of the teacher model: the run's data, split and evaluation, plus ``teacher_config``."""
    return sibling_config(config, config["teacher_model"], config["teacher_config"])


def teacher_cache_key(config, train_dataset) -> str:
    """Hash of everything the teacher's weights depend on: model, its config, seed and the training data."""
    digest = hashlib.sha1()
    settings = {
        "teacher_model": config["teacher_model"],
        "teacher_config": config["teacher_config"],
        "seed": config["seed"],
        "MAX_ITEM_LIST_LENGTH": config["MAX_ITEM_LIST_LENGTH"],
        "valid_users": config["valid_users"],  # early stopping reads that validation subset
        "n_items": train_dataset.item_num,
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    inter = train_dataset.inter_feat
    for field in (train_dataset.uid_field, train_dataset.iid_field, f"{train_dataset.iid_field}{config['LIST_SUFFIX']}"):
        digest.update(inter[field].numpy().tobytes())
    return digest.hexdigest()[:16]


def teacher_checkpoint_path(config, train_dataset) -> Path:
    """Where the teacher for this dataset, split and teacher config is cached."""
    name = f"teacher-{config['teacher_model']}-{config['dataset']}-{teacher_cache_key(config, train_dataset)}.safetensors"
    return Path(config["checkpoint_dir"]) / name


def supports_all_positions(model, interaction) -> bool:
    """Whether the model's ``forward`` yields per-position outputs under :func:`all_positions`."""
    if not hasattr(model, "item_embedding"):
        return False
    with torch.no_grad(), all_positions(model):
        output = model.forward(interaction[model.ITEM_SEQ][:2], interaction[model.ITEM_SEQ_LEN][:2])
    return output.dim() == 3 and output.shape[1] == interaction[model.ITEM_SEQ].shape[1]


def train_teacher(config, splits: list, valid_data, test_data) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse) the teacher on the run's built ``splits``; return its checkpoint and valid/test results.

    In a distributed run the teacher trains on every rank (RecBole's distributed path), rank 0
    writes its checkpoint, and every rank returns once the file is in place.
    """
    tconfig = teacher_config(config)
    train_dataset = splits[0]
    path = teacher_checkpoint_path(config, train_dataset)
    init_seed(tconfig["seed"], tconfig["reproducibility"])
    teacher = get_model(tconfig["model"])(tconfig, train_dataset).to(tconfig["device"])
    trainer = TeacherTrainer(tconfig, teacher)
    trainer.fingerprints = {"data": data_fingerprint(train_dataset)}
    if broadcast_object(path.is_file()):  # rank 0's view: every rank takes the same branch
        logger.info("Reusing the teacher %s", path)
        trainer.saved_model_file = str(path)
        valid_result = trainer.evaluate(valid_data, load_best_model=True, show_progress=tconfig["show_progress"])
        test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=tconfig["show_progress"])
        return path, {"valid": valid_result, "test": test_result, "trained": False}

    per_user = last_prefix_per_user(train_dataset)
    probe = get_dataloader(tconfig, "train")(tconfig, per_user, None, shuffle=False)
    trainer.per_position_loss = supports_all_positions(teacher, next(iter(probe)).to(tconfig["device"]))
    teacher_train = per_user if trainer.per_position_loss else train_dataset
    if not trainer.per_position_loss:
        logger.warning("%s has no per-position output: training it on every prefix (slower).", tconfig["model"])
    train_data = get_dataloader(tconfig, "train")(tconfig, teacher_train, None, shuffle=tconfig["shuffle"])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{broadcast_object(os.getpid())}.training")  # concurrent runs never share one
    trainer.saved_model_file = str(partial)
    trainer.fit(train_data, valid_data, saved=True, show_progress=tconfig["show_progress"])
    valid_result = trainer.evaluate(valid_data, load_best_model=True, show_progress=tconfig["show_progress"])
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=tconfig["show_progress"])
    if is_main_process():
        os.replace(partial, path)
    barrier()  # no rank reads the teacher before rank 0 has moved it in place
    logger.info("Saved the teacher to %s", path)
    return path, {"valid": valid_result, "test": test_result, "trained": True, "epoch_seconds": trainer.epoch_seconds}


def read_teacher_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str, dict[str, str]]:
    """Weights, dataset name and fingerprints of a teacher checkpoint.

    The plugin writes teachers as safetensors (no pickle). A RecBole ``.pth`` checkpoint
    is a pickle (it embeds RecBole's ``Config``): it is loaded as RecBole itself does, so
    only pass ``.pth`` files you trust.
    """
    if str(path).endswith(".safetensors"):
        metadata = read_metadata(path)
        return read_tensors(path)[0], metadata["config"]["dataset"], metadata["fingerprints"] or {}
    logger.warning("Unpickling the RecBole checkpoint %s: load only files you trust.", path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint["state_dict"], checkpoint["config"]["dataset"], {}


def few(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` names and how many more: error messages stay one line."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def load_teacher(config, dataset) -> torch.nn.Module:
    """The frozen teacher for an LLMSRec run, from ``teacher_checkpoint``, checked against the data.

    Raises:
        ValueError: no checkpoint is set, or it was trained on another dataset, other data
            under the same name (data fingerprint), item count or architecture.
    """
    path = config["teacher_checkpoint"]
    if not path:
        raise ValueError(
            "LLMSRec needs a trained teacher: set teacher_checkpoint to a RecBole checkpoint of "
            f"{config['teacher_model']}, or run through run_recbole_llmsrec, which trains one."
        )
    if not Path(path).is_file():
        raise FileNotFoundError(f"teacher_checkpoint={str(path)!r}: no such file.")
    state, trained_on, fingerprints = read_teacher_checkpoint(path)
    if trained_on != config["dataset"]:
        raise ValueError(
            f"teacher_checkpoint {path} was trained on dataset {trained_on!r}, not {config['dataset']!r}: "
            "train a teacher on this dataset (leave teacher_checkpoint unset to train one)."
        )
    check_fingerprints(fingerprints, {"data": data_fingerprint(dataset)}, f"teacher_checkpoint {path}")
    tconfig = teacher_config(config)
    teacher = get_model(tconfig["model"])(tconfig, dataset)
    items_in_checkpoint = state["item_embedding.weight"].shape[0] if "item_embedding.weight" in state else None
    if items_in_checkpoint != dataset.item_num:
        raise ValueError(
            f"teacher_checkpoint {path} has {items_in_checkpoint} items, the dataset {dataset.item_num}: "
            "it was trained with other filtering or split settings; retrain it on this data."
        )
    expected = teacher.state_dict()
    mismatched = [
        f"{name} {tuple(tensor.shape)} (expected {tuple(expected[name].shape)})"
        for name, tensor in state.items()
        if name in expected and expected[name].shape != tensor.shape
    ]
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if mismatched or missing or unexpected:
        problems = "; ".join(f"{kind}: {few(names)}" for kind, names in
                             (("other shapes", mismatched), ("missing", missing), ("unexpected", unexpected)) if names)
        raise ValueError(
            f"teacher_checkpoint {path} does not fit teacher_model={tconfig['model']} with teacher_config "
            f"(hidden_size={tconfig['hidden_size']}, n_layers={tconfig['n_layers']}): {problems}. "
            "Set teacher_config to the checkpoint's architecture, or leave teacher_checkpoint unset to train one."
        )
    teacher.load_state_dict(state)
    teacher.requires_grad_(False)
    return teacher.eval()
