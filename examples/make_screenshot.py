"""Make the README's picture of the demo page: photograph the top of the real report.html in headless
Chromium.

    lorascope demo                       # writes reports/demo (runs, spectra, report.html)
    python examples/make_screenshot.py   # -> examples/report-screenshot.png

The page is opened as it is (file://, nothing else reachable) at 1280 CSS pixels wide and the top --height
pixels are kept: the title, the section list and the answer (each target set's best outcome, the outcome
against rank). The PNG is reduced to 256 colours so it stays small. Needs Chromium (Debian package `chromium`,
or --chromium PATH).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def screenshot(page: Path, out: Path, width: int, height: int, chromium: str) -> Path:
    """Photograph the top ``width`` × ``height`` CSS pixels of ``page`` into ``out`` (256 colours)."""
    with tempfile.TemporaryDirectory(prefix="lorascope-shot-") as tmp:
        raw = Path(tmp) / "shot.png"
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--window-size={width},{height}",
                f"--screenshot={raw}",
                page.resolve().as_uri(),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=180,
        )
        image = Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out, optimize=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "demo",
        type=Path,
        nargs="?",
        default=ROOT / "reports" / "demo",
        help="the demo folder (holding report.html) [default: reports/demo]",
    )
    ap.add_argument("--out", type=Path, default=HERE / "report-screenshot.png")
    ap.add_argument("--width", type=int, default=1280, help="window width in CSS pixels")
    ap.add_argument("--height", type=int, default=1200, help="window height in CSS pixels")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("google-chrome"))
    args = ap.parse_args()
    page = args.demo / "report.html" if args.demo.is_dir() else args.demo
    if not page.is_file():
        sys.exit(f"{page} does not exist: run `lorascope demo --out {args.demo}` first")
    if not args.chromium:
        sys.exit("no Chromium found: install Debian's `chromium` package or pass --chromium PATH")
    out = screenshot(page, args.out, args.width, args.height, args.chromium)
    print(f"screenshot of {page} written to {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
