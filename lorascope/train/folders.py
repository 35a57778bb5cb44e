"""Reading and writing the folders the trainer uses: models, tokenizers, adapters, task files, tables.

- A MiniGPT is saved as a Hugging Face Llama folder: ``config.json`` (``model_type: llama``),
  ``model.safetensors``, ``tokenizer.json`` + ``tokenizer_config.json`` + ``special_tokens_map.json``
  (``PreTrainedTokenizerFast`` loads them), and ``lorascope_world.json``: the facts the model was taught.
- Any other local Hugging Face causal LM folder loads through ``transformers`` (the ``hf`` extra).
- An adapter is saved as PEFT saves one: ``adapter_config.json`` + ``adapter_model.safetensors``.

``BASE_FORMATS`` is the registry of model folders the trainer can start from.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint.configs import read_config
from ..errors import LorascopeError
from ..limits import read_json
from ..results import write_json  # noqa: F401  (the run folders' JSON writer, used across the trainer)
from .data import Example, examples_from_lines
from .model import MiniGPT, config_from_hf, hf_config
from .tokenizer import (
    HFTokenizer,
    Tokenizer,
    WordTokenizer,
    from_hf_tokenizer_json,
    hf_tokenizer_config,
    hf_tokenizer_json,
)
from .world import World, world_from_dict, world_to_dict

WORLD_FILE = "lorascope_world.json"


@dataclass
class Base:
    """A loaded base model, its tokenizer, the world it was taught (MiniGPT only) and where it came from."""

    model: nn.Module
    tokenizer: Tokenizer
    world: World | None
    path: Path
    format: str  # a key of BASE_FORMATS
    max_length: int


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV; the columns are the union of the rows' keys in first-seen order, NaN written empty."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            )


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"}
    )


# --- MiniGPT folders --------------------------------------------------------------------------------------


def save_minigpt(path: Path, model: MiniGPT, tok: WordTokenizer, world: World | None) -> Path:
    """Write ``model`` as a Hugging Face Llama folder that ``LlamaForCausalLM.from_pretrained`` loads."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    write_json(path / "config.json", hf_config(cfg, tok.bos_id, tok.eos_id, tok.pad_id))
    state = model.state_dict()
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # stored once, as Llama does when tied
    save_safetensors(path / "model.safetensors", state)
    write_json(path / "tokenizer.json", hf_tokenizer_json(tok))
    write_json(path / "tokenizer_config.json", hf_tokenizer_config(tok, cfg.max_position_embeddings))
    write_json(
        path / "special_tokens_map.json",
        {k: v for k, v in hf_tokenizer_config(tok, 0).items() if k.endswith("_token")},
    )
    write_json(
        path / "generation_config.json",
        {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id},
    )
    if world is not None:
        write_json(path / WORLD_FILE, world_to_dict(world))
    return path


def is_minigpt_folder(path: Path) -> bool:
    """A Llama folder with a word-level tokenizer.json: lorascope's own models,
    loadable without transformers."""
    if not (
        (path / "config.json").is_file()
        and (path / "tokenizer.json").is_file()
        and (path / "model.safetensors").is_file()
    ):
        return False
    try:
        cfg = json.loads((path / "config.json").read_text())
        tok = json.loads((path / "tokenizer.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return cfg.get("model_type") == "llama" and tok.get("model", {}).get("type") == "WordLevel"


def load_minigpt(path: Path) -> Base:
    from safetensors.torch import load_file

    cfg = config_from_hf(read_config(path / "config.json"))
    model = MiniGPT(cfg)
    state = load_file(str(path / "model.safetensors"))
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LorascopeError(
            f"{path}/model.safetensors does not fit its config.json: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}."
        )
    tok = from_hf_tokenizer_json(read_json(path / "tokenizer.json", "a tokenizer.json"))
    world = (
        world_from_dict(read_json(path / WORLD_FILE, "the facts a MiniGPT was taught"))
        if (path / WORLD_FILE).is_file()
        else None
    )
    return Base(model, tok, world, path, "minigpt", cfg.max_position_embeddings)


# --- Hugging Face folders ---------------------------------------------------------------------------------


def is_hf_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def load_hf(path: Path) -> Base:
    """Any local Hugging Face causal LM folder, in float32, without network access."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise LorascopeError(
            f"--model {path} is a Hugging Face folder; loading it needs the hf extra: pip install "
            "'lorascope[hf]'."
        ) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise LorascopeError(
            f"--model {path}: transformers could not load a causal LM and its tokenizer "
            f"from this folder ({exc})."
        ) from None
    max_len = int(
        getattr(model.config, "max_position_embeddings", 0) or getattr(model.config, "n_positions", 0) or 1024
    )
    return Base(model, HFTokenizer(tok), None, path, "hf", max_len)


def save_hf(path: Path, base: Base, model: nn.Module) -> Path:
    model.save_pretrained(str(path), safe_serialization=True)
    base.tokenizer.tok.save_pretrained(str(path))  # type: ignore[attr-defined]
    return path


# folder format -> (detect, load, save merged model); tried in order
@dataclass(frozen=True)
class BaseFormat:
    detect: Callable[[Path], bool]
    load: Callable[[Path], Base]
    save: Callable[[Path, Base, nn.Module], Path]


BASE_FORMATS: dict[str, BaseFormat] = {
    "minigpt": BaseFormat(
        is_minigpt_folder,
        load_minigpt,
        lambda path, base, model: save_minigpt(path, model, base.tokenizer, base.world),
    ),  # type: ignore[arg-type]
    "hf": BaseFormat(is_hf_folder, load_hf, save_hf),
}


def load_base(path: Path) -> Base:
    """Load a base model folder of any format in ``BASE_FORMATS``."""
    path = Path(path)
    if not path.is_dir():
        raise LorascopeError(
            f"--model {path} is not a folder; give a Hugging Face model folder "
            "(config.json, weights and tokenizer files)."
        )
    for fmt in BASE_FORMATS.values():
        if fmt.detect(path):
            return fmt.load(path)
    raise LorascopeError(f"--model {path} holds no config.json; give a Hugging Face causal LM folder.")


def save_tuned(path: Path, base: Base, model: nn.Module) -> Path:
    """The fine-tuned (merged) model as a folder of the base's own format."""
    return BASE_FORMATS[base.format].save(path, base, model)


def save_adapter(path: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """A PEFT adapter folder: ``adapter_config.json`` and ``adapter_model.safetensors``, written by the one
    PEFT adapter writer (``checkpoint.peft_config.write_adapter``)."""
    from ..checkpoint.peft_config import write_adapter

    return write_adapter(path, config, tensors)


def read_task_file(path: Path) -> list[Example]:
    """Examples from a .txt (one text per line) or .jsonl file (``text``, or ``prompt`` + ``completion``)."""
    if not path.is_file():
        raise LorascopeError(
            f"task file {path} does not exist; give edit:K, domain, or a .txt / .jsonl file path."
        )
    if path.suffix not in (".txt", ".jsonl"):
        raise LorascopeError(
            f"task file {path} must end in .txt (one text per line) or .jsonl (one JSON object "
            f"per line), not {path.suffix or 'no suffix'}."
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise LorascopeError(f"task file {path} is not UTF-8 text ({exc}).") from None
    return examples_from_lines(lines, path.suffix == ".jsonl", str(path))
