"""Tokenizers: the world's word-level tokenizer, and the same interface over a Hugging Face tokenizer.

``WordTokenizer`` lowercases, splits like the Hugging Face ``Whitespace`` pre-tokenizer (runs of word
characters, runs of other non-space characters) and maps each word to its id, unknown words to [UNK].
``hf_tokenizer_json`` describes exactly that pipeline in the ``tokenizers`` JSON format (a ``WordLevel``
model), so ``transformers.PreTrainedTokenizerFast`` loads a saved MiniGPT's tokenizer and produces the
same ids. Pure: building and describing tokenizers, no file access (see ``folders.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")  # ids 0..3, in this order
_WORDS = re.compile(r"\w+|[^\w\s]+")  # the Whitespace pre-tokenizer's pattern


class Tokenizer(Protocol):
    """What training needs from a tokenizer."""

    bos_id: int | None
    eos_id: int | None
    pad_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class WordTokenizer:
    """One id per lowercase word; ids 0..3 are [PAD], [UNK], [BOS], [EOS]."""

    words: tuple[str, ...]  # ordinary words, ids 4.. in this order
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vocab = {tok: i for i, tok in enumerate(SPECIALS + tuple(self.words))}
        if len(vocab) != len(SPECIALS) + len(self.words):
            raise ValueError("words must be distinct and must not repeat a special token")
        object.__setattr__(self, "index", vocab)

    pad_id = 0
    unk_id = 1
    bos_id = 2
    eos_id = 3

    @property
    def vocab_size(self) -> int:
        return len(self.index)

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORDS.findall(text.lower())

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in self.split(text)]

    def decode(self, ids: list[int]) -> str:
        vocab = SPECIALS + tuple(self.words)
        return " ".join(vocab[i] for i in ids)

    def unknown_fraction(self, texts: list[str]) -> float:
        words = [w for t in texts for w in self.split(t)]
        return sum(w not in self.index for w in words) / max(len(words), 1)


def hf_tokenizer_json(tok: WordTokenizer) -> dict[str, Any]:
    """``tokenizer.json`` for the ``tokenizers`` library: Lowercase → Whitespace → WordLevel,
    [BOS] prepended."""
    added = [
        {
            "id": i,
            "content": s,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, s in enumerate(SPECIALS)
    ]
    bos = SPECIALS[tok.bos_id]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [tok.bos_id], "tokens": [bos]}},
        },
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": dict(tok.index), "unk_token": SPECIALS[tok.unk_id]},
    }


def hf_tokenizer_config(tok: WordTokenizer, max_length: int) -> dict[str, Any]:
    """``tokenizer_config.json``: which class loads ``tokenizer.json`` and the names of the special tokens."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIALS[tok.bos_id],
        "eos_token": SPECIALS[tok.eos_id],
        "unk_token": SPECIALS[tok.unk_id],
        "pad_token": SPECIALS[tok.pad_id],
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
    }


def from_hf_tokenizer_json(d: dict[str, Any]) -> WordTokenizer:
    """The ``WordTokenizer`` a ``tokenizer.json`` written by ``hf_tokenizer_json`` describes."""
    model = d.get("model", {})
    if model.get("type") != "WordLevel":
        raise ValueError(f"tokenizer.json holds a {model.get('type')!r} model, expected 'WordLevel'")
    by_id = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    if tuple(t for t, _ in by_id[: len(SPECIALS)]) != SPECIALS or [i for _, i in by_id] != list(
        range(len(by_id))
    ):
        raise ValueError(f"tokenizer.json vocabulary must start with {SPECIALS} and number its words 0..n-1")
    return WordTokenizer(tuple(t for t, _ in by_id[len(SPECIALS) :]))


class HFTokenizer:
    """A ``transformers`` tokenizer behind the ``Tokenizer`` interface (no special tokens from ``encode``)."""

    def __init__(self, tok: Any):
        self.tok = tok
        self.bos_id = tok.bos_token_id
        self.eos_id = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.pad_id = int(pad) if pad is not None else 0  # padded positions are masked out of the loss
        self.vocab_size = len(tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])
