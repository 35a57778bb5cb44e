"""Numbers that hold: planted ranks at every storage dtype and precision, identical tables whatever --workers,
truncation errors from the tail, mixed dtypes named (docs/METRICS.md 'The numerical floor')."""

import json

import numpy as np
import pytest
import torch
from builders import peft_folder, save_st
from refs import planted, planted_factors, ref_sigma

import lorascope
from lorascope import metrics
from lorascope.rank import Policy, run_select

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RANK = 8
SIGNAL = np.geomspace(4.0, 0.5, RANK)


def planted_pair(tmp_path, dtype, shapes, seed=0):
    """W ~ N(0, 1/n) and W + ΔW, both rounded to ``dtype``; ΔW exactly rank 8 before that rounding."""
    g = torch.Generator().manual_seed(seed)
    base, tuned = {}, {}
    for i, (key, (m, n)) in enumerate(shapes.items()):
        w = torch.randn(m, n, generator=g, dtype=torch.float64) / n**0.5
        dw = torch.tensor(planted(m, n, SIGNAL, seed=seed + i))
        base[key], tuned[key] = w.to(dtype), (w + dw).to(dtype)
    tag = str(dtype).removeprefix("torch.")
    return (
        save_st(tmp_path / f"b-{tag}.safetensors", base),
        save_st(tmp_path / f"t-{tag}.safetensors", tuned),
        {k.removesuffix(".weight"): tuned[k].double().numpy() - base[k].double().numpy() for k in shapes},
    )


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("storage", list(DTYPES))
def test_planted_rank_is_recovered(tmp_path, storage, precision):
    """A full diff whose update is exactly rank 8 gets gd_rank 8 whatever it is stored in and computed at
    (the Gram route at 640×320, LAPACK at 96×64); float64 tails of float32 SVDs used to count as signal."""
    shapes = {
        "model.layers.0.mlp.up_proj.weight": (640, 320),
        "model.layers.0.self_attn.q_proj.weight": (96, 64),
    }
    b, t, refs = planted_pair(tmp_path, DTYPES[storage], shapes)
    res = lorascope.analyze(b, t, precision=precision)
    rows = res.modules.set_index("name")
    assert rows["gd_rank"].tolist() == [RANK, RANK], rows[["method", "gd_rank", "sigma_floor"]]
    expected = {"float64": {"gram", "exact"}, "float32": {"exact"}}[precision]
    assert set(rows["method"]) == expected
    for name, dw in refs.items():  # every stored value within the route's floor of float64 LAPACK
        got, ref = res.spectrum(name), ref_sigma(dw)
        assert np.all(np.abs(got - ref) <= rows.loc[name, "sigma_floor"] + 1e-7 * ref)
    if storage == "float32":  # the rounding of float32 weights is under every floor here: nothing else counts
        assert rows["numerical_rank"].tolist() == [RANK, RANK]


@pytest.mark.parametrize("storage", list(DTYPES))
def test_planted_adapter_rank_at_every_storage_dtype(tmp_path, storage):
    b, a = planted_factors(300, 200, list(SIGNAL), seed=3)
    tensors = {
        "model.layers.0.q_proj.lora_B.weight": torch.tensor(b).to(DTYPES[storage]),
        "model.layers.0.q_proj.lora_A.weight": torch.tensor(a).to(DTYPES[storage]),
    }
    res = lorascope.analyze(peft_folder(tmp_path / "ad", tensors, {"r": RANK, "lora_alpha": RANK}))
    row = res.modules.iloc[0]
    assert (row["gd_rank"], row["numerical_rank"], row["method"]) == (RANK, RANK, "factored")
    stored = (
        tensors["model.layers.0.q_proj.lora_B.weight"].double().numpy()
        @ tensors["model.layers.0.q_proj.lora_A.weight"].double().numpy()
    )
    ref = ref_sigma(stored)[:RANK]
    assert np.all(np.abs(res.spectrum("model.layers.0.q_proj") - ref) <= row["sigma_floor"] + 1e-7 * ref)
    assert row["sigma_floor"] < 1e-10 * ref[0]


def test_floor_metrics_against_float64_definitions():
    """gd_rank, entropy_rank and numerical_rank on σ zeroed under the floor equal the plain definitions on
    it."""
    s = np.concatenate([SIGNAL, np.geomspace(3e-6, 1e-7, 300)])  # signal, then a tail under a 1e-5 floor
    floor = 1e-5
    clean = np.where(s > floor, s, 0.0)
    p = clean[clean > 0] / clean.sum()
    assert metrics.entropy_rank(s, floor) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-12)
    assert metrics.gd_rank(s, (400, 308), floor=floor) == RANK
    assert metrics.gd_rank(s, (400, 308)) > RANK  # without the floor the tail's shape decides
    assert metrics.numerical_rank(s, (400, 308), floor) == RANK
    row = metrics.module_metrics(s, (400, 308), float(np.sqrt(np.sum(s**2))), floor=floor)
    assert row["sigma_floor"] == floor and row["gd_rank"] == RANK


def test_tail_energy_does_not_cancel():
    s = np.array([1.0, 1e-9, 1e-10])
    tails = metrics.tail_energy(s)
    assert tails[1] == pytest.approx(1e-18 + 1e-20, rel=1e-12)  # 1 + 1e-18 − 1 is 0 in float64
    assert (float(np.sum(s**2)) - 1.0) == 0.0
    assert tails[3] == 0.0 and tails[0] == pytest.approx(1.0)
    assert metrics.tail_energy(s, total=2.0)[3] == pytest.approx(1.0)  # a top-k: the unknown remainder


def test_export_rel_error_of_a_randomized_truncation_is_measured_not_cancelled(tmp_path):
    """A rank-8 update with a 1e-7 tail: export.csv's rel_error matches ‖ΔW − ΔW_k‖/‖ΔW‖ from float64."""
    from lorascope.rank.export import ExportOptions
    from lorascope.rank.truncate import TruncateOptions

    dw = planted(200, 160, np.concatenate([SIGNAL, np.full(152, 2e-7)]), seed=5)
    base = np.random.default_rng(0).standard_normal((200, 160))
    b = save_st(tmp_path / "b.safetensors", {"model.layers.0.w.weight": torch.tensor(base)})
    t = save_st(tmp_path / "t.safetensors", {"model.layers.0.w.weight": torch.tensor(base + dw)})
    stored = (base + dw) - base  # float64 files: ΔW as stored
    out = run_select(
        [b, t],
        tmp_path / "sel",
        Policy("energy", energy=0.999),
        export=tmp_path / "ad",
        export_options=ExportOptions(truncate=TruncateOptions(svd="randomized")),
    )
    row = out.export.table.iloc[0]
    assert row["method"] == "randomized" and row["rank"] == RANK
    ad = lorascope.open_checkpoint(tmp_path / "ad")
    m = ad.modules[0]
    exported = m.scale * (m.left.load_numpy() @ m.right.load_numpy())
    true_err = np.linalg.norm(stored - exported) / np.linalg.norm(stored)
    truncation = np.linalg.norm(stored - out_truncation(stored, RANK)) / np.linalg.norm(stored)
    assert true_err < 1e-5 and truncation < 1e-5
    assert row["rel_error"] == pytest.approx(
        truncation, rel=0.05
    )  # it used to read sqrt(1 − Σs²/‖ΔW‖²) ≈ 1e-4
    assert row["optimal_rel_error"] == pytest.approx(truncation, rel=0.05)


def out_truncation(dw, k):
    u, s, vt = np.linalg.svd(dw, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]


def test_mixed_dtypes_are_warned_about_and_recorded(tmp_path):
    g = torch.Generator().manual_seed(1)
    w = {f"model.layers.{i}.w.weight": torch.randn(300, 260, generator=g) for i in range(3)}
    base = save_st(tmp_path / "b.safetensors", {**w, "model.norm.weight": torch.ones(260)})
    tuned = {
        k: (v + 0.01).to(torch.bfloat16 if k != "model.layers.2.w.weight" else torch.float32)
        for k, v in w.items()
    }
    tuned["model.norm.weight"] = torch.ones(260).bfloat16()
    res = lorascope.analyze(base, save_st(tmp_path / "t.safetensors", tuned))
    d = res.summary["dtypes"]
    assert d["counts"] == {"base": {"float32": 4}, "tuned": {"bfloat16": 3, "float32": 1}}
    assert d["mixed_modules"] == {
        f"model.layers.{i}.w": {"tuned": "bfloat16", "base": "float32"} for i in (0, 1)
    }
    warn = [w for w in res.summary["warnings"] if w["name"] == "mixed dtypes"]
    assert len(warn) == 1 and "2 module(s) subtract a float32 base from a bfloat16" in warn[0]["reason"]
    json.dumps(res.summary)  # the record is plain JSON


def test_workers_give_byte_identical_files(tmp_path):
    """Same inputs and options: modules.csv, singular_values.safetensors and vectors.csv are the same bytes
    with 1 and 2 workers (and with Ray, in tests/test_ray_backend.py)."""
    shapes = {
        "model.layers.0.mlp.up_proj.weight": (700, 300),
        "model.layers.0.mlp.down_proj.weight": (300, 700),
        "model.layers.0.self_attn.q_proj.weight": (64, 48),
        "model.layers.1.mlp.up_proj.weight": (520, 260),
    }
    b, t, _ = planted_pair(tmp_path, torch.bfloat16, shapes, seed=4)
    one = lorascope.analyze(b, t, workers=1).save(tmp_path / "one")
    two = lorascope.analyze(b, t, workers=2).save(tmp_path / "two")
    for name in ("modules.csv", "singular_values.safetensors", "vectors.csv"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def test_exported_adapters_are_byte_identical_run_to_run(tmp_path):
    shapes = {
        "model.layers.0.mlp.up_proj.weight": (300, 260),
        "model.layers.0.self_attn.q_proj.weight": (96, 64),
    }
    b, t, _ = planted_pair(tmp_path, torch.float32, shapes, seed=6)
    outs = []
    for run in ("a", "b"):
        run_select([b, t], tmp_path / f"sel-{run}", Policy("noise"), export=tmp_path / f"ad-{run}")
        outs.append(tmp_path / f"ad-{run}")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    cfg = json.loads((outs[0] / "adapter_config.json").read_text())
    assert cfg["r"] == RANK  # the noise policy exports the planted rank, not the float32 tail


def test_floor_discards_the_error_tail_of_a_float32_torch_svd():
    """torch.linalg.svdvals in float32 (the GPU route's kind of LAPACK) leaves a tail of rounding errors 20×
    above the true float32 storage noise; its floor ε32·max(m, n)·σ1 keeps gd_rank at the planted 8."""
    from lorascope.linalg import exact_floor

    n = 384
    w = torch.randn(n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / n**0.5
    dw = (w + torch.tensor(planted(n, n, SIGNAL, seed=0))).float() - w.float()
    s = torch.linalg.svdvals(dw).double().numpy()
    ref = ref_sigma(dw.double().numpy())
    floor = exact_floor((n, n), torch.float32, s[0])
    assert np.all(np.abs(s - ref) <= floor)
    assert metrics.gd_rank(s, (n, n), floor=floor) == metrics.gd_rank(ref, (n, n)) == RANK
