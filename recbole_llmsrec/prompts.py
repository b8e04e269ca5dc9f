"""LLM-SRec's user and item prompts, built as token ids.

Text (the authors' wording; items joined by ``,``, oldest first)::

    This user has made a series of purchases in the following order: Item No.1, Time: 1997-12-04,
    "Toy Story"[HistoryEmb],Item No.2, ... . Based on this sequence of purchases, generate user
    representation token:[UserOut]

    The item title and item embedding are as follows: "Toy Story"[HistoryEmb], then generate item
    representation token:[ItemOut]

Titles are tokenized once per catalogue item; a user prompt is assembled from those ids and
the small per-item headers (``Item No.k, Time: date, "``), so its length is known per item
and an over-long prompt drops its oldest items while the tail with ``[UserOut]`` stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from recbole_llmsrec.llm import SPECIAL_TOKENS

NO_TITLE = "No Title"
USER_PROMPT_PREFIX = "This user has made a series of purchases in the following order: "
USER_PROMPT_SUFFIX = ". Based on this sequence of purchases, generate user representation token:[UserOut]"
ITEM_PROMPT_PREFIX = 'The item title and item embedding are as follows: "'
ITEM_PROMPT_SUFFIX = '"[HistoryEmb], then generate item representation token:[ItemOut]'
HISTORY_SEPARATOR = ","


def item_titles(dataset, text_field: str) -> list[str]:
    """Title of every item id of a RecBole dataset (index 0 is padding), ``No Title`` when missing.

    Raises:
        ValueError: ``text_field`` is not a loaded item field.
    """
    item_feat = dataset.item_feat
    if item_feat is None or text_field not in item_feat.columns:
        loaded = [] if item_feat is None else [c for c in item_feat.columns if c != dataset.iid_field]
        raise ValueError(
            f"item_text_field={text_field!r} is not a loaded item field of dataset {dataset.dataset_name!r} "
            f"(loaded item fields: {loaded or 'none'}). Load it with "
            f"`load_col: {{item: [{dataset.iid_field}, {text_field}]}}` or set item_text_field to one of them."
        )
    tokens = dataset.field2id_token[text_field]
    ids = item_feat[text_field].numpy()
    if ids.ndim == 1:
        ids = ids[:, None]
    titles = []
    for row in ids:
        words = [str(tokens[i]) for i in row if i != 0]
        titles.append(" ".join(words).strip() or NO_TITLE)
    titles[0] = NO_TITLE
    return titles


def format_date(timestamp: float) -> str:
    """``YYYY-MM-DD`` (UTC) of a unix timestamp in seconds."""
    return datetime.fromtimestamp(float(timestamp), tz=timezone.utc).strftime("%Y-%m-%d")


@dataclass
class Prompt:
    """One prompt as token ids, and the items whose vectors fill its ``[HistoryEmb]`` slots, in order."""

    token_ids: list[int]
    history_items: list[int]


@dataclass
class PromptBatch:
    """Right-padded prompts ready for the LLM.

    No attention mask is needed: attention is causal and each prompt ends with its output
    token, so no position that is read ever sees the padding after it.
    """

    input_ids: torch.Tensor  # [B, T]
    history_items: torch.Tensor  # [N]: the [HistoryEmb] slots in row-major order


class PromptBuilder:
    """Builds LLM-SRec prompts as token ids for a fixed item catalogue.

    Args:
        tokenizer: a tokenizer that already knows ``[HistoryEmb]``, ``[UserOut]``, ``[ItemOut]``.
        titles: title of every item id (index 0 is padding).
        history_length: the user prompt lists at most this many of the latest items.
        max_prompt_tokens: upper bound on a prompt's length in tokens.
        max_title_tokens: titles are cut to this many tokens.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        titles: Sequence[str],
        history_length: int = 10,
        max_prompt_tokens: int = 1024,
        max_title_tokens: int = 48,
    ) -> None:
        self.tokenizer = tokenizer
        self.history_length = history_length
        self.max_prompt_tokens = max_prompt_tokens
        self.history_token_id, self.user_out_token_id, self.item_out_token_id = tokenizer.convert_tokens_to_ids(
            list(SPECIAL_TOKENS)
        )
        self.pad_token_id = tokenizer.pad_token_id
        encode = self._encode
        self.user_prefix_ids = encode([USER_PROMPT_PREFIX])[0]
        self.user_suffix_ids = encode([USER_PROMPT_SUFFIX])[0]
        self.separator_ids = encode([HISTORY_SEPARATOR])[0]
        self.title_close_ids = encode(['"[HistoryEmb]'])[0]
        self.title_ids = [ids[:max_title_tokens] for ids in encode(list(titles))]
        item_prefix_ids, item_suffix_ids = encode([ITEM_PROMPT_PREFIX, ITEM_PROMPT_SUFFIX])
        self.item_prefix_ids = item_prefix_ids
        self.item_prompt_ids = [item_prefix_ids + ids + item_suffix_ids for ids in self.title_ids]
        fixed = len(self.user_prefix_ids) + len(self.user_suffix_ids)
        if fixed >= max_prompt_tokens or max(map(len, self.item_prompt_ids)) > max_prompt_tokens:
            raise ValueError(
                f"max_prompt_tokens={max_prompt_tokens} cannot hold the prompt template; raise it "
                f"(the user template alone takes {fixed} tokens)."
            )

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _history_headers(self, count: int, dates: Sequence[str] | None) -> list[list[int]]:
        headers = [
            f"Item No.{k + 1}, Time: {dates[k]}, " if dates is not None else f"Item No.{k + 1}, "
            for k in range(count)
        ]
        return self._encode([header + '"' for header in headers])

    def _assemble_user_prompt(self, items: list[int], dates: list[str] | None) -> list[int]:
        headers = self._history_headers(len(items), dates)
        token_ids = list(self.user_prefix_ids)
        for k, (item, header) in enumerate(zip(items, headers)):
            if k:
                token_ids += self.separator_ids
            token_ids += header + self.title_ids[item] + self.title_close_ids
        return token_ids + self.user_suffix_ids

    def user_prompt(self, history: Sequence[int], timestamps: Sequence[float] | None = None) -> Prompt:
        """Prompt for a history (oldest first, no padding); dates are written when ``timestamps`` is given.

        Keeps the latest ``history_length`` items, then drops the oldest further until the
        prompt fits ``max_prompt_tokens``; the tail ending in ``[UserOut]`` always stays.
        """
        keep = min(len(history), self.history_length)
        while True:
            items = [int(i) for i in history[len(history) - keep :]]
            dates = None
            if timestamps is not None:
                dates = [format_date(t) for t in timestamps[len(history) - keep :]]
            token_ids = self._assemble_user_prompt(items, dates)
            if len(token_ids) <= self.max_prompt_tokens or keep == 0:
                return Prompt(token_ids, items)
            keep -= 1

    def user_prompts(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, time_seq: torch.Tensor | None = None
    ) -> list[Prompt]:
        """Prompts for RecBole's padded history tensors (``[B, L]`` items, ``[B]`` lengths, ``[B, L]`` times)."""
        item_seq = item_seq.cpu().tolist()
        lengths = item_seq_len.cpu().tolist()
        times = None if time_seq is None else time_seq.cpu().tolist()
        return [
            self.user_prompt(seq[:n], None if times is None else times[row][:n])
            for row, (seq, n) in enumerate(zip(item_seq, lengths))
        ]

    def item_prompts(self, item_ids: torch.Tensor) -> list[Prompt]:
        """Item prompts for a tensor of item ids."""
        return [Prompt(self.item_prompt_ids[i], [i]) for i in item_ids.cpu().tolist()]

    def collate(self, prompts: Sequence[Prompt], skip: int = 0) -> PromptBatch:
        """Right-pad prompts into one batch (padding after the output token never reaches it).

        ``skip`` leaves out a prefix shared by all prompts, whose keys and values the
        caller already holds.
        """
        width = max(len(p.token_ids) for p in prompts) - skip
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, : len(prompt.token_ids) - skip] = torch.tensor(prompt.token_ids[skip:])
        history_items = torch.tensor([i for p in prompts for i in p.history_items], dtype=torch.long)
        return PromptBatch(input_ids, history_items)


def pack_by_tokens(lengths: Sequence[int], tokens_per_pass: int) -> list[list[int]]:
    """Indices of ``lengths`` in length order, cut into chunks of at most ``tokens_per_pass``
    padded tokens (rows x longest row); a prompt longer than the budget runs alone."""
    chunks: list[list[int]] = [[]]
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if chunks[-1] and (len(chunks[-1]) + 1) * lengths[index] > tokens_per_pass:
            chunks.append([])
        chunks[-1].append(index)
    return chunks if chunks[0] else []
