"""Functional sweeps: the loss at each k against models built independently (tuned folder, numpy
truncation)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from rank.planting import truncate

from lorascope.errors import LorascopeError
from lorascope.rank.functional import pick_rank

WORDS = tuple(f"w{i}" for i in range(60))
LINES = [" ".join(WORDS[(7 * i + 3 * j) % 60] for j in range(12)) for i in range(16)]
TUNED = (
    "model.layers.0.self_attn.q_proj",
    "model.layers.1.self_attn.v_proj",
    "model.layers.1.mlp.down_proj",
    "lm_head",
)  # fine-tuned on the evaluation lines, then cut to exactly rank 2


def test_pick_rank_is_the_smallest_k_within_tolerance():
    # the fine-tune moved the loss from 4.0 to 2.0: tolerance t allows loss_k ≤ 2.0 + t · 2.0
    table = pd.DataFrame(
        {
            "point": ["base", "truncated", "truncated", "truncated", "full"],
            "k": [0, 1, 2, 4, np.nan],
            "loss": [4.0, 3.0, 2.03, 2.0, 2.0],
        }
    )
    assert pick_rank(table, 0.02)["k"] == 2
    assert pick_rank(table, 0.01)["k"] == 4
    assert pick_rank(table, 0.5)["k"] == 1
    pick = pick_rank(table.assign(loss=[4.0, 3.0, 2.5, 2.2, 2.0]), 0.01)
    assert pick["k"] == 4 and not pick["within"] and pick["recovered"] == pytest.approx(0.9)
    # a truncation below the untruncated loss is within any tolerance
    assert pick_rank(table.assign(loss=[4.0, 1.9, 2.5, 2.2, 2.0]), 0.0)["k"] == 1
    with pytest.raises(LorascopeError, match="'full' row"):
        pick_rank(table[table["point"] != "full"], 0.01)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra (transformers)")
    from lorascope.train.tokenizer import WordTokenizer, hf_tokenizer_config, hf_tokenizer_json

    tmp = tmp_path_factory.mktemp("functional")
    tok = WordTokenizer(WORDS)
    cfg = transformers.LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(tmp / "base")
    (tmp / "base" / "tokenizer.json").write_text(json.dumps(hf_tokenizer_json(tok)))
    (tmp / "base" / "tokenizer_config.json").write_text(json.dumps(hf_tokenizer_config(tok, 64)))
    fine_tune(model, tok)
    model.save_pretrained(tmp / "tuned")
    (tmp / "eval.txt").write_text("\n".join(LINES) + "\n")
    return tmp, tok, transformers


def fine_tune(model, tok, steps: int = 40) -> None:
    """A few Adam steps on the evaluation lines for the TUNED weights; each update is then truncated to
    rank 2."""
    params = dict(model.named_parameters())
    start = {n: params[f"{n}.weight"].detach().clone() for n in TUNED}
    for p in model.parameters():
        p.requires_grad_(False)
    trained = [params[f"{n}.weight"] for n in TUNED]
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trained, lr=1e-2)
    ids = torch.tensor([[tok.bos_id] + tok.encode(line) for line in LINES])
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    with torch.no_grad():
        for n in TUNED:
            dw = (params[f"{n}.weight"] - start[n]).double().numpy()
            params[f"{n}.weight"].copy_(start[n] + torch.tensor(truncate(dw, 2), dtype=torch.float32))


def reference_loss(model, tok) -> float:
    """Mean next-token cross-entropy over every token of every line, [BOS] prepended: summed by hand."""
    total, count = 0.0, 0
    with torch.no_grad():
        for line in LINES:
            ids = torch.tensor([[tok.bos_id] + tok.encode(line)])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            total -= float(logp.gather(1, ids[0, 1:, None]).sum())
            count += ids.shape[1] - 1
    return total / count


def test_functional_sweep_matches_independent_models(folders):
    tmp, tok, transformers = folders
    from lorascope.rank import run_sweep

    out = run_sweep(
        [tmp / "base", tmp / "tuned"], tmp / "sweep", [1, 2, 4], eval_data=tmp / "eval.txt", tolerance=1e-3
    )
    table = out.functional.set_index(
        out.functional["point"] + out.functional["k"].fillna(-1).astype(int).astype(str)
    )
    load = lambda folder: transformers.LlamaForCausalLM.from_pretrained(str(folder)).eval()  # noqa: E731
    base_loss, full_loss = reference_loss(load(tmp / "base"), tok), reference_loss(load(tmp / "tuned"), tok)
    assert table.loc["base0", "loss"] == pytest.approx(base_loss, rel=1e-5)
    assert table.loc["full-1", "loss"] == pytest.approx(full_loss, rel=1e-5)
    assert abs(base_loss - full_loss) > 0.05  # the planted update matters
    # k = 1: the base plus the numpy rank-1 truncation of each stored ΔW
    base_model, tuned_sd = load(tmp / "base"), load(tmp / "tuned").state_dict()
    params = dict(base_model.named_parameters())
    with torch.no_grad():
        for name in TUNED:
            dw = tuned_sd[f"{name}.weight"].double().numpy() - params[f"{name}.weight"].double().numpy()
            params[f"{name}.weight"].add_(torch.tensor(truncate(dw, 1), dtype=torch.float32))
    k1 = reference_loss(base_model, tok)
    assert table.loc["truncated1", "loss"] == pytest.approx(k1, rel=1e-5)
    for k in (2, 4):  # at and past the planted rank the truncation is the whole update
        assert table.loc[f"truncated{k}", "loss"] == pytest.approx(full_loss, rel=1e-5)
        assert table.loc[f"truncated{k}", "energy"] == pytest.approx(1.0, abs=1e-6)
    assert k1 > full_loss * (1 + 1e-3)
    assert out.pick["k"] == 2 and out.pick["within"]
    assert (tmp / "sweep" / "functional.csv").is_file()
    saved = json.loads((tmp / "sweep" / "sweep.json").read_text())
    assert saved["functional_pick"]["k"] == 2


def test_functional_sweep_needs_the_base(folders, tmp_path):
    tmp, _, _ = folders
    from builders import peft_folder

    from lorascope.rank import run_sweep

    ad = peft_folder(
        tmp_path / "ad",
        {
            "model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(2, 32),
            "model.layers.0.self_attn.q_proj.lora_B.weight": torch.ones(32, 2),
        },
        {"r": 2, "lora_alpha": 2},
    )
    with pytest.raises(LorascopeError, match="needs the base model"):
        run_sweep([ad], tmp_path / "out", [1], eval_data=tmp / "eval.txt")


def test_a_base_without_a_usable_tokenizer_gives_no_loss(folders, tmp_path):
    import shutil

    from lorascope.rank import run_sweep

    tmp, _, _ = folders
    bare = shutil.copytree(tmp / "base", tmp_path / "bare")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    with pytest.raises(LorascopeError, match="tokenizer"):
        run_sweep([bare, tmp / "tuned"], tmp_path / "out", [1], eval_data=tmp / "eval.txt")
    # prompts longer than max_length: every completion is cut away, so no token would be scored
    # (loss 0, acc 1)
    long = json.dumps({"prompt": " ".join(LINES * 40), "completion": LINES[0]})
    (tmp_path / "long.jsonl").write_text(long + "\n")
    with pytest.raises(LorascopeError, match="no token the model is scored on"):
        run_sweep([tmp / "base", tmp / "tuned"], tmp_path / "out2", [1], eval_data=tmp_path / "long.jsonl")
