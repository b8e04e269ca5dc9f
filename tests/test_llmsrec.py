"""LLMSRec: injection, freezing, losses, negatives, batch invariance, scoring and checkpoints."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from recbole_llmsrec.checkpoint import load_checkpoint, save_checkpoint
from recbole_llmsrec.llm import resolve_tokens_per_pass
from recbole_llmsrec.model.sequential_recommender.llmsrec import uniformity_loss
from recbole_llmsrec.trainer import LLMSRecTrainer

from helpers import build_llmsrec


@pytest.fixture(scope="module")
def setup(tiny_settings):
    return build_llmsrec(tiny_settings)


@pytest.fixture
def batch(setup):
    _, _, (train_data, _, _) = setup
    return next(iter(train_data))


def test_injected_vectors_sit_exactly_at_special_tokens(setup, batch, monkeypatch):
    _, model, _ = setup
    model.eval()
    captured = {}
    def capture(module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:  # not the one-off pass over the cached prompt prefix
            captured["embeds"] = kwargs["inputs_embeds"].detach().clone()

    hook = model.llm.register_forward_pre_hook(capture, with_kwargs=True)
    monkeypatch.setattr(model, "llm_tokens_per_pass", 10_000)  # the three prompts in one pass
    try:
        with torch.no_grad():
            model.forward(batch["item_id_list"][:3], batch["item_length"][:3], batch["timestamp_list"][:3])
    finally:
        hook.remove()
    prompts = model.prompts.user_prompts(batch["item_id_list"][:3], batch["item_length"][:3], batch["timestamp_list"][:3])
    embeds = captured["embeds"]  # chunks are length-sorted: match rows by their token ids
    prefix_length = len(model.prompts.user_prefix_ids)  # the shared prefix runs once, from its cached keys/values
    collated = model.prompts.collate(sorted(prompts, key=lambda p: len(p.token_ids)), skip=prefix_length)
    ids = collated.input_ids
    token_table = model.llm.get_input_embeddings().weight
    with torch.no_grad():
        expected_history = model.item_adapter(model.teacher.item_embedding(collated.history_items))
    history_slots = ids == model.prompts.history_token_id
    user_slots = ids == model.prompts.user_out_token_id
    assert torch.allclose(embeds[history_slots], expected_history, atol=1e-6)  # row-major = prompt order
    assert torch.equal(embeds[user_slots], model.user_out_embedding.detach().expand(3, -1))
    other = ~(history_slots | user_slots)
    assert torch.equal(embeds[other], token_table[ids[other]])
    assert user_slots.sum(1).tolist() == [1, 1, 1]


def test_optimizer_step_changes_only_trainable_tensors(tiny_settings):
    _, model, (train_data, _, _) = build_llmsrec(tiny_settings)
    batch = next(iter(train_data))
    llm_before = {k: v.clone() for k, v in model.llm.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    trainable_before = {k: v.clone() for k, v in model.named_parameters()}
    assert not any(k.startswith(("llm.", "teacher.")) for k in model.state_dict())
    assert not any(p.requires_grad for p in model.llm.parameters())
    assert not model.llm.training and not model.teacher.training

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    model.train()
    sum(model.calculate_loss(batch)).backward()
    optimizer.step()

    assert not model.llm.training and not model.teacher.training
    assert all(torch.equal(v, llm_before[k]) for k, v in model.llm.state_dict().items())
    assert all(torch.equal(v, teacher_before[k]) for k, v in model.teacher.state_dict().items())
    assert all(p.grad is None for p in model.llm.parameters())
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, trainable_before[k])]
    assert unchanged == []
    assert len(optimizer.state) == len(trainable_before)


def test_losses_match_hand_computation(setup):
    _, model, _ = setup
    torch.manual_seed(1)
    users, candidates, teacher = torch.randn(4, 5), torch.randn(4, 3, 5), torch.randn(4, 5)
    retrieval, distill, uniform = model.weighted_losses(users, candidates, teacher)

    manual_retrieval = 0.0
    for b in range(4):
        logits = [float(users[b] @ candidates[b, c]) for c in range(3)]
        manual_retrieval += -logits[0] + torch.logsumexp(torch.tensor(logits), 0).item()
    manual_retrieval /= 4
    u = users / users.norm(dim=1, keepdim=True)
    z = teacher / teacher.norm(dim=1, keepdim=True)
    manual_distill = ((u - z) ** 2).mean().item()

    def manual_uniform(x):
        values = [torch.exp(-2 * ((x[i] - x[j]) ** 2).sum()).item() for i in range(4) for j in range(i + 1, 4)]
        return sum(values) / len(values)

    assert retrieval.item() == pytest.approx(model.retrieval_weight * manual_retrieval, rel=1e-5)
    assert distill.item() == pytest.approx(model.distill_weight * manual_distill, rel=1e-5)
    assert uniform.item() == pytest.approx(model.uniform_weight * (manual_uniform(u) + manual_uniform(z)), rel=1e-5)
    assert uniformity_loss(u[:1]).item() == 0.0


def test_loss_weights_come_from_config(tiny_settings):
    _, model, _ = build_llmsrec(tiny_settings, retrieval_weight=0.5, distill_weight=0.0, uniform_weight=2.0)
    users, candidates, teacher = torch.randn(3, 4), torch.randn(3, 2, 4), torch.randn(3, 4)
    retrieval, distill, uniform = model.weighted_losses(users, candidates, teacher)
    assert distill.item() == 0.0
    assert retrieval.item() == pytest.approx(0.5 * F.cross_entropy(torch.einsum("bd,bcd->bc", users, candidates), torch.zeros(3, dtype=torch.long)).item())
    u, z = F.normalize(users, dim=-1), F.normalize(teacher, dim=-1)
    assert uniform.item() == pytest.approx(2.0 * (uniformity_loss(u) + uniformity_loss(z)).item())


def test_negatives_never_hit_target_or_history(setup, batch):
    _, model, (train_data, _, _) = setup
    inter = train_data._dataset.inter_feat
    history = {}
    for u, seq, target in zip(inter["user_id"].tolist(), inter["item_id_list"].tolist(), inter["item_id"].tolist()):
        history.setdefault(u, set()).update(i for i in seq if i)
        history[u].add(target)
    torch.manual_seed(0)
    for _ in range(50):
        negatives = model.sample_negatives(batch["user_id"], batch["item_id_list"], batch["item_id"])
        assert negatives.shape == (len(batch), model.num_negatives)
        for u, row in zip(batch["user_id"].tolist(), negatives.tolist()):
            assert not set(row) & history[u]
            assert all(1 <= i < model.n_items for i in row)


def test_scores_are_batch_invariant_and_predict_matches_full_sort(setup, batch, monkeypatch):
    _, model, _ = setup
    model.eval()
    alone = batch[[0]]
    full_alone = model.full_sort_predict(alone)  # [1, n_items]
    model._eval_cache["users"].clear()
    full_batch = model.full_sort_predict(batch)  # [B, n_items], prompts of other lengths alongside
    assert full_alone.shape == (1, model.n_items)
    assert torch.allclose(full_alone[0], full_batch[0], atol=1e-5)

    model._eval_cache["users"].clear()
    monkeypatch.setattr(model, "llm_tokens_per_pass", 1)  # every prompt in a pass of its own: no padding anywhere
    unpadded = model.full_sort_predict(batch)
    assert torch.allclose(unpadded, full_batch, atol=1e-5)  # right padding needs no attention mask

    items = torch.tensor([3, 5, 11, 2])
    rows = batch[[0, 0, 1, 2]]
    rows.update(type(rows)({"item_id": items}))
    assert torch.allclose(model.predict(rows), full_batch[[0, 0, 1, 2], items], atol=1e-5)


def test_eval_cache_follows_weight_changes(setup, batch):
    _, model, _ = setup
    model.eval()
    before = model.full_sort_predict(batch[[0]])
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.item_head[-1].bias.add_(1.0)
    changed = model.full_sort_predict(batch[[0]])
    assert not torch.allclose(before, changed)
    model.load_state_dict(snapshot)
    assert torch.equal(model.full_sort_predict(batch[[0]]), before)


def test_checkpoint_round_trip(setup, tiny_settings, batch, tmp_path, monkeypatch):
    config, model, _ = setup
    model.eval()
    with torch.no_grad():
        model.user_out_embedding.add_(0.5)
    expected = model.full_sort_predict(batch)
    path = tmp_path / "llmsrec.safetensors"
    save_checkpoint(path, model, config, {"epoch": 3})

    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
    assert names == set(model.state_dict())
    assert not any(name.startswith(("llm.", "teacher.")) for name in names)

    _, fresh, _ = build_llmsrec(tiny_settings, teacher_checkpoint=config["teacher_checkpoint"])
    fresh.eval()
    assert not torch.allclose(fresh.full_sort_predict(batch), expected)

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    metadata = load_checkpoint(path, fresh)
    assert metadata["training"]["epoch"] == 3 and metadata["config"]["model"] == "LLMSRec"
    assert torch.allclose(fresh.full_sort_predict(batch), expected, atol=1e-6)


def test_prompts_leave_dates_out_without_real_timestamps(tiny_settings, batch):
    _, dated, _ = build_llmsrec(tiny_settings)
    _, undated, _ = build_llmsrec(tiny_settings, prompt_dates=False)
    args = (batch["item_id_list"][:1], batch["item_length"][:1])
    with_dates = dated.prompts.user_prompts(*args, dated._time_seq(batch)[:1])[0]
    assert "Time: 19" in dated.prompts.tokenizer.decode(with_dates.token_ids)
    assert undated._time_seq(batch) is None
    without = undated.prompts.user_prompts(*args, None)[0]
    text = undated.prompts.tokenizer.decode(without.token_ids)
    assert "Time:" not in text and text.endswith("[UserOut]")
    assert without.history_items == with_dates.history_items


def test_prefix_cache_and_checkpointing_give_the_same_vectors_and_gradients(setup, batch):
    _, model, _ = setup
    model.eval()
    args = (batch["item_id_list"], batch["item_length"], batch["timestamp_list"])
    items = torch.arange(1, model.n_items)
    llm_calls = []

    def count_prompt_passes(module, args, kwargs):  # not the one-off passes over the prompt prefixes
        if kwargs.get("inputs_embeds") is not None:
            llm_calls.append(1)

    hook = model.llm.register_forward_pre_hook(count_prompt_passes, with_kwargs=True)
    results, calls = {}, {}
    try:
        for cached in (True, False):
            for checkpointed in (False, True):
                model.llm_prefix_cache, model.llm_gradient_checkpointing = cached, checkpointed
                model.zero_grad()
                llm_calls.clear()
                users = model.forward(*args)
                item_vectors = model.encode_items(items)
                (users.sum() + item_vectors.sum()).backward()
                calls[cached, checkpointed] = len(llm_calls)
                results[cached, checkpointed] = (users.detach(), item_vectors.detach(), model.item_adapter[0].weight.grad.clone())
    finally:
        hook.remove()
        model.llm_prefix_cache, model.llm_gradient_checkpointing = True, False
        model.zero_grad()
    for setting, tensors in results.items():
        for value, reference in zip(tensors, results[True, False]):
            assert torch.allclose(value, reference, atol=1e-5, rtol=1e-4), setting
    assert calls[True, True] == 2 * calls[True, False] > 0  # every pass ran again in backward
    assert calls[False, True] == 2 * calls[False, False]


def test_tokens_per_pass_auto_follows_the_device_and_bad_values_are_refused():
    assert resolve_tokens_per_pass("auto", torch.device("cpu")) == 1024
    assert resolve_tokens_per_pass(None, torch.device("cuda")) == 16384
    assert resolve_tokens_per_pass(300, torch.device("cuda")) == 300
    for bad in (0, -5, "many", 2.5, True):
        with pytest.raises(ValueError, match="llm_tokens_per_pass"):
            resolve_tokens_per_pass(bad, torch.device("cpu"))


def test_negatives_of_a_row_are_distinct(tiny_settings):
    _, model, (train_data, _, _) = build_llmsrec(tiny_settings, num_negatives=25)
    batch = next(iter(train_data))
    torch.manual_seed(0)
    for _ in range(20):
        negatives = model.sample_negatives(batch["user_id"], batch["item_id_list"], batch["item_id"])
        assert all(len(set(row)) == len(row) for row in negatives.tolist())
    _, greedy, _ = build_llmsrec(tiny_settings, num_negatives=model.n_items)
    with pytest.raises(ValueError, match="lower num_negatives"):
        greedy.sample_negatives(batch["user_id"], batch["item_id_list"], batch["item_id"])


@pytest.mark.parametrize("teacher_dropout", [True, False])
def test_teacher_dropout_sets_the_teacher_mode_for_the_target_only(tiny_settings, teacher_dropout, monkeypatch):
    _, model, (train_data, _, _) = build_llmsrec(tiny_settings, teacher_dropout=teacher_dropout)
    modes = []
    forward = model.teacher.forward
    monkeypatch.setattr(model.teacher, "forward", lambda *args: modes.append(model.teacher.training) or forward(*args))
    model.train()
    model.calculate_loss(next(iter(train_data)))
    assert modes == [teacher_dropout] and not model.teacher.training


def test_distill_reduction_sum_is_projection_size_times_mean(tiny_settings):
    users, candidates, teacher = torch.randn(3, 16), torch.randn(3, 2, 16), torch.randn(3, 16)
    _, mean_model, _ = build_llmsrec(tiny_settings, distill_reduction="mean")
    _, sum_model, _ = build_llmsrec(tiny_settings, distill_reduction="sum")
    mean = mean_model.weighted_losses(users, candidates, teacher)[1]
    total = sum_model.weighted_losses(users, candidates, teacher)[1]
    cosine = F.cosine_similarity(users, teacher).mean()
    assert total.item() == pytest.approx(16 * mean.item()) and total.item() == pytest.approx((2 - 2 * cosine).item(), rel=1e-5)
    assert mean.item() == pytest.approx(F.mse_loss(F.normalize(users, dim=-1), F.normalize(teacher, dim=-1)).item())
    assert sum_model.last_distill_cosine.item() == pytest.approx(cosine.item(), rel=1e-5)
    with pytest.raises(ValueError, match="distill_reduction='max'"):
        build_llmsrec(tiny_settings, distill_reduction="max")


def test_contrastive_distillation_rewards_only_what_tells_users_apart(tiny_settings):
    _, model, _ = build_llmsrec(tiny_settings, distill_loss="contrastive", distill_temperature=0.1)
    users, candidates = torch.eye(4, 16), torch.randn(4, 2, 16)  # four users, mutually orthogonal
    distill = lambda teacher: model.weighted_losses(users, candidates, teacher)[1].item()  # noqa: E731
    assert distill(users.clone()) < 1e-3  # each user nearest its own target
    assert distill(users[[1, 0, 3, 2]]) > 9  # each user nearest another's target
    # One direction shared by every target matches each user equally (the MSE would reward it).
    assert distill(torch.ones(4, 16)) == pytest.approx(math.log(4), rel=1e-5)
    with pytest.raises(ValueError, match="distill_loss='kl'"):
        build_llmsrec(tiny_settings, distill_loss="kl")
    with pytest.raises(ValueError, match="distill_temperature=0"):
        build_llmsrec(tiny_settings, distill_loss="contrastive", distill_temperature=0)


def test_random_llm_keeps_the_shape_and_draws_new_weights(tiny_settings):
    _, pretrained, _ = build_llmsrec(tiny_settings)
    _, random_a, _ = build_llmsrec(tiny_settings, llm_random_weights=True)
    _, random_b, _ = build_llmsrec(tiny_settings, llm_random_weights=True)
    weights = lambda model: dict(model.llm.named_parameters())  # noqa: E731
    assert {n: p.shape for n, p in weights(random_a).items()} == {n: p.shape for n, p in weights(pretrained).items()}
    layer = "layers.0.self_attn.q_proj.weight"
    assert not torch.equal(weights(random_a)[layer], weights(pretrained)[layer])
    assert torch.equal(weights(random_a)[layer], weights(random_b)[layer])  # seeded by the run's seed


def test_two_trainers_started_together_never_share_a_checkpoint_file(tiny_settings, tmp_path):
    config, model, _ = build_llmsrec(tiny_settings, checkpoint_dir=str(tmp_path))
    first, second = LLMSRecTrainer(config, model), LLMSRecTrainer(config, model)
    assert first.saved_model_file != second.saved_model_file
    assert first.saved_model_file.endswith(".safetensors") and first.saved_model_file.startswith(str(tmp_path))


def test_frozen_cf_user_head_keeps_its_initialisation_and_the_rest_trains(tiny_settings):
    _, model, (train_data, _, _) = build_llmsrec(tiny_settings, cf_user_head_trainable=False)
    before = {k: v.clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    model.train()
    sum(model.calculate_loss(next(iter(train_data)))).backward()
    optimizer.step()

    unchanged = {k for k, v in model.named_parameters() if torch.equal(v, before[k])}
    assert unchanged == {k for k in before if k.startswith("cf_user_head.")} != set()


@pytest.mark.parametrize("readout", ["user_out", "last_history"])
def test_user_readout_reads_userout_or_the_last_history_slot(tiny_settings, batch, readout):
    config, model, _ = build_llmsrec(tiny_settings, user_readout=readout)
    model.eval()
    item_seq, item_seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    with torch.no_grad():
        before = model.forward(item_seq, item_seq_len)
        model.user_out_embedding.add_(1.0)
        after = model.forward(item_seq, item_seq_len)
        # the last [HistoryEmb] slot comes before [UserOut]: causal attention keeps it from that token
        assert torch.equal(before, after) == (readout == "last_history")
        model.item_adapter[-1].bias.add_(1.0)  # the injected vectors
        assert not torch.equal(after, model.forward(item_seq, item_seq_len))
