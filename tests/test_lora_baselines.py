"""The LoRA baselines TALLRec, LLaRA and CoLLM: what trains, what a checkpoint holds, their prompts, end to end."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import build_llm_model
from recbole_llmsrec.checkpoint import load_checkpoint, read_tensors, save_checkpoint
from recbole_llmsrec.compare import run_comparison
from recbole_llmsrec.quick_start import run_recbole_llmsrec
from recbole_llmsrec.trainer import LLMSRecTrainer

MODELS = ("TALLRec", "LLaRA", "CoLLM")
HEADS = ("user_head.", "item_head.", "item_adapter.", "user_out_embedding", "item_out_embedding")


@pytest.fixture(scope="module", params=MODELS)
def built(request, tiny_settings):
    return build_llm_model(request.param, tiny_settings)


def test_only_adapters_and_heads_train_and_the_base_llm_stays_bit_identical(built):
    config, model, (train_data, _, _) = built
    base = {name: p.detach().clone() for name, p in model.llm.named_parameters() if "lora_" not in name}
    trainable = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert all(name.startswith(("lora.",) + HEADS) for name in trainable)
    assert any(name.startswith("lora.") for name in trainable)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for batch in list(train_data)[:2]:  # two steps: the adapters' B matrices start at 0, so A moves from step 2
        optimizer.zero_grad()
        sum(model.calculate_loss(batch)).backward()
        optimizer.step()
    for name, p in model.llm.named_parameters():
        if "lora_" in name:
            assert p.requires_grad
        else:
            assert not p.requires_grad and p.grad is None and torch.equal(p, base[name]), name
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, trainable[name])}
    assert changed == set(trainable)  # every adapter and head tensor moved


def test_adapters_train_in_float32_on_a_bfloat16_llm(tiny_settings):
    _, model, (train_data, _, _) = build_llm_model("LLaRA", tiny_settings, llm_dtype="bfloat16")
    assert {p.dtype for name, p in model.llm.named_parameters() if "lora_" not in name} == {torch.bfloat16}
    assert {p.dtype for p in model.lora.values()} == {torch.float32}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)  # steps far below bf16's resolution of these weights
    before = {name: p.detach().clone() for name, p in model.lora.items()}
    model.train()
    for batch in list(train_data)[:2]:
        optimizer.zero_grad()
        sum(model.calculate_loss(batch)).backward()
        optimizer.step()
    assert all(not torch.equal(p, before[name]) for name, p in model.lora.items())


def test_checkpoint_holds_adapters_and_heads_only_and_restores_the_scores(built, tiny_settings, tmp_path):
    config, model, (_, _, test_data) = built
    with torch.no_grad():
        for p in model.lora.values():  # a trained adapter (B starts at 0)
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    batch = next(iter(test_data))[0]
    scores = model.full_sort_predict(batch)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, config, {"epoch": 0}, model.fingerprints)
    tensors, _ = read_tensors(path)
    assert all(name.startswith(("lora.",) + HEADS) for name in tensors)
    assert sum(t.numel() for t in tensors.values()) == sum(p.numel() for p in model.parameters())
    _, fresh, _ = build_llm_model(config["model"], tiny_settings, teacher_checkpoint=config["teacher_checkpoint"])
    load_checkpoint(path, fresh, fresh.fingerprints)
    fresh.eval()
    assert torch.equal(fresh.full_sort_predict(batch), scores)


def test_tallrec_prompts_are_text_only_and_llara_injects_one_vector_per_history_item(tiny_settings):
    for name in ("TALLRec", "LLaRA"):
        _, model, (train_data, _, _) = build_llm_model(name, tiny_settings)
        batch = next(iter(train_data))
        item_seq, item_seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
        prompts = model.prompts.user_prompts(item_seq, item_seq_len)
        item_prompts = model.prompts.item_prompts(torch.arange(1, 4))
        history_token = model.prompts.history_token_id
        for prompt, seq, length in zip(prompts, item_seq.tolist(), item_seq_len.tolist()):
            latest = seq[:length][-model.history_length:]
            slots = [i for i, token in enumerate(prompt.token_ids) if token == history_token]
            if name == "TALLRec":
                assert slots == [] and prompt.history_items == []
            else:
                assert prompt.history_items == latest and len(slots) == len(latest)
                # each slot right after its title's closing quote
                assert all(model.prompts.tokenizer.decode(prompt.token_ids[i - 1]).endswith('"') for i in slots)
        assert all((history_token in p.token_ids) == (name == "LLaRA") for p in item_prompts)


def test_collm_fills_its_one_user_slot_with_the_teachers_user_vector_and_items_with_theirs(tiny_settings):
    _, model, (train_data, _, _) = build_llm_model("CoLLM", tiny_settings)
    batch = next(iter(train_data))
    item_seq, item_seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    prompts = model.prompts.user_prompts(item_seq, item_seq_len)
    history_token = model.prompts.history_token_id
    for prompt in prompts:
        slots = [i for i, token in enumerate(prompt.token_ids) if token == history_token]
        assert prompt.history_items == [] and len(slots) == 1
        assert "preferences encoded in the feature" in model.prompts.tokenizer.decode(prompt.token_ids[: slots[0]])
        assert slots[0] < prompt.token_ids.index(model.prompts.user_out_token_id)  # after the history, before [UserOut]
    assert all(p.history_items == [i] for i, p in zip(range(1, 4), model.prompts.item_prompts(torch.arange(1, 4))))

    # what the LLM reads at each user's slot: f_I of the teacher's user vector for that history
    read: list[torch.Tensor] = []
    hook = model.llm.register_forward_pre_hook(lambda _, args, kwargs: read.append(kwargs["inputs_embeds"]), with_kwargs=True)
    model.eval()
    with torch.no_grad():
        model.forward(item_seq, item_seq_len)
        expected = model.item_adapter(model.teacher(item_seq, item_seq_len))  # [B, d_llm]
    hook.remove()
    seen = torch.cat([embeddings.flatten(0, 1) for embeddings in read])  # [positions, d_llm]: every pass's inputs
    matches = torch.cdist(expected, seen, compute_mode="donot_use_mm_for_euclid_dist") < 1e-4  # [B, positions]
    assert matches.any(1).all()  # every user's vector is read ...
    assert int(matches.any(0).sum()) == len(expected)  # ... at one position per prompt: its slot


def test_lora_models_train_on_the_llmsrec_schedule(tiny_settings):
    for name in MODELS:
        config, model, _ = build_llm_model(name, tiny_settings)
        assert isinstance(LLMSRecTrainer(config, model), LLMSRecTrainer)
        assert model.llm_prefix_cache is False


@pytest.mark.parametrize("name", MODELS)
def test_end_to_end_through_the_quick_start(tiny_settings, tmp_path, name):
    result = run_recbole_llmsrec(name, "tiny", config_dict={**tiny_settings, "checkpoint_dir": str(tmp_path)})
    assert 0 <= result["test_result"]["ndcg@10"] <= 1
    assert ("teacher_checkpoint" in result) == (name != "TALLRec")
    tensors, _ = read_tensors(result["saved_model_file"])
    assert any(key.startswith("lora.") for key in tensors) and not any(key.startswith("llm.") for key in tensors)


def test_compare_runs_both_with_the_probes(tiny_settings, tmp_path):
    settings_file = tmp_path / "tiny.yaml"
    settings_file.write_text(json.dumps({**tiny_settings, "checkpoint_dir": str(tmp_path / "saved")}))
    outcome = run_comparison("SASRec,TALLRec,LLaRA,CoLLM", dataset="tiny", config_files=[str(settings_file)], seeds=1,
                             probe_names="shuffle,similarity", results_dir=str(tmp_path / "results"))
    stored = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "results" / "tiny" / "tiny").glob("*.json")}
    assert set(stored) == {"SASRec-seed2020", "TALLRec-seed2020", "LLaRA-seed2020", "CoLLM-seed2020"}
    for name in MODELS:
        result = stored[f"{name}-seed2020"]
        assert set(result["probes"]) == {"shuffle", "similarity"}
        assert result["probes"]["shuffle"]["window"] == tiny_settings["history_length"]
        assert result["curve"]  # the schedule's learning curve
    # the cost side by side: LoRA and heads only for the LLM models, the whole model for SASRec
    _, llara, _ = build_llm_model("LLaRA", tiny_settings)
    assert stored["LLaRA-seed2020"]["cost"]["trainable_parameters"] == sum(p.numel() for p in llara.parameters())
    for name in ("SASRec",) + MODELS:
        cost = stored[f"{name}-seed2020"]["cost"]
        assert cost["seconds_per_epoch"] > 0 and cost["peak_memory_mib"] is None  # no GPU here
        # the process's peak memory during each LoRA fit, at least its LLM's weights; none for the teacher trained earlier
        llm_mib = sum(p.numel() * p.element_size() for p in llara.llm.parameters()) / 2**20
        assert (cost["peak_rss_mib"] > llm_mib) if name in MODELS else cost["peak_rss_mib"] is None
    assert "trainable params" in (report := (tmp_path / "results" / "tiny" / "tiny.md").read_text()) and "peak RSS MiB" in report
    for name in ("LLaRA", "CoLLM"):
        assert stored[f"{name}-seed2020"]["teacher"]["checkpoint"] == stored["SASRec-seed2020"]["checkpoint"]
    assert "teacher" not in stored["TALLRec-seed2020"]
    assert any(str(path).endswith(".md") for path in outcome["files"])
