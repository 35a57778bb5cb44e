"""An input given as a relative folder name that also reads like a Hub id (`lorascope spectrum adapter`)
prints the CLI's own "note: … read the local folder" line and then the same text again as a raw Python
warning with lorascope's source location and code line ("…/lorascope/analysis.py:461: HubNotice: … return x
if isinstance(x, (Weights, Adapter)) else open_checkpoint(x, fmt)"), once per input. The CLI's stderr should
carry the note once and no Python warning machinery."""

from __future__ import annotations

import torch
from regressions._util import cli
from safetensors.torch import save_file


def test_hub_notice_is_printed_once_without_source_lines(tmp_path):
    g = torch.Generator().manual_seed(0)
    stem = "lora_unet_down_blocks_0_attentions_0_proj_in"
    folder = tmp_path / "adapter"
    folder.mkdir()
    save_file(
        {
            f"{stem}.lora_down.weight": torch.randn(4, 24, generator=g),
            f"{stem}.lora_up.weight": torch.randn(32, 4, generator=g),
            f"{stem}.alpha": torch.tensor(4.0),
        },
        folder / "lora.safetensors",
    )
    p = cli("spectrum", "adapter/lora.safetensors", "--no-report", "--out", "res", cwd=tmp_path)
    q = cli("spectrum", "adapter", "--no-report", "--out", "res2", cwd=tmp_path)
    for proc in (p, q):
        assert "HubNotice" not in proc.stderr, proc.stderr
        assert "open_checkpoint(" not in proc.stderr, proc.stderr
