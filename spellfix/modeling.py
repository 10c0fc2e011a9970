"""Build or load the seq2seq model and its tokenizer.

Three ways in, one shape out (a ``transformers`` encoder-decoder + a fast tokenizer):
- a hub id or local directory (``facebook/bart-base``, a spellfix checkpoint, an export's ``hf/``);
- a from-scratch config (``model.config``), with a byte-level BPE trained on the training corpus.

Sequence convention, shared by training, generation and the exported runtime (spellfix.inference):
source = ``<s> tokens </s>``; target labels = ``tokens </s>`` (no leading ``<s>``: one decoding step
less per query); decoder input = ``</s> tokens`` (decoder_start_token_id = eos id = 2, as in BART).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    BartConfig,
    BartForConditionalGeneration,
    GenerationConfig,
    MBartConfig,
    MBartForConditionalGeneration,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from typing import TYPE_CHECKING

from spellfix import shipped

if TYPE_CHECKING:
    from spellfix.config import ModelConfig

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, the BART layout
BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

#: facebook/bart-base sizes. transformers' BartConfig() defaults are bart-large (406 M parameters).
BART_BASE_SHAPE: dict[str, Any] = {
    "d_model": 768,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 12,
    "decoder_attention_heads": 12,
    "encoder_ffn_dim": 3072,
    "decoder_ffn_dim": 3072,
    "max_position_embeddings": 1024,
    "vocab_size": 50265,
}


def train_byte_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with BART's special tokens on the training corpus.

    Byte-level means no query is ever out of vocabulary (any UTF-8 string round-trips), which a
    spell corrector needs: it must copy unknown artist names exactly.
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", BOS_ID), ("</s>", EOS_ID)]
    )
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise ValueError(f"tokenizer special tokens must have ids 0..4 in the order {SPECIAL_TOKENS}, got {ids}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )


def build_model(cfg: ModelConfig, vocab_size: int) -> PreTrainedModel:
    """A randomly initialised encoder-decoder from ``cfg.config`` (keys of Bart/MBartConfig)."""
    keys = dict(cfg.config)
    keys.setdefault("vocab_size", vocab_size)
    if keys["vocab_size"] < vocab_size:
        raise ValueError(f"model.config.vocab_size={keys['vocab_size']} is smaller than the tokenizer's {vocab_size}")
    keys.update(
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=EOS_ID,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
    )
    if cfg.dropout is not None:
        keys["dropout"] = cfg.dropout
    config_cls, model_cls = (
        (MBartConfig, MBartForConditionalGeneration) if cfg.architecture == "mbart" else (BartConfig, BartForConditionalGeneration)
    )
    try:
        config = config_cls(**keys)
    except TypeError as exc:
        raise ValueError(f"model.config: {exc}") from exc
    model = model_cls(config)
    set_generation_defaults(model)
    return model


def set_generation_defaults(model: PreTrainedModel, max_new_tokens: int = 48) -> None:
    """Generation settings that match the training sequence convention (see module docstring)."""
    model.generation_config = GenerationConfig(
        decoder_start_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        max_new_tokens=max_new_tokens,
        num_beams=1,
        do_sample=False,
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer from a directory or hub id (no remote code)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


def load_pretrained(path: str | Path, dropout: float | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load model + tokenizer from a hub id, a checkpoint dir or an export's ``hf/`` dir (safetensors only)."""
    path = resolve_model_dir(path)
    kwargs: dict[str, Any] = {}
    if dropout is not None:
        kwargs["dropout"] = dropout
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=False, **kwargs)
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path), config=config, use_safetensors=True, trust_remote_code=False)
    tokenizer = load_tokenizer(path)
    if not (Path(path) / "generation_config.json").exists():
        set_generation_defaults(model)
    return model, tokenizer


#: models shipped with the repository (``models/<name>/``, or in a wheel: spellfix.shipped), loadable by
#: name: ``--model spell-small-cpu``
SHIPPED_MODELS_DIR = shipped.shipped_root() / "models"


def resolve_model_dir(path: str | Path) -> str | Path:
    """Map a training output dir, export dir or shipped model name to the directory that holds the
    weights (``spellfix.shipped.resolve_model_dir``; a hub id is returned unchanged)."""
    return shipped.resolve_model_dir(path, SHIPPED_MODELS_DIR)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def encode_sources(tokenizer: PreTrainedTokenizerFast, texts: list[str], max_length: int) -> list[list[int]]:
    """``<s> tokens </s>``, truncated to ``max_length`` keeping the closing ``</s>``."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    body = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [[bos, *ids[: max_length - 2], eos] for ids in body]


def encode_targets(tokenizer: PreTrainedTokenizerFast, texts: list[str], max_length: int) -> list[list[int]]:
    """``tokens </s>`` (labels); the decoder input is ``</s> tokens`` (see module docstring)."""
    eos = tokenizer.eos_token_id
    body = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [[*ids[: max_length - 1], eos] for ids in body]


MODEL_CARD_FILE = "spellfix.json"


def input_settings(max_source_length: int, candidates: dict[str, Any] | None) -> dict[str, Any]:
    """What a runtime must know to turn a query into encoder input exactly as in training."""
    return {
        "format_version": 1,
        "max_source_length": max_source_length,
        "decoder_start_token_id": EOS_ID,
        "candidates": candidates or {"enabled": False},
    }


def save_model_dir(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    out_dir: str | Path,
    *,
    settings: dict[str, Any],
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write a self-contained model dir atomically: safetensors weights, tokenizer.json,
    generation config, ``spellfix.json`` (input settings) and any extra text files (recipe, metrics).

    Written into a temp sibling and renamed, so a crash mid-save never leaves a half-written model.
    """
    import json
    import shutil
    import tempfile

    from spellfix.fsutil import replace_dir

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        unwrapped = getattr(model, "module", model)
        unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)  # torch.compile wrapper
        unwrapped.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MODEL_CARD_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
