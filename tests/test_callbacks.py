"""Watching a training run: spectra recorded during training equal a direct analysis of the adapter saved at
those steps, and PEFT's own ΔW; the headline numbers reach the trainer's reporters."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lorascope import analyze
from lorascope.callbacks import (
    HEADLINE_PREFIX,
    SpectrumCallback,
    read_training,
    record_spectra,
    recorded_steps,
    snapshot,
    training_spectrum,
)
from lorascope.errors import LorascopeError
from lorascope.results import load_results

pytestmark = pytest.mark.hf
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

METRICS = [
    "rows",
    "cols",
    "lora_rank",
    "scale",
    "fro_norm",
    "spectral_norm",
    "stable_rank",
    "entropy_rank",
    "rank_90",
    "rank_95",
    "rank_99",
    "numerical_rank",
    "gd_rank",
    "n_singular",
]


def tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return transformers.LlamaForCausalLM(cfg)


def peft_model(**config):
    cfg = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", **config}
    return peft.get_peft_model(tiny_llama(), peft.LoraConfig(**cfg))


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n=32, length=12):
        gen = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, 64, (n, length), generator=gen)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Reporter(transformers.TrainerCallback):
    """Stands in for TensorBoard / W&B / trackio: reporters see exactly the ``logs`` passed to on_log."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append((state.global_step, dict(logs)))


def train(tmp_path, model, steps=6, every=3, **kwargs):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=2e-2,
        save_strategy="steps",
        save_steps=every,
        logging_steps=100,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        **kwargs,
    )
    reporter = Reporter()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[reporter])
    cb = SpectrumCallback(out=tmp_path / "spectra", every_n_steps=every).attach(trainer)
    trainer.train()
    return trainer, cb, reporter


def test_recorded_spectra_equal_the_saved_adapters_analysis(tmp_path):
    model = peft_model(use_rslora=True, alpha_pattern={"v_proj": 4}, rank_pattern={"down_proj": 2})
    trainer, cb, reporter = train(tmp_path, model)
    out = tmp_path / "spectra"
    table = read_training(out)
    assert recorded_steps(out) == [0, 3, 6] and sorted(table["step"].unique()) == [0, 3, 6]
    assert (table.loc[table["step"] == 0, "fro_norm"] == 0).all()  # PEFT initializes B = 0
    for step in (3, 6):
        direct = analyze(tmp_path / "trainer" / f"checkpoint-{step}")
        rows = table[table["step"] == step].set_index("name").sort_index()
        want = direct.modules.set_index("name").sort_index()
        assert list(rows.index) == list(want.index) and len(rows) == 14
        pd.testing.assert_frame_equal(
            rows[METRICS].astype("float64"),
            want[METRICS].astype("float64"),
            check_exact=False,
            rtol=1e-9,
            atol=1e-12,
        )
        sigma = training_spectrum(out, step)
        for name in want.index:
            np.testing.assert_allclose(sigma[name], direct.spectrum(name), rtol=1e-6, atol=1e-12)
    assert (table.loc[table["step"] == 6, "fro_norm"] > 0).all()
    # the folder is a results folder of the final adapter
    final = load_results(out)
    assert final.summary["training"]["step"] == 6 and len(final.modules) == 14
    # the headline numbers reached the reporter at each recorded step, and trainer_state's log history
    logged = {step: logs for step, logs in reporter.seen if HEADLINE_PREFIX + "entropy_rank" in logs}
    assert sorted(logged) == [3, 6]
    med = float(table.loc[table["step"] == 6, "entropy_rank"].median())
    assert logged[6][HEADLINE_PREFIX + "entropy_rank"] == pytest.approx(med, rel=1e-12)
    assert logged[6][HEADLINE_PREFIX + "entropy_rank/self_attn.q_proj"] == pytest.approx(
        float(table[(table["step"] == 6) & (table["module"] == "self_attn.q_proj")]["entropy_rank"].median())
    )
    history = [h for h in trainer.state.log_history if HEADLINE_PREFIX + "update_norm" in h]
    assert [h["step"] for h in history] == [3, 6]
    assert len(cb.seconds) == 3


def test_recorded_spectra_equal_pefts_own_delta_weight(tmp_path):
    """PEFT's get_delta_weight is the reference for each module: σ by float64 numpy on its dense update."""
    model = peft_model(init_lora_weights=False)  # random B: a non-zero update without training
    snap = snapshot(model, step=0)
    layers = {
        n.removeprefix("base_model.model."): m
        for n, m in model.named_modules()
        if isinstance(m, peft.tuners.lora.LoraLayer)
    }
    assert len(layers) == len(snap.modules) == 14
    for name, layer in layers.items():
        r = layer.r["default"]
        dw = layer.get_delta_weight("default").detach().double().numpy()  # PEFT forms B @ A in float32
        np.testing.assert_allclose(snap.spectra[name], np.linalg.svd(dw, compute_uv=False)[:r], rtol=2e-6)
        b, a = (
            layer.lora_B["default"].weight.detach().double().numpy(),
            layer.lora_A["default"].weight.detach().double().numpy(),
        )
        dw64 = layer.scaling["default"] * (b @ a)  # the same update in float64
        want = np.linalg.svd(dw64, compute_uv=False)[:r]
        np.testing.assert_allclose(snap.spectra[name], want, rtol=1e-10, atol=1e-13 * want[0])
        row = snap.modules.set_index("name").loc[name]
        assert row["fro_norm"] == pytest.approx(np.linalg.norm(dw64), rel=1e-10)


@pytest.mark.parametrize("config_cls, family", [("LoHaConfig", "loha"), ("LoKrConfig", "lokr")])
def test_lycoris_tuners_match_pefts_delta_weight(config_cls, family):
    cfg = getattr(peft, config_cls)(r=4, alpha=8, target_modules=["q_proj", "down_proj"], init_weights=False)
    model = peft.get_peft_model(tiny_llama(), cfg)
    snap = snapshot(model)
    assert set(snap.modules["family"]) == {family}
    for name, layer in model.named_modules():
        if not isinstance(layer, peft.tuners.lycoris_utils.LycorisLayer):
            continue
        got = snap.spectra[name.removeprefix("base_model.model.")]
        dw = layer.get_delta_weight("default").detach().double().numpy()  # PEFT forms it in float32
        peft_sigma = np.linalg.svd(dw, compute_uv=False)
        np.testing.assert_allclose(got, peft_sigma[: len(got)], rtol=2e-6, atol=1e-6 * peft_sigma[0])
        want = np.linalg.svd(dense64(layer, family), compute_uv=False)  # the same update in float64
        np.testing.assert_allclose(got, want[: len(got)], rtol=1e-9, atol=1e-12 * want[0])
        assert np.all(want[len(got) :] <= 1e-12 * want[0])  # the values not returned are zeros


def dense64(layer, family):
    """ΔW of a LoHa or LoKr layer in float64 from its parameters (PEFT's make_weight / make_kron formulas)."""
    p = {
        k: getattr(layer, k)["default"].detach().double().numpy()
        for k in layer.adapter_layer_names
        if "default" in getattr(layer, k)
    }
    s = layer.scaling["default"]
    if family == "loha":
        return s * (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
    w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
    w2 = p["lokr_w2"] if "lokr_w2" in p else p["lokr_w2_a"] @ p["lokr_w2_b"]
    return s * np.kron(w1, w2)


def test_dora_records_the_direction_update_and_says_so(tmp_path):
    model = peft_model(use_dora=True, init_lora_weights=False)
    record_spectra(model, 5, tmp_path / "rec")
    summary = json.loads((tmp_path / "rec" / "summary.json").read_text())
    assert "direction update s·B@A" in summary["warnings"][0]["reason"]
    table = read_training(tmp_path / "rec")
    assert set(table["family"]) == {"dora"}
    layer = next(m for n, m in model.named_modules() if n.endswith("layers.0.self_attn.q_proj"))
    ba = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight).detach().double().numpy()
    want = np.linalg.svd(layer.scaling["default"] * ba, compute_uv=False)[:4]
    np.testing.assert_allclose(
        training_spectrum(tmp_path / "rec", 5)["model.layers.0.self_attn.q_proj"], want, rtol=1e-6
    )


def test_record_replaces_later_steps_and_refuses_foreign_folders(tmp_path):
    model = peft_model(init_lora_weights=False)
    out = tmp_path / "rec"
    for step in (0, 10, 20):
        record_spectra(model, step, out)
    record_spectra(model, 10, out)  # a run resumed from step 10
    assert recorded_steps(out) == [0, 10] and sorted(read_training(out)["step"].unique()) == [0, 10]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(LorascopeError, match="holds files which lorascope did not write"):
        record_spectra(model, 0, foreign)


def test_unsupported_and_missing_adapters_are_refused():
    with pytest.raises(LorascopeError, match="no PEFT adapter layer"):
        snapshot(tiny_llama())
    ia3 = peft.get_peft_model(
        tiny_llama(),
        peft.IA3Config(target_modules=["q_proj", "down_proj"], feedforward_modules=["down_proj"]),
    )
    with pytest.raises(LorascopeError, match=r"no update form for \(ia3\.Linear\)"):
        snapshot(ia3)


@pytest.mark.slow
def test_a_callback_added_after_the_reporters_says_so(tmp_path):
    model = peft_model()
    with pytest.warns(UserWarning, match="runs after the trainer's reporters"):
        trainer, cb, reporter = _train_with_reporting(tmp_path, model)
    assert not any(HEADLINE_PREFIX + "entropy_rank" in logs for _, logs in reporter.seen)
    assert any(HEADLINE_PREFIX + "entropy_rank" in h for h in trainer.state.log_history)


def _train_with_reporting(tmp_path, model):
    """A run whose arguments name a reporter, the callback added after it (as Trainer(callbacks=…) does)."""
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=2e-2,
        save_strategy="no",
        logging_steps=100,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    reporter = Reporter()
    cb = SpectrumCallback(out=tmp_path / "spectra", every_n_steps=2)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[reporter, cb])
    args.report_to = ["tensorboard"]  # named after the Trainer is built: ``reporter`` stands in for it
    trainer.train()
    return trainer, cb, reporter
