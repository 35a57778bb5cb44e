"""GGUF files (llama.cpp) as a lazy tensor store, read with the ``gguf`` package, the library that defines
the format (``pip install 'lorascope[gguf]'``).

GGUF records each tensor's dimensions fastest-varying first (``ne``); shapes here are row-major, ``ne``
reversed, as numpy and torch see them. Quantized tensors (Q8_0, Q4_K, …) and BF16 are dequantized to
float32 by ``gguf.quants.dequantize``; a type the installed package cannot dequantize is refused when the
file is opened. The keys of the metadata lorascope reads are named here (``GENERAL_TYPE``, ``LORA_ALPHA`` …).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import LorascopeError
from .dtypes import TensorInfo, bytes_to_numpy
from .tensor_store import TensorStore

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
                f"{self.path}: the installed gguf package ({gguf_version()}) cannot dequantize "
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


def gguf_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"gguf {version('gguf')}"
    except PackageNotFoundError:
        return "gguf"
