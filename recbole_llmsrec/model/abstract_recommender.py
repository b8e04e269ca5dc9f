"""The common part of the plugin's LLM recommenders: LLMSRec, TALLRec, LLaRA and CoLLM.

A causal LLM reads a prompt per user (the latest items, oldest first, with titles and
dates) and per item; the last hidden state at the prompt's output token (``[UserOut]``,
``[ItemOut]``), through an MLP head, is the user or item vector, and a user scores an item by
their dot product. Where the model says so (``injects_history``), each title is followed by a
``[HistoryEmb]`` slot holding the item's embedding from a frozen CF teacher through ``f_I``;
where it says ``injects_user``, one slot in the user prompt holds the teacher's user vector
through the same ``f_I``.
Training is next-item retrieval against sampled negatives; subclasses add their own terms.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import cast_adapter_dtype
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm
from transformers import DynamicCache

from recbole_llmsrec.distributed import (
    gather_shards, global_batch, gradient_for_ddp_average, is_distributed, local_rows, rank_and_world,
)
from recbole_llmsrec.fingerprints import data_fingerprint, file_fingerprint, llm_fingerprint
from recbole_llmsrec.llm import cache_argument, load_llm, resolve_tokens_per_pass
from recbole_llmsrec.prompts import Prompt, PromptBuilder, item_titles, pack_by_tokens
from recbole_llmsrec.teacher import load_teacher
from recbole_llmsrec.validation import check_settings, timestamps_are_unix_seconds


def projection_mlp(in_size: int, hidden_size: int, out_size: int, activation: nn.Module) -> nn.Sequential:
    """Linear -> LayerNorm -> activation -> Linear, the shape of every LLM-SRec adapter."""
    return nn.Sequential(
        nn.Linear(in_size, hidden_size), nn.LayerNorm(hidden_size), activation, nn.Linear(hidden_size, out_size)
    )


def retrieval_loss(user_vectors: torch.Tensor, candidate_vectors: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the target, candidate 0, among the ``[B, C, d']`` candidates scored by dot product with ``[B, d']`` users."""
    logits = torch.einsum("bd,bcd->bc", user_vectors, candidate_vectors)  # [B, C]
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def last_true(mask: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """One-hot ``[B, T]`` of each row's last True in ``mask``; rows without one take ``fallback``'s."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask, positions, -1).max(1).values  # [B]
    return torch.where((last >= 0).unsqueeze(1), positions == last.unsqueeze(1), fallback)


class LLMRecommender(SequentialRecommender):
    r"""Shared machinery of the LLM recommenders: LLM loading, prompts, packed LLM passes, the
    catalogue cache, negative sampling and the distributed global batch.

    Subclasses set ``uses_teacher`` (a frozen CF teacher is loaded), ``injects_history``
    (prompts carry ``[HistoryEmb]`` slots filled from the teacher's item embeddings) and
    ``injects_user`` (the user prompt carries one slot filled from the teacher's user vector,
    item prompts their item's slot), may add
    layers in :meth:`_define_layers` and loss inputs in :meth:`_extra_loss_inputs`, and may
    replace :meth:`weighted_losses` (by default the retrieval loss alone).
    """

    input_type = InputType.POINTWISE
    shared_property_files = ("LLMRecommender.yaml",)  # under properties/model/, below the model's own YAML
    # In a distributed run every rank reads the whole global batch and encodes its own rows
    # (calculate_loss), so that N ranks follow the single-process run step for step.
    reads_global_batch = True
    uses_teacher = True
    injects_history = True
    injects_user = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        check_settings(config)

        # load parameters info
        self.history_length = config["history_length"]
        self.projection_size = config["projection_size"]
        self.head_hidden_size = config["head_hidden_size"]
        self.num_negatives = config["num_negatives"]
        self.retrieval_weight = config["retrieval_weight"]
        self.user_readout = config["user_readout"] or "user_out"
        self.llm_tokens_per_pass = resolve_tokens_per_pass(config["llm_tokens_per_pass"], config["device"])
        self.llm_prefix_cache = config["llm_prefix_cache"]
        self.llm_gradient_checkpointing = config["llm_gradient_checkpointing"]
        self.llm_quantization = config["llm_quantization"]
        self.show_progress = config["show_progress"]
        time_list_field = f"{config['TIME_FIELD']}{config['LIST_SUFFIX']}"
        # Dates only from unix seconds: other time fields (positions, milliseconds) are left out.
        dated = config["prompt_dates"] and timestamps_are_unix_seconds(dataset)
        self.time_list_field = time_list_field if dated else None

        # frozen parts: kept out of the module tree so that they have no optimizer state,
        # never enter state_dict() / checkpoints, and stay in eval mode under model.train().
        teacher = load_teacher(config, dataset) if self.uses_teacher else None
        llm, tokenizer = load_llm(
            config["llm_path"], config["device"], config["llm_dtype"], config["llm_random_weights"], self.llm_quantization
        )
        object.__setattr__(self, "teacher", teacher)
        object.__setattr__(self, "llm", llm)
        self._cache_argument = cache_argument(llm)
        self.prompts = PromptBuilder(
            tokenizer,
            item_titles(dataset, config["item_text_field"]),
            history_length=self.history_length,
            max_prompt_tokens=config["max_prompt_tokens"],
            max_title_tokens=config["max_title_tokens"],
            history_embeddings=self.injects_history,
            user_embedding=self.injects_user,
        )
        self.user_history = self._interacted_items(dataset)
        # what a checkpoint of this model must be loaded with (checked by load_checkpoint)
        self.fingerprints = {
            "data": data_fingerprint(dataset),
            "llm": llm_fingerprint(llm, self.prompts.history_token_id),  # the first of the plugin's added tokens
        }
        if teacher is not None:
            self.fingerprints["teacher"] = file_fingerprint(config["teacher_checkpoint"])
        llm_size = llm.get_input_embeddings().embedding_dim
        cf_size = teacher.item_embedding.embedding_dim if teacher is not None else None

        # define layers: f_I (when CF vectors are injected: one mapping for item and user vectors,
        # as CoLLM's), f_user, f_item, the subclass's, and the two output-token vectors
        if self.prompts.item_embeddings:
            self.item_adapter = projection_mlp(cf_size, llm_size, llm_size, nn.LeakyReLU())
        self.user_head = projection_mlp(llm_size, self.head_hidden_size, self.projection_size, nn.LeakyReLU())
        self.item_head = projection_mlp(llm_size, self.head_hidden_size, self.projection_size, nn.LeakyReLU())
        self._define_layers(config, llm_size, cf_size)
        token_embeddings = llm.get_input_embeddings().weight.detach().float()
        self.user_out_embedding = nn.Parameter(torch.empty(llm_size))
        self.item_out_embedding = nn.Parameter(torch.empty(llm_size))

        # parameters initialization
        self.apply(self._init_weights)
        mean, std = token_embeddings.mean().item(), token_embeddings.std().item()
        nn.init.normal_(self.user_out_embedding, mean, std)
        nn.init.normal_(self.item_out_embedding, mean, std)
        self._eval_cache: dict = {"fingerprint": None, "versions": None, "items": None, "users": {}}
        self._prefix_cache: dict = {}
        self.last_distill_cosine: torch.Tensor | None = None  # LLMSRec: mean cosine(u, z) of the last batch, 0-d

    def _define_layers(self, config, llm_size: int, cf_size: int | None) -> None:
        """Add a subclass's layers (before the shared initialisation of every ``nn.Linear``)."""

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            nn.init.zeros_(module.bias)

    def _apply(self, fn, *args, **kwargs):
        # .to(device) must also move the frozen parts that live outside the module tree.
        super()._apply(fn, *args, **kwargs)
        if self.llm_quantization in (None, "none"):  # quantised weights are loaded onto their device and stay
            self.llm._apply(fn)
        if self.teacher is not None:
            self.teacher._apply(fn)
        return self

    def _interacted_items(self, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Every user's training items as CSR (``indptr [n_users + 1]``, ``items``), for negative sampling.

        From RecBole's every-prefix training split this is complete: each item but a user's
        first is some prefix's target, the first opens every history, and the latest
        history is read whole. Given one sample per user instead, items older than
        ``MAX_ITEM_LIST_LENGTH`` are not known.
        """
        inter = dataset.inter_feat
        users, seq = inter[self.USER_ID], inter[self.ITEM_SEQ]  # [R], [R, L]
        latest = torch.zeros_like(users, dtype=torch.bool)
        latest[torch.unique_consecutive(users, return_counts=True)[1].cumsum(0) - 1] = True
        pairs = torch.cat([
            torch.stack([users, inter[self.ITEM_ID]], 1),
            torch.stack([users, seq[:, 0]], 1),
            torch.stack([users[latest].unsqueeze(1).expand_as(seq[latest]), seq[latest]], 2).flatten(0, 1),
        ])
        pairs = torch.unique(pairs[pairs[:, 1] > 0], dim=0)  # sorted by user, then item
        counts = torch.bincount(pairs[:, 0], minlength=dataset.user_num)
        indptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return indptr, pairs[:, 1].contiguous()

    # ------------------------------------------------------------------ encoders
    def _llm_vectors(
        self,
        prompts: Sequence[Prompt],
        prefix_ids: list[int],
        output_vector: torch.Tensor,
        output_token_id: int,
        head: nn.Module,
        what: str,
        sharded: bool = False,
        slot_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``head`` of the LLM's last hidden state at each prompt's output token, ``[len(prompts), d']``.

        Prompts that all start with ``prefix_ids`` reuse its cached keys and values. Prompts run
        length-sorted, packed into passes of at most ``llm_tokens_per_pass`` padded tokens: little
        padding, few passes (on a GPU a pass costs about as much as it launches). Long evaluation
        passes show a progress bar. ``sharded`` (a collective call in a distributed run): each
        rank runs every world-size-th pass and the vectors are all-gathered; a pass is the
        same computation on any rank, so the vectors equal the single-process ones.
        ``slot_vectors`` ``[len(prompts), d_llm]``: each prompt's one ``[HistoryEmb]`` slot holds
        its row (CoLLM's user prompts); without them the slots hold their items' vectors.
        """
        skip = self.prompts.shared_prefix_length(prompts, prefix_ids) if self.llm_prefix_cache else 0
        prefix = self._prefix_key_values(prefix_ids) if skip else None
        passes = pack_by_tokens([len(p.token_ids) - skip for p in prompts], self.llm_tokens_per_pass)
        rank, world = rank_and_world() if sharded else (0, 1)
        shards = [passes[r::world] for r in range(world)]
        mine = shards[rank]
        if self.show_progress and not torch.is_grad_enabled() and len(mine) > 1:
            mine = tqdm(mine, desc=f"LLM {what} vectors", ncols=100, leave=False)
        parts = [
            head(self._llm_chunk(
                self.prompts.collate([prompts[i] for i in chunk], skip), prefix, output_vector, output_token_id,
                None if slot_vectors is None else slot_vectors[chunk],
            ))
            for chunk in mine
        ]
        vectors = torch.cat(parts) if parts else output_vector.new_zeros(0, head[-1].out_features)  # [n_mine, d'] in pass order
        if world > 1:
            vectors = gather_shards(vectors, [sum(map(len, shard)) for shard in shards])  # [N, d'] in pass order
        order = torch.tensor([i for shard in shards for chunk in shard for i in chunk], device=vectors.device)
        return vectors[torch.argsort(order)]

    def _prefix_key_values(self, prefix_ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer keys and values ``[1, kv_heads, P, head_dim]`` of a constant prompt prefix.

        The LLM is frozen and the prefix holds no injected vector, so they are computed
        once per prefix (and device and dtype) and reused by every prompt.
        """
        embeddings = self.llm.get_input_embeddings()
        key = (tuple(prefix_ids), embeddings.weight.device, embeddings.weight.dtype)
        if key not in self._prefix_cache:
            with torch.no_grad():
                input_ids = torch.tensor([prefix_ids], device=embeddings.weight.device)
                cache = self.llm(input_ids=input_ids, use_cache=True)[self._cache_argument]
            self._prefix_cache[key] = [(keys, values) for keys, values, *_ in cache]
        return self._prefix_cache[key]

    def _llm_chunk(
        self, batch, prefix, output_vector: torch.Tensor, output_token_id: int, slot_vectors: torch.Tensor | None
    ) -> torch.Tensor:
        input_ids = batch.input_ids.to(self.device)  # [B, T] (after the cached prefix, if any)
        embeddings = self.llm.get_input_embeddings()(input_ids)  # [B, T, d_llm]
        dtype = embeddings.dtype
        history_slots = (input_ids == self.prompts.history_token_id).unsqueeze(-1)  # [B, T, 1]
        if slot_vectors is None and self.prompts.item_embeddings:
            slot_vectors = self.item_adapter(self.teacher.item_embedding(batch.history_items.to(self.device)))  # [N, d_llm]
        if slot_vectors is not None:  # row-major: the slots' order in the batch
            embeddings = embeddings.masked_scatter(history_slots.expand_as(embeddings), slot_vectors.to(dtype))
        output_slots = input_ids == output_token_id  # [B, T]
        embeddings = torch.where(output_slots.unsqueeze(-1), output_vector.to(dtype), embeddings)
        read_slots = output_slots
        if self.user_readout == "last_history" and output_token_id == self.prompts.user_out_token_id:
            read_slots = last_true(history_slots.squeeze(-1), fallback=output_slots)

        def output_states(embeddings: torch.Tensor) -> torch.Tensor:
            cache = None
            if prefix is not None:  # a fresh cache per call: a pass appends its own keys/values, and a recompute must not see them
                batch_size = len(embeddings)
                expanded = [(keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1)) for keys, values in prefix]
                cache = DynamicCache(expanded, config=self.llm.config)
            hidden = self.llm(
                inputs_embeds=embeddings, use_cache=cache is not None, **{self._cache_argument: cache}
            ).last_hidden_state  # [B, T, d_llm]
            return hidden[read_slots]  # [B, d_llm]: exactly one read position per prompt

        if self.llm_gradient_checkpointing and torch.is_grad_enabled():
            # HF's own checkpointing is off in eval mode and would drop the prefix cache: keep
            # only this pass's input and recompute the pass in backward.
            return checkpoint(output_states, embeddings, use_reentrant=False).float()
        return output_states(embeddings).float()

    def encode_items(self, item_ids: torch.Tensor, sharded: bool = False) -> torch.Tensor:
        """Item vectors ``v = f_item(h_I)`` for item ids ``[N]``, ``[N, d']`` (``sharded``: see :meth:`_llm_vectors`)."""
        return self._llm_vectors(
            self.prompts.item_prompts(item_ids),
            self.prompts.item_prefix_ids,
            self.item_out_embedding,
            self.prompts.item_out_token_id,
            self.item_head,
            "item",
            sharded,
        )

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, time_seq: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors ``u = f_user(h_U)`` for padded histories ``[B, L]``, ``[B, d']``."""
        return self._llm_vectors(
            self.prompts.user_prompts(item_seq, item_seq_len, time_seq),
            self.prompts.user_prefix_ids,
            self.user_out_embedding,
            self.prompts.user_out_token_id,
            self.user_head,
            "user",
            slot_vectors=self._user_slot_vectors(item_seq, item_seq_len),
        )

    def _user_slot_vectors(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor | None:
        """With ``injects_user``, the teacher's user vectors through ``f_I``, ``[B, d_llm]``, for the user prompts' slot."""
        if not self.injects_user:
            return None
        with torch.no_grad():
            teacher_users = self.teacher(item_seq, item_seq_len)  # [B, d_cf]
        return self.item_adapter(teacher_users)

    # ------------------------------------------------------------------ training
    def sample_negatives(self, users: torch.Tensor, item_seq: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``num_negatives`` distinct uniform items per user, never the target nor an item the user interacted with."""
        indptr, items = self.user_history
        users = users.cpu()
        starts, counts = indptr[users], indptr[users + 1] - indptr[users]  # [B]
        if int(counts.max()) + 1 + self.num_negatives > self.n_items - 1:
            raise ValueError(
                f"A user has interacted with {int(counts.max())} of the {self.n_items - 1} items: "
                f"num_negatives={self.num_negatives} distinct unseen items cannot be sampled; lower num_negatives."
            )
        offsets = torch.arange(int(counts.max()))  # [W]
        known = items[(starts.unsqueeze(1) + offsets).clamp(max=len(items) - 1)]  # [B, W]
        known = torch.where(offsets < counts.unsqueeze(1), known, 0)
        excluded = torch.cat([known, item_seq.cpu(), targets.cpu().unsqueeze(1)], 1)  # [B, W + L + 1]
        negatives = torch.randint(1, self.n_items, (len(users), self.num_negatives))
        earlier = torch.ones(self.num_negatives, self.num_negatives, dtype=torch.bool).tril(-1)  # [K, K]
        while True:
            clash = (negatives.unsqueeze(-1) == excluded.unsqueeze(1)).any(-1)  # [B, K]
            clash |= ((negatives.unsqueeze(-1) == negatives.unsqueeze(1)) & earlier).any(-1)  # repeats an earlier negative
            if not clash.any():
                return negatives.to(item_seq.device)
            negatives[clash] = torch.randint(1, self.n_items, (int(clash.sum()),))

    def _time_seq(self, interaction) -> torch.Tensor | None:
        if self.time_list_field and self.time_list_field in interaction.columns:
            return interaction[self.time_list_field]
        return None

    def calculate_loss(self, interaction) -> tuple[torch.Tensor, ...]:
        """Weighted losses of the batch (:meth:`weighted_losses`); RecBole's trainer sums them.

        In a distributed run ``interaction`` is the whole global batch on every rank: random
        draws (negatives, a teacher's dropout) are made for all of it, as in one process, and
        each rank runs the LLM on its own rows (``rows``); the losses are of the whole batch.
        """
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        targets = interaction[self.POS_ITEM_ID]  # [B]
        time_seq = self._time_seq(interaction)  # [B, L] or None
        rows = local_rows(len(targets))  # every row in one process
        user_vectors = self.forward(item_seq[rows], item_seq_len[rows], None if time_seq is None else time_seq[rows])  # [b, d']

        negatives = self.sample_negatives(interaction[self.USER_ID], item_seq, targets)[rows]  # [b, K]
        candidates = torch.cat([targets[rows].unsqueeze(1), negatives], 1)  # [b, 1 + K]
        distinct_items, positions = torch.unique(candidates, return_inverse=True)
        candidate_vectors = self.encode_items(distinct_items)[positions]  # [b, 1 + K, d']
        inputs = (user_vectors, candidate_vectors, *self._extra_loss_inputs(item_seq, item_seq_len, rows))
        whole_batch = (global_batch(vectors, len(targets)) for vectors in inputs)
        return tuple(gradient_for_ddp_average(loss) for loss in self.weighted_losses(*whole_batch))

    def _extra_loss_inputs(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, rows: slice) -> tuple[torch.Tensor, ...]:
        """Per-row tensors a subclass's :meth:`weighted_losses` needs beyond user and candidate vectors."""
        return ()

    def weighted_losses(self, user_vectors: torch.Tensor, candidate_vectors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Next-item retrieval: cross-entropy of the target (candidate 0) among ``[B, C, d']`` candidates."""
        return (self.retrieval_weight * retrieval_loss(user_vectors, candidate_vectors),)

    # ------------------------------------------------------------------ evaluation
    def _refresh_eval_cache(self) -> dict:
        """The evaluation cache, emptied when a trainable tensor changed since it was filled.

        Tensor version counters tell cheaply that nothing was written; when they moved
        (an optimizer step, or reloading a checkpoint), a content hash decides.
        """
        cache = self._eval_cache
        versions = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if versions != cache["versions"]:
            digest = hashlib.sha1()
            for p in self.parameters():
                digest.update(p.detach().cpu().contiguous().numpy().tobytes())
            fingerprint = digest.hexdigest()
            if fingerprint != cache["fingerprint"]:
                cache.update(fingerprint=fingerprint, items=None, users={})
            cache["versions"] = versions
        return cache

    def catalogue_item_vectors(self) -> torch.Tensor:
        """Vectors of every item ``[n_items, d']`` (row 0, padding, is zero), cached while the weights stay."""
        cache = self._refresh_eval_cache()
        if cache["items"] is None:
            with torch.no_grad():
                vectors = self.encode_items(torch.arange(1, self.n_items), sharded=is_distributed())
            cache["items"] = torch.cat([vectors.new_zeros(1, vectors.shape[1]), vectors])
        return cache["items"]

    def user_vectors(self, interaction) -> torch.Tensor:
        """User vectors ``[B, d']`` for evaluation: each distinct history is encoded once and cached."""
        item_seq = interaction[self.ITEM_SEQ]  # [B, L]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]  # [B]
        time_seq = self._time_seq(interaction)  # [B, L] or None
        keys = [item_seq, item_seq_len.unsqueeze(1)] + ([] if time_seq is None else [time_seq.long()])
        keys = torch.cat(keys, 1).cpu()  # [B, K]: one row per distinct prompt
        distinct, row_of = torch.unique(keys, dim=0, return_inverse=True)
        cache = self._refresh_eval_cache()["users"]
        key_bytes = [row.numpy().tobytes() for row in distinct]
        missing = [i for i, key in enumerate(key_bytes) if key not in cache]
        if missing:
            first_rows = torch.full((len(distinct),), -1, dtype=torch.long)
            first_rows.scatter_reduce_(0, row_of, torch.arange(len(row_of)), reduce="amin", include_self=False)
            rows = first_rows[missing].to(item_seq.device)
            computed = self.forward(item_seq[rows], item_seq_len[rows], None if time_seq is None else time_seq[rows])
            for i, vector in zip(missing, computed):
                cache[key_bytes[i]] = vector
        return torch.stack([cache[key] for key in key_bytes])[row_of.to(item_seq.device)]

    def predict(self, interaction) -> torch.Tensor:
        """Scores ``[B]`` of the items in ``interaction[ITEM_ID]`` for each row's history."""
        with torch.no_grad():
            users = self.user_vectors(interaction)  # [B, d']
            items = self.catalogue_item_vectors()[interaction[self.ITEM_ID]]  # [B, d']
        return (users * items).sum(-1)

    def full_sort_predict(self, interaction) -> torch.Tensor:
        """Scores ``[B, n_items]`` of every item for each row's history."""
        with torch.no_grad():
            users = self.user_vectors(interaction)  # [B, d']
            return users @ self.catalogue_item_vectors().T


class LoRARecommender(LLMRecommender):
    r"""An LLM recommender whose LLM is fine-tuned with LoRA (peft): the TALLRec, LLaRA and CoLLM baselines.

    LoRA adapters (``lora_r``, ``lora_alpha``, ``lora_dropout`` on ``lora_target_modules``) are
    injected into the LLM and train with the heads and the output-token vectors on the
    retrieval loss. They are registered on this module (``lora``), so the optimizer, DDP and
    checkpoints see them; the base weights stay outside the module tree, frozen, never written.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        # the adapters change every prompt's keys and values, the constant prefix's too
        self.llm_prefix_cache = False

        # define layers: the adapters, in the LLM, after its fingerprint (base weights only) was taken
        lora_config = LoraConfig(
            r=config["lora_r"], lora_alpha=config["lora_alpha"], lora_dropout=config["lora_dropout"],
            target_modules=list(config["lora_target_modules"]), bias="none",
        )
        inject_adapter_in_model(lora_config, self.llm)
        # float32 adapters on a bf16 / fp16 LLM, as peft's get_peft_model makes them: Adam's small
        # steps would round away in 16-bit weights (peft casts each adapter's input to its dtype)
        cast_adapter_dtype(self.llm, "default")
        adapters = {name: p for name, p in self.llm.named_parameters() if p.requires_grad}
        if not adapters:
            raise ValueError(
                f"lora_target_modules={config['lora_target_modules']} matches no module of {config['llm_path']}: "
                "name its linear layers (e.g. q_proj, v_proj for Llama-style LLMs)."
            )
        self.lora = nn.ParameterDict({name.replace(".", "__"): p for name, p in adapters.items()})
        self._lora_dropouts = [m for name, m in self.llm.named_modules() if name.endswith("lora_dropout")]

    def train(self, mode: bool = True):
        # The LLM stays in eval mode (no dropout of its own); the adapters' dropout follows training.
        super().train(mode)
        for dropout in self._lora_dropouts:
            dropout.train(mode)
        return self
