"""Owns the bytes a LoRA configuration costs: its adapter file, and training memory beside full fine-tuning.

The adapter file is what PEFT's ``save_pretrained`` writes, to the byte: an 8-byte header length, a compact
JSON header padded with spaces to a multiple of 8, then the tensors in name order (safetensors' serializer).

Training memory counts weights, gradients and AdamW states; activations are excluded. Per trainable
parameter: its weight, its gradient (same dtype as the weight), an fp32 master copy when the weight is
16-bit and ``master_weights`` is on, and AdamW's two fp32 moments — 2 + 2 + 4 + 8 = 16 bytes in bf16 mixed
precision (Rajbhandari et al. 2020, ZeRO §3.1: "2Ψ + 2Ψ + KΨ", K = 12). A frozen parameter costs its
weight only. LoRA adapter weights are fp32 by default because PEFT upcasts adapters on 16-bit models
(``autocast_adapter_dtype=True``). Everything here is pure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from ..names import PEFT_PREFIX
from .count import LoraCount, copy_params

# safetensors dtype tag and bytes per element, by the names --dtype accepts
DTYPES: dict[str, tuple[str, int]] = {
    "fp32": ("F32", 4), "float32": ("F32", 4), "fp16": ("F16", 2), "float16": ("F16", 2),
    "bf16": ("BF16", 2), "bfloat16": ("BF16", 2), "fp8": ("F8_E4M3", 1), "float8": ("F8_E4M3", 1),
}  # fmt: skip


def adapter_tensors(count: LoraCount) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors PEFT's save_pretrained writes for this configuration: (key as PEFT names it, shape)."""
    out: list[tuple[str, tuple[int, ...]]] = []
    for row in count.rows:
        key, r = PEFT_PREFIX + row.name, row.r if row.kind != "param" else row.lora // (row.rows + row.cols)
        if row.kind == "embedding":  # A (r, num_embeddings), B (dim, r)
            out += [(f"{key}.lora_embedding_A", (r, row.rows)), (f"{key}.lora_embedding_B", (row.cols, r))]
        else:  # A (r, in), B (out, r); a ParamWrapper's as two matrices of rank r·E (approximate)
            out += [(f"{key}.lora_A.weight", (r, row.cols)), (f"{key}.lora_B.weight", (row.rows, r))]
        out += [(f"{key}.lora_magnitude_vector", (row.magnitude,))] if row.magnitude else []
        out += [(f"{key}.bias", (row.bias,))] if row.bias else []
    if count.settings.bias == "all":
        out += [(f"{PEFT_PREFIX}{m.name}.bias", (m.bias,)) for m in count.model.modules if m.bias]
    for m in map(count.model.by_name().get, count.saved_modules):
        out += [(f"{PEFT_PREFIX}{m.name}.weight", m.shape)] if copy_params(m) - m.bias else []
        out += [(f"{PEFT_PREFIX}{m.name}.bias", (m.bias,))] if m.bias else []
    return list(dict(out).items())  # a key listed twice (a bias trained and saved) holds the same tensor


def safetensors_size(tensors: list[tuple[str, tuple[int, ...]]], dtype: str, metadata: dict | None = None):
    """Exact bytes of a safetensors file holding ``tensors`` in ``dtype`` (all of one dtype)."""
    tag, itemsize = DTYPES[dtype]
    header: dict = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    offset = 0
    for key, shape in sorted(tensors):
        n = math.prod(shape) * itemsize
        header[key] = {"dtype": tag, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    length = len(json.dumps(header, separators=(",", ":")).encode())
    return 8 + length + (-length) % 8 + offset


def adapter_file_size(count: LoraCount, dtype: str) -> int:
    """Bytes of ``adapter_model.safetensors`` for this configuration saved in ``dtype``."""
    return safetensors_size(adapter_tensors(count), dtype)


@dataclass(frozen=True)
class MemoryAssumptions:
    """What the training-memory estimate assumes; printed with the numbers."""

    weights_dtype: str = "bf16"  # the model's weights (frozen base; the trained ones in full fine-tuning)
    adapter_dtype: str = "fp32"  # LoRA weights: PEFT upcasts adapters on 16-bit models
    master_weights: bool = True  # fp32 master copy of 16-bit trainable weights (mixed precision)
    optimizer_states: int = 2  # AdamW: first and second moment
    state_bytes: int = 4  # fp32 optimizer states

    def __post_init__(self) -> None:
        for name in ("weights_dtype", "adapter_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {getattr(self, name)!r}")
        if self.optimizer_states < 0 or self.state_bytes < 1:
            raise ValueError("optimizer_states must be ≥ 0 and state_bytes ≥ 1")

    def lines(self) -> list[str]:
        master = (
            "an fp32 master copy of each 16-bit trainable weight" if self.master_weights else "no master copy"
        )
        return [
            f"weights in {self.weights_dtype}; LoRA adapter weights in {self.adapter_dtype}",
            "gradients only for trainable parameters, in the dtype of their weights",
            f"AdamW: {self.optimizer_states} states × {self.state_bytes} bytes per trainable parameter; "
            + master,
            "activations, KV cache, temporary buffers and framework overhead are not included",
        ]

    def per_trainable(self, dtype: str) -> tuple[int, int, int]:
        """(gradient, master copy, optimizer) bytes per trainable parameter whose weight is ``dtype``."""
        w = DTYPES[dtype][1]
        return w, 4 if self.master_weights and w < 4 else 0, self.optimizer_states * self.state_bytes


def training_memory(total: int, trainable: int, a: MemoryAssumptions | None = None) -> pd.DataFrame:
    """Bytes by part for LoRA (``trainable`` adapter parameters on a frozen model of ``total``) and for full
    fine-tuning.

    Returns:
        rows weights, gradients, master weights, optimizer states, total; columns lora, full (bytes, ints).
    """
    a = a or MemoryAssumptions()
    weight, adapter = DTYPES[a.weights_dtype][1], DTYPES[a.adapter_dtype][1]
    lora = [total * weight + trainable * adapter, *(trainable * b for b in a.per_trainable(a.adapter_dtype))]
    full = [total * weight, *(total * b for b in a.per_trainable(a.weights_dtype))]
    parts = ["weights", "gradients", "master weights", "optimizer states", "total"]
    return pd.DataFrame({"part": parts, "lora": [*lora, sum(lora)], "full": [*full, sum(full)]})
