"""LLM-SRec's user and item prompts, built as token ids.

Text (the authors' wording; items joined by ``,``, oldest first)::

    This user has made a series of purchases in the following order: Item No.1, Time: 1997-12-04,
    "Toy Story"[HistoryEmb],Item No.2, ... . Based on this sequence of purchases, generate user
    representation token:[UserOut]

    The item title and item embedding are as follows: "Toy Story"[HistoryEmb], then generate item
    representation token:[ItemOut]

Text-only prompts (TALLRec) leave out every ``[HistoryEmb]`` slot and read "The item title is
as follows: ..." for items. CoLLM's user prompt lists titles without slots and holds one
``[HistoryEmb]`` slot for the user's own CF vector, in CoLLM's words: "... . Additionally, we
have information about the user's preferences encoded in the feature [HistoryEmb]. Based on
this sequence ..."; its item prompts are LLM-SRec's.

Each prompt is tokenized as one string with the tokenizer's defaults, as in the authors'
code; an over-long user prompt drops its oldest items (and is tokenized again) while the
tail with ``[UserOut]`` stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from recbole_llmsrec.llm import SPECIAL_TOKENS

NO_TITLE = "No Title"
USER_PROMPT_PREFIX = "This user has made a series of purchases in the following order: "
USER_PROMPT_SUFFIX = ". Based on this sequence of purchases, generate user representation token:[UserOut]"
USER_EMBEDDING_SENTENCE = ". Additionally, we have information about the user's preferences encoded in the feature [HistoryEmb]"
ITEM_PROMPT_PREFIX = 'The item title and item embedding are as follows: "'
ITEM_PROMPT_SUFFIX = '"[HistoryEmb], then generate item representation token:[ItemOut]'
TEXT_ITEM_PROMPT_PREFIX = 'The item title is as follows: "'
TEXT_ITEM_PROMPT_SUFFIX = '", then generate item representation token:[ItemOut]'
HISTORY_SEPARATOR = ","
HISTORY_SLOT = "[HistoryEmb]"


def item_titles(dataset, text_field: str) -> list[str]:
    """Title of every item id of a RecBole dataset (index 0 is padding), ``No Title`` when missing.

    Raises:
        ValueError: ``text_field`` is not a loaded item field.
    """
    item_feat = dataset.item_feat
    if item_feat is None or text_field not in item_feat.columns:
        raise ValueError(missing_title_field_message(dataset, text_field))
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


def missing_title_field_message(dataset, text_field: str) -> str:
    """Why ``text_field`` is not loaded: no item file, a file without that field, or a field left out of ``load_col``."""
    item_file = Path(dataset.dataset_path) / f"{dataset.dataset_name}.item"
    if not item_file.is_file():
        return (f"Dataset {dataset.dataset_name!r} has no item file {item_file}: LLMSRec writes item titles into its "
                f"prompts. Create it with a header like `{dataset.iid_field}:token\t{text_field}:token_seq`.")
    with open(item_file, encoding="utf-8") as handle:
        fields = [column.split(":")[0] for column in handle.readline().rstrip("\n").split("\t")]
    if text_field not in fields:
        return (f"item_text_field={text_field!r} is not a field of {item_file} (its fields: {fields}): "
                "set item_text_field to the title field.")
    return (f"item_text_field={text_field!r} is not a loaded item field of dataset {dataset.dataset_name!r}: add it "
            f"to load_col, e.g. `load_col: {{item: [{dataset.iid_field}, {text_field}]}}`.")


def format_date(timestamp: float) -> str:
    """``YYYY-MM-DD`` (UTC) of a unix timestamp in seconds."""
    return datetime.fromtimestamp(float(timestamp), tz=timezone.utc).strftime("%Y-%m-%d")


@dataclass
class Prompt:
    """One prompt as token ids, and the items whose vectors fill its ``[HistoryEmb]`` slots, in order
    (none in a CoLLM user prompt: its one slot takes the user's vector)."""

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

    Each prompt is written as one string and tokenized whole with the tokenizer's defaults
    (special tokens such as Llama-3's BOS included), as the authors do, so that every
    token boundary is the one the LLM saw in pre-training. A user prompt over
    ``max_prompt_tokens`` drops its oldest item and is tokenized again, until it fits.

    Args:
        tokenizer: a tokenizer that already knows ``[HistoryEmb]``, ``[UserOut]``, ``[ItemOut]``.
        titles: title of every item id (index 0 is padding).
        history_length: the user prompt lists at most this many of the latest items.
        max_prompt_tokens: upper bound on a prompt's length in tokens.
        max_title_tokens: titles are cut to this many tokens.
        history_embeddings: each title is followed by a ``[HistoryEmb]`` slot.
        user_embedding: the user prompt holds one ``[HistoryEmb]`` slot, after the history, for
            the user's CF vector (CoLLM). Item prompts hold their item's slot when either is
            set, and are text only when neither is.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        titles: Sequence[str],
        history_length: int = 10,
        max_prompt_tokens: int = 1024,
        max_title_tokens: int = 48,
        history_embeddings: bool = True,
        user_embedding: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.history_embeddings = history_embeddings
        self.user_embedding = user_embedding
        self.item_embeddings = history_embeddings or user_embedding
        self.slot = HISTORY_SLOT if history_embeddings else ""
        self.history_length = history_length
        self.max_prompt_tokens = max_prompt_tokens
        self.history_token_id, self.user_out_token_id, self.item_out_token_id = tokenizer.convert_tokens_to_ids(
            list(SPECIAL_TOKENS)
        )
        self.pad_token_id = tokenizer.pad_token_id
        self.titles = [self._cut_title(title, max_title_tokens) for title in titles]
        # Shared leading tokens, for the prefix key/value cache: the template up to its last
        # word boundary before the first item, where whole-string tokenization cannot merge.
        self.user_prefix_ids = self._encode([USER_PROMPT_PREFIX.rstrip()])[0]
        item_prefix, item_suffix = (
            (ITEM_PROMPT_PREFIX, ITEM_PROMPT_SUFFIX) if self.item_embeddings else (TEXT_ITEM_PROMPT_PREFIX, TEXT_ITEM_PROMPT_SUFFIX)
        )
        self.item_prefix_ids = self._encode([item_prefix[: item_prefix.rindex(" ")]])[0]
        self.item_prompt_ids = self._encode([item_prefix + title + item_suffix for title in self.titles])
        template = len(self._encode([self.user_prompt_text([], None)])[0])
        if template >= max_prompt_tokens or max(map(len, self.item_prompt_ids)) > max_prompt_tokens:
            raise ValueError(
                f"max_prompt_tokens={max_prompt_tokens} cannot hold the prompt template; raise it "
                f"(the user template alone takes {template} tokens)."
            )

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts)["input_ids"]

    def _cut_title(self, title: str, max_tokens: int) -> str:
        ids = self.tokenizer(title, add_special_tokens=False)["input_ids"]
        return title if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def user_prompt_text(self, items: Sequence[int], dates: Sequence[str] | None) -> str:
        """The user prompt for items (oldest first) and their dates, as the authors write it."""
        entries = [
            f"Item No.{k + 1}, " + (f"Time: {dates[k]}, " if dates is not None else "") + f'"{self.titles[item]}"{self.slot}'
            for k, item in enumerate(items)
        ]
        user_slot = USER_EMBEDDING_SENTENCE if self.user_embedding else ""
        return USER_PROMPT_PREFIX + HISTORY_SEPARATOR.join(entries) + user_slot + USER_PROMPT_SUFFIX

    def _latest(self, history: Sequence[int], timestamps: Sequence[float] | None, keep: int) -> tuple[list[int], list[str] | None]:
        items = [int(i) for i in history[len(history) - keep :]]
        dates = None if timestamps is None else [format_date(t) for t in timestamps[len(history) - keep :]]
        return items, dates

    def user_prompt(self, history: Sequence[int], timestamps: Sequence[float] | None = None) -> Prompt:
        """Prompt for a history (oldest first, no padding); dates are written when ``timestamps`` is given.

        Keeps the latest ``history_length`` items, then drops the oldest further until the
        prompt fits ``max_prompt_tokens``; the tail ending in ``[UserOut]`` always stays.
        """
        return self._user_prompts([(history, timestamps)])[0]

    def _user_prompts(self, histories: list[tuple[Sequence[int], Sequence[float] | None]]) -> list[Prompt]:
        keeps = [min(len(history), self.history_length) for history, _ in histories]
        prompts: list[Prompt | None] = [None] * len(histories)
        pending = list(range(len(histories)))
        while pending:  # one batched tokenizer call per round; a round drops one more item from each over-long prompt
            drafts = [self._latest(*histories[row], keeps[row]) for row in pending]
            token_ids = self._encode([self.user_prompt_text(items, dates) for items, dates in drafts])
            still_long = []
            for row, (items, _), ids in zip(pending, drafts, token_ids):
                if len(ids) <= self.max_prompt_tokens or keeps[row] == 0:
                    prompts[row] = Prompt(ids, items if self.history_embeddings else [])
                else:
                    keeps[row] -= 1
                    still_long.append(row)
            pending = still_long
        return prompts

    def user_prompts(
        self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, time_seq: torch.Tensor | None = None
    ) -> list[Prompt]:
        """Prompts for RecBole's padded history tensors (``[B, L]`` items, ``[B]`` lengths, ``[B, L]`` times)."""
        item_seq = item_seq.cpu().tolist()
        lengths = item_seq_len.cpu().tolist()
        times = None if time_seq is None else time_seq.cpu().tolist()
        return self._user_prompts(
            [(seq[:n], None if times is None else times[row][:n]) for row, (seq, n) in enumerate(zip(item_seq, lengths))]
        )

    def item_prompts(self, item_ids: torch.Tensor) -> list[Prompt]:
        """Item prompts for a tensor of item ids."""
        return [Prompt(self.item_prompt_ids[i], [i] if self.item_embeddings else []) for i in item_ids.cpu().tolist()]

    @staticmethod
    def shared_prefix_length(prompts: Sequence[Prompt], prefix_ids: list[int]) -> int:
        """``len(prefix_ids)`` when every prompt starts with those tokens, else 0."""
        width = len(prefix_ids)
        return width if all(p.token_ids[:width] == prefix_ids for p in prompts) else 0

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
