"""Hostile and damaged inputs, generated: each builder writes one input into a folder and says how to run it.

A ``Case`` names the command line (``{in}`` is the folder the builder wrote into, ``{out}`` an output folder
that already holds earlier results), the exit code lorascope must end with, and the texts its message must
contain (the file, key or value it names). The test runs each through the CLI and checks, besides those, that
no input file changed (sha256), that a refused run left the earlier results byte for byte, and that no
traceback and no "unexpected" error was shown.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

R, COLS, ROWS = 2, 4, 4  # LoRA factors of the clean file: A (R, COLS), B (ROWS, R)
MODULE = "transformer.blocks.0.attn.to_q"


@dataclass
class Case:
    args: list[str]
    code: int = 2
    names: list[str] = field(default_factory=list)  # texts the output must contain
    absent: list[str] = field(default_factory=list)  # texts it must not contain
    after: Callable[[Path], None] | None = None  # further checks on the case folder after the run


CASES: dict[str, Callable[[Path], Case]] = {}


def case(name: str):
    def register(fn: Callable[[Path], Case]) -> Callable[[Path], Case]:
        assert name not in CASES, name
        CASES[name] = fn
        return fn

    return register


# ---- safetensors written byte by byte --------------------------------------------------------------------


def clean_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        f"{MODULE}.lora_A.weight": rng.standard_normal((R, COLS)).astype(np.float32),
        f"{MODULE}.lora_B.weight": rng.standard_normal((ROWS, R)).astype(np.float32),
    }


def clean_header() -> tuple[dict, bytes]:
    header, data, offset = {}, b"", 0
    for key, arr in clean_tensors().items():
        raw = arr.tobytes()
        header[key] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    return header, data


def raw_safetensors(
    path: Path, header: dict | bytes | str, data: bytes, length: int | None = None, tail: bytes = b""
) -> Path:
    text = header if isinstance(header, (bytes, str)) else json.dumps(header)
    blob = text.encode("utf-8") if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(blob) if length is None else length) + blob + data + tail)
    return path


def header_case(
    mutate: Callable[[dict, bytes], tuple], names: tuple[str, ...] = ("lora.safetensors",), code: int = 2
) -> Callable[[Path], Case]:
    """A case from a mutation of the clean header: mutate(header, data) -> (header, data[, length[,
    tail]])."""

    def build(folder: Path) -> Case:
        header, data = clean_header()
        raw_safetensors(folder / "lora.safetensors", *mutate(header, data))
        return Case(
            ["spectrum", "{in}/lora.safetensors", "--out", "{out}", "-q", "--no-report"], code, list(names)
        )

    return build


A, B = f"{MODULE}.lora_A.weight", f"{MODULE}.lora_B.weight"


def _set(key: str, field_: str, value) -> Callable[[dict, bytes], tuple]:
    def mutate(h: dict, d: bytes) -> tuple:
        h[key][field_] = value
        return h, d

    return mutate


HEADER_MUTATIONS: dict[str, Callable[[dict, bytes], tuple]] = {
    "negative-offset": _set(A, "data_offsets", [-8, 24]),
    "overlapping-offsets": _set(B, "data_offsets", [0, 32]),
    "overlap-partial": _set(B, "data_offsets", [16, 48]),
    "gap-between-tensors": lambda h, d: (
        _set(B, "data_offsets", [36, 68])(h, d)[0],
        d[:32] + b"\0" * 4 + d[32:],
    ),
    "end-before-start": _set(A, "data_offsets", [32, 0]),
    "offsets-past-file": _set(B, "data_offsets", [32, 1064]),
    "span-shorter-than-shape": _set(A, "shape", [3, 4]),
    "span-longer-than-shape": _set(A, "shape", [1, 4]),
    "dtype-unknown": _set(A, "dtype", "F33"),
    "dtype-lowercase": _set(A, "dtype", "f32"),
    "dtype-number": _set(A, "dtype", 5),
    "dtype-missing": lambda h, d: (h[A].pop("dtype"), (h, d))[1],
    "dtype-f16-for-f32-span": _set(A, "dtype", "F16"),
    "shape-negative": _set(A, "shape", [-2, 4]),
    "shape-bool": _set(A, "shape", [True, 8]),
    "shape-float": _set(A, "shape", [2.0, 4]),
    "shape-string": _set(A, "shape", "2x4"),
    "shape-huge-60000x60000": _set(A, "shape", [60000, 60000]),
    "shape-overflow": _set(A, "shape", [2**40, 2**40]),
    "shape-missing": lambda h, d: (h[A].pop("shape"), (h, d))[1],
    "shape-null": _set(A, "shape", None),
    "offsets-three": _set(A, "data_offsets", [0, 16, 32]),
    "offsets-strings": _set(A, "data_offsets", ["0", "32"]),
    "offsets-floats": _set(A, "data_offsets", [0.0, 32.0]),
    "offsets-missing": lambda h, d: (h[A].pop("data_offsets"), (h, d))[1],
    "offsets-null": _set(A, "data_offsets", None),
    "entry-is-a-list": lambda h, d: ({**h, A: [1, 2]}, d),
    "entry-is-a-string": lambda h, d: ({**h, A: "F32"}, d),
    "metadata-not-strings": lambda h, d: ({"__metadata__": {"a": 1}, **h}, d),
    "metadata-a-list": lambda h, d: ({"__metadata__": ["a"], **h}, d),
    "metadata-nested": lambda h, d: ({"__metadata__": {"a": {"b": "c"}}, **h}, d),
    "duplicate-key": lambda h, d: (json.dumps(h)[:-1] + ", " + json.dumps({A: h[A]})[1:], d),
    "header-is-an-array": lambda h, d: ("[]", d),
    "header-is-a-string": lambda h, d: ('"x"', d),
    "header-not-json": lambda h, d: ("{abc", d),
    "header-not-utf8": lambda h, d: (b'{"\xff\xfe": 1}', d),
    "header-nested-100000-deep": lambda h, d: ('{"a": ' + "[" * 100000 + "]" * 100000 + "}", d),
    "header-nan-literal": lambda h, d: (json.dumps(h).replace("[2, 4]", "[NaN, 4]", 1), d),
    "header-infinity-literal": lambda h, d: (json.dumps(h).replace("[2, 4]", "[Infinity, 4]", 1), d),
    "header-length-zero": lambda h, d: (json.dumps(h), d, 0),
    "header-length-one": lambda h, d: (json.dumps(h), d, 1),
    "header-length-2^63": lambda h, d: (json.dumps(h), d, 2**63),
    "header-length-past-file": lambda h, d: (json.dumps(h), d, 10_000),
    "header-length-short-by-one": lambda h, d: (json.dumps(h), d, len(json.dumps(h)) - 1),
    "header-starts-with-whitespace-only": lambda h, d: ("  ", d),
    "trailing-bytes": lambda h, d: (h, d, None, b"\0" * 16),
    "truncated-data": lambda h, d: (h, d[:40]),
    "no-data-at-all": lambda h, d: (h, b""),
    "both-tensors-one-span": lambda h, d: (
        _set(B, "data_offsets", [0, 32])(*_set(A, "data_offsets", [0, 32])(h, d))[0],
        d[:32],
    ),
    "lora-a-scalar": lambda h, d: _scalar(h, d),
    "lora-a-nan-values": lambda h, d: (h, np.full(8, np.nan, np.float32).tobytes() + d[32:]),
    "lora-b-inf-values": lambda h, d: (h, d[:32] + np.full(8, np.inf, np.float32).tobytes()),
    "lora-a-bool-dtype": lambda h, d: ({**h, A: {**h[A], "dtype": "BOOL", "shape": [2, 16]}}, d),
}


def _scalar(h: dict, d: bytes) -> tuple:
    h[A] = {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}
    h[B]["data_offsets"] = [4, 36]
    return h, d[:4] + d[32:]


for _name, _mutate in HEADER_MUTATIONS.items():
    case(f"safetensors-{_name}")(header_case(_mutate))

# controls: files the library accepts must be read (exit 0), not refused by an over-strict reader
for _name, _mutate in {
    "offsets-listed-out-of-order": lambda h, d: ({B: h[B], A: h[A]}, d),
    "metadata-null": lambda h, d: ({"__metadata__": None, **h}, d),
    "header-padded-with-spaces": lambda h, d: (json.dumps(h) + "    ", d),
    "metadata-strings": lambda h, d: ({"__metadata__": {"format": "pt"}, **h}, d),
    # (r, in, k): a Conv1d LoRA, flattened to (r, in·k)
    "conv1d-lora-a-three-dims": _set(A, "shape", [2, 2, 2]),
    "header-starts-with-space": lambda h, d: (" " + json.dumps(h), d),  # JSON allows it; so does the library
}.items():
    case(f"control-safetensors-{_name}")(header_case(_mutate, (), code=0))


@case("safetensors-empty-file")
def _(folder: Path) -> Case:
    (folder / "lora.safetensors").write_bytes(b"")
    return Case(["spectrum", "{in}/lora.safetensors", "--out", "{out}", "-q"], 2, ["lora.safetensors"])


@case("safetensors-seven-bytes")
def _(folder: Path) -> Case:
    (folder / "lora.safetensors").write_bytes(b"\x08\0\0\0\0\0\0")
    return Case(["spectrum", "{in}/lora.safetensors", "--out", "{out}", "-q"], 2, ["lora.safetensors"])


@case("safetensors-header-over-100MB-limit")
def _(folder: Path) -> Case:
    path = folder / "lora.safetensors"
    with open(path, "wb") as fh:  # a sparse file: 100,000,001 header bytes claimed and present, mostly holes
        fh.write(struct.pack("<Q", 100_000_001) + b"{")
        fh.truncate(8 + 100_000_001 + 64)
    return Case(["spectrum", "{in}/lora.safetensors", "--out", "{out}", "-q"], 2, ["lora.safetensors"])


@case("params-safetensors-overlapping-offsets")
def _(folder: Path) -> Case:
    header, data = clean_header()
    raw_safetensors(folder / "w.safetensors", *HEADER_MUTATIONS["overlapping-offsets"](header, data))
    return Case(["params", "{in}/w.safetensors", "--out", "{out}"], 2, ["w.safetensors"])


@case("safetensors-huge-tensor-claimed-by-a-sparse-file")
def _(folder: Path) -> Case:
    # a well-formed header whose 60000×60000 float32 tensor (14.4 GB) lies in a sparse file: never read whole
    n = 60000 * 60000 * 4
    header = {
        f"{MODULE}.lora_A.weight": {"dtype": "F32", "shape": [60000, 60000], "data_offsets": [0, n]},
        f"{MODULE}.lora_B.weight": {"dtype": "F32", "shape": [60000, 60000], "data_offsets": [n, 2 * n]},
    }
    blob = json.dumps(header).encode()
    path = folder / "lora.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.truncate(8 + len(blob) + 2 * n)
    return Case(
        ["spectrum", "{in}/lora.safetensors", "--out", "{out}", "-q", "--no-report"],
        2,
        ["lora.safetensors", "LORASCOPE_MAX_READ"],
    )


# ---- torch pickles -------------------------------------------------------------------------------------

SENTINEL = "code-ran.txt"


class _Evil:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (eval, (f"open({self.target!r}, 'w').write('pwned')",))


def _peft_config(folder: Path, **cfg) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": R, "lora_alpha": 4, "target_modules": ["to_q"], **cfg})
    )


def _peft_tensors() -> dict[str, torch.Tensor]:
    return {
        f"base_model.model.{k.replace('.weight', '.weight')}": torch.from_numpy(v)
        for k, v in clean_tensors().items()
    }


def _code_pickle(folder: Path, name: str) -> Path:
    import pickle

    path = folder / name
    payload = {"state_dict": {"x": _Evil(str(folder / SENTINEL))}}
    path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


def _no_code_ran(folder: Path) -> None:
    assert not (folder / SENTINEL).exists(), "a pickle ran code"


for _label, _file in (("bin", "adapter_model.bin"), ("named-safetensors", "adapter_model.safetensors")):

    def _build(folder: Path, _file=_file) -> Case:
        ad = folder / "ad"
        _peft_config(ad)
        _code_pickle(ad, _file)
        return Case(["spectrum", "{in}/ad", "--out", "{out}", "-q"], 2, [_file], after=_no_code_ran)

    case(f"pickle-runs-code-{_label}")(_build)


@case("pickle-runs-code-zip-torch-file")
def _(folder: Path) -> Case:
    torch.save({"w": _Evil(str(folder / SENTINEL))}, folder / "model.pt")
    return Case(
        ["spectrum", "{in}/model.pt", "{in}/model.pt", "--out", "{out}", "-q"],
        2,
        ["model.pt"],
        after=_no_code_ran,
    )


@case("pickle-named-model-safetensors-in-a-model-folder")
def _(folder: Path) -> Case:
    for side in ("base", "tuned"):
        (folder / side).mkdir()
        (folder / side / "config.json").write_text(json.dumps({"model_type": "llama"}))
        torch.save({"w": _Evil(str(folder / SENTINEL))}, folder / side / "model.safetensors")
    return Case(
        ["spectrum", "{in}/base", "{in}/tuned", "--out", "{out}", "-q"],
        2,
        ["model.safetensors"],
        after=_no_code_ran,
    )


def _torch_case(name: str, make: Callable[[Path], None], names: tuple[str, ...] = ("adapter_model.bin",)):
    def build(folder: Path) -> Case:
        ad = folder / "ad"
        _peft_config(ad)
        make(ad / "adapter_model.bin")
        return Case(["spectrum", "{in}/ad", "--out", "{out}", "-q"], 2, list(names))

    case(f"pickle-{name}")(build)


def _nested_list_pickle(path: Path, depth: int = 100_000) -> None:
    # EMPTY_LIST × depth, APPEND × (depth − 1): a list nested 100,000 deep, built without recursion
    path.write_bytes(b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b".")


def _truncated_zip(path: Path) -> None:
    torch.save(_peft_tensors(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


_torch_case("a-list", lambda p: torch.save([1, 2, 3], p))
_torch_case("no-tensors", lambda p: torch.save({"a": 1, "b": "x"}, p))
_torch_case("truncated-zip", _truncated_zip)
_torch_case("zip-magic-then-garbage", lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00garbage" * 20))
_torch_case("legacy-magic-then-garbage", lambda p: p.write_bytes(b"\x80\x02garbage"))
_torch_case("nested-100000-deep", _nested_list_pickle)
_torch_case("empty-file", lambda p: p.write_bytes(b""))
_torch_case(
    "complex-lora-factors",
    lambda p: torch.save({k: v.to(torch.complex64) for k, v in _peft_tensors().items()}, p),
)
_torch_case(
    "float64-complex128-factors",
    lambda p: torch.save({k: v.to(torch.complex128) for k, v in _peft_tensors().items()}, p),
)
_torch_case(
    "int-lora-factors", lambda p: torch.save({k: v.to(torch.int32) for k, v in _peft_tensors().items()}, p)
)
_torch_case("state-dict-is-a-tensor", lambda p: torch.save(torch.zeros(3), p))


# ---- sharded indexes and paths -------------------------------------------------------------------------


def _shard(path: Path, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors or {"layers.0.q.weight": torch.ones(2, 2)}, str(path))
    return path


def _index(folder: Path, weight_map, text: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors.index.json").write_text(
        text if text is not None else json.dumps({"weight_map": weight_map})
    )


def index_case(
    name: str, make: Callable[[Path], None], names: tuple[str, ...] = ("model.safetensors.index.json",)
):
    def build(folder: Path) -> Case:
        _shard(folder / "base" / "model.safetensors")
        make(folder / "tuned")
        return Case(["spectrum", "{in}/base", "{in}/tuned", "--out", "{out}", "-q"], 2, list(names))

    case(f"index-{name}")(build)


def _outside(f: Path) -> None:
    _shard(f.parent / "elsewhere" / "x.safetensors")
    _index(f, {"layers.0.q.weight": "../elsewhere/x.safetensors"})


def _absolute(f: Path) -> None:
    target = _shard(f.parent / "elsewhere" / "x.safetensors")
    _index(f, {"layers.0.q.weight": str(target)})


def _symlink_out(f: Path) -> None:
    target = _shard(f.parent / "elsewhere" / "x.safetensors")
    f.mkdir(parents=True)
    (f / "x.safetensors").symlink_to(target)
    _index(f, {"layers.0.q.weight": "x.safetensors"})


def _names_itself(f: Path) -> None:
    _index(f, {"layers.0.q.weight": "model.safetensors.index.json"})


def _names_index(f: Path) -> None:
    _index(f, {"layers.0.q.weight": "other.index.json"})
    back = {"weight_map": {"layers.0.q.weight": "model.safetensors.index.json"}}
    (f / "other.index.json").write_text(json.dumps(back))


def _dir_shard(f: Path) -> None:
    (f / "shard.safetensors").mkdir(parents=True)
    _index(f, {"layers.0.q.weight": "shard.safetensors"})


def _big_index(f: Path) -> None:
    f.mkdir(parents=True)
    with open(f / "model.safetensors.index.json", "wb") as fh:
        fh.write(b'{"weight_map": {}}')
        fh.truncate(65 * 1024 * 1024)


index_case("shard-outside-the-folder", _outside)
index_case("shard-absolute-path", _absolute)
index_case("shard-symlink-outside", _symlink_out, ("x.safetensors",))
index_case("names-itself", _names_itself)
index_case("names-another-index", _names_index)
index_case("missing-shard", lambda f: _index(f, {"layers.0.q.weight": "gone.safetensors"}))
index_case("weight-map-a-list", lambda f: _index(f, ["x.safetensors"]))
index_case("weight-map-values-numbers", lambda f: _index(f, {"layers.0.q.weight": 3}))
index_case("not-json", lambda f: _index(f, None, "{weight_map"))
index_case(
    "nested-100000-deep", lambda f: _index(f, None, '{"weight_map": ' + "[" * 100000 + "]" * 100000 + "}")
)
index_case("duplicate-keys", lambda f: _index(f, None, '{"weight_map": {}, "weight_map": {}}'))
index_case("nul-in-shard-name", lambda f: _index(f, {"layers.0.q.weight": "x\u0000.safetensors"}))
index_case("home-relative-shard", lambda f: _index(f, {"layers.0.q.weight": "~/x.safetensors"}))
index_case("shard-is-a-folder", _dir_shard)
index_case("over-64MB", _big_index)
index_case(
    "lists-a-tensor-no-shard-holds",
    lambda f: (
        _shard(f / "s.safetensors"),
        _index(f, {"layers.0.q.weight": "s.safetensors", "layers.9.q.weight": "s.safetensors"}),
    ),
)


@case("folder-weights-symlinked-outside")
def _(folder: Path) -> Case:
    _shard(folder / "base" / "model.safetensors")
    target = _shard(folder / "elsewhere" / "secret.safetensors")
    (folder / "tuned").mkdir()
    (folder / "tuned" / "model.safetensors").symlink_to(target)
    return Case(["spectrum", "{in}/base", "{in}/tuned", "--out", "{out}", "-q"], 2, ["model.safetensors"])


@case("control-hub-cache-snapshot-symlinks-into-blobs")
def _(folder: Path) -> Case:
    repo = folder / "models--org--m"
    blob = _shard(repo / "blobs" / "0123abcd", {"layers.0.q.weight": torch.full((2, 2), 2.0)})
    snap = repo / "snapshots" / "rev1"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(Path("../../blobs") / blob.name)
    _shard(folder / "base" / "model.safetensors")
    return Case(
        [
            "spectrum",
            "{in}/base",
            str(snap).replace(str(folder), "{in}"),
            "--out",
            "{out}",
            "-q",
            "--no-report",
        ],
        0,
    )


# ---- PEFT configs ----------------------------------------------------------------------------------------


def peft_case(
    name: str,
    config_text: str | bytes | None = None,
    names: tuple[str, ...] = ("adapter_config.json",),
    code: int = 2,
    **cfg,
) -> None:
    def build(folder: Path) -> Case:
        from safetensors.torch import save_file

        ad = folder / "ad"
        _peft_config(ad, **cfg)
        if config_text is not None:
            raw = config_text if isinstance(config_text, bytes) else config_text.encode("utf-8")
            (ad / "adapter_config.json").write_bytes(raw)
        save_file(_peft_tensors(), str(ad / "adapter_model.safetensors"))
        return Case(["spectrum", "{in}/ad", "--out", "{out}", "-q", "--no-report"], code, list(names))

    case(f"peft-{name}")(build)


_base_cfg = {"peft_type": "LORA", "r": R, "target_modules": ["to_q"]}
peft_case("alpha-infinity-literal", json.dumps(_base_cfg)[:-1] + ', "lora_alpha": Infinity}')
peft_case("alpha-nan-literal", json.dumps(_base_cfg)[:-1] + ', "lora_alpha": NaN}')
peft_case("alpha-1e400", json.dumps(_base_cfg)[:-1] + ', "lora_alpha": 1e400}', ("lora_alpha",))
peft_case("alpha-zero", names=("lora_alpha",), lora_alpha=0)
peft_case("alpha-negative", names=("lora_alpha",), lora_alpha=-4)
peft_case("alpha-string", names=("lora_alpha",), lora_alpha="16")
peft_case("alpha-bool", names=("lora_alpha",), lora_alpha=True)
peft_case("r-zero", names=("'r'",), r=0)
peft_case("r-negative", names=("'r'",), r=-2)
peft_case("r-fraction", names=("'r'",), r=2.5)
peft_case("r-string", names=("'r'",), r="2")
peft_case("r-bool", names=("'r'",), r=True)
peft_case("r-1e400", json.dumps({**_base_cfg, "lora_alpha": 4}).replace(f'"r": {R}', '"r": 1e400'), ("'r'",))
peft_case("rank-pattern-zero", names=("rank_pattern",), rank_pattern={"to_q": 0})
peft_case("rank-pattern-fraction", names=("rank_pattern",), rank_pattern={"to_q": 1.5})
peft_case("rank-pattern-negative", names=("rank_pattern",), rank_pattern={"to_q": -1})
peft_case("alpha-pattern-zero", names=("alpha_pattern",), alpha_pattern={"to_q": 0})
peft_case(
    "alpha-pattern-infinity",
    json.dumps({**_base_cfg, "lora_alpha": 4, "alpha_pattern": {"to_q": 1}}).replace(
        '"to_q": 1}', '"to_q": Infinity}'
    ),
)
peft_case(
    "alpha-pattern-1e999",
    json.dumps({**_base_cfg, "lora_alpha": 4, "alpha_pattern": {"to_q": 1}}).replace(
        '"to_q": 1}', '"to_q": 1e999}'
    ),
    ("alpha_pattern",),
)
peft_case("rank-pattern-bad-regex", names=("rank_pattern",), rank_pattern={"(": 4})
peft_case("config-not-json", "{r: 8")
peft_case("config-an-array", "[1, 2]")
peft_case("config-nested-100000-deep", '{"r": 2, "x": ' + "[" * 100000 + "]" * 100000 + "}")
peft_case("config-duplicate-r", '{"peft_type": "LORA", "r": 2, "r": 64, "lora_alpha": 4}')
peft_case("config-not-utf8", b'{"r": 2, "lora_alpha": 4, "x": "\xff"}')
peft_case("config-peft-type-not-lora", names=("BOGUS",), peft_type="BOGUS")
peft_case("rank-pattern-a-list", names=("rank_pattern",), rank_pattern=["to_q"])


@case("peft-config-over-64MB")
def _(folder: Path) -> Case:
    from safetensors.torch import save_file

    ad = folder / "ad"
    ad.mkdir()
    with open(ad / "adapter_config.json", "wb") as fh:
        fh.write(b'{"r": 2}')
        fh.truncate(65 * 1024 * 1024)
    save_file(_peft_tensors(), str(ad / "adapter_model.safetensors"))
    return Case(["spectrum", "{in}/ad", "--out", "{out}", "-q"], 2, ["adapter_config.json"])


# ---- kohya / diffusers alphas ------------------------------------------------------------------------------


def kohya_case(
    name: str,
    alpha: np.ndarray | None,
    metadata: dict | None = None,
    code: int = 2,
    names: tuple[str, ...] = ("lora.safetensors",),
) -> None:
    def build(folder: Path) -> Case:
        from safetensors.numpy import save_file

        stem = "lora_unet_mid_block_attentions_0_to_q"
        t = clean_tensors()
        tensors = {f"{stem}.lora_down.weight": t[A], f"{stem}.lora_up.weight": t[B]}
        if alpha is not None:
            tensors[f"{stem}.alpha"] = alpha
        save_file(tensors, str(folder / "lora.safetensors"), metadata=metadata)
        return Case(
            ["spectrum", "{in}/lora.safetensors", "--out", "{out}", "-q", "--no-report"], code, list(names)
        )

    case(f"kohya-{name}")(build)


kohya_case("empty-alpha", np.zeros(0, np.float32), names=("lora.safetensors", ".alpha"))
kohya_case("two-alphas", np.ones(2, np.float32), names=(".alpha",))
kohya_case("nan-alpha", np.array(np.nan, np.float32), names=(".alpha",))
kohya_case("inf-alpha", np.array(np.inf, np.float32), names=(".alpha",))
kohya_case("negative-alpha", np.array(-4.0, np.float32), names=(".alpha",))


def diffusers_case(name: str, value: str) -> None:
    def build(folder: Path) -> Case:
        from safetensors.numpy import save_file

        t = clean_tensors()
        stem = "unet.mid_block.attentions.0.to_q"
        save_file(
            {f"{stem}.lora.down.weight": t[A], f"{stem}.lora.up.weight": t[B]},
            str(folder / "lora.safetensors"),
            metadata={"ss_network_alpha": value},
        )
        return Case(
            ["spectrum", "{in}/lora.safetensors", "--out", "{out}", "-q", "--no-report"],
            2,
            ["lora.safetensors", "ss_network_alpha"],
        )

    case(f"diffusers-{name}")(build)


diffusers_case("metadata-alpha-inf", "inf")
diffusers_case("metadata-alpha-nan", "nan")
diffusers_case("metadata-alpha-negative", "-3")
diffusers_case("metadata-alpha-1e999", "1e999")
kohya_case("control-alpha-zero-means-rank", np.array(0.0, np.float32), code=0, names=())


# ---- pairing by declared names ---------------------------------------------------------------------------


def pair_case(
    name: str,
    base: dict[str, tuple],
    tuned: dict[str, tuple],
    code: int,
    names: tuple[str, ...] = (),
    after: Callable[[Path], None] | None = None,
) -> None:
    def build(folder: Path) -> Case:
        g = torch.Generator().manual_seed(1)
        _shard(folder / "base.safetensors", {k: torch.randn(*s, generator=g) for k, s in base.items()})
        _shard(folder / "tuned.safetensors", {k: torch.randn(*s, generator=g) for k, s in tuned.items()})
        return Case(
            [
                "spectrum",
                "{in}/base.safetensors",
                "{in}/tuned.safetensors",
                "--out",
                "{out}",
                "-q",
                "--no-report",
            ],
            code,
            list(names),
            after=after,
        )

    case(f"pairing-{name}")(build)


pair_case(
    "vision-vs-text-tower",
    {"vision_tower.proj.weight": (4, 4)},
    {"text_tower.proj.weight": (4, 4)},
    2,
    ("share no tensor names",),
)
pair_case(
    "ambiguous-base-names",
    {"model.layers.0.q.weight": (4, 4), "layers.0.q.weight": (4, 4)},
    {"transformer.layers.0.q.weight": (4, 4)},
    2,
    ("ambiguous",),
)
pair_case(
    "two-tuned-names-one-base",
    {"layers.0.q.weight": (4, 4)},
    {"model.layers.0.q.weight": (4, 4), "layers.0.q.weight": (4, 4)},
    2,
    ("both match",),
)


def _only_layers(folder: Path) -> None:
    import pandas as pd

    out = folder.parent / "out"
    assert list(pd.read_csv(out / "modules.csv")["name"]) == ["layers.0.q"]
    warned = {w["name"]: w["reason"] for w in json.loads((out / "summary.json").read_text())["warnings"]}
    assert "only in the tuned checkpoint" in warned["text_tower.proj.weight"]


pair_case(
    "control-towers-reported-unpaired",
    {"vision_tower.proj.weight": (4, 4), "layers.0.q.weight": (4, 4)},
    {"text_tower.proj.weight": (4, 4), "layers.0.q.weight": (4, 4)},
    0,
    after=_only_layers,
)
pair_case(
    "control-transformer-prefix",
    {"h.0.attn.c_attn.weight": (4, 4)},
    {"transformer.h.0.attn.c_attn.weight": (4, 4)},
    0,
)


@case("compare-unrelated-adapters")
def _(folder: Path) -> Case:
    from safetensors.torch import save_file

    for side, mod in (("x", "vision_tower.proj"), ("y", "text_tower.proj")):
        ad = folder / side
        _peft_config(ad)
        t = clean_tensors()
        save_file(
            {
                f"base_model.model.{mod}.lora_A.weight": torch.from_numpy(t[A]),
                f"base_model.model.{mod}.lora_B.weight": torch.from_numpy(t[B]),
            },
            str(ad / "adapter_model.safetensors"),
        )
    return Case(
        ["compare", "{in}/x", "{in}/y", "--out", "{out}", "-q", "--no-report"], 2, ["share no module"]
    )


# ---- model configs and claims files ------------------------------------------------------------------------

LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": 100,
}


def config_case(name: str, text: str, names: tuple[str, ...] = ("config.json",)) -> None:
    def build(folder: Path) -> Case:
        (folder / "config.json").write_text(text)
        return Case(["params", "{in}/config.json", "--shapes", "rules", "--out", "{out}"], 2, list(names))

    case(f"config-{name}")(build)


config_case("layers-1e12", json.dumps({**LLAMA, "num_hidden_layers": 1e12}), ("num_hidden_layers",))
config_case("layers-10^12", json.dumps({**LLAMA, "num_hidden_layers": 10**12}), ("num_hidden_layers",))
config_case("layers-negative", json.dumps({**LLAMA, "num_hidden_layers": -1}), ("num_hidden_layers",))
config_case("layers-string", json.dumps({**LLAMA, "num_hidden_layers": "32"}), ("num_hidden_layers",))
config_case("layers-bool", json.dumps({**LLAMA, "num_hidden_layers": True}), ("num_hidden_layers",))
config_case("hidden-2^40", json.dumps({**LLAMA, "hidden_size": 2**40}), ("hidden_size",))
config_case("vocab-1e9", json.dumps({**LLAMA, "vocab_size": 10**9}), ("vocab_size",))
config_case("experts-2^30", json.dumps({**LLAMA, "num_local_experts": 2**30}), ("num_local_experts",))
config_case(
    "nested-text-config-layers",
    json.dumps({**LLAMA, "text_config": {"num_hidden_layers": 10**9}}),
    ("num_hidden_layers",),
)
config_case("nested-100000-deep", '{"model_type": "llama", "x": ' + "[" * 100000 + "]" * 100000 + "}")
config_case("duplicate-keys", json.dumps(LLAMA)[:-1] + ', "num_hidden_layers": 4000}')
config_case("nan-literal", json.dumps(LLAMA)[:-1] + ', "rms_norm_eps": NaN}')


def claims_case(name: str, text: str, names: tuple[str, ...] = ("claims.yaml",)) -> None:
    def build(folder: Path) -> Case:
        (folder / "config.json").write_text(json.dumps(LLAMA))
        (folder / "claims.yaml").write_text(text)
        return Case(["audit", "{in}/claims.yaml", "--out", "{out}", "-q"], 2, list(names))

    case(f"claims-{name}")(build)


# each level lists the one before ten times: 10^9 nodes once expanded, from 400 bytes
_LEVELS = [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8)]
_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(_LEVELS) + "claims: *i\n"
claims_case("billion-laughs", _LAUGHS)
claims_case("recursive-alias", "claims: &c [*c]\n")
claims_case("nested-deep", "claims: " + "[" * 5000 + "]" * 5000 + "\n")
claims_case("not-yaml", "claims: [\n  - {name: x\n")
claims_case(
    "model-outside-numbers",
    "claims:\n  - {model: config.json, rank: 8, claimed: {lora: 1e400}}\n",
    ("claims.yaml",),
)


@case("claims-over-4MB")
def _(folder: Path) -> Case:
    with open(folder / "claims.yaml", "wb") as fh:
        fh.write(b"claims: []\n")
        fh.truncate(5 * 1024 * 1024)
    return Case(["audit", "{in}/claims.yaml", "--out", "{out}", "-q"], 2, ["claims.yaml"])
