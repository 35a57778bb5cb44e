"""Tied weights counted as PEFT counts them: modules_to_save on a tied head, ensure_weight_tying, tied LoRA.

The reference is PEFT itself: get_peft_model() on the model transformers builds from the same config (on the
meta device; PEFT only reads shapes) and its get_nb_trainable_parameters(). Every tied config of the real
fixtures is checked, with two tiny tied Gemma-2 and Llama configs and BERT / DistilBERT's tied masked-LM
heads.
"""

from __future__ import annotations

import warnings

import pytest
from audit.test_hf_shapes import few_layers, meta_model

from lorascope.audit import AuditOptions, LoraSettings, ModelShapes, audit_source, count_lora, rule_shapes
from lorascope.audit.count import adapter_tensors, copy_params, peft_tying
from lorascope.audit.targets import parse_targets

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.hf

TINY = {
    "tiny-gemma2": {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"], "vocab_size": 97,
                    "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
                    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
                    "tie_word_embeddings": True},
    "tiny-llama-tied": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 101,
                        "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True},
}
# per architecture: (attention targets, input embedding leaf, tied output head leaf)
NAMES = {"gemma2": (["q_proj", "v_proj"], "embed_tokens", "lm_head"),
         "llama": (["q_proj", "v_proj"], "embed_tokens", "lm_head"),
         "gpt2": (["c_attn"], "wte", "lm_head"),
         "bert": (["query", "value"], "word_embeddings", "decoder"),
         "distilbert": (["q_lin", "v_lin"], "word_embeddings", "vocab_projector")}


@pytest.fixture(scope="module")
def tied_configs(configs) -> dict[str, dict]:
    """Every config whose model ties its output head to its input embeddings (two layers), the tiny ones."""
    from lorascope.audit.hf_shapes import hf_shapes

    out = {name: few_layers(cfg, 2) for name, cfg in configs.items() if hf_shapes(few_layers(cfg, 2)).tied}
    assert {"gemma-2-9b", "gpt2", "bert-base-uncased", "distilbert-base-uncased"} <= set(out)
    return {**out, **TINY}


def peft_count(cfg: dict, targets: list[str], r: int, modules_to_save: list[str] | None,
               ensure_weight_tying: bool = False) -> tuple[int, int]:
    from lorascope.audit.shapes import head_of

    model = meta_model(cfg, head_of(cfg, cfg["model_type"]))
    config = peft.LoraConfig(r=r, target_modules=targets, modules_to_save=modules_to_save,
                             ensure_weight_tying=ensure_weight_tying)
    with warnings.catch_warnings(), torch.device("meta"):  # LoRA factors on the meta device too: shapes only
        warnings.simplefilter("ignore")
        return peft.get_peft_model(model, config).get_nb_trainable_parameters()


def ours(cfg: dict | ModelShapes, targets: list[str], r: int, modules_to_save: list[str] | None,
         ensure_weight_tying: bool = False):
    from lorascope.audit.hf_shapes import hf_shapes

    model = cfg if isinstance(cfg, ModelShapes) else hf_shapes(cfg)
    settings = LoraSettings(rank=r, targets=parse_targets(targets),
                            modules_to_save=tuple(modules_to_save or ()),
                            ensure_weight_tying=ensure_weight_tying, allow_unmatched=True)
    return count_lora(model, settings)


def cases(arch: str) -> list[tuple[str, list[str], list[str] | None, bool]]:
    attn, embed, head = NAMES[arch]
    out = [("head saved", attn, [head], False), ("embedding and head saved", attn, [embed, head], False),
           ("head saved, tied", attn, [head], True), ("embedding saved, tied", attn, [embed], True)]
    if head == "lm_head":  # PEFT ties LoRA targets only for the names in its EMBEDDING_LAYER_NAMES
        out += [("LoRA on the head, tied", [*attn, head], None, True),
                ("LoRA on the embedding, tied", [*attn, embed], None, True),
                ("LoRA on the head, untied", [*attn, head], None, False)]
    return out


def test_every_tied_config_counts_as_peft(tied_configs):
    from lorascope.audit.hf_shapes import hf_shapes

    failures = []
    for name, cfg in tied_configs.items():
        models = {"hf": hf_shapes(cfg), "rules": rule_shapes(cfg)}
        for label, targets, mts, tie in cases(cfg["model_type"]):
            want = peft_count(cfg, targets, 4, mts, tie)
            for shapes, model in models.items():
                c = ours(model, targets, 4, mts, tie)
                if (c.trainable, c.peft_total) != want:
                    ours_ = (c.trainable, c.peft_total)
                    failures.append(f"{name} {label} ({shapes}): ours {ours_}, PEFT {want}")
    assert not failures, "\n".join(failures)


def test_gemma_2_9b_saved_head_is_a_full_copy(configs):
    """The issue's numbers: q_proj, v_proj at r = 8, modules_to_save lm_head, on gemma-2-9b at full depth."""
    c = ours(configs["gemma-2-9b"], ["q_proj", "v_proj"], 8, ["lm_head"])
    assert c.lora == 4_472_832 and c.saved == 256_000 * 3584 == 917_504_000
    want, _ = peft_count(configs["gemma-2-9b"], ["q_proj", "v_proj"], 8, ["lm_head"])
    assert c.trainable == 921_976_832 == want
    assert c.saved_modules == ("lm_head",)


def test_the_audit_says_what_the_tie_does(config_dir):
    lora = {"rank": 8, "targets": parse_targets("q_proj,v_proj")}
    broken = audit_source(config_dir / "gemma-2-9b.json", LoraSettings(**lora, modules_to_save=("lm_head",)))
    assert broken.count.trainable == 921_976_832
    assert any("separate copy" in w and "917,504,000" in w and "ensure_weight_tying" in w
               for w in broken.warnings)
    shared = audit_source(config_dir / "gemma-2-9b.json",
                          LoraSettings(**lora, modules_to_save=("lm_head",), ensure_weight_tying=True),
                          AuditOptions(shapes="rules"))
    assert shared.count.saved_modules == ("model.embed_tokens",) and shared.count.trainable == 921_976_832
    assert any("shares it" in w for w in shared.warnings)
    assert shared.to_dict()["lora"]["ensure_weight_tying"] is True


def test_adapter_file_holds_the_copy_of_a_tied_head(tmp_path):
    """What PEFT's save_pretrained writes for a tied head in modules_to_save: the copy's full weight."""
    cfg = TINY["tiny-gemma2"]
    c = ours(cfg, ["q_proj"], 2, ["lm_head"])
    head = c.model.by_name()["lm_head"]
    assert head.tied_to == "model.embed_tokens" and head.params == 0 and copy_params(head) == 97 * 16
    model = meta_model(cfg, "causal-lm").to_empty(device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = peft.LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
        pm = peft.get_peft_model(model, config)
    saved = {k: tuple(v.shape) for k, v in peft.get_peft_model_state_dict(pm).items()}
    assert dict(adapter_tensors(c)) == saved


def test_tying_rewrite_is_peft_rewrite():
    """ensure_weight_tying rewrites modules_to_save and target_modules as PEFT does (read from its config)."""
    from lorascope.audit.hf_shapes import hf_shapes

    cfg = TINY["tiny-llama-tied"]
    model = hf_shapes(cfg)
    cases = ((["lm_head"], ["q_proj"]), (None, ["q_proj", "lm_head"]), (None, ["v_proj", "embed_tokens"]))
    for mts, targets in cases:
        config = peft.LoraConfig(r=2, target_modules=targets, modules_to_save=mts, ensure_weight_tying=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft.get_peft_model(meta_model(cfg, "causal-lm"), config)
        tying = peft_tying(model, LoraSettings(rank=2, targets=parse_targets(targets),
                                               modules_to_save=tuple(mts or ()), ensure_weight_tying=True))
        assert set(tying.modules_to_save) == set(config.modules_to_save or ())
        assert set(tying.targets.names) == set(config.target_modules)


def test_params_cli_and_claims_file_take_ensure_weight_tying(config_dir, tmp_path):
    import json

    import yaml
    from click.testing import CliRunner

    from lorascope.cli import main

    args = ["params", str(config_dir / "gpt2.json"), "-r", "4", "-t", "c_attn", "--modules-to-save",
            "lm_head", "--json"]
    untied = json.loads(CliRunner().invoke(main, args).output)
    tied = json.loads(CliRunner().invoke(main, [*args, "--ensure-weight-tying"]).output)
    vocab_by_hidden = 50257 * 768
    assert untied["counts"]["modules_to_save"] == tied["counts"]["modules_to_save"] == vocab_by_hidden
    assert "separate copy" in untied["warnings"][0] and "transformer.wte" in tied["warnings"][0]
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump({"claims": [
        {"name": "tied", "model": str(config_dir / "gpt2.json"), "rank": 4, "targets": "c_attn",
         "modules_to_save": ["lm_head"], "ensure_weight_tying": True, "claimed": {"lora": 1}},
        {"name": "bad", "model": str(config_dir / "gpt2.json"), "ensure_weight_tying": "yes",
         "claimed": {"lora": 1}},
    ]}))
    res = CliRunner().invoke(main, ["audit", str(claims), "--out", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 2 and "ensure_weight_tying must be true or false" in res.output
    from lorascope.audit.claims_file import read_claims

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"claims": yaml.safe_load(claims.read_text())["claims"][:1]}))
    assert read_claims(good)[0].settings.ensure_weight_tying is True
