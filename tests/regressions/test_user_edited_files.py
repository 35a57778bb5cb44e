"""A file in a results folder whose content differs from what lorascope's manifest recorded was not written by
lorascope (``load_results`` itself refuses such a file as not its own). Yet a re-run into the folder silently
replaces an edited modules.csv, and `--no-report` silently deletes a report.html the user replaced with their
own page: exit code 0, the user's bytes are gone. README: "an output folder is written as one transaction
that never touches a file lorascope did not write … refuses a run that would overwrite one"."""

from __future__ import annotations

import torch
from regressions._util import cli
from safetensors.torch import save_file


def _adapter(tmp_path):
    g = torch.Generator().manual_seed(0)
    stem = "lora_unet_down_blocks_0_attentions_0_proj_in"
    path = tmp_path / "a.safetensors"
    save_file(
        {
            f"{stem}.lora_down.weight": torch.randn(4, 24, generator=g),
            f"{stem}.lora_up.weight": torch.randn(32, 4, generator=g),
            f"{stem}.alpha": torch.tensor(4.0),
        },
        path,
    )
    return path


def test_edited_table_is_not_overwritten(tmp_path):
    a, out = _adapter(tmp_path), tmp_path / "res"
    assert cli("spectrum", a, "--no-report", "--out", out).returncode == 0
    edited = (out / "modules.csv").read_text() + "my note,,,\n"
    (out / "modules.csv").write_text(edited)
    p = cli("spectrum", a, "--no-report", "--out", out)
    assert (out / "modules.csv").read_text() == edited or p.returncode == 2, p.stderr
    if p.returncode == 2:
        assert "modules.csv" in p.stderr


def test_no_report_keeps_a_page_the_user_wrote(tmp_path):
    a, out = _adapter(tmp_path), tmp_path / "res"
    assert cli("spectrum", a, "--out", out).returncode == 0
    (out / "report.html").write_text("<html>my own annotated page</html>")
    p = cli("spectrum", a, "--no-report", "--out", out)
    assert (out / "report.html").exists(), p.stderr
    assert (out / "report.html").read_text() == "<html>my own annotated page</html>"
