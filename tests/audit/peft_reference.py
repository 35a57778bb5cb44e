"""The independent reference for counts: transformers builds the model on the meta device, PEFT injects LoRA
and counts it (get_nb_trainable_parameters), with no lorascope code involved."""

from __future__ import annotations

import warnings

import pytest

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")

AUTO = {
    "base": "AutoModel",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "seq-cls": "AutoModelForSequenceClassification",
}
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers")


def meta_model(cfg: dict, head: str):
    kwargs = {k: v for k, v in cfg.items() if k not in ("auto_map", "architectures", "model_type")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.AutoConfig.for_model(cfg["model_type"], **kwargs)
        with torch.device("meta"):
            return getattr(transformers, AUTO[head]).from_config(config)


def peft_reference(cfg: dict, head: str, targets, r: int, **extra) -> tuple[int, int]:
    """(trainable, all params) as PEFT counts them for LoraConfig(r, targets, **extra) on the meta model."""
    model = meta_model(cfg, head)
    with warnings.catch_warnings(), torch.device("meta"):  # LoRA factors on the meta device too: shapes only
        warnings.simplefilter("ignore")
        peft_model = peft.get_peft_model(model, peft.LoraConfig(r=r, target_modules=targets, **extra))
    return peft_model.get_nb_trainable_parameters()


def few_layers(cfg: dict, n: int = 4) -> dict:
    """The same architecture with ``n`` layers: every layer has the same shapes, so per-layer counting is
    checked exactly at a fraction of PEFT's injection time (full-depth models are checked with the default
    targets)."""
    return {**cfg, **{k: min(cfg[k], n) for k in LAYER_KEYS if k in cfg}}
