"""Every generated hostile input (hostile.CASES) through the CLI: exit code, one paragraph naming the file,
key or value, inputs unchanged (sha256), and the earlier results in --out unchanged byte for byte when the
run is refused.

The safetensors cases are also checked against the safetensors library itself: every file it refuses,
lorascope refuses (and files it accepts are read; see the control cases)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from adversarial.hostile import CASES, HEADER_MUTATIONS, clean_header, raw_safetensors
from lorascope.checkpoint.store import read_safetensors_header
from lorascope.cli import main
from lorascope.errors import LorascopeError

# sparse test files this large are compared by size, time and their ends, not read whole
LARGE = 16 * 1024 * 1024


def snapshot(folder: Path) -> dict[str, tuple]:
    """relative path -> sha256 (or, for large sparse files, size, mtime and the hash of both ends)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = ("link", str(p.readlink()))
        elif p.is_file():
            st = p.stat()
            if st.st_size > LARGE:
                with open(p, "rb") as fh:
                    head = fh.read(1 << 16)
                    fh.seek(-(1 << 16), 2)
                    tail = fh.read()
                ends = hashlib.sha256(head + tail).hexdigest()
                out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, ends)
            else:
                out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def earlier_results(tmp_path_factory) -> Path:
    """A results folder (with its report) that every refused run must leave exactly as it is."""
    from builders import peft_folder

    g = torch.Generator().manual_seed(0)
    root = tmp_path_factory.mktemp("earlier")
    prefix = "model.layers.0.self_attn.q_proj"
    ad = peft_folder(
        root / "ad",
        {
            f"{prefix}.lora_A.weight": torch.randn(4, 8, generator=g),
            f"{prefix}.lora_B.weight": torch.randn(8, 4, generator=g),
        },
        {"r": 4, "lora_alpha": 8},
    )
    res = CliRunner().invoke(main, ["spectrum", str(ad), "--out", str(root / "results"), "-q"])
    assert res.exit_code == 0, res.output
    return root / "results"


def test_there_are_at_least_150_generated_cases():
    assert len(CASES) >= 150, len(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(name, tmp_path, earlier_results):
    inp = tmp_path / "in"
    inp.mkdir()
    case = CASES[name](inp)
    out = tmp_path / "out"
    shutil.copytree(earlier_results, out, symlinks=True)
    before_in, before_out = snapshot(inp), snapshot(out)
    args = [a.replace("{in}", str(inp)).replace("{out}", str(out)) for a in case.args]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == case.code, res.output
    assert "Traceback" not in res.output and "unexpected" not in res.output, res.output
    for text in case.names:
        assert text in res.output, (text, res.output)
    if case.code == 2:
        err = res.stderr.strip()
        # one paragraph (a list has no blank line)
        assert err.startswith("error: ") and "\n\n" not in err, err
        assert snapshot(out) == before_out, "the earlier results changed"
        if args[0] in ("spectrum", "compare"):
            assert f"{out} was left as it was" in err, err
    assert snapshot(inp) == before_in, "an input changed"
    if case.after is not None:
        case.after(inp)


@pytest.mark.parametrize("name", sorted(HEADER_MUTATIONS))
def test_every_header_the_library_refuses_is_refused(name, tmp_path):
    from safetensors import safe_open

    header, data = clean_header()
    path = raw_safetensors(tmp_path / "x.safetensors", *HEADER_MUTATIONS[name](header, data))
    try:
        with safe_open(str(path), framework="numpy") as fh:
            fh.keys()
        library_ok = True
    except Exception:  # noqa: BLE001 - the library raises its own error types
        library_ok = False
    try:
        read_safetensors_header(path)
        ours_ok = True
    except LorascopeError:
        ours_ok = False
    assert library_ok or not ours_ok, f"{name}: the library refuses this header, lorascope read it"
    if library_ok and not ours_ok:  # stricter than the library only where JSON readers could disagree
        assert name in ("duplicate-key",), name


def test_a_damaged_header_reports_the_offending_tensor(tmp_path):
    header, data = clean_header()
    path = raw_safetensors(tmp_path / "x.safetensors", *HEADER_MUTATIONS["negative-offset"](header, data))
    with pytest.raises(LorascopeError, match=r"lora_A.weight: data_offsets \[-8, 24\] is not a pair"):
        read_safetensors_header(path)
    overlapping = HEADER_MUTATIONS["overlapping-offsets"](*clean_header())
    path = raw_safetensors(tmp_path / "y.safetensors", *overlapping)
    with pytest.raises(LorascopeError, match="overlaps the tensor before it"):
        read_safetensors_header(path)
