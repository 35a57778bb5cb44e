"""Hugging Face Hub ids: a cache laid out as huggingface_hub lays it out, offline; file selection; the online
path with the Hub's calls replaced (no test touches the network)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from builders import peft_folder, save_st
from click.testing import CliRunner

from lorascope import analyze
from lorascope.checkpoint import hub, open_checkpoint
from lorascope.cli import main
from lorascope.errors import LorascopeError

pytest.importorskip("huggingface_hub")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"
g = torch.Generator().manual_seed(3)


def lora_tensors(scale: float = 1.0) -> dict:
    out = {}
    for i in range(2):
        for proj in ("q_proj", "v_proj"):
            out[f"model.layers.{i}.self_attn.{proj}.lora_A.weight"] = scale * torch.randn(4, 24, generator=g)
            out[f"model.layers.{i}.self_attn.{proj}.lora_B.weight"] = scale * torch.randn(24, 4, generator=g)
    return out


def model_folder(path: Path, shift: float = 0.0) -> Path:
    """A tiny 'hf' model folder: config.json + model.safetensors (2 layers of q/v projections)."""
    gen = torch.Generator().manual_seed(11)
    tensors = {
        f"model.layers.{i}.self_attn.{p}.weight": torch.randn(24, 24, generator=gen)
        for i in range(2)
        for p in ("q_proj", "v_proj")
    }
    if shift:
        tensors = {k: v + shift * torch.randn(24, 24, generator=gen) for k, v in tensors.items()}
    save_st(path / "model.safetensors", tensors)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 24}))
    return path


def cache_repo(
    cache: Path,
    repo_id: str,
    folder: Path,
    commit: str = COMMIT,
    ref: str | None = "main",
    files: list[str] | None = None,
) -> Path:
    """Lay ``folder``'s files into ``cache`` as huggingface_hub does: blobs by hash, snapshots/<commit>/ links
    to them, refs/<ref> holding the commit. Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in sorted(folder.iterdir()):
        if files is not None and f.name not in files:
            continue
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        if not (snap / f.name).is_symlink():
            (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed port: any leaked request fails at once
    return cache


def same_results(a, b) -> None:
    cols = [
        "name",
        "rows",
        "cols",
        "family",
        "lora_rank",
        "scale",
        "fro_norm",
        "entropy_rank",
        "rank_90",
        "gd_rank",
    ]
    pd.testing.assert_frame_equal(a.modules[cols], b.modules[cols])
    assert set(a.spectra.keys()) == set(b.spectra.keys())
    for name in a.modules["name"]:
        np.testing.assert_array_equal(a.spectrum(name), b.spectrum(name))


def test_adapter_id_resolves_offline_to_the_same_results_as_its_path(tmp_path, offline_cache):
    local = peft_folder(tmp_path / "src" / "tiny-lora", lora_tensors(), {"r": 4, "lora_alpha": 8})
    snap = cache_repo(offline_cache, "org/tiny-lora", local)
    by_id, by_path = analyze("org/tiny-lora"), analyze(local)
    same_results(by_id, by_path)
    entry = by_id.summary["inputs"][0]
    assert entry["hub"] == {"repo_id": "org/tiny-lora", "commit": COMMIT}
    assert Path(entry["path"]) == snap.resolve()
    assert "hub" not in by_path.summary["inputs"][0]
    assert entry["sha256"] == by_path.summary["inputs"][0]["sha256"]  # the same bytes, read through the cache


def test_full_diff_of_two_ids_on_the_cli_records_repo_and_commit(tmp_path, offline_cache):
    base = model_folder(tmp_path / "src" / "base")
    tuned = model_folder(tmp_path / "src" / "tuned", shift=0.05)
    cache_repo(offline_cache, "org/base", base)
    cache_repo(offline_cache, "my-org/my-finetune", tuned)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["spectrum", "org/base", "my-org/my-finetune", "--out", str(out), "--no-report"]
    )
    assert res.exit_code == 0, res.output
    assert "Hugging Face Hub repo my-org/my-finetune at commit " + COMMIT in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert [i["hub"]["repo_id"] for i in summary["inputs"]] == ["org/base", "my-org/my-finetune"]
    assert {i["hub"]["commit"] for i in summary["inputs"]} == {COMMIT}
    same_results(analyze("org/base", "my-org/my-finetune"), analyze(base, tuned))


def test_revision_picks_the_snapshot_and_a_missing_one_is_refused(tmp_path, offline_cache):
    old = peft_folder(tmp_path / "old", lora_tensors(), {"r": 4, "lora_alpha": 8})
    new = peft_folder(tmp_path / "new", lora_tensors(2.0), {"r": 4, "lora_alpha": 8})
    cache_repo(offline_cache, "org/lora", old, commit=OLD, ref="v1")
    cache_repo(offline_cache, "org/lora", new, commit=COMMIT, ref="main")
    same_results(analyze(open_checkpoint("org/lora", revision="v1")), analyze(old))
    same_results(analyze(open_checkpoint("org/lora", revision=OLD)), analyze(old))
    same_results(analyze(open_checkpoint("org/lora")), analyze(new))
    res = CliRunner().invoke(
        main, ["spectrum", "org/lora", "--revision", "v2", "--out", str(tmp_path / "o"), "--no-report"]
    )
    assert res.exit_code == 2 and "not in the local Hugging Face cache" in res.output
    assert "HF_HUB_OFFLINE is set" in res.output and "Traceback" not in res.output


def test_a_snapshot_missing_its_weights_is_refused_by_name(tmp_path, offline_cache):
    base = model_folder(tmp_path / "src" / "base")
    cache_repo(offline_cache, "org/base", base, files=["config.json"])
    with pytest.raises(
        LorascopeError,
        match=r"cached snapshot .* holds no weight file .*it has config\.json.*"
        r"hf download org/base",
    ):
        open_checkpoint("org/base")
    # a config is all `params` needs
    assert hub.resolve("org/base", need="config").commit == COMMIT


def test_a_snapshot_missing_a_shard_is_refused_by_name(tmp_path, offline_cache):
    src = tmp_path / "src"
    gen = torch.Generator().manual_seed(5)
    save_st(src / "model-00001-of-00002.safetensors", {"a.weight": torch.randn(4, 4, generator=gen)})
    save_st(src / "model-00002-of-00002.safetensors", {"b.weight": torch.randn(4, 4, generator=gen)})
    (src / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "a.weight": "model-00001-of-00002.safetensors",
                    "b.weight": "model-00002-of-00002.safetensors",
                }
            }
        )
    )
    cache_repo(
        offline_cache,
        "org/sharded",
        src,
        files=["model.safetensors.index.json", "model-00001-of-00002.safetensors"],
    )
    with pytest.raises(
        LorascopeError, match=r"lacks model-00002-of-00002\.safetensors, and HF_HUB_OFFLINE is set"
    ):
        open_checkpoint("org/sharded")
    cache_repo(offline_cache, "org/sharded", src)
    assert sorted(open_checkpoint("org/sharded").store.keys()) == ["a.weight", "b.weight"]


def test_an_unknown_id_offline_says_where_it_looked(offline_cache):
    with pytest.raises(LorascopeError, match=r"org/nothing is not in the local Hugging Face cache"):
        open_checkpoint("org/nothing")


def test_a_local_path_that_reads_as_an_id_wins_and_says_so(tmp_path, offline_cache, monkeypatch):
    hub_copy = peft_folder(tmp_path / "hub-src", lora_tensors(), {"r": 4, "lora_alpha": 8})
    cache_repo(offline_cache, "org/tiny-lora", hub_copy)
    work = tmp_path / "work"
    local = peft_folder(work / "org" / "tiny-lora", lora_tensors(3.0), {"r": 4, "lora_alpha": 8})
    monkeypatch.chdir(work)
    with pytest.warns(hub.HubNotice, match="read the local folder .* not the Hugging Face Hub repo"):
        got = analyze("org/tiny-lora")
    same_results(got, analyze(local))
    same_results(analyze("hf://org/tiny-lora"), analyze(hub_copy))
    res = CliRunner().invoke(
        main, ["spectrum", "org/tiny-lora", "--out", str(tmp_path / "o"), "--no-report", "-q"]
    )
    assert res.exit_code == 0 and "note: org/tiny-lora: read the local folder" in res.output
    res = CliRunner().invoke(
        main, ["spectrum", "org/tiny-lora", "--revision", "main", "--out", str(tmp_path / "p")]
    )
    assert res.exit_code == 2 and "write hf://org/tiny-lora" in res.output


def test_cli_refuses_what_is_neither_a_path_nor_an_id(tmp_path, offline_cache):
    res = CliRunner().invoke(main, ["spectrum", "./no/such/thing", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not exist, and is not a Hugging Face Hub id" in res.output


def test_params_needs_only_the_config(tmp_path, offline_cache, real_fixtures):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(real_fixtures / "configs" / "llama-2-7b-hf.json", src / "config.json")
    cache_repo(
        offline_cache, "meta-llama/Llama-2-7b-hf", src
    )  # no weights in the cache: params does not need them
    by_id = CliRunner().invoke(
        main, ["params", "meta-llama/Llama-2-7b-hf", "-r", "8", "-t", "q_proj,v_proj", "--json"]
    )
    by_path = CliRunner().invoke(
        main, ["params", str(src / "config.json"), "-r", "8", "-t", "q_proj,v_proj", "--json"]
    )
    assert by_id.exit_code == 0, by_id.output
    got, want = json.loads(by_id.stdout), json.loads(by_path.stdout)
    assert (
        got["counts"] == want["counts"] and got["counts"]["lora"] == 4_194_304
    )  # Hu et al.: 4.2M for 7B q,v r=8


# ---- file selection ---------------------------------------------------------------------------------------


def no_json(name):
    raise AssertionError(f"{name} should not be read")


@pytest.mark.parametrize(
    "files, need, want",
    [
        (
            [
                "config.json",
                "model.safetensors",
                "pytorch_model.bin",
                "tf_model.h5",
                "README.md",
                "sub/x.safetensors",
            ],
            "weights",
            ["config.json", "model.safetensors"],
        ),
        (
            ["config.json", "pytorch_model.bin", "training_args.bin"],
            "weights",
            ["config.json", "pytorch_model.bin"],
        ),
        (["config.json", "model.safetensors"], "config", ["config.json"]),
        (["model.safetensors"], "config", ["model.safetensors"]),  # no config: headers are read instead
        (
            ["adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "config.json"],
            "weights",
            ["adapter_config.json", "adapter_model.safetensors"],
        ),
        (
            ["adapter_config.json", "adapter_model.bin"],
            "config",
            ["adapter_config.json", "adapter_model.bin"],
        ),
        (["pytorch_lora_weights.safetensors", "image.png"], "weights", ["pytorch_lora_weights.safetensors"]),
    ],
)
def test_select_files_takes_what_the_readers_open(files, need, want):
    assert hub.select_files(files, need, no_json, "repo") == want


def test_select_files_follows_a_sharded_index():
    index = {
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
            "c": "model-00001-of-00002.safetensors",
        }
    }
    files = [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "pytorch_model.bin.index.json",
        "pytorch_model-00001-of-00002.bin",
    ]
    got = hub.select_files(files, "weights", lambda name: index, "repo")
    assert got == [
        "config.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]


def test_select_files_refuses_a_repo_without_weights():
    with pytest.raises(LorascopeError, match="holds no weights lorascope reads.*README.md"):
        hub.select_files(["README.md", "tf_model.h5"], "weights", no_json, "the repo org/x")


@pytest.mark.parametrize(
    "text, is_id",
    [
        ("gpt2", True),
        ("meta-llama/Llama-2-7b-hf", True),
        ("a/b/c", False),
        ("./a", False),
        ("/abs/path", False),
        ("~/x", False),
        ("org--x/y", False),
        ("name/", False),
        ("", False),
    ],
)
def test_repo_id_form(text, is_id):
    assert hub.looks_like_repo_id(text) is is_id


def test_origin_reads_repo_and_commit_from_a_snapshot_path(tmp_path):
    p = tmp_path / "models--my-org--my-model" / "snapshots" / COMMIT / "model.safetensors"
    assert hub.origin(p) == {"repo_id": "my-org/my-model", "commit": COMMIT}
    assert hub.origin(tmp_path / "models--x" / "blobs" / COMMIT) is None


# ---- the online path, with the Hub's calls replaced -----------------------------------------------------


class FakeHub:
    """Serves a local folder as the repo: model_info lists its files, downloads copy into the cache layout."""

    def __init__(self, remote: Path, cache: Path, repo_id: str):
        self.remote, self.cache, self.repo_id = remote, cache, repo_id
        self.fetched: list[str] = []

    def model_info(self, repo_id, revision=None):
        from types import SimpleNamespace

        assert repo_id == self.repo_id
        return SimpleNamespace(
            sha=COMMIT, siblings=[SimpleNamespace(rfilename=f.name) for f in self.remote.iterdir()]
        )

    def _fetch(self, names, revision):
        assert revision == COMMIT
        self.fetched.extend(names)
        return cache_repo(self.cache, self.repo_id, self.remote, files=names)

    def hf_hub_download(self, repo_id, filename, revision=None, cache_dir=None):
        return str(self._fetch([filename], revision) / filename)

    def snapshot_download(self, repo_id, revision=None, cache_dir=None, allow_patterns=None, **kw):
        assert Path(cache_dir) == self.cache and not kw.get("local_files_only")
        return str(self._fetch(list(allow_patterns), revision))


def test_online_fetches_only_the_needed_files(tmp_path, monkeypatch):
    import huggingface_hub

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    remote = model_folder(tmp_path / "remote")
    shutil.copy(remote / "model.safetensors", remote / "pytorch_model.bin")  # a repo with both formats
    (remote / "README.md").write_text("a model")
    fake = FakeHub(remote, cache, "org/base")
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: fake)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    found = hub.resolve("org/base")
    assert fake.fetched == ["config.json", "model.safetensors"]
    assert (found.repo_id, found.commit) == ("org/base", COMMIT)
    assert sorted(p.name for p in found.path.iterdir()) == ["config.json", "model.safetensors"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # later, offline: the partial snapshot is all lorascope needs
    again = hub.resolve("org/base")
    assert (
        again.path == found.path
        and again.commit == COMMIT
        and fake.fetched == ["config.json", "model.safetensors"]
    )


def test_online_falls_back_to_the_cache_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    import huggingface_hub

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    cache_repo(cache, "org/base", model_folder(tmp_path / "src"))

    class Unreachable:
        def model_info(self, *a, **k):
            raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub, "HfApi", Unreachable)
    found = hub.resolve("org/base")
    assert found.commit == COMMIT and "could not be reached" in found.note


def test_a_local_weights_file_is_read_without_a_note(tmp_path, monkeypatch):
    """'adapter.safetensors' has the form of a Hub id, but a local file with a weights suffix is a file."""
    import warnings

    from builders import save_st

    monkeypatch.chdir(tmp_path)
    save_st(tmp_path / "tuned.safetensors", {"layers.0.q.weight": torch.ones(4, 4)})
    save_st(tmp_path / "base.safetensors", {"layers.0.q.weight": torch.zeros(4, 4)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", hub.HubNotice)
        res = analyze("base.safetensors", "tuned.safetensors")
    assert list(res.modules["name"]) == ["layers.0.q"]
