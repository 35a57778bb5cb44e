"""The `lorascope spectrum` command: outputs, default folder, summary, refusals and clean errors."""

import pandas as pd
import torch
from builders import peft_folder, save_st
from click.testing import CliRunner

from lorascope.cli import main

g = torch.Generator().manual_seed(0)


def adapter(tmp_path):
    tensors = {}
    for i in range(3):
        for proj in ("q_proj", "v_proj"):
            tensors[f"model.layers.{i}.self_attn.{proj}.lora_A.weight"] = torch.randn(4, 16, generator=g)
            tensors[f"model.layers.{i}.self_attn.{proj}.lora_B.weight"] = torch.randn(16, 4, generator=g)
    return peft_folder(tmp_path / "my-adapter", tensors, {"r": 4, "lora_alpha": 8})


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_adapter_to_default_folder_with_summary(tmp_path, monkeypatch):
    ad = adapter(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = run("spectrum", ad, "--no-report")
    assert res.exit_code == 0, res.output
    out = tmp_path / "reports" / "spectrum-my-adapter"
    assert {p.name for p in out.iterdir()} >= {
        "modules.csv",
        "singular_values.safetensors",
        "summary.json",
        "vectors.csv",
    }
    assert "results written to reports/spectrum-my-adapter" in res.output
    assert "Median per module type" in res.output and "self_attn.q_proj" in res.output
    assert "largest updates" in res.output
    assert len(pd.read_csv(out / "modules.csv")) == 6


def test_quiet_out_and_rerun_into_own_results(tmp_path):
    ad = adapter(tmp_path)
    out = tmp_path / "res"
    for _ in range(2):  # a results folder may be written again
        res = run("spectrum", ad, "--out", out, "-q", "--no-report", "--include", "q_proj")
        assert res.exit_code == 0, res.output
        assert "Median" not in res.output and f"results written to {out}" in res.output
    assert len(pd.read_csv(out / "modules.csv")) == 3


def test_report_beside_the_results_unless_no_report(tmp_path):
    ad = adapter(tmp_path)
    out = tmp_path / "res"
    res = run("spectrum", ad, "--out", out, "-q")
    assert res.exit_code == 0, res.output
    assert f"report written to {out / 'report.html'}" in res.output
    html = (out / "report.html").read_text()
    assert "self_attn.q_proj" in html and "<img" in html
    assert len(list((out / "figures").glob("*.png"))) >= 4
    (out / "report.html").unlink()
    assert run("spectrum", ad, "--out", out, "-q", "--no-report").exit_code == 0
    assert not (out / "report.html").exists()


def test_refuses_to_write_into_a_folder_it_does_not_own(tmp_path):
    ad = adapter(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    res = run("spectrum", ad, "--out", mine, "-q")
    assert res.exit_code == 2 and "refusing to write" in res.output
    assert (mine / "notes.txt").read_text() == "precious" and len(list(mine.iterdir())) == 1
    res = run("spectrum", ad, "--out", ad, "-q")  # the adapter folder itself
    assert res.exit_code == 2 and len(list(ad.iterdir())) == 2


def test_bad_inputs_exit_2_without_traceback(tmp_path):
    ad = adapter(tmp_path)
    plain = save_st(tmp_path / "w.safetensors", {"a.weight": torch.ones(2, 2)})
    for args, expected in [
        (("spectrum", ad, ad, ad), "one input"),
        (("spectrum", plain), "not a LoRA adapter"),
        (("spectrum", ad, "--include", "(("), "regular expression"),
        (("spectrum", ad, "--device", "tpu"), "device must be"),
    ]:
        res = run(*args, "-q", "--out", tmp_path / "never")
        assert res.exit_code == 2, (args, res.output)
        assert expected in res.output and "Traceback" not in res.output
    assert not (tmp_path / "never").exists()
    res = run("spectrum", tmp_path / "missing")
    assert res.exit_code == 2 and "does not exist" in res.output


def test_help_lists_commands():
    res = run("--help")
    assert res.exit_code == 0 and "spectrum" in res.output


def test_nan_or_inf_in_any_matrix_is_a_clean_error_naming_file_and_tensor(tmp_path):
    key = "model.layers.1.self_attn.v_proj.weight"
    base = {
        key: torch.randn(8, 8, generator=g),
        "model.layers.1.self_attn.q_proj.weight": torch.randn(8, 8, generator=g),
    }
    save_st(tmp_path / "base.safetensors", base)
    for i, bad in enumerate((float("nan"), float("inf"), float("-inf"))):
        tuned = {k: v + 0.1 for k, v in base.items()}
        tuned[key] = tuned[key].to(torch.float16)
        tuned[key][i, 2] = bad
        tuned_file = save_st(tmp_path / f"tuned{i}.safetensors", tuned)
        for cmd in ("spectrum", "intruders"):
            res = run(
                cmd, tmp_path / "base.safetensors", tuned_file, "--out", tmp_path / f"{cmd}{i}", "--no-report"
            )
            assert res.exit_code == 2 and "Traceback" not in res.output, res.output
            assert f"{tuned_file}: tensor {key} holds 1 NaN or Inf value(s) of 64" in res.output
            assert not (tmp_path / f"{cmd}{i}").exists()
    ad = adapter(tmp_path)
    from safetensors.torch import load_file

    tensors = load_file(str(ad / "adapter_model.safetensors"))
    lora_b = next(k for k in tensors if k.endswith("layers.2.self_attn.q_proj.lora_B.weight"))
    tensors[lora_b][0, 0] = float("nan")
    bad = peft_folder(
        tmp_path / "nan-adapter",
        {k.removeprefix("base_model.model."): v for k, v in tensors.items()},
        {"r": 4, "lora_alpha": 8},
    )
    res = run("spectrum", bad, "--out", tmp_path / "o", "--no-report")
    assert res.exit_code == 2 and f"tensor {lora_b} holds 1 NaN" in res.output


def test_a_forced_format_the_input_does_not_have_is_a_clean_error(tmp_path):
    plain = save_st(
        tmp_path / "plain.safetensors", {"model.layers.0.mlp.up_proj.weight": torch.randn(8, 4, generator=g)}
    )
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text("{}")
    cases = [
        ("peft", plain, "was given as peft but is not a PEFT adapter folder"),
        ("peft", tmp_path / "folder", "was given as peft but is not a PEFT adapter folder"),
    ]
    cases += [
        (fmt, plain, f"was given as {fmt} but holds no {fmt} LoRA factors")
        for fmt in ("kohya", "diffusers", "cloneofsimo")
    ]
    for fmt, path, message in cases:
        res = run("spectrum", "--format", fmt, path, "--out", tmp_path / "o", "--no-report")
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, (
            fmt,
            res.output,
        )
        assert not (tmp_path / "o").exists()


def test_memory_budget_option(tmp_path):
    import json

    base = {"model.layers.0.mlp.up_proj.weight": torch.randn(2600, 2048, generator=g)}
    b = save_st(tmp_path / "b.safetensors", base)
    t = save_st(tmp_path / "t.safetensors", {k: v + 0.01 for k, v in base.items()})
    res = run("spectrum", b, t, "--memory", "64M", "-q", "--no-report", "--out", tmp_path / "small")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "(2600×2048) needs at least" in res.output and "--memory" in res.output
    res = run("spectrum", b, t, "--memory", "lots", "-q", "--no-report", "--out", tmp_path / "bad")
    assert res.exit_code == 2 and "memory must be a size such as 768M" in res.output
    res = run("spectrum", b, t, "--memory", "512M", "-q", "--no-report", "--out", tmp_path / "ok")
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["memory"] == {"budget_bytes": 512 << 20, "budget": "given"}
    assert summary["options"]["memory"] == "512M"
