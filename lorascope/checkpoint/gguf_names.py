"""A GGUF adapter's modules paired with a Hugging Face base model: GGUF's tensor names mapped to the base's,
and the rows llama.cpp's converter reordered put back.

llama.cpp's converter reorders the rows of the query and key projections of some architectures
(``LlamaModel.permute`` in convert_hf_to_gguf, for rotary embeddings on adjacent pairs). Singular values
and norms do not depend on row order; when an adapter is paired with a Hugging Face base model its
factors are put back in the base's row order (``GGUFBaseNames.pair``), so the update with the base's
name is the base's update. The names come from the ``gguf`` package's ``TensorNameMap`` of the adapter's
architecture.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LorascopeError
from .base import Adapter, AdapterModule, TensorRef, Weights
from .tensor_store import TensorStore

if TYPE_CHECKING:
    import torch
from .gguf_file import ARCHITECTURE, CONVERTER_PREFIXES, PERMUTED_TENSORS, ROPE_PERMUTED, _BLOCK, gguf_package
from .gguf_file import gguf_version


class GGUFBaseNames:
    """A Hugging Face base model's tensor names in GGUF's vocabulary for one architecture.

    Each base key is translated with the ``gguf`` package's ``TensorNameMap`` for the adapter's
    ``general.architecture`` (after the converter's own prefix rewrites), exactly as convert_lora_to_gguf.py
    names the adapter's tensors; never by suffix. Two base keys that map to one GGUF name pair with neither.

    Raises:
        LorascopeError: the adapter declares no architecture, or one the installed gguf does not know.
    """

    def __init__(self, base: Weights, adapter: Adapter):
        gguf = gguf_package()
        arch = adapter.config.get(ARCHITECTURE)
        arches = {name: a for a, name in gguf.MODEL_ARCH_NAMES.items()}
        if arch not in arches:
            raise LorascopeError(
                f"{adapter.path}: {ARCHITECTURE} is {arch!r}, which the installed gguf package "
                f"({gguf_version()}) does not name; its tensors cannot be matched to the base model's. "
                "Upgrade gguf, or analyze the adapter alone."
            )
        self.base, self.arch, self.adapter_path = base, arch, adapter.path
        blocks = [int(m[1]) for mod in adapter.modules if (m := _BLOCK.match(mod.name))]
        tmap = _name_map(gguf, arches[arch], max(blocks, default=-1) + 1)
        self.key_of: dict[str, str | None] = {}
        for key in base.store.keys():
            gname = _gguf_name(tmap, key)
            if gname is not None:
                stem = gname.removesuffix(".weight")
                self.key_of[stem] = None if stem in self.key_of else key  # two base keys: ambiguous

    def find(self, name: str) -> str | None:
        """The base key of a GGUF module name ('blk.3.attn_q'; an expert 'blk.3.ffn_up_exps.5' has none)."""
        return self.key_of.get(name)

    def pair(self, m: AdapterModule) -> tuple[str | None, AdapterModule]:
        """(the base key, the module with its factors in the base's row order) for one GGUF module.

        Raises:
            LorascopeError: the rows must be put back in the base's order but the base's config.json,
                which gives the head counts, is not there.
        """
        key = self.find(m.name)
        if key is None:
            return None, m
        kind = m.name.rsplit(".", 1)[-1]
        if self.arch not in ROPE_PERMUTED or kind not in PERMUTED_TENSORS:
            return key, m
        return key, replace(m, parts={**m.parts, "up": self._unpermuted(m, kind)})

    def _unpermuted(self, m: AdapterModule, kind: str) -> TensorRef:
        cfg = self.base.config or {}
        heads = cfg.get("num_attention_heads")
        n = (cfg.get("num_key_value_heads") or heads) if kind == "attn_k" else heads
        if not isinstance(n, int) or n <= 0 or m.shape[0] % (2 * n):
            raise LorascopeError(
                f"{self.adapter_path}: llama.cpp's converter reordered the rows of {m.name} per attention "
                f"head ({self.arch} rotary layout); restoring the base's order needs the head counts "
                "(num_attention_heads, num_key_value_heads) from the base's config.json, which "
                f"{self.base.path} does not give. Give the base as its model folder with config.json."
            )
        up = m.parts["up"]
        perm = rope_row_order(m.shape[0], n)
        return TensorRef(RowOrder(up.store, {up.key: np.argsort(perm)}), up.key, up.view, up.rows, up.index)


def _name_map(gguf: Any, arch: Any, n_blocks: int) -> Any:
    """gguf's TensorNameMap, built on a copy of its class-level block table (its __init__ updates that table
    in place with architecture-specific entries, which would leak into maps built later for other models)."""
    tmap = gguf.TensorNameMap.__new__(gguf.TensorNameMap)
    tmap.block_mappings_cfg = dict(gguf.TensorNameMap.block_mappings_cfg)
    tmap.__init__(arch, n_blocks)
    return tmap


def _gguf_name(tmap: Any, key: str) -> str | None:
    for old, new in CONVERTER_PREFIXES:
        if key.startswith(old):
            key = new + key[len(old) :]
            break
    return tmap.get_name(key, try_suffixes=(".weight", ".bias"))


def rope_row_order(rows: int, heads: int) -> np.ndarray:
    """The row order llama.cpp's converter gives a query/key projection: GGUF row i is HF row order[i].

    ``LlamaModel.permute``: (heads, 2, d/2, …) -> swap axes 1, 2 -> (heads, d/2, 2, …), d = rows / heads,
    turning HF's rotate-half pairs (j, j + d/2) into adjacent pairs (2j, 2j + 1).
    """
    half = rows // heads // 2
    return np.arange(rows).reshape(heads, 2, half).swapaxes(1, 2).reshape(-1)


class RowOrder(TensorStore):
    """Some tensors of another store with their rows reordered: ``get(key) = inner.get(key)[order]``."""

    def __init__(self, inner: TensorStore, orders: dict[str, np.ndarray]):
        self.inner, self.orders = inner, orders
        super().__init__(inner.path)
        self.format = inner.format

    def _load(self) -> None:
        self._infos = {k: self.inner.info(k) for k in self.orders}

    def files(self) -> list[Path]:
        return self.inner.files()

    def _read(self, key: str) -> torch.Tensor:
        import torch

        return self.inner.get(key)[torch.from_numpy(self.orders[key])]

    def _read_numpy(self, key: str) -> np.ndarray:
        return self.inner.get_numpy(key)[self.orders[key]]
