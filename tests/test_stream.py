"""lorascope/stream.py: row-block reads, streamed ΔW equal to the matrix in memory, the memory budget."""

import numpy as np
import pytest
import torch
from builders import save_st
from refs import planted, ref_sigma

import lorascope
from lorascope import stream
from lorascope.analysis import Options, Streamed, compute_fetched, fetch
from lorascope.checkpoint import TensorRef, open_checkpoint
from lorascope.delta import plan_deltas
from lorascope.errors import LorascopeError
from lorascope.linalg import Blocks, svd


def test_parse_memory():
    assert stream.parse_memory("768M") == 768 << 20
    assert stream.parse_memory("2.5G") == int(2.5 * (1 << 30))
    assert stream.parse_memory("1GB") == 10**9
    assert stream.parse_memory("4GiB") == 4 << 30
    assert stream.parse_memory(1 << 30) == 1 << 30
    for bad in ("lots", "12 parsecs", "-1G", "1M"):
        with pytest.raises(ValueError):
            stream.parse_memory(bad)


def test_default_budget_follows_available_memory():
    budget, how = stream.default_budget()
    avail = stream.available_memory()
    assert budget >= 256 << 20
    if avail is not None:
        assert budget == max(256 << 20, int(0.6 * avail)) and "available" in how


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_read_rows_equals_the_whole_tensor(tmp_path, dtype):
    x = torch.randn(37, 5, 3, generator=torch.Generator().manual_seed(0)).to(dtype)  # a conv-like 3-D weight
    path = save_st(tmp_path / "w.safetensors", {"w": x, "e": torch.randn(4, 9, 6).to(dtype)})
    store = open_checkpoint(path).store
    ref = TensorRef(store, "w", view="flatten")
    whole = ref.load_numpy(np.float32)
    got = np.concatenate([stream.read_rows(ref, i, min(37, i + 8)) for i in range(0, 37, 8)])
    assert np.array_equal(got.astype(np.float32), whole)
    expert = TensorRef(store, "e", index=2)  # one expert of a stacked (E, R, C) tensor
    assert np.array_equal(
        stream.read_rows(expert, 3, 7).astype(np.float32), expert.load_numpy(np.float32)[3:7]
    )


def test_read_rows_from_a_torch_pickle(tmp_path):
    x = torch.randn(20, 6).bfloat16()
    torch.save({"w": x}, tmp_path / "w.pt")
    ref = TensorRef(open_checkpoint(tmp_path / "w.pt").store, "w")
    assert np.array_equal(stream.read_rows(ref, 5, 12), x[5:12].float().numpy())


def pair(tmp_path, shapes, dtype=torch.float32, sigmas=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    base, tuned, refs = {}, {}, {}
    for i, (key, (m, n)) in enumerate(shapes.items()):
        w = (torch.randn(m, n, generator=g, dtype=torch.float64) / n**0.5).to(dtype)
        dw = planted(m, n, sigmas or np.geomspace(1, 1e-3, min(m, n)), seed=seed + i)
        base[key] = w
        tuned[key] = (w.double() + torch.tensor(dw)).to(dtype)
        refs[key.removesuffix(".weight")] = tuned[key].double().numpy() - w.double().numpy()
    return save_st(tmp_path / "b.safetensors", base), save_st(tmp_path / "t.safetensors", tuned), refs


@pytest.mark.parametrize("shape", [(560, 260), (260, 560)])
@pytest.mark.parametrize("hold", [True, False])
def test_streamed_spectrum_equals_float64_svd_within_its_floor(tmp_path, shape, hold, monkeypatch):
    monkeypatch.setattr(stream, "BLOCK_BYTES", 200 * 1024)  # several blocks of rows (or columns)
    b, t, refs = pair(tmp_path, {"layers.0.w.weight": shape}, torch.bfloat16)
    d = plan_deltas(open_checkpoint(b), open_checkpoint(t)).deltas[0]
    plan = stream.stream_plan(d.tuned, d.base, 1 << 30)
    if not hold:
        plan = stream.Plan(plan.stored, plan.by_rows, plan.step, False, plan.need)
    base_sq = [0.0]
    got = svd(Blocks(d.shape, stream.delta_blocks(d.tuned, d.base, plan, base_sq)))
    ref = ref_sigma(refs["layers.0.w"])
    assert got.method == "gram"
    assert np.all(np.abs(got.s - ref) <= got.floor)
    np.testing.assert_allclose(got.s[got.s > 1e3 * got.floor], ref[got.s > 1e3 * got.floor], rtol=1e-9)
    base = d.base.load_numpy()
    assert np.sqrt(base_sq[0]) == pytest.approx(np.linalg.norm(base), rel=1e-12)
    # and the in-memory route on the same update agrees to the floor
    memory = svd(lorascope.linalg.Dense(torch.tensor(refs["layers.0.w"])))
    assert np.all(np.abs(np.asarray(memory.s) - got.s) <= got.floor + memory.floor)


def test_analysis_streams_full_diffs_and_reports_the_floor(tmp_path):
    b, t, refs = pair(tmp_path, {"model.layers.0.up.weight": (700, 300), "model.layers.0.o.weight": (64, 64)})
    res = lorascope.analyze(b, t)
    rows = res.modules.set_index("name")
    assert rows.loc["model.layers.0.up", "method"] == "gram"
    assert rows.loc["model.layers.0.o", "method"] == "exact"  # small: read whole, LAPACK's tighter bound
    for name, dw in refs.items():
        got, ref = res.spectrum(name), ref_sigma(dw)
        floor = rows.loc[name, "sigma_floor"]
        assert floor > 0 and np.all(np.abs(got - ref) <= floor + 1e-7 * ref)  # spectra are saved as float32
    assert res.summary["numerics"]["methods"]["gram"]["modules"] == 1
    assert res.summary["memory"]["budget_bytes"] > 0


def test_streamed_and_in_memory_paths_agree(tmp_path):
    b, t, refs = pair(tmp_path, {"model.layers.0.up.weight": (640, 320)})
    d = plan_deltas(open_checkpoint(b), open_checkpoint(t)).deltas[0]
    opts = Options(device="cpu")
    f = fetch(d, opts)
    assert isinstance(f, Streamed)
    streamed = compute_fetched(f, opts)
    whole = compute_fetched(fetch(d, Options(device="cpu", top_k=320)), opts)  # read whole: the exact route
    assert whole.row["method"] == "gram"  # in memory, float64, values only
    np.testing.assert_allclose(streamed.sigma, whole.sigma, rtol=0, atol=streamed.row["sigma_floor"])
    assert streamed.row["base_fro_norm"] == pytest.approx(whole.row["base_fro_norm"], rel=1e-12)


def test_a_matrix_beyond_the_budget_is_refused_with_the_number_needed(tmp_path):
    w = torch.zeros(3000, 2048)
    b = save_st(tmp_path / "b.safetensors", {"model.layers.0.up.weight": w})
    t = save_st(tmp_path / "t.safetensors", {"model.layers.0.up.weight": w + 1})
    with pytest.raises(LorascopeError, match=r"needs at least [\d,]+ MiB to stream .* --memory"):
        lorascope.analyze(b, t, memory="64M")
    with pytest.raises(LorascopeError, match=r"needs about [\d,]+ MiB to compute in memory"):
        lorascope.analyze(b, t, memory="64M", precision="float32")


def test_a_header_claiming_a_huge_matrix_is_refused_before_reading(tmp_path):
    """60000×60000 float32 claimed (13.4 GiB each, sparse files): refused from the header, nothing read."""
    import json
    import struct

    for name in ("b", "t"):
        header = json.dumps(
            {
                "model.layers.0.w.weight": {
                    "dtype": "F32",
                    "shape": [60000, 60000],
                    "data_offsets": [0, 60000 * 60000 * 4],
                }
            }
        ).encode()
        with open(tmp_path / f"{name}.safetensors", "wb") as fh:
            fh.write(struct.pack("<Q", len(header)) + header)
            fh.truncate(8 + len(header) + 60000 * 60000 * 4)
    with pytest.raises(LorascopeError, match=r"60000×60000\) needs at least 27,5\d\d MiB"):
        lorascope.analyze(tmp_path / "b.safetensors", tmp_path / "t.safetensors", memory="8G")


def test_non_finite_rows_are_named(tmp_path):
    base = {"model.layers.0.w.weight": torch.zeros(600, 300)}
    bad = torch.zeros(600, 300)
    bad[450, 7] = float("inf")
    b = save_st(tmp_path / "b.safetensors", base)
    t = save_st(tmp_path / "t.safetensors", {"model.layers.0.w.weight": bad})
    with pytest.raises(
        LorascopeError,
        match=r"t.safetensors: tensor model.layers.0.w.weight holds 1 NaN or Inf value\(s\) of 180000",
    ):
        lorascope.analyze(b, t)
