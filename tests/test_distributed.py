"""RecBole's distributed path on CPU ranks (gloo): two processes follow one step for step."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from distributed_workers import free_port, train_and_record
from helpers import build_llmsrec
from recbole_llmsrec.checkpoint import read_metadata
from recbole_llmsrec.config import Config
from recbole_llmsrec.distributed import DISTRIBUTED_KEYS, torchrun_settings
from recbole_llmsrec.quick_start import run, run_recbole_llmsrec

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def teacher_settings(tiny_settings, tmp_path_factory) -> dict:
    """The tiny settings with a teacher trained once here, so that every run reads the same one."""
    settings = {**tiny_settings, "checkpoint_dir": str(tmp_path_factory.mktemp("distributed_saved"))}
    config, _, _ = build_llmsrec(settings)
    return {**settings, "teacher_checkpoint": config["teacher_checkpoint"]}


def test_two_ranks_follow_one_process_step_for_step(teacher_settings, tmp_path):
    # Ranks of 3 and 4 rows (uneven halves). SGD: Adam turns the float32 rounding noise of a weight
    # whose gradient is exactly zero (f_item's output bias: the retrieval softmax is invariant to it)
    # into full-size steps, in one process as on many.
    settings = {**teacher_settings, "train_batch_size": 7, "learner": "sgd", "learning_rate": 0.05}
    train_and_record(0, 1, settings, "", str(tmp_path))
    mp.spawn(train_and_record, args=(2, settings, free_port(), str(tmp_path)), nprocs=2, join=True)
    single = torch.load(tmp_path / "rank0-of-1.pt")
    ranks = [torch.load(tmp_path / f"rank{r}-of-2.pt") for r in range(2)]

    assert len(single["losses"]) >= 5  # several optimizer steps
    assert single["gradients"]  # the last step's gradients are there to compare
    initial = build_llmsrec(settings)[1].state_dict()
    assert all((single["weights"][name] - initial[name]).abs().max() > 1e-4 for name in ("user_out_embedding", "item_head.0.weight"))
    # What remains is float32 rounding: a rank packs 3 or 4 prompts per LLM pass where one process
    # packs 7. A gradient sums over every position of those passes (|g| up to ~0.2 here).
    for rank in ranks:
        torch.testing.assert_close(rank["losses"], single["losses"], rtol=0, atol=1e-6)
        for name, gradient in single["gradients"].items():
            torch.testing.assert_close(rank["gradients"][name], gradient, rtol=0, atol=1e-5, msg=name)
        for name, weight in single["weights"].items():
            torch.testing.assert_close(rank["weights"][name], weight, rtol=0, atol=1e-6, msg=name)
        # each rank encodes half of the catalogue's passes; gathered, they are the single pass's vectors
        assert torch.equal(rank["catalogue"], ranks[0]["catalogue"])
    # the catalogue computed sharded equals one process's on the same weights
    config, model, _ = build_llmsrec(settings)
    model.load_state_dict(ranks[0]["weights"], strict=False)
    assert torch.equal(model.eval().catalogue_item_vectors(), ranks[0]["catalogue"])


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def test_a_run_on_two_ranks_gives_the_single_process_metrics_and_rank_0_writes(
    teacher_settings, tmp_path, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned ranks read it at start
    single_dir, ranks_dir = tmp_path / "single", tmp_path / "ranks"
    results = {}
    for name, folder in (("single", single_dir), ("ranks", ranks_dir)):
        folder.mkdir()
        monkeypatch.chdir(folder)  # RecBole writes its log/ and log_tensorboard/ under the working folder
        # 29 of the 30 users validate: 2 ranks get 15 rows each, one of them a padded repeat
        settings = {**teacher_settings, "checkpoint_dir": str(folder / "saved"), "state": "INFO", "valid_users": 29}
        if name == "single":
            results[name] = run_recbole_llmsrec("LLMSRec", "tiny", config_dict=settings)
        else:
            results[name] = run("LLMSRec", "tiny", config_dict=settings, nproc=2, port=free_port())

    single, ranks = results["single"], results["ranks"]
    assert ranks["best_valid_result"] == single["best_valid_result"]
    assert ranks["test_result"] == single["test_result"]
    for model in ("SASRec", "LLMSRec"):  # the teacher's sharded evaluation too
        for setting in ("valid full", "test full"):  # sampled negatives (uni100) are drawn per batch, so per rank
            assert ranks["comparison"][model][setting] == single["comparison"][model][setting]
    # the checkpoint holds no launch settings: it reloads (and would resume) in one process
    assert not set(read_metadata(ranks["saved_model_file"])["config"]) & set(DISTRIBUTED_KEYS)
    # one checkpoint, one log file and one TensorBoard run: rank 0's
    assert [path.name for path in files_under(ranks_dir / "saved")] == [Path(ranks["saved_model_file"]).name]
    assert len(files_under(ranks_dir / "log")) == len(files_under(single_dir / "log")) == 1
    tensorboard_runs = {path.relative_to(ranks_dir / "log_tensorboard").parts[0] for path in files_under(ranks_dir / "log_tensorboard")}
    assert len(tensorboard_runs) == 1
    assert len(files_under(ranks_dir / "log_tensorboard")) == len(files_under(single_dir / "log_tensorboard"))


def test_the_teacher_stage_trains_on_the_ranks_and_every_rank_reads_its_checkpoint(tiny_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    settings = {**tiny_settings, "checkpoint_dir": str(tmp_path / "saved")}
    result = run("LLMSRec", "tiny", config_dict=settings, nproc=2, port=free_port())
    teacher = Path(result["teacher_checkpoint"])
    assert result["teacher_result"]["trained"] is True
    assert sorted(path.name for path in files_under(tmp_path / "saved")) == sorted(
        [teacher.name, Path(result["saved_model_file"]).name]
    )  # no partial teacher file left behind


def test_a_failing_rank_stops_the_run_with_its_error(teacher_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    settings = {**teacher_settings, "teacher_checkpoint": str(tmp_path / "missing.safetensors")}
    with pytest.raises(Exception, match=r"missing.safetensors.: no such file"):
        run("LLMSRec", "tiny", config_dict=settings, nproc=2, port=free_port())


def test_a_rank_waiting_for_a_dead_one_gives_up_instead_of_hanging(tiny_settings):
    port = free_port()
    command = [sys.executable, str(TESTS / "distributed_workers.py")]
    waiting = subprocess.Popen([*command, "0", port, tiny_settings["data_path"]], stderr=subprocess.PIPE, text=True)
    failing = subprocess.run([*command, "1", port, tiny_settings["data_path"]], capture_output=True, text=True)
    started = time.monotonic()
    _, waiting_errors = waiting.communicate(timeout=120)
    assert "rank 1 failed on purpose" in failing.stderr and failing.returncode != 0
    assert waiting.returncode != 0 and time.monotonic() - started < 60  # well before dist_timeout's 30 s + start-up
    assert "Error" in waiting_errors


def test_torchrun_environment_sets_rank_world_and_rendezvous(monkeypatch):
    for name, value in {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4",
                        "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    assert torchrun_settings() == {"local_rank": 1, "offset": 4, "world_size": 8, "nproc": 4, "ip": "node0",
                                   "port": "29500"}
    monkeypatch.delenv("MASTER_PORT")
    assert torchrun_settings() is None


def test_a_rank_outside_the_world_is_refused_before_the_group_starts(tiny_settings):
    settings = {"data_path": tiny_settings["data_path"], "local_rank": 1, "offset": 2, "world_size": 2}
    with pytest.raises(ValueError, match="rank 3, outside world_size=2"):
        Config(model="SASRec", dataset="tiny", config_dict=settings)


def test_torchrun_runs_the_command_line_to_the_end(tiny_settings, tmp_path):
    settings = {key: tiny_settings[key] for key in ("data_path", "llm_path", "history_length", "head_hidden_size",
                                                    "projection_size", "llm_tokens_per_pass", "train_batch_size",
                                                    "epochs", "teacher_config")}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**settings, "checkpoint_dir": "saved", "show_progress": False}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(TESTS.parent / "run_recbole_llmsrec.py"), "-m", "LLMSRec", "-d", "tiny", "--config_files=tiny.yaml"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LLMSRec    test full" in done.stdout + done.stderr  # rank 0's side-by-side table
    assert len([path for path in files_under(tmp_path / "saved") if path.name.startswith("LLMSRec-")]) == 1
    assert len(files_under(tmp_path / "log")) == 1
