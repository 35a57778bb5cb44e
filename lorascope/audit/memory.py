"""Training memory for LoRA versus full fine-tuning: weights, gradients and AdamW states, activations excluded.

Per trainable parameter: its weight, its gradient (same dtype as the weight), an fp32 master copy when the
weight is 16-bit and ``master_weights`` is on, and AdamW's two fp32 moments — 2 + 2 + 4 + 8 = 16 bytes in bf16
mixed precision (Rajbhandari et al. 2020, ZeRO §3.1: "2Ψ + 2Ψ + KΨ", K = 12). A frozen parameter costs its
weight only. LoRA adapter weights are fp32 by default because PEFT upcasts adapters on 16-bit models
(``autocast_adapter_dtype=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

BYTES = {"fp32": 4, "float32": 4, "fp16": 2, "float16": 2, "bf16": 2, "bfloat16": 2, "fp8": 1, "float8": 1}


@dataclass(frozen=True)
class MemoryAssumptions:
    """What the estimate assumes; printed with the numbers."""

    weights_dtype: str = "bf16"  # the model's weights (frozen base, and the trained weights in full fine-tuning)
    adapter_dtype: str = "fp32"  # LoRA weights: PEFT upcasts adapters on 16-bit models
    master_weights: bool = True  # fp32 master copy of 16-bit trainable weights (mixed precision)
    optimizer_states: int = 2  # AdamW: first and second moment
    state_bytes: int = 4  # fp32 optimizer states

    def __post_init__(self) -> None:
        for name in ("weights_dtype", "adapter_dtype"):
            if getattr(self, name) not in BYTES:
                raise ValueError(f"{name} must be one of {sorted(BYTES)}, got {getattr(self, name)!r}")
        if self.optimizer_states < 0 or self.state_bytes < 1:
            raise ValueError("optimizer_states must be ≥ 0 and state_bytes ≥ 1")

    def lines(self) -> list[str]:
        master = "an fp32 master copy of each 16-bit trainable weight" if self.master_weights else "no master copy"
        return [
            f"weights in {self.weights_dtype}; LoRA adapter weights in {self.adapter_dtype}",
            "gradients only for trainable parameters, in the dtype of their weights",
            f"AdamW: {self.optimizer_states} states × {self.state_bytes} bytes per trainable parameter; {master}",
            "activations, KV cache, temporary buffers and framework overhead are not included",
        ]


def _trainable_bytes(dtype: str, a: MemoryAssumptions) -> tuple[int, int, int]:
    """(gradient, master copy, optimizer) bytes per trainable parameter whose weight is ``dtype``."""
    w = BYTES[dtype]
    master = 4 if a.master_weights and w < 4 else 0
    return w, master, a.optimizer_states * a.state_bytes


def training_memory(total: int, trainable: int, a: MemoryAssumptions | None = None) -> pd.DataFrame:
    """Bytes by part for LoRA (``trainable`` adapter parameters on a frozen model of ``total``) and full fine-tuning.

    Returns:
        rows weights, gradients, master weights, optimizer states, total; columns lora, full (bytes, ints).
    """
    a = a or MemoryAssumptions()
    wb, ab = BYTES[a.weights_dtype], BYTES[a.adapter_dtype]
    lg, lm, lo = _trainable_bytes(a.adapter_dtype, a)
    fg, fm, fo = _trainable_bytes(a.weights_dtype, a)
    lora = [total * wb + trainable * ab, trainable * lg, trainable * lm, trainable * lo]
    full = [total * wb, total * fg, total * fm, total * fo]
    parts = ["weights", "gradients", "master weights", "optimizer states"]
    df = pd.DataFrame({"part": parts, "lora": lora, "full": full})
    df.loc[len(df)] = ["total", sum(lora), sum(full)]
    return df
