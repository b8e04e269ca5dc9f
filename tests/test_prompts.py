"""Prompt text, truncation and dates."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from recbole_llmsrec.llm import SPECIAL_TOKENS
from recbole_llmsrec.prompts import ITEM_PROMPT_PREFIX, ITEM_PROMPT_SUFFIX, PromptBuilder, format_date, pack_by_tokens

TITLES = ["No Title", "Red River 1", "Blue Star 2", "Night City 3", "Iron Garden 4", "Lost Ocean 5"]


def make_builder(tiny_llm_dir, **kwargs) -> PromptBuilder:
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir)
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    return PromptBuilder(tokenizer, TITLES, **kwargs)


def test_user_prompt_text_with_dates(tiny_llm_dir):
    builder = make_builder(tiny_llm_dir)
    prompt = builder.user_prompt([1, 2], [880000000.0, 880086400.0])
    text = builder.tokenizer.decode(prompt.token_ids)
    assert text == (
        "This user has made a series of purchases in the following order: "
        'Item No.1, Time: 1997-11-20, "Red River 1"[HistoryEmb],'
        'Item No.2, Time: 1997-11-21, "Blue Star 2"[HistoryEmb]. '
        "Based on this sequence of purchases, generate user representation token:[UserOut]"
    )
    assert prompt.history_items == [1, 2]


def test_prompt_without_timestamps_has_no_dates(tiny_llm_dir):
    builder = make_builder(tiny_llm_dir)
    text = builder.tokenizer.decode(builder.user_prompt([3]).token_ids)
    assert "Time:" not in text and 'Item No.1, "Night City 3"[HistoryEmb]' in text


def test_history_length_keeps_latest_items(tiny_llm_dir):
    builder = make_builder(tiny_llm_dir, history_length=2)
    prompt = builder.user_prompt([1, 2, 3, 4])
    assert prompt.history_items == [3, 4]
    assert 'Item No.1, "Night City 3"' in builder.tokenizer.decode(prompt.token_ids)


def test_too_long_prompt_drops_oldest_items_and_keeps_user_out(tiny_llm_dir):
    builder = make_builder(tiny_llm_dir)
    full = builder.user_prompt([1, 2, 3, 4, 5])
    limit = len(full.token_ids) - 5
    truncated = make_builder(tiny_llm_dir, max_prompt_tokens=limit).user_prompt([1, 2, 3, 4, 5])
    assert len(truncated.token_ids) <= limit
    assert truncated.history_items == [2, 3, 4, 5]
    assert truncated.token_ids[-1] == builder.user_out_token_id
    assert truncated.token_ids.count(builder.history_token_id) == 4
    text = builder.tokenizer.decode(truncated.token_ids)
    assert 'Item No.1, "Blue Star 2"' in text and "Red River 1" not in text


def test_item_prompt_and_missing_title(tiny_llm_dir):
    builder = make_builder(tiny_llm_dir)
    (prompt,) = builder.item_prompts(torch.tensor([0]))
    assert builder.tokenizer.decode(prompt.token_ids) == (
        'The item title and item embedding are as follows: "No Title"[HistoryEmb], '
        "then generate item representation token:[ItemOut]"
    )


def test_collate_right_pads(tiny_llm_dir):
    builder = make_builder(tiny_llm_dir)
    prompts = [builder.user_prompt([1]), builder.user_prompt([2, 3, 4])]
    batch = builder.collate(prompts)
    short = len(prompts[0].token_ids)
    assert batch.input_ids.shape == (2, len(prompts[1].token_ids))
    assert batch.input_ids[0, :short].tolist() == prompts[0].token_ids
    assert (batch.input_ids[0, short:] == builder.pad_token_id).all()
    assert batch.history_items.tolist() == [1, 2, 3, 4]


def test_pack_by_tokens_sorts_by_length_and_respects_the_budget():
    lengths = [30, 10, 50, 10, 20, 70]
    chunks = pack_by_tokens(lengths, tokens_per_pass=60)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(lengths)))
    flat = [lengths[i] for chunk in chunks for i in chunk]
    assert flat == sorted(lengths)
    assert chunks == [[1, 3, 4], [0], [2], [5]]  # 3 x 20 fits, 4 x 30 does not; 30 + 50 and 50 + 70 do not
    for chunk in chunks:
        assert len(chunk) == 1 or len(chunk) * max(lengths[i] for i in chunk) <= 60
    assert pack_by_tokens(lengths, tokens_per_pass=1000) == [[1, 3, 4, 0, 2, 5]]
    assert pack_by_tokens([], tokens_per_pass=10) == []


def test_format_date_is_utc():
    assert format_date(0) == "1970-01-01"


def test_prompts_are_tokenized_whole_with_the_tokenizers_defaults(tiny_llm_dir):
    """As the authors: one string per prompt, special tokens included, so no token boundary is artificial."""
    from tokenizers import processors

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dir)
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    builder = PromptBuilder(tokenizer, TITLES)
    prompt = builder.user_prompt([1, 2], [880000000.0, 880086400.0])
    text = builder.user_prompt_text([1, 2], ["1997-11-20", "1997-11-21"])
    assert prompt.token_ids == tokenizer(text)["input_ids"] and prompt.token_ids[0] == bos
    assert prompt.token_ids[: len(builder.user_prefix_ids)] == builder.user_prefix_ids
    (item,) = builder.item_prompts(torch.tensor([3]))
    assert item.token_ids == tokenizer(ITEM_PROMPT_PREFIX + "Night City 3" + ITEM_PROMPT_SUFFIX)["input_ids"]
    assert item.token_ids[: len(builder.item_prefix_ids)] == builder.item_prefix_ids


def test_truncation_retokenizes_the_shorter_prompt(tiny_llm_dir):
    builder = make_builder(tiny_llm_dir)
    full = builder.user_prompt([1, 2, 3, 4, 5])
    truncated = make_builder(tiny_llm_dir, max_prompt_tokens=len(full.token_ids) - 1).user_prompt([1, 2, 3, 4, 5])
    assert truncated.history_items == [2, 3, 4, 5]
    assert truncated.token_ids == builder.tokenizer(builder.user_prompt_text([2, 3, 4, 5], None))["input_ids"]


def test_long_titles_are_cut_to_max_title_tokens(tiny_llm_dir):
    builder = make_builder(tiny_llm_dir, max_title_tokens=2)
    title_ids = builder.tokenizer(TITLES[1], add_special_tokens=False)["input_ids"]
    assert len(title_ids) > 2
    assert builder.titles[1] == builder.tokenizer.decode(title_ids[:2])
