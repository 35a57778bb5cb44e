"""GGUF files (llama.cpp): a lazy tensor store, LoRA adapters, and base-model names in GGUF's vocabulary.

Read with the ``gguf`` package (``pip install 'lorascope[gguf]'``), the library that defines the format.
What a GGUF LoRA adapter is comes from llama.cpp's ``convert_lora_to_gguf.py`` (which writes them) and
``src/llama-adapter.cpp`` (which loads them):

- an adapter: ``general.type = adapter`` and ``adapter.type = lora``;
- α: ``adapter.lora.alpha`` (float32). ΔW = s · B @ A with s = α / r, and s = 1 where α = 0 (llama.cpp's
  ``get_scale``; the runtime ``--lora-scaled`` factor, chosen at inference, is not part of the file);
- the factors: ``<base tensor>.lora_a`` = A (r, in) and ``<base tensor>.lora_b`` = B (out, r), e.g.
  ``blk.3.attn_q.weight.lora_a``; r is B's column count (llama.cpp: ``b->ne[0]``);
- the token embedding: ``token_embd.weight.lora_a`` is stored transposed, a (vocab, r), b (dim, r):
  ΔE (vocab, dim) = s · a @ bᵀ (llama.cpp ``llm_build_inp_embd``);
- the model: ``general.architecture`` (``llama``, ``qwen2``, …) selects the gguf ``TensorNameMap``
  that names its tensors.

GGUF records each tensor's dimensions fastest-varying first (``ne``); shapes here are row-major, ``ne``
reversed, as numpy and torch see them. Quantized tensors (Q8_0, Q4_K, …) and BF16 are dequantized to
float32 by ``gguf.quants.dequantize``; a type the installed package cannot dequantize is refused when the
file is opened.

llama.cpp's converter reorders the rows of the query and key projections of some architectures
(``LlamaModel.permute`` in convert_hf_to_gguf, for rotary embeddings on adjacent pairs). Singular values
and norms do not depend on row order; when an adapter is paired with a Hugging Face base model its
factors are put back in the base's row order (``GGUFBaseNames.pair``), so the update with the base's
name is the base's update.

This module does not own the update's formula (``lorascope.delta``) or the other formats' readers.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LorascopeError
from .base import Adapter, AdapterModule, TensorRef, Weights
from .store import TensorInfo, TensorStore, bytes_to_numpy

if TYPE_CHECKING:
    import torch

GGUF_MAGIC = b"GGUF"
GENERAL_TYPE = "general.type"
ARCHITECTURE = "general.architecture"
ADAPTER_TYPE = "adapter.type"
LORA_ALPHA = "adapter.lora.alpha"
FACTOR_SUFFIXES = {".lora_a": "a", ".lora_b": "b"}
TOKEN_EMBEDDING = "token_embd.weight"
_BLOCK = re.compile(r"^blk\.(\d+)\.")
_INSTALL = "pip install 'lorascope[gguf]'"

# ggml types read as they are (torch dtype names); every other type is dequantized to float32.
NATIVE_TYPES = {
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F64": "float64",
    "I8": "int8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
}

# Architectures whose llama.cpp converter reorders the query/key rows of each head (LlamaModel.permute:
# HF's rotate-half pairing -> adjacent pairs), verified in convert_hf_to_gguf / conversion/: LlamaModel
# (undo_permute = True; HF Llama and Mistral checkpoints), GraniteModel(LlamaModel), MiniCPMModel.
ROPE_PERMUTED = {"llama", "granite", "minicpm"}
PERMUTED_TENSORS = ("attn_q", "attn_k")  # LlamaModel.permute(q, n_head, n_head), (k, n_head, n_kv_head)

# Name rewrites the converter applies to base tensor names before its TensorNameMap lookup
# (convert_lora_to_gguf.py LoraModel.modify_tensors; LlamaModel for bare 'layers.' checkpoints).
CONVERTER_PREFIXES = (("model.language_model.", "model."), ("language_model.", ""))


def gguf_package() -> Any:
    """The ``gguf`` package, or a LorascopeError that says how to install it."""
    try:
        import gguf
    except ImportError:
        raise LorascopeError(
            f"reading GGUF files needs the gguf package (llama.cpp's reader); install it with: {_INSTALL}"
        ) from None
    return gguf


def is_gguf(path: Path) -> bool:
    """Whether a file starts with the GGUF magic (content, not the file name)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _field_value(field: Any) -> Any:
    """A scalar or string metadata value; arrays as lists; None for what cannot be read."""
    try:
        value = field.contents()
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    return value


class GGUFFile(TensorStore):
    """A GGUF file read with ``gguf.GGUFReader`` (memory-mapped): names, shapes and types without data.

    ``metadata`` holds the file's scalar and string key/values as strings (arrays such as a tokenizer's
    vocabulary are left out); ``fields`` the same values typed. ``ggml_type(key)`` names a tensor's stored
    type (F16, Q8_0, …); ``info(key).dtype`` is the dtype ``get`` returns.

    Raises:
        LorascopeError: the gguf package is missing, the file is damaged or truncated, big-endian, or holds
            a quantization type the installed gguf package cannot dequantize.
    """

    format = "gguf"
    _TRANSIENT = (*TensorStore._TRANSIENT, "_reader", "_tensors")

    def _load(self) -> None:
        gguf = gguf_package()
        reader = self._open_reader(gguf)
        self._reader, self._tensors = reader, {t.name: t for t in reader.tensors}
        self.fields: dict[str, Any] = {}
        for name, field in reader.fields.items():
            if name.startswith("GGUF.") or (field.types and field.types[0] == gguf.GGUFValueType.ARRAY):
                continue
            self.fields[name] = _field_value(field)
        self.metadata = {k: str(v) for k, v in self.fields.items() if v is not None}
        infos, problems = {}, []
        for t in reader.tensors:
            qtype = t.tensor_type.name
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # ne (fastest first) -> row-major
            if qtype not in NATIVE_TYPES and not _can_dequantize(gguf, t.tensor_type):
                problems.append(f"{t.name}: type {qtype}")
                continue
            infos[t.name] = TensorInfo(t.name, shape, NATIVE_TYPES.get(qtype, "float32"))
        if problems:
            raise LorascopeError(
                f"{self.path}: the installed gguf package ({_version()}) cannot dequantize "
                f"{len(problems)} tensor(s): "
                + "; ".join(problems[:10])
                + ". Upgrade it (pip install -U gguf) "
                "or re-export the adapter with convert_lora_to_gguf.py --outtype f32 (or f16, bf16, q8_0)."
            )
        self._infos = infos

    def _open_reader(self, gguf: Any) -> Any:
        size = self.path.stat().st_size
        try:
            reader = gguf.GGUFReader(self.path, "r")
        except (ValueError, IndexError, KeyError, OverflowError, TypeError, UnicodeDecodeError) as exc:
            raise LorascopeError(
                f"{self.path} is not a readable GGUF file ({size} bytes): gguf.GGUFReader says "
                f"'{str(exc)[:200]}'. The file is probably truncated or damaged; download or convert it "
                "again."
            ) from None
        if reader.byte_order != "I":
            raise LorascopeError(
                f"{self.path} is a big-endian GGUF file (convert_lora_to_gguf.py --bigendian); lorascope "
                "reads little-endian GGUF only. Convert the adapter again without --bigendian."
            )
        for t in reader.tensors:
            if t.data_offset + t.n_bytes > size:
                raise LorascopeError(
                    f"{self.path}: tensor {t.name} ends at byte {t.data_offset + t.n_bytes}, past the end of "
                    f"the file ({size} bytes); the file is truncated."
                )
        return reader

    def _tensor(self, key: str) -> Any:
        if self._reader is None:
            self._load()
        return self._tensors[key]  # type: ignore[index]

    def ggml_type(self, key: str) -> str:
        """The stored ggml type of a tensor: 'F32', 'F16', 'BF16', 'Q8_0', …"""
        self.info(key)
        return self._tensor(key).tensor_type.name

    def _read_numpy(self, key: str) -> np.ndarray:
        info, t = self._infos[key], self._tensor(key)  # type: ignore[index]
        qtype = t.tensor_type.name
        if qtype == "BF16":
            return bytes_to_numpy(bytearray(np.asarray(t.data).tobytes()), "bfloat16", info.shape)
        if qtype in NATIVE_TYPES:
            return np.array(t.data).reshape(info.shape)  # a copy: nothing stays mapped
        gguf = gguf_package()
        return np.asarray(gguf.quants.dequantize(np.asarray(t.data), t.tensor_type), np.float32).reshape(
            info.shape
        )

    def _read(self, key: str) -> torch.Tensor:
        import torch

        info = self._infos[key]  # type: ignore[index]
        if info.dtype == "bfloat16":
            raw = bytearray(np.asarray(self._tensor(key).data).tobytes())
            return torch.frombuffer(raw, dtype=torch.bfloat16).reshape(info.shape)
        return torch.from_numpy(self._read_numpy(key))


def _can_dequantize(gguf: Any, qtype: Any) -> bool:
    """Whether gguf.quants can dequantize a type: tried on one block of zeros."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.dequantize(np.zeros((1, size), np.uint8), qtype)
    except (NotImplementedError, ValueError, KeyError):
        return False
    return True


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"gguf {version('gguf')}"
    except PackageNotFoundError:
        return "gguf"


# ---- opening: an adapter, or a model's weights ------------------------------------------------------


def open_gguf(path: Path, store: GGUFFile | None = None) -> Weights | Adapter:
    """A GGUF file as a LoRA ``Adapter`` (``general.type = adapter``) or as a model's ``Weights``.

    Raises:
        LorascopeError: LoRA factors in a file that does not declare itself an adapter, or an adapter that
            is not a valid llama.cpp LoRA (see ``open_gguf_adapter``).
    """
    store = store or GGUFFile(path)
    kind = store.fields.get(GENERAL_TYPE)
    if kind == "adapter":
        return open_gguf_adapter(path, store)
    factors = [k for k in store.keys() if k.endswith(tuple(FACTOR_SUFFIXES))]
    if factors:
        raise LorascopeError(
            f"{path} holds LoRA factors (e.g. {factors[0]}) but its {GENERAL_TYPE} is {kind!r}, not "
            "'adapter'; llama.cpp refuses it as an adapter too. Convert the PEFT adapter again with "
            "convert_lora_to_gguf.py."
        )
    return Weights(path, "gguf", store, None)


def open_gguf_adapter(path: Path, store: GGUFFile) -> Adapter:
    """The LoRA modules of a llama.cpp adapter: family ``lora``, names as GGUF names (``blk.3.attn_q``).

    Raises:
        LorascopeError: ``adapter.type`` is not 'lora', ``adapter.lora.alpha`` is missing, or factors are
            unpaired, of unexpected names, not floating point or of shapes that do not chain (all listed).
    """
    alpha = _declared_alpha(path, store)
    pairs: dict[str, dict[str, str]] = {}
    vectors: dict[str, TensorRef] = {}
    problems: list[str] = []
    for key in store.keys():
        suffix = next((s for s in FACTOR_SUFFIXES if key.endswith(s)), None)
        if suffix is not None:
            pairs.setdefault(key[: -len(suffix)], {})[FACTOR_SUFFIXES[suffix]] = key
        elif key.endswith("_norm.weight") and len(store.info(key).shape) == 1:
            vectors[key.removesuffix(".weight")] = TensorRef(store, key)  # mergekit-extract-lora's norms
        else:
            problems.append(f"{key}: not a LoRA factor (.lora_a / .lora_b) nor a norm vector")
    modules: list[AdapterModule] = []
    for target, pair in sorted(pairs.items(), key=lambda kv: _natural(kv[0])):
        if set(pair) != {"a", "b"}:
            problems.append(f"{target}: only lora_{next(iter(pair))} is present")
            continue
        built = _modules(store, target, pair["a"], pair["b"], alpha, problems)
        modules.extend(built)
    if problems:
        raise LorascopeError(
            f"{path} is not a valid GGUF LoRA adapter:\n" + "\n".join(f"  - {p}" for p in problems[:20])
        )
    warnings = []
    if alpha == 0:
        warnings.append(
            {"name": "*", "reason": f"{LORA_ALPHA} = 0: scale 1 (llama.cpp applies α/r only when α ≠ 0)"}
        )
    config = {
        k: store.fields[k]
        for k in (GENERAL_TYPE, ADAPTER_TYPE, LORA_ALPHA, ARCHITECTURE, "general.name")
        if k in store.fields
    }
    return Adapter(path, "gguf", store, modules, {}, vectors, config, warnings)


def _declared_alpha(path: Path, store: GGUFFile) -> float:
    adapter_type = store.fields.get(ADAPTER_TYPE)
    if adapter_type != "lora":
        raise LorascopeError(
            f"{path} is a GGUF adapter whose {ADAPTER_TYPE} is {adapter_type!r}; lorascope reads LoRA "
            f"adapters ({ADAPTER_TYPE} = 'lora', as convert_lora_to_gguf.py writes them)."
        )
    alpha = store.fields.get(LORA_ALPHA)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not np.isfinite(alpha):
        found = "missing" if alpha is None else f"{alpha!r}"
        raise LorascopeError(
            f"{path}: the GGUF LoRA adapter's {LORA_ALPHA} is {found}; the update's scale s = α/r needs it. "
            "convert_lora_to_gguf.py writes it from adapter_config.json's lora_alpha: convert the adapter "
            "again."
        )
    if alpha < 0:  # 0 means scale 1 in llama.cpp; a negative α is no scale any tool writes
        raise LorascopeError(
            f"{path}: the GGUF LoRA adapter's {LORA_ALPHA} is {alpha!r}; an alpha must be finite and "
            "non-negative (0 means scale 1, as llama.cpp reads it). The file is damaged: convert the adapter again."
        )
    return float(alpha)


def _natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _modules(
    store: GGUFFile, target: str, a_key: str, b_key: str, alpha: float, problems: list[str]
) -> list[AdapterModule]:
    """The AdapterModule(s) of one factor pair: one, or one per expert of a stacked (E, …) pair."""
    a, b = store.info(a_key), store.info(b_key)
    if not (a.is_float and b.is_float):
        problems.append(f"{target}: factors of dtype {a.dtype} / {b.dtype}, not floating point")
        return []
    name = target.removesuffix(".weight")
    if target == TOKEN_EMBEDDING and len(a.shape) == 2 == len(b.shape):
        # a (vocab, r), b (dim, r): ΔE (vocab, dim) = s · a @ bᵀ (llama.cpp llm_build_inp_embd)
        if a.shape[1] != b.shape[1]:
            problems.append(
                f"{target}: lora_a {list(a.shape)} and lora_b {list(b.shape)} have different ranks"
            )
            return []
        rank = b.shape[1]
        parts = {"up": TensorRef(store, a_key), "down": TensorRef(store, b_key, "transpose")}
        return [_module(name, parts, (a.shape[0], b.shape[0]), rank, alpha, "embedding")]
    if len(a.shape) == 2 == len(b.shape):
        # A (r, in), B (out, r): ΔW (out, in) = s · B @ A
        if a.shape[0] != b.shape[1]:
            problems.append(f"{target}: lora_b {list(b.shape)} @ lora_a {list(a.shape)} do not chain")
            return []
        parts = {"up": TensorRef(store, b_key), "down": TensorRef(store, a_key)}
        return [_module(name, parts, (b.shape[0], a.shape[1]), a.shape[0], alpha, "linear")]
    if len(a.shape) == 3 == len(b.shape) and a.shape[0] in (1, b.shape[0]) and a.shape[1] == b.shape[2]:
        # stacked experts (convert_lora_to_gguf stacks A and B; A's leading dim may be 1, shared)
        out = []
        for e in range(b.shape[0]):
            parts = {
                "up": TensorRef(store, b_key, index=e),
                "down": TensorRef(store, a_key, index=min(e, a.shape[0] - 1)),
            }
            out.append(_module(f"{name}.{e}", parts, (b.shape[1], a.shape[2]), a.shape[1], alpha, "linear"))
        return out
    problems.append(f"{target}: lora_a {list(a.shape)} and lora_b {list(b.shape)} are not LoRA factor shapes")
    return []


def _module(
    name: str, parts: dict[str, TensorRef], shape: tuple[int, int], rank: int, alpha: float, kind: str
) -> AdapterModule:
    scale = alpha / rank if alpha else 1.0  # llama_adapter_lora_weight::get_scale
    return AdapterModule(name, "lora", parts, shape, rank, alpha, scale, kind, "gguf")


# ---- pairing with a Hugging Face base model ------------------------------------------------------------


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
                f"({_version()}) does not name; its tensors cannot be matched to the base model's. Upgrade "
                "gguf, or analyze the adapter alone."
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
        return TensorRef(RowOrder(up.store, {up.key: np.argsort(perm)}), up.key, up.layout, up.rows, up.index)


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
