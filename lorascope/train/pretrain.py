"""The default base: a MiniGPT pre-trained on the facts world, built once and cached on disk.

The cache lives in ``$LORASCOPE_CACHE``, else ``$XDG_CACHE_HOME/lorascope``, else ``~/.cache/lorascope``,
one folder per configuration (``minigpt-<hash of PretrainConfig>``). Nothing is downloaded: the world is
generated from its seed and the model trained from scratch. A folder is written under a temporary name
and renamed when complete, so an interrupted pre-training never leaves a half-written base behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .data import encode, pretrain_corpus, world_eval
from .folders import save_minigpt, write_json
from .methods import MethodConfig, prepare
from .model import SIZES, build, sized_config
from .tokenizer import WordTokenizer
from .trainer import LoopConfig, OptimConfig, train
from .world import WorldConfig, build_world

FORMAT_VERSION = 1  # bump when the world, model or training code changes what a cached base contains
DONE = "pretrain.json"


@dataclass(frozen=True)
class PretrainConfig:
    """Which world, which model size, and how long to pre-train. Defaults reach 100% world accuracy in
    ~1200 steps (about a minute on two CPU cores)."""

    size: str = "default"
    n_entities: int = 40
    world_seed: int = 0
    steps: int = 1200
    lr: float = 2e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        WorldConfig(n_entities=self.n_entities, seed=self.world_seed)  # validates the world fields

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "format": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    env = os.environ.get("LORASCOPE_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lorascope"


def cached_base(cfg: PretrainConfig) -> Path:
    return cache_dir() / f"minigpt-{cfg.key()}"


def pretrain(cfg: PretrainConfig, progress: bool = False) -> tuple[Path, bool]:
    """The folder of the pre-trained base for ``cfg``, training it first if it is not cached.

    Returns:
        (folder, whether it came from the cache).
    """
    final = cached_base(cfg)
    if (final / DONE).is_file():
        return final, True
    world = build_world(WorldConfig(n_entities=cfg.n_entities, seed=cfg.world_seed))
    tok = WordTokenizer(tuple(world.words()))
    model = build(sized_config(cfg.size, tok.vocab_size), cfg.seed)
    groups = prepare(model, MethodConfig(method="full")).groups
    train_set, _ = encode(pretrain_corpus(world), tok, model.config.max_position_embeddings)
    eval_set, _ = encode(world_eval(world), tok, model.config.max_position_embeddings)
    result = train(
        model,
        groups,
        train_set,
        {"world": eval_set},
        OptimConfig(lr=cfg.lr, warmup_steps=50),
        LoopConfig(
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            eval_every=max(cfg.steps // 6, 1),
            rank_every=0,
            seed=cfg.seed,
        ),
        torch.device("cpu"),
        progress=progress,
        description="pre-train MiniGPT",
    )
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_minigpt(tmp, model, tok, world)
    write_json(
        tmp / DONE,
        {
            "config": asdict(cfg),
            "format": FORMAT_VERSION,
            "seconds": result.seconds,
            "parameters": model.num_parameters(),
            "final": result.final,
            "history": result.history,
        },
    )
    final.parent.mkdir(parents=True, exist_ok=True)
    if (final / DONE).is_file():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return final, True
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final, False
