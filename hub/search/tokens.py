"""Prompts as the text tower's input: token ids and attention masks, padded to the longest prompt of a batch.

transformers' CLIP tokenizer is a wrapper around the checkpoint's ``tokenizer.json`` (Hugging Face ``tokenizers``:
normaliser, pre-tokeniser, BPE, and the start and end tokens around each prompt). Importing transformers to
construct it took 4.4 s of a process's start on these two cores (transformers builds the import structure of every
model it knows), at every ``hub serve``, ``hub worker`` and command that encodes a prompt. ``FastTokens`` reads the
same file with ``tokenizers`` alone and pads and truncates as the hub asks the wrapper to (to the longest prompt,
at most ``max_length`` tokens, with the checkpoint's padding token). A checkpoint without that file, or whose
tokenizer is not CLIP's, gets transformers' tokenizer itself. ``tests/indexing/test_model.py`` compares the two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

CLIP_TOKENIZERS = {"CLIPTokenizer", "CLIPTokenizerFast"}


class Tokens(Protocol):
    """``texts`` as ``input_ids`` and ``attention_mask`` (numpy int64 for ``"np"``, torch tensors for ``"pt"``)."""

    def __call__(self, texts: list[str], tensors: str = "np") -> dict[str, Any]: ...


class FastTokens:
    """CLIP's tokenizer from the checkpoint's ``tokenizer.json``, without transformers (``tokenizer`` pads and
    truncates as ``fast_tokens`` set it to)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __call__(self, texts: list[str], tensors: str = "np") -> dict[str, Any]:
        encodings = self._tokenizer.encode_batch(texts)
        batch = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
        if tensors == "pt":
            import torch

            return {name: torch.from_numpy(values) for name, values in batch.items()}
        return batch


class TransformersTokens:
    """transformers' tokenizer (any the checkpoint names), called as the hub calls it."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self._tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str], tensors: str = "np") -> dict[str, Any]:
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors=tensors)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _special_token(value: Any) -> str | None:
    """A special token as tokenizer configs write it: the text itself, or ``{"content": text, …}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def fast_tokens(folder: Path | None, max_length: int) -> FastTokens | None:
    """``FastTokens`` for the checkpoint in ``folder``; None when its tokenizer is not one this can read exactly
    (no ``tokenizer.json``, another tokenizer class, no padding token the vocabulary has)."""
    if folder is None or not (folder / "tokenizer.json").is_file():
        return None
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("tokenizer_class") not in CLIP_TOKENIZERS:
        return None
    if config.get("padding_side", "right") != "right" or config.get("truncation_side", "right") != "right":
        return None
    pad = _special_token(config.get("pad_token"))
    if pad is None:
        try:
            special = json.loads((folder / "special_tokens_map.json").read_text())
        except (OSError, ValueError):
            special = {}
        pad = _special_token(special.get("pad_token")) if isinstance(special, dict) else None
    if pad is None:
        return None
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception:  # noqa: BLE001 - a file tokenizers cannot read: transformers' tokenizer decides
        return None
    pad_id = tokenizer.token_to_id(pad)
    if pad_id is None:
        return None
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad)  # (to the longest of each batch)
    return FastTokens(tokenizer)
