"""Bad LLMSRec settings and data are refused up front, with the key and the fix in the message."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from recbole_llmsrec import quick_start
from recbole_llmsrec.quick_start import run_recbole_llmsrec

DATA_DIR = Path(__file__).parent / "data"


@pytest.mark.parametrize("overrides, message", [
    ({"history_length": 0}, "history_length=0 must be a positive integer"),
    ({"num_negatives": -2}, "num_negatives=-2 must be a positive integer"),
    ({"validations_per_epoch": 0}, "validations_per_epoch=0 must be a positive integer"),
    ({"lr_decay_per_validation": 0}, r"lr_decay_per_validation=0 must be in \(0, 1\]"),
    ({"eval_args": {"mode": "uniform100"}}, "eval_args.mode='uniform100' .* use full, uni<N>"),
    ({"max_prompt_tokens": 5}, "max_prompt_tokens=5 cannot hold the prompt template"),
    ({"llm_path": "./no/such/llm"}, "llm_path='./no/such/llm': no such folder"),
    ({"user_readout": "cls"}, "user_readout='cls' is not one of user_out, last_history"),
    ({"llm_quantization": "4bit"}, "llm_quantization=4bit needs a CUDA GPU .* set llm_quantization: none"),
    ({"item_text_field": "movie_title"}, r"item_text_field='movie_title' is not a field of .*tiny.item \(its fields: "),
    ({"llm_dtype": "int8"}, "llm_dtype='int8' is not one of auto, float32"),
])
def test_bad_settings_are_refused_before_the_teacher_trains(tiny_settings, overrides, message, monkeypatch, tmp_path):
    monkeypatch.setattr(quick_start, "train_teacher", lambda *a, **k: pytest.fail("the teacher trained first"))
    settings = {**tiny_settings, "checkpoint_dir": str(tmp_path), **overrides}
    if "eval_args" in overrides:
        settings["eval_args"] = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", **overrides["eval_args"]}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_recbole_llmsrec(model="LLMSRec", dataset="tiny", config_dict=settings)


def test_timestamps_that_are_not_unix_seconds_leave_dates_out_with_a_warning(tiny_settings, tmp_path, caplog):
    """Milliseconds would put the year 30000 in prompts: the run warns and writes no dates."""
    from helpers import build_llmsrec
    from recbole_llmsrec.validation import check_inputs

    data = tmp_path / "data"
    shutil.copytree(DATA_DIR / "tiny", data / "tiny")
    inter = data / "tiny" / "tiny.inter"
    header, *rows = inter.read_text().splitlines()
    rows = ["\t".join(fields[:3] + [str(int(float(fields[3])) * 1000)]) for fields in (row.split("\t") for row in rows)]
    inter.write_text("\n".join([header, *rows]) + "\n")
    config, model, (train_data, _, _) = build_llmsrec(tiny_settings, data_path=str(data), checkpoint_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        check_inputs(config, train_data._dataset)
    assert "does not hold unix seconds" in caplog.text and "prompt_dates: False" in caplog.text
    batch = next(iter(train_data))
    assert model._time_seq(batch) is None


@pytest.mark.parametrize("llm_dtype, native, warned", [
    ("bfloat16", False, True), ("bfloat16", True, False), ("float32", False, False), ("auto", False, False),
])
def test_a_half_precision_the_cpu_can_only_emulate_is_warned_of_before_the_teacher_trains(
        tiny_settings, tmp_path, monkeypatch, caplog, llm_dtype, native, warned):
    """bfloat16 without AVX512-BF16 or AMX runs ~50x slower than float32: the run says so up front."""
    from recbole_llmsrec import llm

    class TeacherReached(Exception):
        pass

    def reach_teacher(*args, **kwargs):
        raise TeacherReached

    monkeypatch.setattr(llm, "cpu_computes_natively", lambda dtype: native or dtype == torch.float32)
    monkeypatch.setattr(quick_start, "train_teacher", reach_teacher)
    settings = {**tiny_settings, "checkpoint_dir": str(tmp_path), "llm_dtype": llm_dtype}
    with caplog.at_level(logging.WARNING), pytest.raises(TeacherReached):
        run_recbole_llmsrec(model="LLMSRec", dataset="tiny", config_dict=settings)
    emulation_warnings = [r.getMessage() for r in caplog.records if "torch emulates them" in r.getMessage()]
    assert len(emulation_warnings) == (1 if warned else 0)
    if warned:
        assert "llm_dtype=bfloat16 on a CPU without native bfloat16" in emulation_warnings[0]
        assert "set llm_dtype: float32" in emulation_warnings[0]


def _copy_tiny(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR / "tiny", data / "tiny")
    return data


@pytest.mark.parametrize("case, message", [
    ("no item file", r"has no item file .*tiny.item: LLMSRec writes item titles"),
    ("title not loaded", r"item_text_field='title' is not a loaded item field .* add it to load_col"),
])
def test_missing_titles_are_explained_by_their_cause(tiny_settings, tmp_path, case, message, monkeypatch):
    monkeypatch.setattr(quick_start, "train_teacher", lambda *a, **k: pytest.fail("the teacher trained first"))
    data = _copy_tiny(tmp_path)
    settings = {**tiny_settings, "data_path": str(data), "checkpoint_dir": str(tmp_path)}
    if case == "no item file":
        (data / "tiny" / "tiny.item").unlink()
    else:
        settings["load_col"] = {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]}
    with pytest.raises(ValueError, match=message):
        run_recbole_llmsrec(model="LLMSRec", dataset="tiny", config_dict=settings)


def test_a_dataset_without_validation_interactions_is_refused_up_front(tiny_settings, tmp_path, monkeypatch):
    monkeypatch.setattr(quick_start, "train_teacher", lambda *a, **k: pytest.fail("the teacher trained first"))
    data = _copy_tiny(tmp_path)
    inter = data / "tiny" / "tiny.inter"
    header, *rows = inter.read_text().splitlines()
    per_user: dict[str, list[str]] = {}
    for row in rows:
        per_user.setdefault(row.split("\t")[0], []).append(row)
    kept = [row for user_rows in per_user.values() for row in user_rows[:2]]
    inter.write_text("\n".join([header, *kept]) + "\n")  # two interactions per user: train and test only
    settings = {**tiny_settings, "data_path": str(data), "checkpoint_dir": str(tmp_path)}
    with pytest.raises(ValueError, match="No user of dataset 'tiny' has a validation interaction"):
        run_recbole_llmsrec(model="LLMSRec", dataset="tiny", config_dict=settings)


def test_a_mistyped_local_llm_path_fails_at_once_with_the_path(tiny_settings, tmp_path):
    from recbole_llmsrec.llm import resolve_llm_path

    with pytest.raises(FileNotFoundError, match="llm_path='./modles/SmolLM2': no such folder"):
        resolve_llm_path("./modles/SmolLM2")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        resolve_llm_path(str(tmp_path / "missing" / "llm"))


def test_an_encoder_llm_is_refused_at_load(tiny_llm_dir, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from recbole_llmsrec.llm import load_llm

    bert_dir = tmp_path / "bert"
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir)
    tokenizer.save_pretrained(bert_dir)
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(bert_dir)
    with pytest.raises(ValueError, match="is a bert model whose hidden states depend on later tokens"):
        load_llm(str(bert_dir), torch.device("cpu"))
    llm, _ = load_llm(str(tiny_llm_dir), torch.device("cpu"))  # a causal LLM passes the same check
    assert llm.config.model_type == "llama"


def test_llm_quantization_settings_and_a_missing_bitsandbytes(monkeypatch):
    from recbole_llmsrec import llm

    with pytest.raises(ValueError, match="llm_quantization='3bit' is not one of none, 8bit, 4bit"):
        llm.quantization_config("3bit", torch.device("cpu"), torch.float32)
    assert llm.quantization_config("none", torch.device("cpu"), torch.float32) is None
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install bitsandbytes"):
        llm.quantization_config("8bit", cuda, torch.bfloat16)
    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: object())
    nf4 = llm.quantization_config("4bit", cuda, torch.bfloat16)
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_compute_dtype == torch.bfloat16
    assert llm.quantization_config("8bit", cuda, torch.bfloat16).load_in_8bit
