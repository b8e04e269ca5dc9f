"""Shared fixtures: a tiny random LLaMA with a locally trained BPE tokenizer, and the tiny dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

import recbole_llmsrec  # noqa: E402,F401  (applies the RecBole compatibility layer)

DATA_DIR = Path(__file__).parent / "data"
PROMPT_WORDS = (
    "This user has made a series of purchases in the following order: Item No. Time: "
    "Based on this sequence of purchases, generate user representation token: "
    "The item title and item embedding are as follows: then generate item representation token: "
    "No Title 0123456789 - , . \" "
)


def build_tiny_llm(target: Path) -> Path:
    """Save a random 2-layer LLaMA (hidden 64) and a BPE tokenizer trained here to ``target``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    titles = (DATA_DIR / "tiny" / "tiny.item").read_text().splitlines()[1:]
    corpus = [PROMPT_WORDS] * 5 + [line.split("\t")[-1] for line in titles]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(target)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))


@pytest.fixture(scope="session")
def tiny_settings(tiny_llm_dir, tmp_path_factory) -> dict:
    """Config dict for LLMSRec on tests/data/tiny with the tiny LLM and a small, fast teacher."""
    return {
        "data_path": str(DATA_DIR),
        "checkpoint_dir": str(tmp_path_factory.mktemp("saved")),
        "llm_path": str(tiny_llm_dir),
        "history_length": 4,
        "head_hidden_size": 32,
        "projection_size": 16,
        "llm_tokens_per_pass": 256,
        "train_batch_size": 8,
        "epochs": 1,
        "eval_batch_size": 4096,
        "teacher_config": {"hidden_size": 16, "inner_size": 32, "epochs": 3, "train_batch_size": 16},
        "show_progress": False,
        "state": "ERROR",
        "seed": 2020,
    }
