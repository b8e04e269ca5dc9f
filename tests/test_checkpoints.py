"""Checkpoints that cannot be confused: fingerprints of data, teacher and LLM; unreadable files named."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from recbole.data import create_dataset
from recbole.utils import init_seed
from transformers import AutoModelForCausalLM

from recbole_llmsrec.checkpoint import load_checkpoint, read_metadata, read_tensors, save_checkpoint
from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders
from recbole_llmsrec.quick_start import load_data_and_model
from recbole_llmsrec.teacher import load_teacher
from recbole_llmsrec.trainer import SafetensorsCheckpointTrainer
from recbole_llmsrec.utils import get_model

from helpers import Killed, build_llmsrec

DATA_DIR = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tiny_settings, tmp_path_factory):
    """A saved LLMSRec checkpoint of the tiny run, its config and model."""
    config, model, _ = build_llmsrec(tiny_settings)
    path = tmp_path_factory.mktemp("ckpt") / "llmsrec.safetensors"
    save_checkpoint(path, model, config, {"epoch": 0, "finished": True}, model.fingerprints)
    return path, config, model


def test_checkpoint_stores_the_fingerprints_and_a_rebuilt_run_matches_them(trained):
    path, _, model = trained
    stored = read_metadata(path)["fingerprints"]
    assert set(stored) == {"data", "teacher", "llm"} and stored == model.fingerprints
    _, rebuilt, *_ = load_data_and_model(str(path))  # same data, teacher and LLM: accepted
    assert rebuilt.fingerprints == stored


def test_another_llm_of_the_same_shape_is_refused(trained, tiny_settings, tmp_path):
    path, config, _ = trained
    other_llm = tmp_path / "other_llm"
    shutil.copytree(tiny_settings["llm_path"], other_llm)
    llm = AutoModelForCausalLM.from_pretrained(other_llm)
    with torch.no_grad():
        llm.model.layers[0].mlp.down_proj.weight.mul_(1.01)  # "fine-tuned a little"
    llm.save_pretrained(other_llm)
    _, other, _ = build_llmsrec(tiny_settings, llm_path=str(other_llm), teacher_checkpoint=config["teacher_checkpoint"])
    with pytest.raises(ValueError, match=r"the LLM \(config and weights\) \(stored \w+, now \w+\)") as error:
        load_checkpoint(path, other)
    assert "training data (" not in str(error.value) and "teacher checkpoint (" not in str(error.value)


def test_a_teacher_trained_on_other_data_under_the_same_name_is_refused(tiny_settings, tmp_path):
    other_data = tmp_path / "data"
    shutil.copytree(DATA_DIR, other_data)
    inter = other_data / "tiny" / "tiny.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join(lines[:-5]) + "\n")  # the same dataset name, five interactions fewer
    other_config, *_ = build_llmsrec(tiny_settings, data_path=str(other_data), checkpoint_dir=str(tmp_path))

    config = Config(model="LLMSRec", dataset="tiny",
                    config_dict={**tiny_settings, "teacher_checkpoint": other_config["teacher_checkpoint"]})
    train_split = create_dataset(config).build()[0]
    with pytest.raises(ValueError, match=r"teacher_checkpoint .* the training data .*\(stored \w+, now \w+\)"):
        load_teacher(config, train_split)


def test_a_truncated_checkpoint_is_named_with_the_fix(trained, tmp_path):
    path, _, model = trained
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{cut}.*truncated"):
        load_checkpoint(cut, model)
    with pytest.raises(ValueError, match=f"{cut}.*truncated"):
        load_data_and_model(str(cut))


def test_a_recbole_baseline_killed_after_an_epoch_resumes_to_the_same_weights(tiny_settings, tmp_path):
    settings = {k: tiny_settings[k] for k in ("data_path", "show_progress", "state", "seed")}
    settings.update(epochs=4, hidden_size=16, checkpoint_dir=str(tmp_path), metrics=["NDCG", "Hit"], topk=[10],
                    valid_metric="NDCG@10", stopping_step=100, load_col={"inter": ["user_id", "item_id", "timestamp"]})

    def fresh_run():
        config = Config(model="GRU4Rec", dataset="tiny", config_dict=settings)
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        splits = dataset.build()
        train_data, valid_data, _ = build_dataloaders(config, dataset, splits)
        init_seed(config["seed"], config["reproducibility"])
        return SafetensorsCheckpointTrainer(config, get_model("GRU4Rec")(config, splits[0])), train_data, valid_data

    uninterrupted, train_data, valid_data = fresh_run()
    uninterrupted.fit(train_data, valid_data)

    killed, train_data, valid_data = fresh_run()

    def kill_after_two_epochs(epoch_idx, valid_score):
        if epoch_idx == 1:
            raise Killed

    with pytest.raises(Killed):
        killed.fit(train_data, valid_data, callback_fn=kill_after_two_epochs)

    resumed, train_data, valid_data = fresh_run()
    resumed.resume_checkpoint(killed.saved_model_file)
    resumed.fit(train_data, valid_data)
    expected = uninterrupted.model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in resumed.model.state_dict().items())
    assert resumed.best_valid_score == uninterrupted.best_valid_score


def test_a_killed_process_resumed_from_the_command_line_ends_with_the_uninterrupted_weights(tiny_settings, tmp_path):
    """Fault injection: SIGKILL a real run after a validation, ``--resume`` it, compare with a run left alone."""
    settings = {**tiny_settings, "model": "LLMSRec", "dataset": "tiny", "epochs": 6, "validations_per_epoch": 2,
                "stopping_step": 100, "learning_rate": 0.01}
    command = [sys.executable, str(ROOT / "run_recbole_llmsrec.py")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}

    def config_file(folder: Path) -> str:
        folder.mkdir()
        path = folder / "run.yaml"
        path.write_text(yaml.safe_dump({**settings, "checkpoint_dir": str(folder),
                                        "teacher_checkpoint": tiny_teacher(tiny_settings)}))
        return str(path)

    alone = tmp_path / "alone"
    subprocess.run(command + [f"--config_files={config_file(alone)}"], check=True, env=environment, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(command + [f"--config_files={config_file(killed)}"], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        checkpoints = list(killed.glob("LLMSRec-*.safetensors"))
        if checkpoints and _resume_round(checkpoints[0]) is not None:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert process.wait() == -signal.SIGKILL, "the run ended before a resume state could be killed"
    checkpoint = next(killed.glob("LLMSRec-*.safetensors"))
    assert read_metadata(checkpoint)["training"]["finished"] is False

    subprocess.run(command + [f"--resume={checkpoint}"], check=True, env=environment, capture_output=True)
    resumed, finished = read_metadata(checkpoint), read_metadata(next(alone.glob("LLMSRec-*.safetensors")))
    resumed_seconds, alone_seconds = resumed["training"].pop("fit_seconds"), finished["training"].pop("fit_seconds")
    assert resumed["training"] == finished["training"] and resumed["training"]["finished"] is True
    assert resumed_seconds > 0 and alone_seconds > 0  # wall times: the two runs' differ
    resumed_weights, _ = read_tensors(checkpoint)
    expected, _ = read_tensors(next(alone.glob("LLMSRec-*.safetensors")))
    assert all(torch.equal(resumed_weights[name], expected[name]) for name in expected)


def tiny_teacher(tiny_settings) -> str:
    config, *_ = build_llmsrec(tiny_settings)
    return config["teacher_checkpoint"]


def _resume_round(path: Path) -> int | None:
    try:
        return (read_metadata(path)["resume"] or {}).get("round")
    except ValueError:  # caught mid-write
        return None


def test_using_the_checkpoint_of_an_unfinished_run_warns_and_names_the_resume_command(trained, tmp_path, caplog):
    path, config, model = trained
    unfinished = tmp_path / "unfinished.safetensors"
    save_checkpoint(unfinished, model, config, {"epoch": 0, "finished": False}, model.fingerprints)
    with caplog.at_level("WARNING"):
        load_data_and_model(str(unfinished))
    assert "unfinished run" in caplog.text and f"--resume={unfinished}" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_data_and_model(str(path))
    assert "unfinished run" not in caplog.text
