"""The authors' training schedule: validations within an epoch, LR decay, early stopping, learning curves."""

from __future__ import annotations

import logging
import re

import pytest
import torch
import yaml

from recbole_llmsrec import compare, reports
from recbole_llmsrec.checkpoint import read_metadata
from recbole_llmsrec.data_preparation import sampled_prefixes_per_user, user_subset
from recbole_llmsrec.trainer import LLMSRecTrainer, validation_rounds

from recbole_llmsrec.data.synthetic import write_chain_dataset

from helpers import Killed, build_llmsrec


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("batches, per_epoch, expected", [
    (47, 10, [4, 5, 5, 4, 5, 5, 4, 5, 5, 5]),
    (10, 2, [5, 5]),
    (3, 10, [1, 1, 1]),  # never an empty round: at most one validation per batch
    (7, 1, [7]),
])
def test_validation_rounds_split_an_epoch_evenly(batches, per_epoch, expected):
    rounds = validation_rounds(batches, per_epoch)
    assert rounds == expected and sum(rounds) == batches


def test_validations_lr_decay_and_curve_follow_the_schedule(tiny_settings):
    config, model, (train_data, valid_data, _) = build_llmsrec(
        tiny_settings, epochs=2, validations_per_epoch=3, lr_decay_per_validation=0.5, stopping_step=100,
        learning_rate=0.01,
    )
    trainer = LLMSRecTrainer(config, model)
    trainer.fit(train_data, valid_data, saved=False)
    rounds = validation_rounds(len(train_data), 3)
    assert len(trainer.curve) == 2 * len(rounds)
    steps, epochs, done = [], [], 0
    for epoch in range(2):
        for k in range(len(rounds)):
            done += rounds[k]
            steps.append(done)
            epochs.append(epoch + sum(rounds[: k + 1]) / sum(rounds))
    assert [point["step"] for point in trainer.curve] == steps
    assert [point["epoch"] for point in trainer.curve] == pytest.approx(epochs)
    # the LR used before the k-th validation is lr x 0.5^(k-1); after the last one it is lr x 0.5^6
    assert [point["lr"] for point in trainer.curve] == pytest.approx([0.01 * 0.5**k for k in range(6)])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**6)
    for point in trainer.curve:
        assert set(point["losses"]) == {"retrieval", "distillation", "uniformity"}
        assert all(value > 0 for value in point["losses"].values())
        assert -1.0 <= point["distill_cosine"] <= 1.0
        assert point["valid_score"] == point["valid"]["ndcg@10"]


@pytest.mark.parametrize("scores, validations, best", [
    ([0.1, 0.5, 0.2, 0.3, 0.4, 0.9], 5, 1),  # best at the 2nd, then 3 without improvement: stop at the 5th
    ([0.1, 0.5, 0.2, 0.5, 0.3, 0.4, 0.2, 0.9], 7, 3),  # a tie with the best is an improvement, as the authors' >=
])
def test_early_stopping_counts_validations_and_best_weights_come_back(scores, validations, best, tiny_settings,
                                                                      tmp_path):
    config, model, (train_data, valid_data, _) = build_llmsrec(
        tiny_settings, epochs=len(scores) // 2, validations_per_epoch=2, stopping_step=3, learning_rate=0.01,
        checkpoint_dir=str(tmp_path),
    )
    trainer = LLMSRecTrainer(config, model)
    scripted_scores = iter(scores)
    snapshots = []
    real_valid_epoch = trainer._valid_epoch

    def scripted_valid_epoch(valid_data, show_progress=False):
        _, result = real_valid_epoch(valid_data, show_progress)
        snapshots.append(trainable_state(model))
        return next(scripted_scores), result

    trainer._valid_epoch = scripted_valid_epoch
    best_score, _ = trainer.fit(train_data, valid_data, saved=True)
    assert len(trainer.curve) == validations and best_score == scores[best]
    # every validation saw other weights, so the restored ones name the validation they came from
    assert all(any(not torch.equal(snapshots[best][name], other[name]) for name in other)
               for index, other in enumerate(snapshots) if index != best)
    trainer.evaluate(valid_data, load_best_model=True)
    restored = trainable_state(model)
    assert all(torch.equal(restored[name], snapshots[best][name]) for name in restored)


def test_validation_subset_is_fixed_by_the_seed(tiny_settings):
    _, _, (_, valid_data, _) = build_llmsrec(tiny_settings)
    full = valid_data._dataset
    users = lambda split: sorted(split.inter_feat["user_id"].tolist())  # noqa: E731
    first, again, other = (user_subset(full, 7, seed, "valid_users") for seed in (1, 1, 2))
    assert len(users(first)) == 7 and users(first) == users(again) and users(first) != users(other)
    assert set(users(first)) <= set(users(full))
    assert user_subset(full, None, 1, "valid_users") is full and user_subset(full, 10**6, 1, "valid_users") is full
    with pytest.raises(ValueError, match="valid_users=0"):
        user_subset(full, 0, 1, "valid_users")
    config, _, (_, subset_loader, _) = build_llmsrec(tiny_settings, valid_users=7)
    assert len(subset_loader._dataset.inter_feat) == 7


def test_training_user_subset_keeps_every_sample_of_the_chosen_users_only(tiny_settings):
    user_set = lambda loader: set(loader._dataset.inter_feat["user_id"].tolist())  # noqa: E731
    _, _, (every_user, valid_all, test_all) = build_llmsrec(tiny_settings, train_samples=3)
    _, _, (subset, valid_data, test_data) = build_llmsrec(tiny_settings, train_samples=3, train_users=5)
    _, _, (again, _, _) = build_llmsrec(tiny_settings, train_samples=3, train_users=5)
    chosen = user_set(subset)
    assert len(chosen) == 5 and chosen == user_set(again) and chosen <= user_set(every_user)
    inter, full = subset._dataset.inter_feat, every_user._dataset.inter_feat
    kept = torch.isin(full["user_id"], inter["user_id"])
    assert torch.equal(inter["item_id"], full["item_id"][kept])  # the same prefixes as without the subset
    assert user_set(valid_data) == user_set(valid_all) and user_set(test_data) == user_set(test_all)
    with pytest.raises(ValueError, match="train_users=-1"):
        build_llmsrec(tiny_settings, train_users=-1)


def test_sampled_prefixes_keep_the_last_and_draw_the_rest_once(tiny_settings):
    _, _, (train_data, _, _) = build_llmsrec(tiny_settings, train_samples="all")
    every_prefix = train_data._dataset
    inter = every_prefix.inter_feat
    lengths = dict(zip(*torch.unique(inter["user_id"], return_counts=True)))
    sampled = sampled_prefixes_per_user(every_prefix, 3, seed=5).inter_feat
    again = sampled_prefixes_per_user(every_prefix, 3, seed=5).inter_feat
    assert torch.equal(sampled["item_id"], again["item_id"]) and torch.equal(sampled["user_id"], again["user_id"])
    for user, count in lengths.items():
        rows = sampled["item_length"][sampled["user_id"] == user]
        assert len(rows) == min(3, int(count))
        assert int(rows.max()) == int(inter["item_length"][inter["user_id"] == user].max())  # the last prefix
    _, _, (loader, _, _) = build_llmsrec(tiny_settings, train_samples=3)
    assert len(loader._dataset.inter_feat) == len(sampled)
    with pytest.raises(ValueError, match="train_samples='some'"):
        build_llmsrec(tiny_settings, train_samples="some")


def test_comparison_stores_curves_logs_them_and_its_sasrec_row_is_the_teacher(tiny_settings, tmp_path, caplog):
    profile = tmp_path / "tiny-llm.yaml"
    profile.write_text(yaml.safe_dump({
        **tiny_settings, "dataset": "tiny", "checkpoint_dir": str(tmp_path / "saved"), "state": "INFO",
        "validations_per_epoch": 2, "epochs": 2,
    }))
    with caplog.at_level(logging.INFO):
        outcome = compare.run_comparison("LLMSRec,SASRec,Pop", config_files=[str(profile)], probe_names="shuffle",
                                         results_dir=tmp_path / "results")
    llm, sasrec = outcome["results"]["LLMSRec"][0], outcome["results"]["SASRec"][0]
    # one SASRec: the row is LLMSRec's teacher, same checkpoint, same scores
    assert sasrec["checkpoint"] == llm["teacher"]["checkpoint"]
    assert sasrec["metrics"] == llm["teacher"]["metrics"]
    assert sasrec["probes"]["shuffle"]["window"] is None
    folder = tmp_path / "results" / "tiny"
    _, rows = reports.parse_table((folder / "tiny-llm.md").read_text())
    assert list(rows) == ["LLMSRec", "SASRec", "Pop"]  # no separate teacher row
    # the curve of the stored result is the one the trainer logged, validation by validation
    logged = [record.getMessage() for record in caplog.records if "mean loss per batch" in record.getMessage()]
    assert len(logged) == len(llm["curve"]) == 4  # 2 epochs x 2 validations
    for message, point in zip(logged, llm["curve"]):
        values = dict(re.findall(r"(retrieval|distillation|uniformity|cos\(u, teacher\)): ([0-9.e+-]+)", message))
        for term in ("retrieval", "distillation", "uniformity"):
            assert float(values[term]) == pytest.approx(point["losses"][term], abs=5e-5)
        assert float(values["cos(u, teacher)"]) == pytest.approx(point["distill_cosine"], abs=5e-5)
    assert (folder / "tiny-llm.curves.png").stat().st_size > 0


def test_llmsrec_beats_pop_on_an_order_determined_dataset(tiny_llm_dir, tmp_path):
    """Each next item is a function of the previous one: a few dozen steps must clearly beat popularity."""
    write_chain_dataset(tmp_path / "data", n_items=60, n_users=150, titles=True)
    profile = tmp_path / "chain-llm.yaml"
    profile.write_text(yaml.safe_dump({
        "data_path": str(tmp_path / "data"), "checkpoint_dir": str(tmp_path / "saved"), "show_progress": False,
        "state": "ERROR", "seed": 2020, "dataset": "chain", "MAX_ITEM_LIST_LENGTH": 10, "prompt_dates": False,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title"]},
        "llm_path": str(tiny_llm_dir), "history_length": 4, "head_hidden_size": 64, "projection_size": 32,
        "llm_tokens_per_pass": 512, "train_batch_size": 10, "epochs": 3, "validations_per_epoch": 2,
        "learning_rate": 1e-3,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni100"},
        "teacher_config": {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "epochs": 30, "learning_rate": 0.01,
                           "train_batch_size": 64},
    }))
    outcome = compare.run_comparison("LLMSRec,Pop", config_files=[str(profile)], results_dir=tmp_path / "results")
    llm, pop = outcome["results"]["LLMSRec"][0], outcome["results"]["Pop"][0]
    assert llm["curve"][-1]["step"] == 45  # 3 epochs of 15 batches
    assert llm["metrics"]["test uni100"]["ndcg@10"] > 2 * pop["metrics"]["test uni100"]["ndcg@10"]


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(tiny_settings, tmp_path):
    settings = dict(epochs=2, validations_per_epoch=2, lr_decay_per_validation=0.5, learning_rate=0.01,
                    stopping_step=100, checkpoint_dir=str(tmp_path))
    config, model, (train_data, valid_data, _) = build_llmsrec(tiny_settings, **settings)
    assert len(validation_rounds(len(train_data), 2)) == 2  # round 0 ends mid-epoch
    uninterrupted = LLMSRecTrainer(config, model)
    uninterrupted.fit(train_data, valid_data, saved=True)

    config, model, (train_data, valid_data, _) = build_llmsrec(tiny_settings, **settings)
    killed = LLMSRecTrainer(config, model)

    def kill_after_first_round(round_idx, valid_score):
        raise Killed

    with pytest.raises(Killed):
        killed.fit(train_data, valid_data, saved=True, callback_fn=kill_after_first_round)
    metadata = read_metadata(killed.saved_model_file)
    assert metadata["training"]["finished"] is False and metadata["resume"]["round"] == 0

    config, model, (train_data, valid_data, _) = build_llmsrec(tiny_settings, **settings)
    torch.manual_seed(12345)  # whatever the new process drew is replaced by the saved generator states
    resumed = LLMSRecTrainer(config, model)
    resumed.resume_checkpoint(killed.saved_model_file)
    best_score, _ = resumed.fit(train_data, valid_data, saved=True)

    assert resumed.curve == uninterrupted.curve and len(resumed.curve) == 4
    assert best_score == uninterrupted.best_valid_score
    final, expected = trainable_state(resumed.model), trainable_state(uninterrupted.model)
    assert all(torch.equal(final[name], expected[name]) for name in expected)
    metadata = read_metadata(resumed.saved_model_file)
    assert metadata["training"]["finished"] is True and metadata["resume"] is None
    with pytest.raises(ValueError, match="finished run: nothing to resume"):
        LLMSRecTrainer(config, model).resume_checkpoint(resumed.saved_model_file)


def test_a_diverging_run_stops_with_the_step_and_the_fix(tiny_settings, tmp_path):
    from recbole_llmsrec.trainer import TrainingDiverged

    config, model, (train_data, valid_data, _) = build_llmsrec(
        tiny_settings, learning_rate=1e6, checkpoint_dir=str(tmp_path))
    with pytest.raises(TrainingDiverged, match=r"(loss is|reached \|w\|).* optimizer step \d+.*lower learning_rate"):
        LLMSRecTrainer(config, model).fit(train_data, valid_data, saved=False)


def test_a_collapsed_catalogue_stops_training(tiny_settings, tmp_path):
    from recbole_llmsrec.trainer import TrainingDiverged

    config, model, (train_data, valid_data, _) = build_llmsrec(tiny_settings, checkpoint_dir=str(tmp_path))
    with torch.no_grad():  # f_item's output no longer depends on the item
        model.item_head[-1].weight.zero_()
        model.item_head[-1].bias.fill_(1.0)
    model.item_head.requires_grad_(False)
    with pytest.raises(TrainingDiverged, match="catalogue collapsed .* all items score alike"):
        LLMSRecTrainer(config, model).fit(train_data, valid_data, saved=False)
