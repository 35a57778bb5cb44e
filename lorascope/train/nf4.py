"""4-bit NormalFloat (NF4) storage of a frozen base weight, in pure torch (runs on the CPU).

Dettmers et al. 2023 (QLoRA), §3 and Appendix E: the weight is cut into blocks of 64 consecutive
values; each block is divided by its absolute maximum (blockwise absmax) and every value is replaced by
the index of the nearest of 16 NF4 levels — quantiles of a standard normal, rescaled to [−1, 1], with an
exact zero. Two indices share a byte. Dequantization is ``NF4[code] · absmax``. The absmax constants are
kept in float32 (QLoRA's second-level "double quantization" of them is not done here).

Rounding to the nearest level bounds the error of every value by half the widest gap between
neighbouring levels times its block's absmax (``max_error_bound``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The 16 NF4 levels of Dettmers et al. 2023 (Appendix E; bitsandbytes' ``create_normal_map``): 8 positive
# and 7 negative normal quantiles, normalized by the largest, plus zero.
NF4_LEVELS = torch.tensor(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ]
)
BLOCK = 64  # values per absmax block, as QLoRA


def max_error_bound(absmax: torch.Tensor) -> torch.Tensor:
    """Per-block bound on |w − dequantize(quantize(w))|: absmax · max_i (q_{i+1} − q_i) / 2."""
    half_gap = float((NF4_LEVELS[1:] - NF4_LEVELS[:-1]).max()) / 2
    return absmax * half_gap


def quantize(weight: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4 codes (two per uint8) and float32 absmax per block of a weight of any shape.

    Returns:
        ``packed`` (ceil(n / 2),) uint8 — code of value 2j in the high nibble, 2j+1 in the low one — and
        ``absmax`` (ceil(n / block),) float32.
    """
    if block < 2 or block % 2:
        raise ValueError(f"block must be an even integer ≥ 2, got {block}")
    flat = weight.detach().reshape(-1).float()
    n = flat.numel()
    pad = (-n) % block
    blocks = F.pad(flat, (0, pad)).view(-1, block)  # (n_blocks, block)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scaled = blocks / absmax.clamp_min(torch.finfo(torch.float32).tiny)[:, None]  # in [−1, 1]
    levels = NF4_LEVELS.to(flat.device)
    midpoints = (levels[1:] + levels[:-1]) / 2  # 15 decision boundaries
    codes = torch.bucketize(scaled.reshape(-1), midpoints).to(torch.uint8)  # (n + pad,) in 0..15
    packed = (codes[0::2] << 4) | codes[1::2]  # (ceil(n/2) rounded to the block,)
    return packed[: (n + 1) // 2].contiguous(), absmax.contiguous()


def dequantize(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    shape: tuple[int, ...],
    block: int = BLOCK,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The weight ``quantize`` stored: NF4[code] · absmax of its block, reshaped to ``shape``."""
    n = 1
    for s in shape:
        n *= s
    codes = torch.stack(((packed >> 4) & 0xF, packed & 0xF), dim=1).reshape(-1)[:n].long()  # (n,)
    values = NF4_LEVELS.to(packed.device)[codes]
    scale = absmax.repeat_interleave(block)[:n]  # (n,)
    return (values * scale).reshape(shape).to(dtype)


class NF4Linear(nn.Module):
    """A frozen ``nn.Linear`` stored as NF4: the weight is dequantized on every forward, nothing trains."""

    def __init__(self, linear: nn.Linear, block: int = BLOCK):
        super().__init__()
        self.in_features, self.out_features, self.block = linear.in_features, linear.out_features, block
        packed, absmax = quantize(linear.weight, block)
        self.register_buffer("packed", packed)
        self.register_buffer("absmax", absmax)
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        )
        self.compute_dtype = linear.weight.dtype

    def dequantized(self) -> torch.Tensor:
        """(out, in) weight in the compute dtype."""
        return dequantize(
            self.packed, self.absmax, (self.out_features, self.in_features), self.block, self.compute_dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized(), self.bias)

    def storage_bytes(self) -> int:
        return (
            self.packed.numel() * self.packed.element_size()
            + self.absmax.numel() * self.absmax.element_size()
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, block={self.block}, nf4"


def quantize_linears(model: nn.Module, include: callable, block: int = BLOCK) -> list[str]:
    """Replace every ``nn.Linear`` whose name ``include(name)`` accepts with an ``NF4Linear``;
    returns the names."""
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear and include(n)]
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, NF4Linear(getattr(parent, attr), block))
    return names
