"""lorascope/train/folders.py: a MiniGPT saved as a Hugging Face Llama folder and loaded back (by transformers
too), adapters written by the one PEFT writer, task files read."""

import pytest
import torch

from lorascope.checkpoint import open_checkpoint
from lorascope.errors import LorascopeError
from lorascope.train.folders import load_minigpt, read_task_file, save_adapter, save_minigpt
from lorascope.train.model import MiniGPT, sized_config
from lorascope.train.tokenizer import WordTokenizer


def test_a_minigpt_folder_round_trips(tmp_path):
    tok = WordTokenizer(("a", "b", "c"))
    torch.manual_seed(0)
    model = MiniGPT(sized_config("tiny", tok.vocab_size))
    save_minigpt(tmp_path / "m", model, tok, None)
    base = load_minigpt(tmp_path / "m")
    assert base.tokenizer == tok and base.format == "minigpt"
    ids = torch.tensor([[tok.bos_id, 4, 5]])
    torch.testing.assert_close(base.model(ids), model(ids))
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(hf(ids).logits, model(ids), rtol=1e-5, atol=1e-5)


def test_an_adapter_is_a_peft_folder(tmp_path):
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    save_adapter(
        tmp_path / "ad",
        {f"{key}.lora_A.weight": torch.ones(2, 4), f"{key}.lora_B.weight": torch.ones(3, 2)},
        {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": ["q_proj"]},
    )
    (m,) = open_checkpoint(tmp_path / "ad").modules
    assert m.shape == (3, 4) and m.scale == 1.0


def test_task_files(tmp_path):
    (tmp_path / "t.txt").write_text("one line\nanother line\n")
    assert len(read_task_file(tmp_path / "t.txt")) == 2
    (tmp_path / "t.csv").write_text("x")
    with pytest.raises(LorascopeError, match="must end in .txt"):
        read_task_file(tmp_path / "t.csv")
    with pytest.raises(LorascopeError, match="does not exist"):
        read_task_file(tmp_path / "missing.txt")
