"""GGUF LoRA adapters written the way llama.cpp's convert_lora_to_gguf.py writes them, from a PEFT adapter
made on a tiny Llama; PEFT (the adapter's factors and merge_and_unload) is the reference.

The writer below follows the converter step by step: tensor names from the gguf package's TensorNameMap,
query/key rows reordered by LlamaModel.permute, the token embedding's A transposed, each tensor stored in
the requested type with the converter's F16 fallback where Q8_0 does not fit the row length. The PEFT
factors are first rounded to exactly what the GGUF type stores, so every singular value can be compared
with a float64 reference to 1e-5 of σ1.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from refs import ref_sigma

import lorascope
from lorascope.checkpoint import open_checkpoint, open_store
from lorascope.checkpoint.gguf import GGUFFile, rope_row_order
from lorascope.cli import main
from lorascope.delta import load_form, plan_deltas
from lorascope.errors import LorascopeError

gguf = pytest.importorskip("gguf", reason="needs the gguf package (pip install 'lorascope[gguf]')")
transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
peft = pytest.importorskip("peft", reason="needs the hf extra (peft)")

HEADS, KV_HEADS, LAYERS = 4, 2, 2
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "embed_tokens"]
QTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}


def tiny_llama():
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def stored_layout(param_name: str, t: torch.Tensor) -> torch.Tensor:
    """A PEFT factor as convert_lora_to_gguf.py stores it: the embedding's A transposed (row order aside)."""
    return t.T if "lora_embedding_A" in param_name else t


def quantized(x: np.ndarray, outtype: str) -> tuple[np.ndarray, object]:
    """(data, type) as the converter writes one tensor: the requested type, F16 where it raises QuantError."""
    qtype = getattr(gguf.GGMLQuantizationType, QTYPES[outtype])
    try:
        return gguf.quants.quantize(x, qtype), qtype
    except gguf.QuantError:
        qtype = gguf.GGMLQuantizationType.F16
        return gguf.quants.quantize(x, qtype), qtype


def round_trip(param_name: str, t: torch.Tensor, outtype: str) -> torch.Tensor:
    """The values the GGUF file will hold for this factor, in PEFT's layout."""
    stored = stored_layout(param_name, t).detach().numpy().astype(np.float32)
    data, qtype = quantized(stored, outtype)
    back = gguf.quants.dequantize(data, qtype).reshape(stored.shape)
    return stored_layout(param_name, torch.from_numpy(np.ascontiguousarray(back)))


def make_peft(tmp_path, outtype, alpha=8.0, r=4):
    """Base folder, PEFT adapter folder and the PEFT-merged state (float64), with GGUF-exact factors."""
    model = tiny_llama()
    model.save_pretrained(tmp_path / "base")
    base_sd = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
    pm = peft.get_peft_model(model, peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(round_trip(name, torch.randn(p.shape, generator=gen) * 0.3, outtype))
    pm.save_pretrained(
        tmp_path / "adapter", save_embedding_layers=False
    )  # the converter refuses full embeddings
    pm.double()
    merged_model = pm.merge_and_unload()
    merged = {k: v.detach().double() for k, v in merged_model.state_dict().items()}
    merged_model.float().save_pretrained(tmp_path / "merged")
    deltas = {
        k.removesuffix(".weight"): (merged[k] - base_sd[k]).numpy()
        for k in base_sd
        if not torch.equal(merged[k], base_sd[k])
    }
    return tmp_path / "base", tmp_path / "adapter", deltas


def write_gguf_adapter(adapter_dir, out, outtype="f32", alpha_key=True, general_type="adapter", arch="llama"):
    """convert_lora_to_gguf.py's output for a PEFT adapter on the tiny Llama."""
    from safetensors.torch import load_file

    lora = load_file(str(adapter_dir / "adapter_model.safetensors"))
    alpha = peft.PeftConfig.from_pretrained(adapter_dir).lora_alpha
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, LAYERS)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in lora.items():
        key = key.removeprefix("base_model.model.")  # get_base_tensor_name
        tag = next(tag for tag in FACTOR_TAGS if tag in key)
        pairs.setdefault(key.replace(tag, ".weight"), {})[FACTOR_TAGS[tag]] = t
    writer = gguf.GGUFWriter(out, arch)
    if general_type is not None:
        writer.add_type(general_type)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    if alpha_key:
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for base, f in pairs.items():
        a, b = f["A"], f["B"]
        if base.endswith(("q_proj.weight", "k_proj.weight")):  # LlamaModel.permute on B's rows
            heads = HEADS if "q_proj" in base else KV_HEADS
            b = b.reshape(heads, 2, b.shape[0] // heads // 2, b.shape[1]).swapaxes(1, 2).reshape(b.shape)
        name = tmap.get_name(base, try_suffixes=(".weight", ".bias"))
        if name == "token_embd.weight":
            a = a.T  # llm_build_inp_embd reads the embedding's A transposed
        for suffix, t in ((".lora_a", a), (".lora_b", b)):
            data, qtype = quantized(t.float().contiguous().numpy(), outtype)
            writer.add_tensor(name + suffix, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


FACTOR_TAGS = {
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_embedding_A": "A",
    ".lora_embedding_B": "B",
}
GGUF_OF = {"model.embed_tokens": "token_embd"} | {
    f"model.layers.{i}.{hf}": f"blk.{i}.{g}"
    for i in range(LAYERS)
    for hf, g in (
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.down_proj", "ffn_down"),
    )
}


def peft_sigma(adapter_dir, hf_name, scale):
    """float64 σ of s·B@A (ΔE = s·(B@A)ᵀ for the embedding) from the PEFT adapter's own tensors."""
    from safetensors.torch import load_file

    lora = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pre = f"base_model.model.{hf_name}"
    if f"{pre}.lora_embedding_A" in lora:
        a, b = lora[f"{pre}.lora_embedding_A"], lora[f"{pre}.lora_embedding_B"]
    else:
        a, b = lora[f"{pre}.lora_A.weight"], lora[f"{pre}.lora_B.weight"]
    return ref_sigma(scale * (b.double() @ a.double()).numpy())


def assert_sigma_exact(got, want, tol=1e-5):
    """Every singular value within tol·σ1 (the stored rank r of them; the rest of the reference is zero)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert np.abs(got - want[: len(got)]).max() <= tol * want[0]
    assert np.all(want[len(got) :] <= tol * want[0])


@pytest.fixture(scope="module")
def llama_f32(tmp_path_factory):
    """(base folder, PEFT adapter folder, PEFT's merged ΔW by name, the F32 GGUF adapter), made once."""
    tmp = tmp_path_factory.mktemp("llama")
    base, adapter_dir, deltas = make_peft(tmp, "f32")
    return base, adapter_dir, deltas, write_gguf_adapter(adapter_dir, tmp / "adapter.gguf")


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
def test_gguf_adapter_alone_matches_peft(tmp_path, outtype):
    base, adapter_dir, _ = make_peft(tmp_path, outtype)
    path = write_gguf_adapter(adapter_dir, tmp_path / "adapter.gguf", outtype)
    ckpt = open_checkpoint(path)
    assert ckpt.kind == "adapter" and ckpt.format == "gguf" and ckpt.families == ["lora"]
    types = {open_store(path).ggml_type(m.left.key) for m in ckpt.modules}
    types |= {open_store(path).ggml_type(m.right.key) for m in ckpt.modules}
    assert QTYPES[outtype] in types  # q8_0: A is Q8_0, B (rows of r = 4 values) falls back to F16
    res = lorascope.analyze(path)
    rows = res.modules.set_index("name")
    assert set(rows.index) == set(GGUF_OF.values())
    for hf_name, g_name in GGUF_OF.items():
        assert rows.loc[g_name, "scale"] == pytest.approx(8.0 / 4) and rows.loc[g_name, "lora_rank"] == 4
        assert rows.loc[g_name, "source"] == "gguf"
        assert_sigma_exact(res.spectrum(g_name), peft_sigma(adapter_dir, hf_name, 2.0))
    assert rows.loc["blk.1.attn_q", "layer"] == 1 and rows.loc["blk.1.attn_q", "module"] == "attn_q"
    assert (rows.loc["token_embd", "rows"], rows.loc["token_embd", "cols"]) == (96, 64)  # (vocab, dim)


def test_gguf_adapter_on_its_hf_base_takes_the_base_names_and_the_exact_update(llama_f32):
    base, adapter_dir, deltas, path = llama_f32
    plan = plan_deltas(open_checkpoint(base), open_checkpoint(path))
    assert plan.kind == "adapter+base"
    by_name = {d.name: d for d in plan.deltas}
    assert set(by_name) == set(deltas) == set(GGUF_OF)  # the base's names, every module paired
    for name, d in by_name.items():
        dense = np.asarray(load_form(d, "float64").to_dense(), np.float64)
        # the update itself, row for row (query/key rows restored from llama.cpp's order), vs PEFT's merge
        assert np.abs(dense - deltas[name]).max() <= 1e-6 * np.abs(deltas[name]).max(), name
    res = lorascope.analyze(base, path)
    full = lorascope.analyze(base, base.parent / "merged")  # the full diff of the same model: rows join
    rows, full_rows = res.modules.set_index("name"), full.modules.set_index("name")
    assert set(rows.index) <= set(full_rows.index)
    for name, dw in deltas.items():
        assert_sigma_exact(res.spectrum(name), ref_sigma(dw))
        assert rows.loc[name, "base_fro_norm"] == pytest.approx(
            full_rows.loc[name, "base_fro_norm"], rel=1e-6
        )
        assert rows.loc[name, "fro_norm"] == pytest.approx(full_rows.loc[name, "fro_norm"], rel=1e-4)


def test_rope_row_order_inverts_the_converters_permute():
    w = torch.arange(32 * 3).reshape(32, 3)
    permuted = w.reshape(4, 2, 4, 3).swapaxes(1, 2).reshape(32, 3)  # LlamaModel.permute, 4 heads
    order = rope_row_order(32, 4)
    assert torch.equal(permuted, w[torch.from_numpy(order)])
    assert torch.equal(permuted[torch.from_numpy(np.argsort(order))], w)


def test_pairing_query_rows_needs_the_base_config(llama_f32):
    base, _, _, path = llama_f32
    bare = base / "model.safetensors"  # the weights without config.json: no head counts
    with pytest.raises(LorascopeError, match="num_attention_heads"):
        plan_deltas(open_checkpoint(bare), open_checkpoint(path))


def test_gguf_store_is_lazy_and_pickles(tmp_path):
    _, adapter_dir, _ = make_peft(tmp_path, "q8_0")
    path = write_gguf_adapter(adapter_dir, tmp_path / "adapter.gguf", "q8_0")
    store = open_store(path)
    assert isinstance(store, GGUFFile) and store.metadata["general.type"] == "adapter"
    key = "blk.0.attn_q.weight.lora_a"
    assert store.info(key).shape == (4, 64) and store.info(key).dtype == "float32"
    again = pickle.loads(pickle.dumps(store))
    assert again._reader is None  # no mapped file travels to a worker
    np.testing.assert_array_equal(again.get_numpy(key), store.get(key).numpy())


def run_cli(*args):
    return CliRunner().invoke(main, ["spectrum", *map(str, args), "--no-report", "-q"])


def test_bad_gguf_files_are_clean_errors(tmp_path, llama_f32):
    _, adapter_dir, _, good = llama_f32
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:-100])
    no_alpha = write_gguf_adapter(adapter_dir, tmp_path / "no_alpha.gguf", alpha_key=False)
    untyped = write_gguf_adapter(adapter_dir, tmp_path / "untyped.gguf", general_type=None)
    model = gguf.GGUFWriter(tmp_path / "model.gguf", "llama")
    model.add_type("model")
    model.add_tensor("blk.0.attn_q.weight", np.ones((8, 8), np.float32))
    model.write_header_to_file(), model.write_kv_data_to_file(), model.write_tensors_to_file(), model.close()
    cases = [
        (cut, "truncated"),
        (no_alpha, "adapter.lora.alpha is missing"),
        (untyped, "general.type"),
        (tmp_path / "model.gguf", "not a LoRA adapter"),
    ]
    for path, message in cases:
        res = run_cli(path, "--out", tmp_path / "o")
        assert res.exit_code == 2, (path.name, res.output)
        assert message in res.output and path.name in res.output and "Traceback" not in res.output


def test_a_gguf_model_is_weights_and_two_of_them_diff(tmp_path):
    """A full GGUF model is dense Weights; two of them (F32, Q8_0) give a full diff of dequantized weights."""
    w0 = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    w1 = w0 + np.outer(np.linspace(1, 2, 16), np.linspace(-1, 1, 64)).astype(np.float32)
    for name, w, qtype in (("a.gguf", w0, "F32"), ("b.gguf", w1, "Q8_0")):
        writer = gguf.GGUFWriter(tmp_path / name, "llama")
        writer.add_type("model")
        q = getattr(gguf.GGMLQuantizationType, qtype)
        writer.add_tensor("blk.0.ffn_up.weight", gguf.quants.quantize(w, q), raw_dtype=q)
        writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
        writer.close()
    assert open_checkpoint(tmp_path / "a.gguf").kind == "weights"
    stored = gguf.quants.dequantize(
        gguf.quants.quantize(w1, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    ).reshape(16, 64)
    res = lorascope.analyze(tmp_path / "a.gguf", tmp_path / "b.gguf")
    want = ref_sigma(stored.astype(np.float64) - w0)
    np.testing.assert_allclose(
        res.spectrum("blk.0.ffn_up"),
        want[: len(res.spectrum("blk.0.ffn_up"))],
        rtol=1e-4,
        atol=1e-5 * want[0],
    )


def test_missing_gguf_package_says_what_to_install(monkeypatch, llama_f32):
    path = llama_f32[3]
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)
    with pytest.raises(LorascopeError, match=r"lorascope\[gguf\]"):
        open_checkpoint(path)


def test_stacked_expert_factors_are_one_module_per_expert(tmp_path):
    """convert_lora_to_gguf.py stacks an MoE layer's expert factors: A (E or 1, r, in), B (E, out, r)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((1, 3, 16)).astype(np.float32)  # one A shared by the experts (its leading dim 1)
    b = rng.standard_normal((4, 12, 3)).astype(np.float32)
    writer = gguf.GGUFWriter(tmp_path / "moe.gguf", "qwen2moe")
    writer.add_type("adapter")
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 6.0)
    writer.add_tensor("blk.0.ffn_up_exps.weight.lora_a", a)
    writer.add_tensor("blk.0.ffn_up_exps.weight.lora_b", b)
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file()
    writer.close()
    res = lorascope.analyze(tmp_path / "moe.gguf")
    assert list(res.modules["name"]) == [f"blk.0.ffn_up_exps.{e}" for e in range(4)]
    for e in range(4):
        want = ref_sigma(2.0 * b[e].astype(np.float64) @ a[0].astype(np.float64))
        assert_sigma_exact(res.spectrum(f"blk.0.ffn_up_exps.{e}"), want)
