"""The training loop: schedule values, loss and accuracy by hand, determinism, spectra snapshots."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lorascope.train.data import IGNORE, Encoded
from lorascope.train.lora import LoraSpec, adapter_parameters, inject, lora_layers, resolve_targets
from lorascope.train.model import MiniGPTConfig, build
from lorascope.train.trainer import (
    LoopConfig,
    OptimConfig,
    batches,
    dense_references,
    evaluate,
    lm_loss,
    lr_factor,
    snapshot,
    train,
)

CFG = MiniGPTConfig(
    vocab_size=30,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=16,
)
CPU = torch.device("cpu")


def pattern_data(n: int = 32, t: int = 10) -> Encoded:
    start = torch.randint(4, 30, (n, 1), generator=torch.Generator().manual_seed(0))
    ids = 4 + (start - 4 + torch.arange(t)) % 26  # each token follows from the one before
    labels = ids.clone()
    labels[:, :2] = IGNORE
    return Encoded(ids, labels)


def test_schedule_warmup_then_cosine():
    assert [lr_factor(s, 4, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 14) == 1.0
    assert lr_factor(9, 4, 14) == pytest.approx(0.5)  # half way through the decay: ½(1 + cos(π/2))
    assert lr_factor(13, 4, 14) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    assert lr_factor(0, 0, 10) == 1.0


class Fixed(nn.Module):
    """A 'model' whose logits are given: predicts token 5 everywhere, with probability 1/2."""

    def forward(self, input_ids):
        b, t = input_ids.shape
        logits = torch.zeros(b, t, 8)
        logits[..., 5] = math.log(7.0)  # softmax: 7/(7+7) = 1/2 on token 5, 1/14 on each other
        return logits


def test_loss_and_accuracy_by_hand():
    ids = torch.tensor([[1, 2, 5, 5], [1, 2, 5, 3]])
    labels = torch.tensor([[IGNORE, IGNORE, 5, 5], [IGNORE, IGNORE, 5, 3]])
    logits = Fixed()(ids)
    # tokens 5 cost ln 2, token 3 costs ln 14; four labelled tokens
    assert lm_loss(logits, labels).item() == pytest.approx((3 * math.log(2) + math.log(14)) / 4)
    out = evaluate(Fixed(), {"set": Encoded(ids, labels)}, batch_size=1, device=CPU)
    assert out["set_acc"] == 0.5  # the second example misses its last token
    assert out["set_loss"] == pytest.approx(out["eval_loss"])


def test_batches_are_seeded_epochs_trimmed_to_labels():
    data = Encoded(torch.arange(12).view(6, 2), torch.tensor([[IGNORE, 1]] * 6))
    first = [b[0][:, 0].tolist() for _, b in zip(range(3), batches(data, 4, seed=7))]
    again = [b[0][:, 0].tolist() for _, b in zip(range(3), batches(data, 4, seed=7))]
    assert first == again and sorted(first[0] + first[1]) == list(
        range(0, 12, 2)
    )  # one epoch covers every row once
    assert [len(b) for b in first] == [4, 2, 4]


def lora_model(seed: int = 0) -> tuple[nn.Module, list]:
    model = build(CFG, 0)
    torch.manual_seed(seed)
    inject(
        model, resolve_targets(model, "re:.*"), LoraSpec(r=2, alpha=4.0)
    )  # every linear layer and the head
    return model, [{"params": p} for p in adapter_parameters(model).values()]


def test_training_is_deterministic_and_learns():
    runs = []
    for _ in range(2):
        model, groups = lora_model()
        runs.append(
            train(
                model,
                groups,
                pattern_data(),
                {"train": pattern_data()},
                OptimConfig(lr=5e-2),
                LoopConfig(steps=30, batch_size=8, eval_every=10, rank_every=10),
                CPU,
            )
        )
    a, b = runs
    assert a.losses == b.losses  # bit for bit
    assert a.final["eval_loss"] < 0.8 * a.history[0]["eval_loss"]
    assert [h["step"] for h in a.history] == [0, 10, 20, 30]
    assert {r["step"] for r in a.rank_history} == {0, 10, 20, 30} and len(a.rank_history) == 4 * 15
    n_params = sum(p.numel() for g in lora_model()[1] for p in g["params"])
    assert a.optimizer_state_bytes == 2 * 4 * n_params + 4 * len(list(lora_layers(lora_model()[0]))) * 2
    assert a.memory["peak_rss_bytes"] > 0


def test_lora_snapshot_equals_the_dense_spectrum():
    model, _ = lora_model()
    g = torch.Generator().manual_seed(3)
    for _, layer in lora_layers(model):
        with torch.no_grad():
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g))
    rows = {r["name"]: r for r in snapshot(model, 5, {})}
    layer = dict(lora_layers(model))["model.layers.1.self_attn.q_proj"]
    dense = layer.scaling * layer.lora_B.weight.detach().double() @ layer.lora_A.weight.detach().double()
    s = np.linalg.svd(dense.numpy(), compute_uv=False)
    row = rows["model.layers.1.self_attn.q_proj"]
    assert row["fro_norm"] == pytest.approx(float(np.sqrt((s**2).sum())), rel=1e-9)
    assert row["spectral_norm"] == pytest.approx(float(s[0]), rel=1e-9)
    p = s[:2] / s[:2].sum()  # rank 2: the two non-zero σ
    assert row["entropy_rank"] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)
    assert row["rank_90"] == (1 if s[0] ** 2 >= 0.9 * (s**2).sum() else 2)
    assert row["source"] == "lora" and row["lora_rank"] == 2 and row["step"] == 5


def test_dense_snapshot_of_a_full_fine_tune():
    model = build(CFG, 0)
    refs = dense_references(model)
    assert "lm_head" in refs and "model.embed_tokens" in refs and len(refs) == 2 + 2 * 7
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 3.0  # a rank-1 update of norm 3
    rows = {r["name"]: r for r in snapshot(model, 1, refs)}
    assert rows["model.layers.0.mlp.up_proj"]["fro_norm"] == pytest.approx(3.0, rel=1e-6)
    assert rows["model.layers.0.mlp.up_proj"]["rank_90"] == 1
    assert rows["lm_head"]["fro_norm"] == 0.0


@pytest.mark.parametrize(
    "cls,field,value",
    [
        (OptimConfig, "lr", -1.0),
        (OptimConfig, "clip", 0.0),
        (LoopConfig, "steps", 0),
        (LoopConfig, "rank_every", -1),
    ],
)
def test_config_validation_names_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})
