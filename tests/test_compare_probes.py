"""Comparison runner and sequence probes: shuffles, similarity, breakdowns, per-user metrics, tables, CLI."""

from __future__ import annotations

import json
import mmap
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from matplotlib.colors import to_rgba
from recbole.data import create_dataset
from recbole.utils import init_seed

from recbole_llmsrec import compare, probes, reports
from recbole_llmsrec.checkpoint import read_metadata
from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders
from recbole_llmsrec.memory import PeakMemory
from recbole_llmsrec.quick_start import fit_popularity, mode_config
from recbole_llmsrec.trainer import SafetensorsCheckpointTrainer
from recbole_llmsrec.utils import get_model, get_trainer
from recbole_llmsrec.data.synthetic import write_chain_dataset
import run_recbole_llmsrec
from run_recbole_llmsrec import strip_own_flags

from helpers import Killed

DATA_DIR = Path(__file__).parent / "data"
BASE = {"data_path": str(DATA_DIR), "show_progress": False, "state": "ERROR", "seed": 2020,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["NDCG", "Hit"], "topk": [10, 20], "valid_metric": "NDCG@10"}


@pytest.fixture(scope="module")
def tiny_sasrec(tmp_path_factory):
    """A SASRec on tests/data/tiny trained 2 epochs: (config, dataset, splits, trainer)."""
    settings = {**BASE, "checkpoint_dir": str(tmp_path_factory.mktemp("saved")), "epochs": 2,
                "hidden_size": 16, "inner_size": 32, "n_heads": 1}
    config = Config(model="SASRec", dataset="tiny", config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    splits = dataset.build()
    train_data, valid_data, _ = build_dataloaders(config, dataset, splits)
    model = get_model("SASRec")(config, splits[0])
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
    trainer.fit(train_data, valid_data, saved=False)
    return config, dataset, splits, trainer


# ---------------------------------------------------------------------- shuffles
@pytest.mark.parametrize("window", [None, 2])
def test_shuffle_permutation_moves_only_the_window(window):
    lengths = torch.tensor([0, 1, 3, 5, 6])
    perm = probes.shuffle_permutation(lengths, 6, seed=7, window=window)  # [5, 6]
    assert torch.equal(perm.sort(1).values, torch.arange(6).expand(5, 6))  # each row a permutation
    positions = torch.arange(6)
    for row, length in enumerate(lengths.tolist()):
        start = 0 if window is None else max(length - window, 0)
        fixed = (positions < start) | (positions >= length)
        assert torch.equal(perm[row][fixed], positions[fixed])
        moved = perm[row][start:length]
        assert sorted(moved.tolist()) == list(range(start, length))
    assert torch.equal(perm, probes.shuffle_permutation(lengths, 6, seed=7, window=window))  # seeded
    many = probes.shuffle_permutation(torch.full((200,), 6), 6, seed=1, window=window)
    assert (many != positions).any(1).float().mean() > 0.4  # most rows really change


def test_shuffle_histories_moves_items_and_dates_together(tiny_sasrec):
    _, _, splits, _ = tiny_sasrec
    test = splits[2]
    shuffled = probes.shuffle_histories(test, seed=3)
    assert set(probes.list_fields(test)) == {"item_id_list", "rating_list", "timestamp_list"}
    before, after = test.inter_feat, shuffled.inter_feat
    for field in ("user_id", "item_id", "item_length", "timestamp"):
        assert torch.equal(before[field], after[field])
    assert not torch.equal(before["item_id_list"], after["item_id_list"])
    for row in range(len(before)):
        n = int(before["item_length"][row])
        triples = lambda inter: sorted(zip(*(inter[f][row, :n].tolist() for f in probes.list_fields(test))))  # noqa: E731
        assert triples(before) == triples(after)  # each item keeps its date and rating
        assert after["item_id_list"][row, n:].eq(0).all()
    assert torch.equal(before["item_id_list"], test.inter_feat["item_id_list"])  # the original is untouched


def test_similarity_of_identical_histories_is_one(tiny_sasrec):
    _, _, splits, trainer = tiny_sasrec
    assert probes.has_user_vectors(trainer.model)
    same = probes.representation_similarity(trainer.model, splits[2], splits[2], batch_size=7)
    assert same.shape == (len(splits[2]),)
    np.testing.assert_allclose(same, 1.0, atol=1e-5)
    shuffled = probes.representation_similarity(trainer.model, splits[2], probes.shuffle_histories(splits[2], seed=3))
    assert shuffled.mean() < 0.999
    others = probes.other_user_similarity(trainer.model, splits[2], seed=3)
    assert others.shape == same.shape and others.mean() < 0.9  # the teacher tells its users apart


def test_cycle_cosine_pairs_every_row_with_another_row():
    orthogonal = torch.eye(5)  # a row paired with itself would score 1
    np.testing.assert_allclose(probes.cycle_cosine(orthogonal, seed=1), 0.0)
    np.testing.assert_allclose(probes.cycle_cosine(torch.ones(5, 3), seed=1), 1.0, rtol=1e-6)
    two_groups = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    cosine = probes.cycle_cosine(two_groups, seed=4)
    assert 0 < cosine.mean() < 1 and not np.array_equal(cosine, probes.cycle_cosine(two_groups, seed=5))


@pytest.mark.parametrize("name", ["BERT4Rec", "NARM", "GRU4Rec"])
def test_user_vectors_of_other_sequential_models(name):
    config = Config(model=name, dataset="tiny", config_dict={**BASE, "hidden_size": 16, "inner_size": 32, "n_heads": 1})
    init_seed(config["seed"], config["reproducibility"])
    splits = create_dataset(config).build()
    model = get_model(name)(config, splits[0]).eval()
    vectors = probes.user_vectors(model, splits[2])
    assert vectors.dim() == 2 and len(vectors) == len(splits[2]) and torch.isfinite(vectors).all()
    np.testing.assert_allclose(probes.representation_similarity(model, splits[2], splits[2]), 1.0, atol=1e-5)


# ---------------------------------------------------------------------- breakdowns
def test_warm_cold_items_partition_by_popularity():
    popularity = np.array([0, 5, 1, 9, 3, 3, 0, 7, 2, 4, 6])  # item 0 is padding
    warm, cold = probes.warm_cold_items(popularity)
    size = round(0.35 * 10)
    assert warm.sum() == cold.sum() == size and not (warm & cold).any() and not warm[0] and not cold[0]
    assert popularity[warm].min() >= popularity[~warm][1:].max()
    assert popularity[cold].max() <= popularity[~cold & ~warm][1:].min()
    assert set(np.flatnonzero(warm)) == {1, 3, 7, 10} and set(np.flatnonzero(cold)) == {2, 5, 6, 8}  # ties by id


def test_training_interactions_popularity_and_transition_shares(tiny_sasrec):
    config, _, splits, _ = tiny_sasrec
    train = splits[0]
    users, items = probes.training_sequences(train)
    # leave-one-out: every user's interactions but the last two, in time order
    inter = create_dataset(config).inter_feat  # before build(), which replaces it by the prefixes
    expected_users, expected_items = [], []
    for user in np.unique(inter["user_id"].to_numpy()):
        rows = np.flatnonzero(inter["user_id"].to_numpy() == user)
        rows = rows[np.argsort(inter["timestamp"].to_numpy()[rows], kind="stable")][:-2]
        expected_users += [user] * len(rows)
        expected_items += inter["item_id"].to_numpy()[rows].tolist()
    assert users.tolist() == expected_users and items.tolist() == expected_items
    assert probes.item_popularity(train).sum() == len(items)

    share = probes.transition_share(train)
    sequences = {u: items[users == u].tolist() for u in np.unique(users)}
    pairs = {u: list(zip(s[:-1], s[1:])) for u, s in sequences.items()}
    for user, own in pairs.items():
        others = {p for v, theirs in pairs.items() if v != user for p in theirs}
        assert share[user] == pytest.approx(np.mean([p in others for p in own]) if own else 0.0)

    evaluated = np.unique(users)
    top, bottom = probes.transition_users(share, evaluated)
    assert (top ^ bottom).all() and top.sum() == len(evaluated) // 2
    assert share[evaluated[top]].min() >= share[evaluated[bottom]].max()


# ---------------------------------------------------------------------- per-user metrics
@pytest.mark.parametrize("mode", ["full", "uni100"])
def test_per_user_metrics_average_to_recbole_evaluate(tiny_sasrec, mode):
    config, dataset, splits, trainer = tiny_sasrec
    test_data = build_dataloaders(mode_config(config, mode), dataset, splits)[2]
    init_seed(config["seed"], config["reproducibility"])
    per_user = probes.per_user_metrics(trainer, test_data, config["topk"])
    init_seed(config["seed"], config["reproducibility"])
    expected = trainer.evaluate(test_data, load_best_model=False)
    assert sorted(per_user["user"].tolist()) == sorted(splits[2].inter_feat["user_id"].tolist())
    order = np.argsort(splits[2].inter_feat["user_id"].numpy())
    assert per_user["item"][np.argsort(per_user["user"])].tolist() == splits[2].inter_feat["item_id"].numpy()[order].tolist()
    for metric, value in expected.items():
        assert per_user[metric].mean() == pytest.approx(value, abs=1e-4), metric
    groups = probes.breakdown_groups(splits[0], per_user)
    assert (groups["transition"] ^ groups["non-transition"]).all()
    assert not (groups["warm"] & groups["cold"]).any()


# ---------------------------------------------------------------------- order-aware vs order-blind


@pytest.mark.parametrize("jump_probability", [0.0, 0.5])
def test_chain_steps_follow_the_cycle_except_for_jumps(tmp_path, jump_probability):
    write_chain_dataset(tmp_path, n_items=50, n_users=200, length=10, jump_probability=jump_probability)
    rows = [line.split("\t") for line in (tmp_path / "chain" / "chain.inter").read_text().splitlines()[1:]]
    histories: dict[str, list[str]] = {}
    for user, item, _ in rows:
        histories.setdefault(user, []).append(item)
    pairs = [(a, b) for items in histories.values() for a, b in zip(items, items[1:])]
    successors: dict[str, dict[str, int]] = {}
    for a, b in pairs:
        successors.setdefault(a, {}).setdefault(b, 0)
        successors[a][b] += 1
    # the cycle successor of each item is its most frequent next item; the rest are jumps
    on_cycle = sum(max(counts.values()) for counts in successors.values()) / len(pairs)
    if jump_probability == 0:
        assert on_cycle == 1.0
    else:  # a jump lands on the cycle successor 1 time in 50
        assert on_cycle == pytest.approx(1 - jump_probability * 49 / 50, abs=0.06)


def test_order_aware_model_loses_more_under_shuffle_than_pop(tmp_path, monkeypatch):
    write_chain_dataset(tmp_path / "data")
    profile = tmp_path / "chain-probe.yaml"
    profile.write_text(yaml.safe_dump({
        **BASE, "dataset": "chain", "data_path": str(tmp_path / "data"), "checkpoint_dir": str(tmp_path / "saved"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "MAX_ITEM_LIST_LENGTH": 10,
        "teacher_config": {"epochs": 8, "stopping_step": 8, "train_batch_size": 64},
    }))
    outcome = compare.run_comparison(
        "SASRec[hidden_size=32,inner_size=64,n_layers=1,n_heads=1,learning_rate=0.01],Pop",
        config_files=[str(profile)], probe_names="shuffle,similarity", results_dir=tmp_path / "results",
    )
    sasrec, pop = (outcome["results"][label][0] for label in outcome["results"])
    original = sasrec["metrics"]["test full"]["ndcg@10"]
    assert original > 0.8  # the chain is learnt
    drop = 1 - sasrec["probes"]["shuffle"]["metrics"]["test full"]["ndcg@10"] / original
    pop_drop = 1 - pop["probes"]["shuffle"]["metrics"]["test full"]["ndcg@10"] / pop["metrics"]["test full"]["ndcg@10"]
    assert drop > 0.5 and abs(pop_drop) < 1e-9
    assert sasrec["probes"]["similarity"]["mean"] < 0.9 and pop["probes"]["similarity"] is None

    # the comparison table round-trips through its parser and matches the stored results
    folder = tmp_path / "results" / "chain"
    columns, rows = reports.parse_table((folder / "chain-probe.md").read_text())
    assert columns[:2] == ["NDCG@10 full", "NDCG@20 full"]
    assert columns[-6:] == ["train s", "eval s", "trainable params", "s / epoch", "peak GPU MiB", "peak RSS MiB"]
    label = next(iter(outcome["results"]))
    assert rows[label]["NDCG@10 full"] == (round(original, 4), None)
    assert (folder / "chain-probe.png").stat().st_size > 0 and (folder / "chain-probe.shuffle.md").is_file()

    # a rerun resumes from the stored results: nothing trains again
    monkeypatch.setattr(compare, "run_model", lambda *a, **k: pytest.fail("retrained a finished model"))
    again = compare.run_comparison(
        "SASRec[hidden_size=32,inner_size=64,n_layers=1,n_heads=1,learning_rate=0.01],Pop",
        config_files=[str(profile)], probe_names="shuffle", results_dir=tmp_path / "results",
    )
    assert again["results"] == outcome["results"]

    # a probe asked for later is added without losing the stored ones (measured again on the retrained model)
    monkeypatch.undo()
    extended = compare.run_comparison("Pop", config_files=[str(profile)], probe_names="breakdown",
                                      results_dir=tmp_path / "results")["results"]["Pop"][0]
    assert set(extended["probes"]) == {"shuffle", "similarity", "breakdown"}
    assert extended["probes"]["shuffle"] == pop["probes"]["shuffle"] and extended["metrics"] == pop["metrics"]


# ---------------------------------------------------------------------- LLMSRec through the runner
def test_llmsrec_comparison_with_ablation_probes_and_teacher_row(tiny_settings, tmp_path, monkeypatch):
    profile = tmp_path / "tiny-llm.yaml"
    profile.write_text(yaml.safe_dump({**tiny_settings, "dataset": "tiny", "checkpoint_dir": str(tmp_path / "saved")}))
    outcome = compare.run_comparison("LLMSRec-noU,SASRec[hidden_size=16,inner_size=32]", config_files=[str(profile)],
                                     probe_names="shuffle,similarity,breakdown", results_dir=tmp_path / "results")
    llm = outcome["results"]["LLMSRec-noU"][0]
    assert llm["overrides"] == {"uniform_weight": 0.0} and llm["teacher"]["trained"]
    assert llm["probes"]["shuffle"]["window"] == tiny_settings["history_length"]
    assert 0.0 < llm["probes"]["similarity"]["mean"] <= 1.0
    assert -1.0 <= llm["probes"]["similarity"]["other_users"] <= 1.0
    assert set(llm["probes"]["breakdown"]["full"]) == set(reports.BREAKDOWN_GROUPS)
    stored = json.loads((tmp_path / "results" / "tiny" / "tiny-llm" / "LLMSRec-noU-seed2020.json").read_text())
    assert stored["metrics"] == llm["metrics"]
    _, rows = reports.parse_table((tmp_path / "results" / "tiny" / "tiny-llm.md").read_text())
    assert list(rows) == ["LLMSRec-noU", "SASRec[hidden_size=16,inner_size=32]", "SASRec (teacher of LLMSRec-noU)"]
    assert rows["SASRec (teacher of LLMSRec-noU)"]["eval s"] is None
    _, similarity = reports.parse_table((tmp_path / "results" / "tiny" / "tiny-llm.similarity.md").read_text())
    assert similarity["LLMSRec-noU"]["other users"][0] == pytest.approx(llm["probes"]["similarity"]["other_users"], abs=1e-3)

    # asking for one more, training-time probe trains only the shuffled model
    monkeypatch.setattr(compare, "evaluate_trained", lambda *a, **k: pytest.fail("retrained the original model"))
    more = compare.run_comparison("LLMSRec-noU", config_files=[str(profile)], probe_names="train_shuffle",
                                  results_dir=tmp_path / "results")
    result = more["results"]["LLMSRec-noU"][0]
    assert result["metrics"] == llm["metrics"] and "shuffle" in result["probes"]
    assert set(result["probes"]["train_shuffle"]["metrics"]) == {"valid full", "test full", "valid uni100", "test uni100"}


def _two_epoch_profile(tiny_settings: dict, tmp_path: Path) -> Path:
    """A tiny LLMSRec profile of two epochs, validated twice each, that early stopping never ends."""
    profile = tmp_path / "tiny-llm.yaml"
    profile.write_text(yaml.safe_dump({**tiny_settings, "dataset": "tiny", "checkpoint_dir": str(tmp_path / "saved"),
                                       "epochs": 2, "validations_per_epoch": 2, "stopping_step": 10}))
    return profile


def _compare_llmsrec(profile: Path, results: Path, probes: str = "") -> dict:
    """The stored row of ``--compare=LLMSRec`` on ``profile`` (seed 2020)."""
    return compare.run_comparison("LLMSRec", config_files=[str(profile)], probe_names=probes,
                                  results_dir=results)["results"]["LLMSRec"][0]


def test_an_interrupted_comparison_continues_its_training_to_the_uninterrupted_result(tiny_settings, tmp_path, monkeypatch):
    """Killed after the third of four validations (mid-epoch), a rerun of the same ``--compare``
    continues from that validation's resume state and stores what the uninterrupted run stores."""
    profile = _two_epoch_profile(tiny_settings, tmp_path)
    run = lambda folder: _compare_llmsrec(profile, tmp_path / folder)  # noqa: E731
    uninterrupted = run("alone")

    write_checkpoint = SafetensorsCheckpointTrainer._write_checkpoint
    resume_states = []

    def die_after_the_third_validation(trainer, finished, resume=None):
        write_checkpoint(trainer, finished, resume)
        resume_states.extend([resume] if resume else [])
        if len(resume_states) == 3:
            raise Killed

    monkeypatch.setattr(SafetensorsCheckpointTrainer, "_write_checkpoint", die_after_the_third_validation)
    with pytest.raises(Killed):
        run("interrupted")
    store = tmp_path / "interrupted" / "tiny" / "tiny-llm"
    marker = store / "LLMSRec-seed2020.train.running.json"
    checkpoint = json.loads(marker.read_text())["checkpoint"]
    resume_state = read_metadata(checkpoint)["resume"]
    assert resume_state["round"] == 2 and resume_state["fit_seconds"] > 0
    assert not (store / "LLMSRec-seed2020.json").exists()

    monkeypatch.setattr(SafetensorsCheckpointTrainer, "_write_checkpoint", write_checkpoint)
    resumed_from = []
    resume = SafetensorsCheckpointTrainer.resume_checkpoint

    def recorded_resume(trainer, path):
        resumed_from.append(path)
        resume(trainer, path)

    monkeypatch.setattr(SafetensorsCheckpointTrainer, "resume_checkpoint", recorded_resume)
    resumed = run("interrupted")
    assert resumed_from == [checkpoint] and not marker.exists()
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert [point["step"] for point in resumed["curve"]] == [point["step"] for point in uninterrupted["curve"]]
    assert resumed["curve"][-1]["losses"] == uninterrupted["curve"][-1]["losses"]
    assert resumed["train_seconds"] > resume_state["fit_seconds"]  # both parts of the training
    # per epoch of the whole training (2 epochs), not of the part after the interruption
    assert resumed["cost"]["seconds_per_epoch"] == pytest.approx(resumed["train_seconds"] / 2)

    # a marker for other settings is not resumed: that run starts from the beginning
    marker.write_text(json.dumps({"checkpoint": checkpoint}))
    (store / "LLMSRec-seed2020.json").unlink()
    resumed_from.clear()
    profile.write_text(profile.read_text().replace("validations_per_epoch: 2", "validations_per_epoch: 1"))
    run("interrupted")
    assert resumed_from == []


def test_a_comparison_interrupted_after_its_training_evaluates_the_finished_checkpoint(tiny_settings, tmp_path,
                                                                                       monkeypatch):
    """Killed between the end of training and the stored row (test, probes), a rerun does not
    train again: it evaluates the finished checkpoint and stores the uninterrupted run's metrics,
    curve, training time and epochs."""
    profile = _two_epoch_profile(tiny_settings, tmp_path)
    run = lambda folder: _compare_llmsrec(profile, tmp_path / folder, probes="shuffle")  # noqa: E731
    uninterrupted = run("alone")

    def killed_before_the_test(trainer, train_seconds):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(compare, "training_cost", killed_before_the_test)
        with pytest.raises(Killed):
            run("interrupted")
    marker = tmp_path / "interrupted" / "tiny" / "tiny-llm" / "LLMSRec-seed2020.train.running.json"
    checkpoint = json.loads(marker.read_text())["checkpoint"]
    training = read_metadata(checkpoint)["training"]
    assert training["finished"] and training["epochs_trained"] == 2

    monkeypatch.setattr(SafetensorsCheckpointTrainer, "fit", lambda *args, **kwargs: pytest.fail("trained again"))
    resumed = run("interrupted")
    assert not marker.exists()
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert resumed["probes"]["shuffle"] == uninterrupted["probes"]["shuffle"]
    assert resumed["curve"] == json.loads(json.dumps(uninterrupted["curve"]))
    assert resumed["train_seconds"] == pytest.approx(training["fit_seconds"]) and resumed["train_seconds"] > 0
    assert resumed["cost"]["seconds_per_epoch"] == pytest.approx(resumed["train_seconds"] / 2)
    assert resumed["cost"]["peak_rss_mib"] is None  # not measured by this process


@pytest.mark.parametrize("stored, finished, resumes", [
    ({"learning_rate": 0.001, "show_progress": True}, False, True),  # how it was shown does not matter
    ({"learning_rate": 0.001}, False, True),
    ({"learning_rate": 0.0001, "show_progress": False}, False, False),
    ({"learning_rate": 0.001, "show_progress": False}, True, True),  # finished: evaluated, not trained again
    ({"learning_rate": 0.0001, "show_progress": False}, True, False),
])
def test_an_earlier_training_is_taken_up_unless_a_setting_that_changes_it_differs(stored, finished, resumes, tmp_path,
                                                                                  monkeypatch, caplog):
    checkpoint, marker = tmp_path / "LLMSRec.safetensors", tmp_path / "LLMSRec-seed2020.train.running.json"
    checkpoint.touch()
    marker.write_text(json.dumps({"checkpoint": str(checkpoint)}))
    metadata = {"config": stored, "training": {"finished": finished}, "resume": None if finished else {"round": 3}}
    monkeypatch.setattr(compare, "read_metadata", lambda path: metadata)
    monkeypatch.setattr(compare, "rebuild_config_dict", lambda config: {"learning_rate": 0.001, "show_progress": False})
    assert compare.earlier_training(marker, config=None) == ((str(checkpoint), finished) if resumes else None)
    named = "differ in learning_rate; training from the start" in caplog.text
    assert named == (stored["learning_rate"] != 0.001)


# ---------------------------------------------------------------------- tables and command line
def test_table_round_trips_through_parser():
    columns = [reports.Column("NDCG@10 full"), reports.Column("Δ% NDCG@10 full", "percent"), reports.Column("train s", "seconds")]
    rows = {
        "SASRec": {"NDCG@10 full": (0.12345, 0.01), "Δ% NDCG@10 full": (-7.25, None), "train s": (12.34, 1.5)},
        "LLMSRec[distill_weight=0]": {"NDCG@10 full": (0.5, None), "Δ% NDCG@10 full": None, "train s": (400.0, None)},
    }
    text = reports.format_table(columns, rows)
    parsed_columns, parsed = reports.parse_table("# title\n\nnotes\n\n" + text)
    assert parsed_columns == [c.name for c in columns]
    assert parsed["SASRec"] == {"NDCG@10 full": (0.1235, 0.01), "Δ% NDCG@10 full": (-7.2, None), "train s": (12.3, 1.5)}
    assert parsed["LLMSRec[distill_weight=0]"]["Δ% NDCG@10 full"] is None
    assert reports.format_table(columns, parsed) == text
    assert reports.summarize([0.1, 0.3]) == (pytest.approx(0.2), pytest.approx(np.std([0.1, 0.3], ddof=1)))
    assert reports.summarize([None]) is None


def test_a_probe_stored_for_some_seeds_names_how_many_in_its_row(tmp_path):
    def result(seed: int, ndcg: float, train_shuffled: float | None) -> dict:
        metrics = {f"test {mode}": {"ndcg@10": ndcg} for mode in ("full", "uni100")}
        shuffled = {f"test {mode}": {"ndcg@10": train_shuffled} for mode in ("full", "uni100")}
        return {"label": "GRU4Rec", "model": "GRU4Rec", "seed": seed, "metrics": metrics, "train_seconds": 1.0,
                "eval_seconds": 0.1, "probes": {} if train_shuffled is None else {"train_shuffle": {"metrics": shuffled}}}

    results = {"GRU4Rec": [result(2020, 0.4, 0.2), result(2021, 0.6, None)], "NARM": [result(2020, 0.5, 0.25)]}
    reports.write_reports(tmp_path, "p", results, seeds=2)
    _, compared = reports.parse_table((tmp_path / "p.md").read_text())
    assert compared["GRU4Rec"]["NDCG@10 full"] == (0.5, pytest.approx(np.std([0.4, 0.6], ddof=1), abs=1e-4))
    assert set(compared) == {"GRU4Rec", "NARM (1 of 2 seeds)"}
    _, shuffled = reports.parse_table((tmp_path / "p.train_shuffle.md").read_text())
    assert set(shuffled) == {"GRU4Rec (1 of 2 seeds)", "NARM (1 of 2 seeds)"}
    assert shuffled["GRU4Rec (1 of 2 seeds)"]["Δ% NDCG@10 full"] == (-50.0, None)  # against its own seed, not the mean


def test_learning_curves_have_a_panel_per_recorded_term_and_one_legend_beside_them():
    def curve(losses: dict, cosine: float | None) -> list[dict]:
        return [{"step": step, "mode": "full", "metric": "ndcg@10", "valid": {"ndcg@10": 0.01 * step},
                 "losses": losses, "distill_cosine": cosine} for step in (10, 20)]

    teacher = {"model": "SASRec", "metrics": {"valid full": {"ndcg@10": 0.05}}}
    long_label = "LLMSRec[train_samples=3,validations_per_epoch=6,user_readout=last_history]"
    results = {
        long_label: [{"curve": curve({"retrieval": 2.0, "distillation": 0.01, "uniformity": 0.5}, 0.1),
                      "teacher": teacher}],
        "LLaRA": [{"curve": curve({"retrieval": 1.5}, None), "teacher": teacher}],  # LoRA rows: retrieval only
        "Pop": [{"model": "Pop", "metrics": {"valid full": {"ndcg@10": 0.02}}}],
    }
    fig = reports.curve_figure("curves", results, "ndcg@10")
    top, *panels = fig.axes
    assert [axis.get_ylabel().split("\n")[0] for axis in panels] == [
        "retrieval loss", "distillation loss", "uniformity loss", "cos(u, teacher)"]
    assert [len(axis.lines) for axis in panels] == [2, 1, 1, 1]  # one line per model that records the term
    legend = fig.legends[0]
    assert [text.get_text() for text in legend.get_texts()] == [
        long_label, "LLaRA", "SASRec (teacher): 0.0500", "Pop: 0.0200"]
    fig.canvas.draw()
    legend_box, top_box = legend.get_window_extent(), top.get_window_extent()
    assert legend_box.x0 >= top_box.x1  # beside the curves, not over them
    assert legend_box.x1 <= fig.bbox.x1  # and inside the image, however long the labels
    assert reports.curve_figure("curves", {"Pop": results["Pop"]}, "ndcg@10") is None

    many = {f"LLMSRec[seed_row={index}]": [{"curve": curve({"retrieval": 1.0}, None)}] for index in range(23)}
    top = reports.curve_figure("curves", many, "ndcg@10").axes[0]
    styles = {(tuple(to_rgba(line.get_color())), line.get_linestyle(), line.get_marker()) for line in top.lines}
    assert len(styles) == len(many)  # past the colour cycle every model still has a style of its own


def test_bar_chart_lists_rows_top_down_with_their_whole_labels_inside_the_image():
    labels = ["SASRec", "Pop", "LLMSRec[train_samples=3,validations_per_epoch=6,user_readout=last_history]"]
    rows = {label: {"NDCG@10 full": (0.1 * (index + 1), 0.01), "NDCG@10 uni100": None}
            for index, label in enumerate(labels)}
    fig = reports.bar_figure("comparison", "test score", ["NDCG@10 full", "NDCG@10 uni100"], rows)
    (ax,) = fig.axes
    fig.canvas.draw()
    ticks = sorted(ax.get_yticklabels(), key=lambda tick: -tick.get_window_extent().y0)  # top of the image first
    assert [tick.get_text() for tick in ticks] == labels
    assert min(tick.get_window_extent().x0 for tick in ticks) >= 0  # no label cut at the left edge
    assert [round(bar.get_width(), 4) for bar in ax.patches[:3]] == [0.1, 0.2, 0.3]  # the first column, row by row
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["NDCG@10 full", "NDCG@10 uni100"]
    assert fig.legends[0].get_window_extent().x1 <= fig.bbox.x1


def test_model_specs_presets_and_errors():
    specs = compare.parse_model_specs("SASRec, LLMSRec[distill_weight=0,uniform_weight=0] ,LLMSRec-noU")
    assert [s.model for s in specs] == ["SASRec", "LLMSRec", "LLMSRec"]
    assert specs[1].overrides == {"distill_weight": 0, "uniform_weight": 0}
    assert specs[2].overrides == {"uniform_weight": 0.0} and specs[2].slug == "LLMSRec-noU"
    assert compare.parse_model_spec("SASRec[hidden_size=16,loss_type=BPR]").overrides == {"hidden_size": 16, "loss_type": "BPR"}
    with pytest.raises(ValueError, match="Unknown model 'SASrec'.*sasrec"):
        compare.parse_model_specs("SASrec")
    with pytest.raises(ValueError, match="Unclosed"):
        compare.parse_model_specs("LLMSRec[distill_weight=0")
    with pytest.raises(ValueError, match="key=value"):
        compare.parse_model_spec("LLMSRec[distill_weight]")
    with pytest.raises(ValueError, match="twice"):
        compare.parse_model_specs("SASRec,SASRec")
    with pytest.raises(ValueError, match="Unknown probe"):
        compare.parse_probes("shuffle,order")
    assert compare.parse_probes("all") == list(compare.PROBES)


def test_cli_flags_are_hidden_from_recbole():
    argv = ["--compare=SASRec,LLMSRec", "--seeds", "3", "--dataset=ml-100k", "--probes=all", "--epochs=2"]
    assert strip_own_flags(argv) == ["--dataset=ml-100k", "--epochs=2"]


@pytest.mark.parametrize("argv, first_seed, seeds", [
    (["--compare=Pop", "--seed=7", "--seeds=2", "--epochs=2"], 7, 2),
    (["--compare=Pop", "--seed", "7", "--epochs=2"], 7, 1),  # --seed is not an abbreviation of --seeds
    (["--compare=Pop", "--epochs=2"], None, 1),
])
def test_compare_takes_seed_as_its_first_seed_and_hides_it_from_recbole(argv, first_seed, seeds, monkeypatch):
    calls = []

    def recorded_comparison(models, **kwargs):
        calls.append((kwargs, sys.argv[1:]))
        return {"files": []}

    monkeypatch.setattr(compare, "run_comparison", recorded_comparison)
    monkeypatch.setattr(sys, "argv", ["run_recbole_llmsrec.py", *argv])
    run_recbole_llmsrec.main()
    (kwargs, recbole_argv), = calls
    assert (kwargs["first_seed"], kwargs["seeds"]) == (first_seed, seeds)
    assert recbole_argv == ["--epochs=2"]  # a --seed left for RecBole would override every seed of the comparison


def test_cf_rows_and_pop_train_on_the_whole_split_whatever_the_profiles_training_samples(tmp_path):
    """``train_samples`` / ``train_users`` in an LLM profile are LLMSRec's data budget: a CF row
    and the quick start's Pop read every prefix of every user, unless the row's settings say otherwise."""
    profile = tmp_path / "few-samples.yaml"
    profile.write_text(yaml.safe_dump({**BASE, "dataset": "tiny", "train_samples": 2, "train_users": 3}))

    def training_rows(config: Config) -> tuple[int, int]:
        dataset = create_dataset(config)
        splits = dataset.build()
        return len(build_dataloaders(config, dataset, splits)[0].dataset), len(splits[0])

    def row_config(label: str) -> Config:
        spec = compare.parse_model_spec(label)
        return Config(model=spec.model, dataset="tiny", config_file_list=[str(profile)],
                      config_dict=compare.model_settings(spec, "tiny", [str(profile)], 2020))

    rows, whole = training_rows(row_config("GRU4Rec"))
    assert rows == whole
    rows, _ = training_rows(row_config("GRU4Rec[train_samples=2,train_users=3]"))
    assert rows == 2 * 3
    llm_config = Config(model="LLMSRec", dataset="tiny", config_file_list=[str(profile)])
    assert training_rows(llm_config)[0] == 2 * 3
    pop_rows, pop_whole = training_rows(fit_popularity(llm_config)[0])  # its own split: interactions, not prefixes
    assert pop_rows == pop_whole > 2 * 3


def test_comparison_seeds_count_from_first_seed(tmp_path, monkeypatch):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({**BASE, "dataset": "tiny"}))
    seen = []

    def recorded_run(spec, dataset, config_files, seed, probe_names, stored=None, store=None):
        config = Config(model=spec.model, dataset=dataset, config_file_list=config_files,
                        config_dict=compare.model_settings(spec, dataset, config_files, seed))
        seen.append((seed, config["seed"]))
        return {"probes": {}}

    monkeypatch.setattr(compare, "run_model", recorded_run)
    monkeypatch.setattr(compare, "write_reports", lambda *args: [])
    compare.run_comparison("Pop", config_files=[str(profile)], seeds=2, results_dir=tmp_path / "results", first_seed=7)
    assert seen == [(7, 7), (8, 8)]
    assert sorted(path.name for path in (tmp_path / "results" / "tiny" / "tiny").iterdir()) == ["Pop-seed7.json", "Pop-seed8.json"]


def test_report_false_stores_the_rows_and_leaves_the_profiles_report_alone(tmp_path, monkeypatch):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({**BASE, "dataset": "tiny"}))
    monkeypatch.setattr(compare, "run_model", lambda spec, *args, **kwargs: {"probes": {}, "label": spec.label})
    reported = []
    monkeypatch.setattr(compare, "write_reports", lambda folder, profile, results, seeds: reported.append(list(results)) or [folder / "x.md"])
    compare.run_comparison("Pop,SASRec", config_files=[str(profile)], results_dir=tmp_path / "results")
    outcome = compare.run_comparison("GRU4Rec", config_files=[str(profile)], results_dir=tmp_path / "results", report=False)
    assert outcome["files"] == [] and reported == [["Pop", "SASRec"]]  # the two-row report was not replaced
    assert (tmp_path / "results" / "tiny" / "tiny" / "GRU4Rec-seed2020.json").exists()
    compare.run_comparison("Pop,SASRec,GRU4Rec", config_files=[str(profile)], results_dir=tmp_path / "results")
    assert reported[-1] == ["Pop", "SASRec", "GRU4Rec"]


def test_stored_only_reports_the_stored_rows_and_trains_nothing(tmp_path, monkeypatch):
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({**BASE, "dataset": "tiny"}))
    store = tmp_path / "results" / "tiny" / "tiny"
    stored = {}
    for label, seeds in (("Pop", (2020, 2021)), ("GRU4Rec", (2020,))):
        spec = compare.parse_model_spec(label)
        for seed in seeds:
            stored[label, seed] = {"format": compare.RESULT_FORMAT, "model": spec.model, "overrides": spec.overrides,
                                   "label": label, "seed": seed, "probes": {}}
            compare.write_json_atomic(compare.result_path(store, spec, seed), stored[label, seed])
    monkeypatch.setattr(compare, "run_model", lambda *args, **kwargs: pytest.fail("ran a model"))
    reported = []
    monkeypatch.setattr(compare, "write_reports", lambda folder, profile, results, seeds: reported.append((results, seeds)) or [])
    compare.run_comparison("Pop,GRU4Rec,SASRec", config_files=[str(profile)], seeds=2, probe_names="shuffle",
                           results_dir=tmp_path / "results", stored_only=True)
    # SASRec has no stored row, GRU4Rec one of two seeds, and neither lacking the probe nor the seed runs anything
    assert reported == [({"Pop": [stored["Pop", 2020], stored["Pop", 2021]], "GRU4Rec": [stored["GRU4Rec", 2020]]}, 2)]
    with pytest.raises(ValueError, match="holds no stored row of BERT4Rec"):
        compare.run_comparison("BERT4Rec", config_files=[str(profile)], results_dir=tmp_path / "results", stored_only=True)
    with pytest.raises(ValueError, match="drop --report=False"):
        compare.run_comparison("Pop", config_files=[str(profile)], results_dir=tmp_path / "results", stored_only=True,
                               report=False)


@pytest.mark.parametrize("argv, report, stored_only", [
    (["--compare=Pop"], True, False),
    (["--compare=Pop", "--report=False"], False, False),
    (["--compare=Pop", "--stored_only=True"], True, True),
])
def test_report_flags_reach_the_comparison(argv, report, stored_only, monkeypatch):
    calls = []
    monkeypatch.setattr(compare, "run_comparison",
                        lambda models, **kwargs: calls.append((kwargs["report"], kwargs["stored_only"])) or {"files": []})
    monkeypatch.setattr(sys, "argv", ["run_recbole_llmsrec.py", *argv])
    run_recbole_llmsrec.main()
    assert calls == [(report, stored_only)]


def test_the_peak_rss_counts_what_its_stretch_allocated_and_restarts_after_it():
    measured = PeakMemory(torch.device("cpu"))
    block = mmap.mmap(-1, 64 * 2**20)  # fresh pages from the system, whatever the allocators hold
    block.write(b"\1" * len(block))  # every page made resident
    with_block = measured.read()
    block.close()  # the pages go back
    after = PeakMemory(torch.device("cpu")).read()
    assert with_block["peak_memory_mib"] is None  # no GPU peak on the CPU
    assert with_block["peak_rss_mib"] - after["peak_rss_mib"] > 48

