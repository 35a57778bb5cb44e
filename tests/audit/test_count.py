"""LoRA counts worked by hand, and against PEFT's own: get_nb_trainable_parameters() of get_peft_model() on
the meta-instantiated model (audit/peft_reference.py), tied weights included.

The reference builds the model with transformers and injects LoRA with PEFT, independently of lorascope; our
counts come from transformers' shapes (hf path) and from lorascope's own rules, and must both equal PEFT's
exactly. The one known difference: Mixtral's experts, which transformers 5 fuses (our rules keep the
checkpoint layout of one Linear per expert; see test_rules_match_peft_on_the_checkpoint_layout).
"""

import warnings

import pytest

from lorascope.audit import LoraSettings, ModelShapes, count_lora, parse_targets, rule_shapes
from lorascope.audit.count import peft_tying
from lorascope.audit.numbers import parse_layers
from lorascope.audit.shape_source import DECODERS
from lorascope.audit.targets import PRESETS, TargetSpec
from lorascope.errors import LorascopeError


@pytest.fixture(scope="module")
def ref():
    """The PEFT reference helpers (skips where transformers or peft is absent)."""
    return pytest.importorskip("audit.peft_reference")


@pytest.fixture(scope="module")
def hf_cache():
    return {}


def settings(targets="q_proj,v_proj", **kw):
    return LoraSettings(targets=parse_targets(targets), **kw)


def test_llama2_7b_q_v_r8_is_4194304(configs):
    c = count_lora(rule_shapes(configs["llama-2-7b-hf"]), settings(rank=8))
    assert c.trainable == c.lora == 32 * 2 * 8 * (4096 + 4096) == 4_194_304
    assert c.percent == pytest.approx(100 * 4_194_304 / 6_738_415_616)
    assert c.peft_percent == pytest.approx(100 * 4_194_304 / (6_738_415_616 + 4_194_304))
    assert list(c.by_type()["params"]) == [2_097_152, 2_097_152]
    assert set(c.by_layer()["params"]) == {131_072}


def test_grouped_query_attention_is_not_square(configs):
    c = count_lora(rule_shapes(configs["mistral-7b-v0.1.mlc-modified"]), settings("k_proj", rank=16))
    assert c.trainable == 32 * 16 * (4096 + 1024)  # k_proj is 1024×4096: 8 kv heads of 128
    assert c.trainable != 32 * 16 * (4096 + 4096)


def test_mixtral_experts_each_count(configs):
    c = count_lora(rule_shapes(configs["mixtral-8x7b-v0.1"]), settings("w1,w2,w3,gate", rank=8))
    per_layer = 8 * 3 * 8 * (4096 + 14336) + 8 * (4096 + 8)
    assert c.trainable == 32 * per_layer
    assert set(c.by_type()["module_type"]) == {
        "block_sparse_moe.gate",
        "block_sparse_moe.experts.*.w1",
        "block_sparse_moe.experts.*.w2",
        "block_sparse_moe.experts.*.w3",
    }


def test_dora_embeddings_conv1d_and_rank_pattern(configs, shapes):
    gpt2 = shapes("gpt2")
    c = count_lora(gpt2, settings("c_attn", rank=4, dora=True))
    assert c.lora == 12 * 4 * (768 + 2304) and c.magnitude == 12 * 2304  # Conv1D counted as (out, in)
    emb = count_lora(gpt2, settings("wte", rank=4, dora=True))
    assert (
        emb.lora == 4 * (50257 + 768) and emb.magnitude == 768
    )  # DoRA on an embedding: one value per dimension
    llama = rule_shapes(configs["llama-2-7b-hf"])
    rp = count_lora(llama, settings(rank=8, rank_pattern={"v_proj": 16, r"layers\.0\.self_attn\.q_proj": 2}))
    assert rp.trainable == 31 * 8 * 8192 + 2 * 8192 + 32 * 16 * 8192
    assert rp.table.set_index("name").loc["model.layers.1.self_attn.q_proj", "r"] == 8


def test_bias_modes_and_modules_to_save(configs, hf):
    qwen = rule_shapes(configs["qwen2.5-7b"])  # q, k, v have biases; o does not
    lora_only = count_lora(qwen, settings("q_proj,o_proj", rank=8, bias="lora_only"))
    assert lora_only.bias == 28 * 3584
    every = count_lora(qwen, settings("q_proj", rank=8, bias="all"))
    assert every.bias == 28 * (3584 + 512 + 512)
    tiny = {
        "model_type": "distilbert",
        "dim": 8,
        "n_heads": 2,
        "n_layers": 1,
        "hidden_dim": 16,
        "vocab_size": 10,
    }
    distil = hf({**tiny, "max_position_embeddings": 4}, "seq-cls")
    saved = count_lora(distil, settings("q_lin", rank=2, modules_to_save=("classifier",)))
    # PEFT matches modules_to_save by plain suffix: 'classifier' reaches pre_classifier too
    assert saved.saved_modules == ("pre_classifier", "classifier")
    assert saved.saved == (8 * 8 + 8) + (2 * 8 + 2)


def test_settings_validate_fields():
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        LoraSettings(rank=0)
    with pytest.raises(ValueError, match="bias must be one of"):
        LoraSettings(bias="some")
    with pytest.raises(ValueError, match=r"'rank_pattern' entry 'v_proj' must be a positive integer"):
        LoraSettings(rank_pattern={"v_proj": 0})
    assert LoraSettings(targets=TargetSpec(preset="attn")).targets.preset == "attn"


# ---------------------------------------------------------------- against PEFT


def peft_targets(text: str | None, arch: str):
    """What PEFT is given for our spellings: None (its default), 'all-linear', a preset's names or regex, a
    list."""
    if text is None and arch == "mixtral":
        # PEFT 0.21 on transformers 5 fails to fill in its own Mixtral default (its MoE conversion turns the
        # missing target_modules into an empty set first); give that default, q_proj and v_proj, explicitly.
        return ["q_proj", "v_proj"]
    if text is None or text == "all-linear":
        return text
    if text.startswith("re:"):
        return text[3:]
    if text in PRESETS:
        value = PRESETS[text][arch]
        return value if isinstance(value, str) else list(value)
    return text.split(",")


# (config, head, targets, r, extra LoraConfig/LoraSettings options)
CASES = [
    *[
        (name, None, None, 8, {})
        for name in (
            "llama-2-7b-hf",
            "llama-2-7b-hf.hpmll-resaved",
            "llama-2-70b-hf",
            "llama-2-70b-hf.eLLM-EDITED-8layers",
            "mistral-7b-v0.1.mlc-modified",
            "mixtral-8x7b-v0.1",
            "qwen2.5-7b",
            "qwen2.5-7b-instruct.tt-metal",
            "qwen3-8b",
            "gemma-2-9b",
            "gpt2",
            "bert-base-uncased",
        )
    ],
    *[
        (name, None, "all-linear", 16, {})
        for name in (
            "llama-2-7b-hf",
            "llama-2-70b-hf.eLLM-EDITED-8layers",
            "mistral-7b-v0.1.mlc-modified",
            "mixtral-8x7b-v0.1",
            "qwen2.5-7b",
            "qwen3-8b",
            "gemma-2-9b",
            "phi-3-mini-4k-instruct",
            "gpt2",
            "bert-base-uncased",
            "distilbert-base-uncased",
        )
    ],
    ("llama-2-7b-hf", None, "attn", 4, {"rank_pattern": {"v_proj": 12, r"layers\.0\..*": 2}}),
    ("llama-2-7b-hf", None, "mlp", 8, {"layers_to_transform": [0, 1, 2, 3]}),
    ("llama-2-7b-hf", None, "q_proj,v_proj", 8, {"use_dora": True}),
    ("llama-2-7b-hf", None, "embed_tokens,lm_head", 8, {"use_dora": True}),
    ("llama-2-70b-hf", None, "q_proj,k_proj,v_proj", 64, {"layers_to_transform": [1, 3]}),
    ("qwen2.5-7b", None, "attn", 8, {"bias": "lora_only"}),
    ("qwen2.5-7b", None, "attn", 8, {"bias": "all"}),
    ("mixtral-8x7b-v0.1", None, "mlp", 8, {}),
    ("mixtral-8x7b-v0.1", None, "w1,w3,gate", 4, {"layers_to_transform": [0, 1]}),
    ("gemma-2-9b", None, "attn", 8, {}),
    ("phi-3-mini-4k-instruct", None, "qkv_proj", 8, {}),
    ("phi-3-mini-4k-instruct", None, "gate_up_proj,down_proj", 8, {"layers_to_transform": [0, 1]}),
    ("qwen3-8b", None, "attn", 8, {"use_dora": True}),
    ("gpt2", None, "c_proj", 8, {}),
    ("gpt2", None, "attn", 8, {"layers_to_transform": [0, 1, 2, 3, 4, 5]}),
    ("gpt2", "seq-cls", "c_attn", 8, {"task_type": "SEQ_CLS"}),
    ("bert-base-uncased", None, "mlp", 8, {}),
    ("distilbert-base-uncased", "seq-cls", "q_lin,v_lin", 8, {"task_type": "SEQ_CLS"}),
    ("distilbert-base-uncased", "base", "re:.*\\.layer\\.[0-2]\\..*_lin", 8, {}),
]
# modules PEFT adds to modules_to_save for a task type
TASK_SAVED = {"SEQ_CLS": ("classifier", "score")}
CHECKPOINT_LAYOUT_ONLY = {
    ("mixtral-8x7b-v0.1", "all-linear"),
    ("mixtral-8x7b-v0.1", "mlp"),
    ("mixtral-8x7b-v0.1", "w1,w3,gate"),
}


def settings_for(targets, r, extra) -> LoraSettings:
    layers = extra.get("layers_to_transform")
    return LoraSettings(
        rank=r,
        targets=parse_targets(targets),
        layers=parse_layers(layers),
        rank_pattern=extra.get("rank_pattern", {}),
        dora=extra.get("use_dora", False),
        bias=extra.get("bias", "none"),
        modules_to_save=TASK_SAVED.get(extra.get("task_type"), ()),
    )


@pytest.mark.hf
@pytest.mark.parametrize(
    ("name", "head", "targets", "r", "extra"),
    CASES,
    ids=[f"{c[0]}-{c[2] or 'default'}-r{c[3]}{'-' + '-'.join(c[4]) if c[4] else ''}" for c in CASES],
)
def test_counts_equal_peft(configs, hf_cache, ref, name, head, targets, r, extra):
    from lorascope.audit.shape_source import hf_shapes

    cfg = configs[name] if targets is None else ref.few_layers(configs[name])
    arch = cfg["model_type"]
    hf = hf_cache.setdefault((name, head, targets is None), hf_shapes(cfg, head))
    settings = settings_for(targets, r, extra)
    want_trainable, want_all = ref.peft_reference(cfg, hf.head, peft_targets(targets, arch), r, **extra)
    ours = count_lora(hf, settings)
    assert (ours.trainable, ours.peft_total) == (want_trainable, want_all)
    if (name, targets) not in CHECKPOINT_LAYOUT_ONLY and arch in DECODERS:  # the built-in rule's families
        by_rules = count_lora(rule_shapes(cfg, head), settings)
        assert (by_rules.trainable, by_rules.peft_total) == (want_trainable, want_all)


def _v4_tree(model, torch):
    """A torch module tree on the meta device with one nn.Linear / nn.Embedding per module of ``model``."""
    root = torch.nn.Module()
    with torch.device("meta"):
        for m in model.modules:
            parent = root
            *path, leaf = m.name.split(".")
            for part in path:
                if not hasattr(parent, part):
                    parent.add_module(part, torch.nn.Module())
                parent = getattr(parent, part)
            if m.kind == "linear":
                parent.add_module(leaf, torch.nn.Linear(m.shape[1], m.shape[0], bias=bool(m.bias)))
            elif m.kind == "embedding":
                parent.add_module(leaf, torch.nn.Embedding(*m.shape))
            else:
                holder = torch.nn.Module()
                holder.weight = torch.nn.Parameter(torch.empty(m.params))
                parent.add_module(leaf, holder)
    return root


@pytest.mark.hf
@pytest.mark.parametrize(
    ("targets", "r", "extra"),
    [
        ("w1,w2,w3", 8, {}),
        (
            "q_proj,k_proj,v_proj,o_proj,gate,w1,w2,w3",
            16,
            {},
        ),  # all-linear on the checkpoint layout (head left out)
        ("w2", 4, {"layers_to_transform": [1]}),
        (r"re:.*experts\.[0-3]\.w[13]", 8, {}),
    ],
)
def test_rules_match_peft_on_the_checkpoint_layout(configs, ref, targets, r, extra):
    """Mixtral as its checkpoints and transformers 4 lay it out: PEFT on a tree with one Linear per expert."""
    rules = rule_shapes(ref.few_layers(configs["mixtral-8x7b-v0.1"], 2))
    tree = _v4_tree(rules, ref.torch)
    peft_given = targets[3:] if targets.startswith("re:") else targets.split(",")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ref.peft.get_peft_model(tree, ref.peft.LoraConfig(r=r, target_modules=peft_given, **extra))
    want, _ = model.get_nb_trainable_parameters()
    assert count_lora(rules, settings_for(targets, r, extra)).trainable == want
    if targets.startswith("q_proj"):
        assert count_lora(rules, settings_for("all-linear", r, extra)).trainable == want


def test_llama_q_v_r8_by_hand(configs):
    """Llama-2-7B, q_proj and v_proj, r=8: 32 layers · 2 modules · 8·(4096+4096) = 4,194,304."""
    assert (
        count_lora(rule_shapes(configs["llama-2-7b-hf"]), settings_for("q_proj,v_proj", 8, {})).trainable
        == 4_194_304
    )
    assert 32 * 2 * 8 * (4096 + 4096) == 4_194_304


@pytest.mark.hf
def test_fused_experts_refusals_match_peft(configs, ref):
    """What PEFT refuses on transformers-5 Mixtral, lorascope refuses too, with its reason."""
    from lorascope.audit.shape_source import hf_shapes

    cfg = ref.few_layers(configs["mixtral-8x7b-v0.1"], 1)
    hf = hf_shapes(cfg)
    with pytest.raises(ValueError, match="without also targeting w3"):
        ref.peft_reference(cfg, "causal-lm", ["w1"], 8)
    with pytest.raises(LorascopeError, match="w1 cannot be targeted without w3"):
        count_lora(hf, settings_for("w1", 8, {}))
    with pytest.raises(ValueError, match="does not work with use_dora=True"):
        ref.peft_reference(cfg, "causal-lm", ["w2"], 8, use_dora=True)
    with pytest.raises(LorascopeError, match="does not work with use_dora=True"):
        count_lora(hf, settings_for("w2", 8, {"use_dora": True}))


# ---------------------------------------------------------------- tied weights, against PEFT
# modules_to_save on a tied head, ensure_weight_tying, tied LoRA: every tied config of the real fixtures (two
# layers), two tiny tied Gemma-2 and Llama configs, and BERT / DistilBERT's tied masked-LM heads.

TINY = {
    "tiny-gemma2": {
        "model_type": "gemma2",
        "architectures": ["Gemma2ForCausalLM"],
        "vocab_size": 97,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "tie_word_embeddings": True,
    },
    "tiny-llama-tied": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 101,
        "hidden_size": 24,
        "intermediate_size": 40,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    },
}
# per architecture: (attention targets, input embedding leaf, tied output head leaf)
NAMES = {
    "gemma2": (["q_proj", "v_proj"], "embed_tokens", "lm_head"),
    "llama": (["q_proj", "v_proj"], "embed_tokens", "lm_head"),
    "gpt2": (["c_attn"], "wte", "lm_head"),
    "bert": (["query", "value"], "word_embeddings", "decoder"),
    "distilbert": (["q_lin", "v_lin"], "word_embeddings", "vocab_projector"),
}


@pytest.fixture(scope="module")
def tied_configs(configs, ref) -> dict[str, dict]:
    """Every config whose model ties its output head to its input embeddings (two layers), the tiny ones."""
    from lorascope.audit.shape_source import hf_shapes

    out = {
        name: ref.few_layers(cfg, 2)
        for name, cfg in configs.items()
        if hf_shapes(ref.few_layers(cfg, 2)).tied
    }
    assert {"gemma-2-9b", "gpt2", "bert-base-uncased", "distilbert-base-uncased"} <= set(out)
    return {**out, **TINY}


def ours(
    cfg: dict | ModelShapes,
    targets: list[str],
    r: int,
    modules_to_save: list[str] | None,
    ensure_weight_tying: bool = False,
):
    from lorascope.audit.shape_source import hf_shapes

    model = cfg if isinstance(cfg, ModelShapes) else hf_shapes(cfg)
    settings = LoraSettings(
        rank=r,
        targets=parse_targets(targets),
        modules_to_save=tuple(modules_to_save or ()),
        ensure_weight_tying=ensure_weight_tying,
        allow_unmatched=True,
    )
    return count_lora(model, settings)


def peft_count(
    ref,
    cfg: dict,
    targets: list[str],
    r: int,
    modules_to_save: list[str] | None,
    ensure_weight_tying: bool = False,
) -> tuple[int, int]:
    from lorascope.audit.shapes import head_of

    return ref.peft_reference(
        cfg,
        head_of(cfg, cfg["model_type"]),
        targets,
        r,
        modules_to_save=modules_to_save,
        ensure_weight_tying=ensure_weight_tying,
    )


def cases(arch: str) -> list[tuple[str, list[str], list[str] | None, bool]]:
    attn, embed, head = NAMES[arch]
    out = [
        ("head saved", attn, [head], False),
        ("embedding and head saved", attn, [embed, head], False),
        ("head saved, tied", attn, [head], True),
        ("embedding saved, tied", attn, [embed], True),
    ]
    if head == "lm_head":  # PEFT ties LoRA targets only for the names in its EMBEDDING_LAYER_NAMES
        out += [
            ("LoRA on the head, tied", [*attn, head], None, True),
            ("LoRA on the embedding, tied", [*attn, embed], None, True),
            ("LoRA on the head, untied", [*attn, head], None, False),
        ]
    return out


@pytest.mark.hf
def test_every_tied_config_counts_as_peft(tied_configs, ref):
    from lorascope.audit.shape_source import hf_shapes

    failures = []
    for name, cfg in tied_configs.items():
        models = {
            "hf": hf_shapes(cfg),
            **({"rules": rule_shapes(cfg)} if cfg["model_type"] in DECODERS else {}),
        }
        for label, targets, mts, tie in cases(cfg["model_type"]):
            want = peft_count(ref, cfg, targets, 4, mts, tie)
            for shapes, model in models.items():
                c = ours(model, targets, 4, mts, tie)
                if (c.trainable, c.peft_total) != want:
                    ours_ = (c.trainable, c.peft_total)
                    failures.append(f"{name} {label} ({shapes}): ours {ours_}, PEFT {want}")
    assert not failures, "\n".join(failures)


@pytest.mark.hf
def test_gemma_2_9b_saved_head_is_a_full_copy(configs, ref):
    """The issue's numbers: q_proj, v_proj at r = 8, modules_to_save lm_head, on gemma-2-9b at full depth."""
    c = ours(configs["gemma-2-9b"], ["q_proj", "v_proj"], 8, ["lm_head"])
    assert c.lora == 4_472_832 and c.saved == 256_000 * 3584 == 917_504_000
    want, _ = peft_count(ref, configs["gemma-2-9b"], ["q_proj", "v_proj"], 8, ["lm_head"])
    assert c.trainable == 921_976_832 == want
    assert c.saved_modules == ("lm_head",)


@pytest.mark.hf
def test_tying_rewrite_is_peft_rewrite(ref):
    """ensure_weight_tying rewrites modules_to_save and target_modules as PEFT does (read from its config)."""
    from lorascope.audit.shape_source import hf_shapes

    cfg = TINY["tiny-llama-tied"]
    model = hf_shapes(cfg)
    cases = ((["lm_head"], ["q_proj"]), (None, ["q_proj", "lm_head"]), (None, ["v_proj", "embed_tokens"]))
    for mts, targets in cases:
        config = ref.peft.LoraConfig(
            r=2, target_modules=targets, modules_to_save=mts, ensure_weight_tying=True
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref.peft.get_peft_model(ref.meta_model(cfg, "causal-lm"), config)
        tying = peft_tying(
            model,
            LoraSettings(
                rank=2,
                targets=parse_targets(targets),
                modules_to_save=tuple(mts or ()),
                ensure_weight_tying=True,
            ),
        )
        assert set(tying.modules_to_save) == set(config.modules_to_save or ())
        assert set(tying.targets.names) == set(config.target_modules)
