"""Model and tokenizer loading, including the tiny random Llama and its offline tokenizer.

Real models load with ``from_pretrained`` from a hub id or a local folder (nothing is downloaded when
``HF_HUB_OFFLINE=1``: the files must then be in the local cache). The ``tiny-random-llama`` model is
built instead: a byte-level BPE tokenizer trained with the ``tokenizers`` library on the tiny problems'
text (wrapped in ``PreTrainedTokenizerFast`` with ``<s>``, ``</s>`` and ``<pad>``), and a
``LlamaForCausalLM`` with random weights from a seeded ``LlamaConfig``; both are saved into
``<run_dir>/base/model`` once, so every stage (and vLLM) loads them like any checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mathreason.config import ModelConfig, TinyModelConfig

__all__ = [
    "build_tiny_model",
    "check_model_available",
    "build_tiny_tokenizer",
    "ensure_tiny_base",
    "load_model",
    "load_tokenizer",
    "resolve_device",
    "resolve_dtype",
]

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")


def resolve_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` = bfloat16 on a CUDA device that supports it, else float32."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# ---------------------------------------------------------------- tiny model


def build_tiny_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts``, as a ``PreTrainedTokenizerFast``.

    Every byte is in the alphabet, so any text round-trips (``decode(encode(t)) == t``). ``<s>`` is
    prepended to every encoded text (like Llama); ``</s>`` is EOS and ``<pad>`` the padding token; the
    padding side is left (for batched generation).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(cfg: TinyModelConfig, tokenizer, seed: int):
    """A ``LlamaForCausalLM`` with random weights drawn under ``seed`` (global RNG state is restored)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def ensure_tiny_base(cfg: ModelConfig, folder: str | Path, corpus: Sequence[str], seed: int) -> Path:
    """Build the tiny tokenizer + random model into ``folder`` unless it is already there.

    The folder appears atomically (built in a temporary sibling, then renamed), so a kill never leaves a
    half-written base model behind. Building is deterministic, so concurrent builders (the ranks of a
    distributed launch) are harmless: the first rename wins and the others discard their copy.
    """
    folder = Path(folder)
    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        return folder
    if folder.exists() and any(folder.iterdir()):
        raise RuntimeError(f"{folder} exists but holds no complete model; delete it to rebuild the tiny base model")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tokenizer = build_tiny_tokenizer(corpus, cfg.tiny.vocab_size)
        model = build_tiny_model(cfg.tiny, tokenizer, seed)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            if folder.exists():
                folder.rmdir()  # empty when checked above (or another rank's rename has just landed)
            tmp.rename(folder)
            logger.info("built tiny random Llama (%d-token vocabulary) in %s", len(tokenizer), folder)
        except OSError:
            if not (folder / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ---------------------------------------------------------------- loading


def load_tokenizer(name_or_path: str | Path, *, revision: str | None = None, trust_remote_code: bool = False):
    """A fast tokenizer with a pad token (EOS when it has none) and left padding (for generation)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(name_or_path), revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise ValueError(f"{name_or_path}: the tokenizer has no EOS token; generation could never stop")
    tok.padding_side = "left"
    return tok


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
):
    """A causal LM in eval mode on ``device`` (CUDA when available)."""
    from transformers import AutoModelForCausalLM

    dev = resolve_device(str(device) if device is not None else None)
    torch_dtype = resolve_dtype(dtype, dev) if isinstance(dtype, str) else dtype
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code, "dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
    model.to(dev)
    model.eval()
    return model


def check_model_available(name_or_path: str, revision: str | None = None) -> str:
    """Return ``name_or_path`` if it can be loaded: an existing local folder, or a hub id that is either
    in the local cache or downloadable (not with ``HF_HUB_OFFLINE=1``). Raises ``FileNotFoundError`` with
    what to do otherwise, so a bad model name fails before any work starts."""
    import os

    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"model {name_or_path!r}: the folder has no config.json")
        return str(p)
    looks_local = str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1
    if looks_local:
        raise FileNotFoundError(f"model {name_or_path!r}: no such folder")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(str(name_or_path), "config.json", revision=revision)
        if not isinstance(hit, str):
            raise FileNotFoundError(
                f"model {name_or_path!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
                "downloading it; download it first or point model.name_or_path at a local folder"
            )
    return str(name_or_path)
