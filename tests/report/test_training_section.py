"""The report's training section: a record written during training renders as effective rank, energy and
magnitude against step, beside the report of the adapter at its last recorded step."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from lorascope.cli import main
from lorascope.report import build_page, render_report
from lorascope.report.training_figures import step_table, trajectories, training_figure
from lorascope.results import load_results

pytestmark = pytest.mark.hf
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


@pytest.fixture
def record(tmp_path):
    from lorascope.callbacks import record_spectra

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    model = peft.get_peft_model(
        transformers.LlamaForCausalLM(cfg),
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]),
    )
    out = tmp_path / "spectra"
    with torch.no_grad():
        for step in (0, 10, 20, 30):
            record_spectra(model, step, out)
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.add_(0.05 * torch.randn_like(p))  # a stand-in for optimizer steps: ΔW grows
    return out


def test_the_record_renders_with_its_section(record):
    html = render_report(record)
    page = html.read_text()
    assert "During training" in page and (record / "figures" / "training_spectra.png").is_file()
    keys = [s.key for s in build_page(load_results(record)).sections]
    assert keys.index("during-training") == keys.index("headline") + 1
    res = CliRunner().invoke(main, ["report", str(record)])
    assert res.exit_code == 0, res.output


def test_trajectories_are_medians_over_each_type(record):
    from lorascope.callbacks import read_training

    table = read_training(record)
    curves = trajectories(table, "fro_norm")
    assert set(curves) == {"self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"}
    q = table[table["module"] == "self_attn.q_proj"]
    for step, row in curves["self_attn.q_proj"].iterrows():
        values = q.loc[q["step"] == step, "fro_norm"]
        assert row["median"] == pytest.approx(values.median()) and row["low"] <= row["median"] <= row["high"]
    assert (
        curves["self_attn.q_proj"]["median"].iloc[0] == 0
        and curves["self_attn.q_proj"]["median"].iloc[-1] > 0
    )
    summary = step_table(table).set_index("module type")
    assert summary.loc["mlp.down_proj", "modules"] == 2 and summary.loc["mlp.down_proj", "fro_norm @ 0"] == 0
    fig = training_figure(table)
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["effective rank", "energy", "magnitude"]
    assert len(fig.axes[0].get_lines()) == 3  # one line per module type
