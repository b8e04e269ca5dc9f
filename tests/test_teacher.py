"""The teacher stage: per-position objective, caching, and refusal of checkpoints that do not fit."""

from __future__ import annotations

import json
import re

import pytest
import torch
from recbole.data import create_dataset
from safetensors.torch import save_file

from recbole_llmsrec.checkpoint import FORMAT
from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders
from recbole_llmsrec.teacher import load_teacher, read_teacher_checkpoint, train_teacher
from recbole_llmsrec.trainer import all_positions_loss, next_item_targets

from helpers import build_llmsrec


def test_next_item_targets():
    item_seq = torch.tensor([[5, 6, 7, 0], [9, 0, 0, 0]])
    labels = next_item_targets(item_seq, torch.tensor([3, 1]), torch.tensor([8, 4]))
    assert labels.tolist() == [[6, 7, 8, 0], [4, 0, 0, 0]]


def test_all_positions_loss_equals_recbole_prefix_losses(setup_teacher):
    teacher, train_data = setup_teacher
    teacher.eval()
    row = next(iter(train_data))[[0]]
    seq, length, target = row["item_id_list"], int(row["item_length"]), row["item_id"]
    full = torch.cat([seq[0, :length], target])
    prefix_losses = []
    for t in range(1, length + 1):
        prefix = torch.zeros_like(seq)
        prefix[0, :t] = full[:t]
        interaction = type(row)({"item_id_list": prefix, "item_length": torch.tensor([t]), "item_id": full[t : t + 1]})
        prefix_losses.append(teacher.calculate_loss(interaction).item())
    assert all_positions_loss(teacher, row).item() == pytest.approx(sum(prefix_losses) / length, rel=1e-5)


@pytest.fixture(scope="module")
def setup_teacher(tiny_settings):
    config, model, (train_data, _, _) = build_llmsrec(tiny_settings)
    return model.teacher, train_data


def test_teacher_is_cached_and_reused(tiny_settings):
    config = Config(model="LLMSRec", dataset="tiny", config_dict=tiny_settings)
    dataset = create_dataset(config)
    splits = dataset.build()
    _, valid_data, test_data = build_dataloaders(config, dataset, splits)
    first_path, first = train_teacher(config, splits, valid_data, test_data)
    second_path, second = train_teacher(config, splits, valid_data, test_data)
    assert first_path == second_path and first_path.suffix == ".safetensors"
    assert second["trained"] is False
    assert second["test"] == first["test"] or first["trained"] is False
    other_path, _ = train_teacher(
        Config(model="LLMSRec", dataset="tiny", config_dict={**tiny_settings, "teacher_config": {"hidden_size": 8, "inner_size": 16, "epochs": 1}}),
        splits, valid_data, test_data,
    )
    assert other_path != first_path


def _teacher_path(tiny_settings) -> str:
    config, _, _ = build_llmsrec(tiny_settings)
    return config["teacher_checkpoint"]


def test_teacher_from_another_dataset_is_refused(tiny_settings, tmp_path):
    state, *_ = read_teacher_checkpoint(_teacher_path(tiny_settings))
    foreign = tmp_path / "foreign.safetensors"
    metadata = {"format": FORMAT, "config": json.dumps({"dataset": "ml-100k", "model": "SASRec"}),
                "training": "{}", "optimizer": "null"}
    save_file(state, str(foreign), metadata=metadata)
    config = Config(model="LLMSRec", dataset="tiny", config_dict={**tiny_settings, "teacher_checkpoint": str(foreign)})
    dataset = create_dataset(config)
    with pytest.raises(ValueError, match="trained on dataset 'ml-100k', not 'tiny'"):
        load_teacher(config, dataset)


def test_teacher_with_other_item_count_or_width_is_refused(tiny_settings, tmp_path):
    path = _teacher_path(tiny_settings)
    state, *_ = read_teacher_checkpoint(path)
    config = Config(model="LLMSRec", dataset="tiny", config_dict={**tiny_settings, "teacher_checkpoint": path})
    dataset = create_dataset(config).build()[0]  # the training split, as LLMSRec passes it

    fewer = dict(state, **{"item_embedding.weight": state["item_embedding.weight"][:-3]})
    cut = tmp_path / "fewer.safetensors"
    metadata = {"format": FORMAT, "config": json.dumps({"dataset": "tiny"}), "training": "{}", "optimizer": "null"}
    save_file(fewer, str(cut), metadata=metadata)
    config["teacher_checkpoint"] = str(cut)
    with pytest.raises(ValueError, match=f"has {dataset.item_num - 3} items, the dataset {dataset.item_num}"):
        load_teacher(config, dataset)

    wider = Config(model="LLMSRec", dataset="tiny", config_dict={
        **tiny_settings, "teacher_checkpoint": path, "teacher_config": {"hidden_size": 32, "inner_size": 32}})
    with pytest.raises(ValueError, match="does not fit teacher_model=SASRec.*hidden_size=32.*other shapes: ") as error:
        load_teacher(wider, dataset)
    assert len(str(error.value)) < 600 and "more" in str(error.value)  # a few names, then a count

    for layers, problem in ((1, "unexpected: trm_encoder.layer.1."), (3, "missing: trm_encoder.layer.2.")):
        other_depth = Config(model="LLMSRec", dataset="tiny", config_dict={
            **tiny_settings, "teacher_checkpoint": path, "teacher_config": {**tiny_settings["teacher_config"], "n_layers": layers}})
        with pytest.raises(ValueError, match=f"n_layers={layers}.*{re.escape(problem)}") as error:
            load_teacher(other_depth, dataset)
        assert len(str(error.value)) < 600


def test_missing_teacher_checkpoint_is_explained(tiny_settings):
    config = Config(model="LLMSRec", dataset="tiny", config_dict={**tiny_settings, "teacher_checkpoint": "/nope.safetensors"})
    with pytest.raises(FileNotFoundError, match="/nope.safetensors"):
        load_teacher(config, None)
    config["teacher_checkpoint"] = None
    with pytest.raises(ValueError, match="run_recbole_llmsrec, which trains one"):
        load_teacher(config, None)
