"""Make the README's picture of a report: analyze an adapter (or take a results folder), render its report,
and photograph the page in headless Chromium.

    python examples/make_screenshot.py ../shared/fixtures/real/peft/abrhaleyarefaine1997+gpt2-tigrinya-lora

writes examples/report-screenshot.png: the top of the report page, 1280 px wide, with only the sections
named by --sections (default: the headline cards, the layer × module type heatmaps and the spectra), reduced
to 256 colours so it stays small. Needs Chromium (Debian package `chromium`, or --chromium PATH).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

import lorascope
from lorascope.report import build_page
from lorascope.report.blocks import CardsBlock
from lorascope.report.html import write_page
from lorascope.results import SUMMARY_JSON, load_results

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path, help="an adapter / checkpoint to analyze, or a results folder")
    ap.add_argument("--out", type=Path, default=HERE / "report-screenshot.png")
    ap.add_argument("--sections", default="headline,heatmaps,spectra", help="sections shown, comma-separated")
    ap.add_argument("--size", default="1280,1480", help="window width,height in CSS pixels")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("google-chrome"))
    args = ap.parse_args()
    if not args.chromium:
        raise SystemExit("no Chromium found: install Debian's `chromium` package or pass --chromium PATH")

    with tempfile.TemporaryDirectory(prefix="lorascope-shot-") as tmp:
        tmp = Path(tmp)
        folder = args.input
        if not (folder / SUMMARY_JSON).is_file():
            folder = lorascope.analyze(args.input).save(tmp / "results")
        results = load_results(folder)
        page = build_page(results)
        keep = args.sections.split(",")
        page.sections = [s for s in page.sections if s.key in keep]
        for s in page.sections:
            if s.key == "headline":  # the headline numbers without their tables
                s.blocks = [b for b in s.blocks if isinstance(b, CardsBlock)]
        html = write_page(page, tmp / "page" / "report.html", None)
        raw = tmp / "shot.png"
        subprocess.run(
            [args.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={tmp / 'profile'}", f"--window-size={args.size}", f"--screenshot={raw}",
             html.as_uri()],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        image = Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        image.save(args.out, optimize=True)
    print(f"screenshot written to {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
