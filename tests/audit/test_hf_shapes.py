"""Counts against PEFT's own: get_nb_trainable_parameters() of get_peft_model() on the meta-instantiated model.

The reference builds the model with transformers and injects LoRA with PEFT, independently of lorascope; our
counts come from transformers' shapes (hf path) and from lorascope's own rules, and must both equal PEFT's
exactly. The one known difference: Mixtral's experts, which transformers 5 fuses (our rules keep the
checkpoint layout of one Linear per expert; see test_rules_match_peft_on_the_checkpoint_layout).
"""

import warnings

import pytest

from lorascope.audit import LoraSettings, count_lora, parse_targets, rule_shapes
from lorascope.audit.numbers import parse_layers
from lorascope.audit.targets import PRESETS

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.hf

AUTO = {"base": "AutoModel", "causal-lm": "AutoModelForCausalLM", "masked-lm": "AutoModelForMaskedLM",
        "seq-cls": "AutoModelForSequenceClassification"}


def meta_model(cfg: dict, head: str):
    kwargs = {k: v for k, v in cfg.items() if k not in ("auto_map", "architectures", "model_type")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = transformers.AutoConfig.for_model(cfg["model_type"], **kwargs)
        with torch.device("meta"):
            return getattr(transformers, AUTO[head]).from_config(config)


def peft_reference(cfg: dict, head: str, targets, r: int, **extra) -> tuple[int, int]:
    """(trainable, all params) as PEFT counts them for LoraConfig(r, targets, **extra) on the meta model."""
    model = meta_model(cfg, head)
    with warnings.catch_warnings(), torch.device("meta"):  # LoRA factors on the meta device too: shapes only
        warnings.simplefilter("ignore")
        peft_model = peft.get_peft_model(model, peft.LoraConfig(r=r, target_modules=targets, **extra))
    return peft_model.get_nb_trainable_parameters()


def peft_targets(text: str | None, arch: str):
    """What PEFT is given for our spellings: None (its default), 'all-linear', a preset's names or regex, a list."""
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
    *[(name, None, None, 8, {}) for name in (
        "llama-2-7b-hf", "llama-2-7b-hf.hpmll-resaved", "llama-2-70b-hf", "llama-2-70b-hf.eLLM-EDITED-8layers",
        "mistral-7b-v0.1.mlc-modified", "mixtral-8x7b-v0.1", "qwen2.5-7b", "qwen2.5-7b-instruct.tt-metal", "qwen3-8b",
        "gemma-2-9b", "gpt2", "bert-base-uncased")],
    *[(name, None, "all-linear", 16, {}) for name in (
        "llama-2-7b-hf", "llama-2-70b-hf.eLLM-EDITED-8layers", "mistral-7b-v0.1.mlc-modified", "mixtral-8x7b-v0.1",
        "qwen2.5-7b", "qwen3-8b", "gemma-2-9b", "phi-3-mini-4k-instruct", "gpt2", "bert-base-uncased",
        "distilbert-base-uncased")],
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
CHECKPOINT_LAYOUT_ONLY = {("mixtral-8x7b-v0.1", "all-linear"), ("mixtral-8x7b-v0.1", "mlp"),
                          ("mixtral-8x7b-v0.1", "w1,w3,gate")}


def settings_for(targets, r, extra) -> LoraSettings:
    layers = extra.get("layers_to_transform")
    return LoraSettings(rank=r, targets=parse_targets(targets), layers=parse_layers(layers),
                        rank_pattern=extra.get("rank_pattern", {}), dora=extra.get("use_dora", False),
                        bias=extra.get("bias", "none"), modules_to_save=TASK_SAVED.get(extra.get("task_type"), ()))


LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers")


def few_layers(cfg: dict, n: int = 4) -> dict:
    """The same architecture with ``n`` layers: every layer has the same shapes, so per-layer counting is checked
    exactly at a fraction of PEFT's injection time (full-depth models are checked with the default targets)."""
    return {**cfg, **{k: min(cfg[k], n) for k in LAYER_KEYS if k in cfg}}


@pytest.fixture(scope="module")
def hf_cache():
    return {}


@pytest.mark.parametrize(("name", "head", "targets", "r", "extra"), CASES,
                         ids=[f"{c[0]}-{c[2] or 'default'}-r{c[3]}{'-' + '-'.join(c[4]) if c[4] else ''}" for c in CASES])
def test_counts_equal_peft(configs, hf_cache, name, head, targets, r, extra):
    from lorascope.audit.hf_shapes import hf_shapes

    cfg = configs[name] if targets is None else few_layers(configs[name])
    arch = cfg["model_type"]
    hf = hf_cache.setdefault((name, head, targets is None), hf_shapes(cfg, head))
    rules = rule_shapes(cfg, head)
    settings = settings_for(targets, r, extra)
    want_trainable, want_all = peft_reference(cfg, hf.head, peft_targets(targets, arch), r, **extra)
    ours = count_lora(hf, settings)
    assert (ours.trainable, ours.peft_total) == (want_trainable, want_all)
    if (name, targets) not in CHECKPOINT_LAYOUT_ONLY:
        by_rules = count_lora(rules, settings)
        assert (by_rules.trainable, by_rules.peft_total) == (want_trainable, want_all)


@pytest.mark.parametrize("name", ["llama-2-7b-hf", "llama-2-70b-hf.eLLM-EDITED-8layers", "mistral-7b-v0.1.mlc-modified",
                                  "mixtral-8x7b-v0.1", "qwen2.5-7b-instruct.tt-metal", "qwen3-8b", "gemma-2-9b",
                                  "phi-3-mini-4k-instruct", "gpt2", "bert-base-uncased", "distilbert-base-uncased"])
def test_rules_equal_transformers_module_by_module(configs, hf_cache, name):
    from lorascope.audit.hf_shapes import hf_shapes

    cfg = configs[name]
    hf = hf_cache.setdefault((name, None, True), hf_shapes(cfg))
    rules = rule_shapes(cfg)
    assert rules.total == hf.total
    assert (rules.head, rules.output_head, rules.hidden) == (hf.head, hf.output_head, hf.hidden)
    ours = {m.name: (m.kind, m.shape, m.params, m.bias, m.tied_to, m.shared) for m in rules.modules}
    theirs = {m.name: (m.kind, m.shape, m.params, m.bias, m.tied_to, m.shared) for m in hf.modules}
    if cfg["model_type"] == "mixtral":  # transformers 5 fuses the experts; everything else is the same
        ours = {k: v for k, v in ours.items() if "block_sparse_moe" not in k}
        theirs = {k: v for k, v in theirs.items() if ".mlp." not in k}
        assert len(hf.parameters) == 3 * 32 and "fused as 3-D parameters" in hf.notes[0]
    assert ours == theirs


def _v4_tree(model):
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


@pytest.mark.parametrize(("targets", "r", "extra"), [
    ("w1,w2,w3", 8, {}),
    ("q_proj,k_proj,v_proj,o_proj,gate,w1,w2,w3", 16, {}),  # all-linear on the checkpoint layout (head left out)
    ("w2", 4, {"layers_to_transform": [1]}),
    (r"re:.*experts\.[0-3]\.w[13]", 8, {}),
])
def test_rules_match_peft_on_the_checkpoint_layout(configs, targets, r, extra):
    """Mixtral as its checkpoints and transformers 4 lay it out: PEFT on a tree with one Linear per expert."""
    rules = rule_shapes(few_layers(configs["mixtral-8x7b-v0.1"], 2))
    tree = _v4_tree(rules)
    peft_given = targets[3:] if targets.startswith("re:") else targets.split(",")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(tree, peft.LoraConfig(r=r, target_modules=peft_given, **extra))
    want, _ = model.get_nb_trainable_parameters()
    assert count_lora(rules, settings_for(targets, r, extra)).trainable == want
    if targets.startswith("q_proj"):
        assert count_lora(rules, settings_for("all-linear", r, extra)).trainable == want


def test_llama_q_v_r8_by_hand(configs):
    """Llama-2-7B, q_proj and v_proj, r=8: 32 layers · 2 modules · 8·(4096+4096) = 4,194,304."""
    assert count_lora(rule_shapes(configs["llama-2-7b-hf"]), settings_for("q_proj,v_proj", 8, {})).trainable == 4_194_304
    assert 32 * 2 * 8 * (4096 + 4096) == 4_194_304


def test_fused_experts_refusals_match_peft(configs, hf_cache):
    """What PEFT refuses on transformers-5 Mixtral, lorascope refuses too, with its reason."""
    from lorascope.audit.hf_shapes import hf_shapes
    from lorascope.errors import LorascopeError

    cfg = few_layers(configs["mixtral-8x7b-v0.1"], 1)
    hf = hf_shapes(cfg)
    with pytest.raises(ValueError, match="without also targeting w3"):
        peft_reference(cfg, "causal-lm", ["w1"], 8)
    with pytest.raises(LorascopeError, match="w1 cannot be targeted without w3"):
        count_lora(hf, settings_for("w1", 8, {}))
    with pytest.raises(ValueError, match="does not work with use_dora=True"):
        peft_reference(cfg, "causal-lm", ["w2"], 8, use_dora=True)
    with pytest.raises(LorascopeError, match="does not work with use_dora=True"):
        count_lora(hf, settings_for("w2", 8, {"use_dora": True}))
