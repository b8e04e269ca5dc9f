"""LLMSRec vs the authors' step algorithm: same LLM, prompts, batch, candidates and machine.

The authors' algorithm (Sein-Kim/LLM-SRec, ``models/seqllm4rec.py``), re-implemented here for
the benchmark only: special-token vectors put in place by per-token ``torch.cat`` loops, the
full causal LM run with ``output_hidden_states=True`` (LM head and logits included), prompts
padded to the longest in the batch in arrival order, and a separate LLM pass over all
``B x (1 + negatives)`` candidate prompts; evaluation in chunks of the batch size. Ours: the
plugin's ``LLMSRec`` (vectorised injection, transformer body only with no attention mask,
length-sorted prompts packed into passes of ``llm_tokens_per_pass`` padded tokens, distinct
candidates once, cached prompt prefix). Both use the same weights, so losses and vectors must
agree; the script checks it.

    python benchmarks/llmsrec_step.py                       # SmolLM2-135M and a 1B-shaped LLaMA, CPU
    python benchmarks/llmsrec_step.py --device cuda --shapes smollm2 llama-1b llama-3b

Writes benchmarks/RESULTS.md (or --out) with the machine description and prints the ratios.
"""

from __future__ import annotations

import argparse
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator
from unittest import mock

import torch
import torch.nn.functional as F

import recbole_llmsrec  # noqa: F401  (compatibility layer)
from recbole.data import create_dataset
from recbole.utils import init_seed
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from recbole_llmsrec.config import Config
from recbole_llmsrec.data_preparation import build_dataloaders
from recbole_llmsrec.llm import add_special_tokens, frozen_body, load_causal_lm, resolve_llm_path, resolve_tokens_per_pass
from recbole_llmsrec.model import abstract_recommender
from recbole_llmsrec.model.sequential_recommender.llmsrec import LLMSRec
from recbole_llmsrec.quick_start import default_config_files
from recbole_llmsrec.teacher import train_teacher

# LLaMA-3.2 shapes with random weights (timing only), on SmolLM2's tokenizer.
SHAPES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, tie_word_embeddings=True),
    "llama-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                     num_key_value_heads=8, tie_word_embeddings=True),
}


# ---------------------------------------------------------------------------- the authors' algorithm
def authors_replace(input_ids: torch.Tensor, embeds: torch.Tensor, token_id: int, vectors: list[torch.Tensor]) -> torch.Tensor:
    """``replace_out_token_all``: one ``torch.cat`` per special token occurrence, row by row."""
    rows = []
    for row in range(len(input_ids)):
        row_embeds = embeds[row]
        for idx, vector in zip((input_ids[row] == token_id).nonzero().view(-1), vectors[row]):
            row_embeds = torch.cat((row_embeds[:idx], vector.unsqueeze(0), row_embeds[idx + 1 :]), dim=0)
        rows.append(row_embeds.unsqueeze(0))
    return torch.cat(rows)


def authors_output_states(model, causal_lm, prompts, output_vector, output_token_id) -> torch.Tensor:
    """Hidden state at the output token, the authors' way: full causal LM, all hidden states, loops."""
    batch = model.prompts.collate(prompts)  # right padding to the longest, arrival order, no attention mask
    input_ids = batch.input_ids.to(model.device)
    embeds = causal_lm.get_input_embeddings()(input_ids)
    outputs_per_row = [[output_vector] * int((row == output_token_id).sum()) for row in input_ids]
    embeds = authors_replace(input_ids, embeds, output_token_id, outputs_per_row)
    history = model.item_adapter(model.teacher.item_embedding(batch.history_items.to(model.device)))
    per_row = torch.split(history, [len(p.history_items) for p in prompts])
    embeds = authors_replace(input_ids, embeds, model.prompts.history_token_id, list(per_row))
    outputs = causal_lm(inputs_embeds=embeds.to(causal_lm.dtype), output_hidden_states=True)
    positions = [(row == output_token_id).nonzero().view(-1) for row in input_ids]
    last = outputs.hidden_states[-1]
    return torch.cat([last[i, positions[i]].mean(axis=0).unsqueeze(0) for i in range(len(positions))]).float()


def authors_user_vectors(model, causal_lm, interaction) -> torch.Tensor:
    prompts = model.prompts.user_prompts(interaction["item_id_list"], interaction["item_length"], model._time_seq(interaction))
    states = authors_output_states(model, causal_lm, prompts, model.user_out_embedding, model.prompts.user_out_token_id)
    return model.user_head(states)


def authors_item_vectors(model, causal_lm, item_ids: torch.Tensor) -> torch.Tensor:
    prompts = model.prompts.item_prompts(item_ids)
    states = authors_output_states(model, causal_lm, prompts, model.item_out_embedding, model.prompts.item_out_token_id)
    return model.item_head(states)


def authors_loss(model, causal_lm, interaction, negatives: torch.Tensor) -> torch.Tensor:
    """``train_mode0``: user pass, then one pass over every candidate prompt (duplicates included)."""
    users = authors_user_vectors(model, causal_lm, interaction)
    candidates = torch.cat([interaction["item_id"].unsqueeze(1), negatives], 1)  # [B, 1 + K]
    items = authors_item_vectors(model, causal_lm, candidates.flatten()).view(*candidates.shape, -1)
    with torch.no_grad():
        teacher_users = model.teacher(interaction["item_id_list"], interaction["item_length"])
    return sum(model.weighted_losses(users, items, model.cf_user_head(teacher_users)))


# ---------------------------------------------------------------------------- measuring
@contextmanager
def peak_memory(device: torch.device, record: dict, key: str) -> Iterator[None]:
    """Peak CUDA memory of the block. On CPU one process's peak RSS cannot tell two code paths
    apart, so none is recorded there."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    yield
    torch.cuda.synchronize()
    record[key] = torch.cuda.max_memory_allocated() / 2**30


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """Mean seconds of ``repeats`` calls after one warm-up call; returns the last result."""
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, result


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul FLOP/s of this machine in ``dtype``: the best of a few square sizes
    (a GPU needs large products to reach its peak; a CPU's best size depends on its caches)."""
    best = 0.0
    for size in (8192,) if device.type == "cuda" else (1024, 2048, 4096):
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        seconds, _ = timed(lambda: a @ b, device, repeats=10 if device.type == "cuda" else 3)
        best = max(best, 2 * size**3 / seconds)
    return best


def llm_flops(body, tokens: int, backward: bool) -> float:
    """Matmul FLOPs of the transformer body: 2 per weight per token forward; backward to the inputs
    only (the weights are frozen) costs about one more forward."""
    weights = sum(p.numel() for n, p in body.named_parameters() if "embed" not in n)
    return 2 * weights * tokens * (2 if backward else 1)


# ---------------------------------------------------------------------------- setup
def build_causal_lm(shape: str, device: torch.device, dtype: str, llm_path: str | None, random_weights: bool):
    """``smollm2`` is the LLM at ``llm_path`` (default: the offline SmolLM2), with random weights from
    its config.json when ``random_weights``; the LLaMA shapes always have random weights."""
    if shape == "smollm2" and not random_weights:
        return load_causal_lm(llm_path, device, dtype)
    source = resolve_llm_path(llm_path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    config = AutoConfig.from_pretrained(source) if shape == "smollm2" else LlamaConfig(vocab_size=len(tokenizer), **SHAPES[shape])
    torch.manual_seed(0)
    with device:  # initialised where it runs: a 3B model's random init on the CPU alone takes a minute
        causal_lm = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    add_special_tokens(causal_lm, tokenizer)
    return causal_lm, tokenizer


def build_model(config, splits, causal_lm, tokenizer):
    """LLMSRec whose frozen body is the given causal LM's (same weights for both algorithms)."""
    init_seed(config["seed"], config["reproducibility"])
    with mock.patch.object(abstract_recommender, "load_llm", lambda *a, **k: (frozen_body(causal_lm), tokenizer)):
        model = LLMSRec(config, splits[0]).to(config["device"])
    model.teacher_dropout = False  # the same distillation target for both algorithms, so that their losses compare
    causal_lm.requires_grad_(False).eval()
    return model


def measure(shape: str, batch_size: int, args, config, splits, train_data) -> dict:
    """Train step, item and user encoding of both algorithms for one LLM shape."""
    device = config["device"]
    causal_lm, tokenizer = build_causal_lm(shape, device, args.dtype, args.llm_path, args.random_weights)
    model = build_model(config, splits, causal_lm, tokenizer)
    batch = next(iter(train_data))[:batch_size].to(device)
    torch.manual_seed(0)
    negatives = model.sample_negatives(batch["user_id"], batch["item_id_list"], batch["item_id"])
    label = f"{shape} (random weights)" if shape == "smollm2" and args.random_weights else shape
    record: dict = {"shape": label, "params": sum(p.numel() for p in causal_lm.parameters()), "batch": len(batch)}
    user_prompts = model.prompts.user_prompts(batch["item_id_list"], batch["item_length"], model._time_seq(batch))
    candidates = torch.cat([batch["item_id"].unsqueeze(1), negatives], 1).flatten()
    record["tokens"] = sum(len(p.token_ids) for p in user_prompts) + sum(
        len(p.token_ids) for p in model.prompts.item_prompts(candidates))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}

    def step(loss_fn):
        def run():
            model.load_state_dict(snapshot)  # every step starts from the same weights
            optimizer.zero_grad()
            loss = loss_fn()
            loss.backward()
            optimizer.step()
            return loss.detach()
        return run

    ours_loss = lambda: sum(model.calculate_loss(batch))  # noqa: E731
    variants = {"ours": ours_loss}
    if args.ablate:
        variants["ours, no prefix cache"] = ours_loss
        variants["ours, gradient checkpointing"] = ours_loss
    with mock.patch.object(model, "sample_negatives", lambda *a: negatives):
        for name, fn in variants.items():
            model.llm_prefix_cache = "no prefix cache" not in name
            model.llm_gradient_checkpointing = "checkpointing" in name
            with peak_memory(device, record, f"{name} train peak GiB"):
                record[f"{name} train s"], record[f"{name} loss"] = timed(step(fn), device, args.repeats)
        model.llm_prefix_cache, model.llm_gradient_checkpointing = True, False
        if args.compile:
            eager = model.llm
            object.__setattr__(model, "llm", torch.compile(eager, dynamic=True))
            start = time.perf_counter()
            step(ours_loss)()  # compiles the user and the item pass, forward and backward
            record["compile s"] = time.perf_counter() - start
            record["ours, torch.compile train s"], record["ours, torch.compile loss"] = timed(
                step(ours_loss), device, args.repeats)
            object.__setattr__(model, "llm", eager)
        with peak_memory(device, record, "authors train peak GiB"):
            record["authors train s"], record["authors loss"] = timed(
                step(lambda: authors_loss(model, causal_lm, batch, negatives)), device, args.repeats)

    model.eval()
    items = torch.arange(1, min(model.n_items, 8 * batch_size + 1), device=device)
    users = next(iter(train_data))[: 2 * batch_size].to(device)
    with torch.no_grad():
        record["ours items s"], ours_items = timed(lambda: model.encode_items(items), device, 1)
        record["authors items s"], authors_items = timed(
            lambda: torch.cat([authors_item_vectors(model, causal_lm, chunk) for chunk in items.split(batch_size)]),
            device, 1)
        user_args = (users["item_id_list"], users["item_length"], model._time_seq(users))
        record["ours users s"], ours_users = timed(lambda: model.forward(*user_args), device, 1)
        record["authors users s"], authors_users = timed(
            lambda: torch.cat([authors_user_vectors(model, causal_lm, users[i : i + batch_size])
                               for i in range(0, len(users), batch_size)]), device, 1)
    record["n items"], record["n users"] = len(items), len(users)
    record["max |item diff|"] = (ours_items - authors_items).abs().max().item()
    record["max |user diff|"] = (ours_users - authors_users).abs().max().item()
    record["item tokens"] = sum(len(p.token_ids) for p in model.prompts.item_prompts(items))
    record["user tokens"] = sum(len(p.token_ids) for p in model.prompts.user_prompts(*user_args))
    body = frozen_body(causal_lm)
    record["train TFLOP"] = llm_flops(body, record["tokens"], backward=True) / 1e12
    record["eval TFLOP"] = llm_flops(body, record["item tokens"] + record["user tokens"], backward=False) / 1e12
    del model, causal_lm
    return record


def memory(record: dict, name: str) -> str:
    value = record.get(f"{name} train peak GiB")
    return "n/a (CPU)" if value is None else f"{value:.2f}"


def report(records: list[dict], args, peak: float, device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{cpu}, {torch.get_num_threads()} torch threads"
    lines = [
        "# LLMSRec step benchmark: ours vs the authors' algorithm",
        "",
        f"Machine: {where}; torch {torch.__version__}; LLM dtype {args.dtype}; measured matmul peak "
        f"{peak / 1e9:.0f} GFLOP/s. Data: the quick-start profile (ml-100k, users with 20-29 ratings, "
        f"history {args.history} items with dates). Same LLM weights, prompts, batch and candidates for both.",
        f"Command: `python benchmarks/llmsrec_step.py --device {args.device} --dtype {args.dtype} --shapes {' '.join(args.shapes)} "
        f"--batch {' '.join(map(str, args.batch))} --tokens-per-pass {args.tokens_per_pass} --repeats {args.repeats}"
        f"{' --ablate' if args.ablate else ''}{' --compile' if args.compile else ''}"
        f"{' --random-weights' if args.random_weights else ''}`. "
        f"Evaluation: 8 x batch catalogue items and 2 x batch users; the authors' in chunks of the batch size, "
        f"ours packed into passes of {args.tokens_per_pass} padded tokens (`llm_tokens_per_pass`).",
        "",
        "| LLM | params | batch (users) | train users/s ours | authors | speed-up | train tokens/s ours | authors "
        "| peak mem GiB ours / authors | loss ours / authors | LLM utilisation ours / authors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    note = ("LLM utilisation = useful FLOPs (2 x non-embedding weights x prompt tokens, x2 for the backward pass "
            "to the inputs) per second over the measured matmul peak; ours skips work (cached prompt prefixes, "
            "distinct candidates once), so its figure counts work it did not need to do.")
    for r in records:
        ours, theirs = r["ours train s"], r["authors train s"]
        lines.append(
            f"| {r['shape']} | {r['params'] / 1e6:.0f}M | {r['batch']} | {r['batch'] / ours:.2f} | {r['batch'] / theirs:.2f} "
            f"| {theirs / ours:.2f}x | {r['tokens'] / ours:.0f} | {r['tokens'] / theirs:.0f} "
            f"| {memory(r, 'ours')} / {memory(r, 'authors')} "
            f"| {float(r['ours loss']):.6f} / {float(r['authors loss']):.6f} "
            f"| {r['train TFLOP'] * 1e12 / ours / peak:.0%} / {r['train TFLOP'] * 1e12 / theirs / peak:.0%} |")
    lines += ["", note, "", "| LLM | item vectors/s ours | authors | speed-up | user vectors/s ours | authors | speed-up "
              "| max abs diff items / users |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        lines.append(
            f"| {r['shape']} | {r['n items'] / r['ours items s']:.1f} | {r['n items'] / r['authors items s']:.1f} "
            f"| {r['authors items s'] / r['ours items s']:.2f}x | {r['n users'] / r['ours users s']:.2f} "
            f"| {r['n users'] / r['authors users s']:.2f} | {r['authors users s'] / r['ours users s']:.2f}x "
            f"| {r['max |item diff|']:.1e} / {r['max |user diff|']:.1e} |")
    ablated = [r for r in records if "ours, no prefix cache train s" in r]
    if ablated:
        lines += ["", "Fast path on/off (training step, same batch; ours = prefix cache on, no checkpointing):", "",
                  "| LLM | ours s | no prefix cache s | prefix cache gain | gradient checkpointing s "
                  "| peak mem GiB ours / checkpointing |", "| --- | --- | --- | --- | --- | --- |"]
        for r in ablated:
            on, off = r["ours train s"], r["ours, no prefix cache train s"]
            checkpointed = r["ours, gradient checkpointing train s"]
            lines.append(f"| {r['shape']} | {on:.2f} | {off:.2f} | {off / on:.2f}x | {checkpointed:.2f} "
                         f"| {memory(r, 'ours')} / {memory(r, 'ours, gradient checkpointing')} |")
    compiled = [r for r in records if "compile s" in r]
    if compiled:
        lines += ["", "`torch.compile(llm, dynamic=True)` (training step, same batch):", "",
                  "| LLM | eager s | compiled s | gain | first step (compiling) s | loss eager / compiled |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in compiled:
            eager, fast = r["ours train s"], r["ours, torch.compile train s"]
            lines.append(f"| {r['shape']} | {eager:.2f} | {fast:.2f} | {eager / fast:.2f}x | {r['compile s']:.0f} "
                         f"| {float(r['ours loss']):.6f} / {float(r['ours, torch.compile loss']):.6f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="LLM dtype (default: float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--shapes", nargs="+", default=["smollm2", "llama-1b"], choices=["smollm2", *SHAPES])
    parser.add_argument("--batch", type=int, nargs="+", default=[20, 4],
                        help="users per training step, one per shape (paper: 20)")
    parser.add_argument("--tokens-per-pass", type=int, default=None,
                        help="our llm_tokens_per_pass (padded prompt tokens per LLM pass; default: auto for the device)")
    parser.add_argument("--history", type=int, default=5, help="history items per user prompt")
    parser.add_argument("--repeats", type=int, default=2, help="timed training steps after one warm-up")
    parser.add_argument("--ablate", action="store_true", help="also time our step without the prefix cache, and with gradient checkpointing")
    parser.add_argument("--llm-path", default=None,
                        help="the smollm2 shape's LLM folder (default: the offline SmolLM2); it also gives every shape its tokenizer")
    parser.add_argument("--random-weights", action="store_true",
                        help="smollm2 with random weights from its config.json (timing only; the folder needs no weights)")
    parser.add_argument("--compile", action="store_true", help="also time our step with torch.compile on the LLM")
    parser.add_argument("--out", default=str(Path(__file__).parent / "RESULTS.md"))
    args = parser.parse_args()
    device = torch.device(args.device)
    args.dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    args.tokens_per_pass = resolve_tokens_per_pass(args.tokens_per_pass, device)

    settings = {"history_length": args.history, "show_progress": False, "state": "ERROR", "device": device,
                "use_gpu": device.type == "cuda", "llm_dtype": args.dtype,
                "llm_tokens_per_pass": args.tokens_per_pass, "train_batch_size": 2 * max(args.batch)}
    config = Config(config_file_list=default_config_files(), config_dict=settings)
    config["device"] = device
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    splits = dataset.build()
    train_data, valid_data, test_data = build_dataloaders(config, dataset, splits)
    config["teacher_checkpoint"] = str(train_teacher(config, splits, valid_data, test_data)[0])

    peak = matmul_peak(device, getattr(torch, args.dtype))
    records = []
    batches = args.batch if len(args.batch) == len(args.shapes) else args.batch[:1] * len(args.shapes)
    for shape, batch_size in zip(args.shapes, batches):
        records.append(measure(shape, batch_size, args, config, splits, train_data))
        print(report(records, args, peak, device))
    Path(args.out).write_text(report(records, args, peak, device))


if __name__ == "__main__":
    main()
