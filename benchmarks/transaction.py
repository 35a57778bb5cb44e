"""What the output transaction costs: saving results through ``lorascope.outputs.writing`` against writing the
same files straight into a folder.

    python benchmarks/transaction.py [--modules 224] [--sigma 4096] [--repeats 7] [--report]

Results the size of a Llama-2-7B full diff (224 modules, 4096 singular values each: a 3.5 MiB spectra file
and a 224-row modules.csv) are written three ways, each timed --repeats times (median):

- plain: ``Results.write(folder)`` into a new folder — the files alone, no lock, stage, manifest or fsync;
- new folder: ``Results.save(folder)`` into a new folder — lock, stage, manifest with sha256, fsync, one
  rename;
- over results: ``Results.save(folder)`` over earlier results of the same analysis, with a user's file beside
  them — the kept tables copied into the stage, the user's file linked, the swap, the previous folder cleaned.

Run it twice, with LORASCOPE_FSYNC=1 (the default: staged files fsynced, so the swap survives a power loss)
and LORASCOPE_FSYNC=0 (the swap is atomic all the same), to see what durability costs on the machine's disk.
With --report, each run also renders the HTML report (the figures dominate; the transaction is the same).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lorascope.results import Results, modules_frame


def make_results(modules: int, sigma: int, seed: int = 0) -> Results:
    rng = np.random.default_rng(seed)
    spectra, rows = {}, []
    for i in range(modules):
        name = f"model.layers.{i // 7}.{['q', 'k', 'v', 'o', 'gate', 'up', 'down'][i % 7]}_proj"
        s = np.sort(rng.random(sigma))[::-1]
        spectra[name] = s
        rows.append(
            {
                "name": name,
                "layer": i // 7,
                "module": name.split(".", 3)[3],
                "rows": sigma,
                "cols": sigma,
                "source": "dense",
                "method": "exact",
                "fro_norm": float(np.linalg.norm(s)),
                "n_singular": sigma,
            }
        )
    return Results(modules_frame(rows), spectra, {"inputs": [{"path": "/bench"}], "options": {"seed": seed}})


def timed_rounds(fns: list, repeats: int) -> list[float]:
    """Median seconds of each function, run in interleaved rounds so that machine noise falls on all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modules", type=int, default=224)
    parser.add_argument("--sigma", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--report", action="store_true", help="render report.html too")
    args = parser.parse_args()
    res = make_results(args.modules, args.sigma)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counter = iter(range(10**6))

        def plain() -> None:
            folder = root / f"plain-{next(counter)}"
            res.write(folder)
            if args.report:
                from lorascope.report import write_report

                write_report(res, folder / "report.html")

        def new_folder() -> None:
            folder = root / f"new-{next(counter)}"
            if args.report:
                from lorascope.outputs import writing
                from lorascope.report import write_report

                with writing(folder, "save") as tx:
                    res.write(tx.stage)
                    write_report(res, tx.stage / "report.html")
            else:
                res.save(folder)

        over = root / "over"
        res.save(over)
        (over / "notes.txt").write_text("the user's own file")

        def over_results() -> None:
            if args.report:
                from lorascope.outputs import writing
                from lorascope.report import write_report

                with writing(over, "save") as tx:
                    res.write(tx.stage)
                    write_report(res, tx.stage / "report.html")
            else:
                res.save(over)

        t_plain, t_new, t_over = timed_rounds([plain, new_folder, over_results], args.repeats)
        size = sum(p.stat().st_size for p in over.rglob("*") if p.is_file())
    from lorascope.outputs import durable

    print(
        f"results: {args.modules} modules × {args.sigma} σ ({size / 2**20:.1f} MiB on disk)"
        f"{' with report' if args.report else ''}; median of {args.repeats}; "
        f"fsync {'on' if durable() else 'off'}"
    )
    print(f"{'plain write':<28}{t_plain * 1000:9.1f} ms")
    print(f"{'transaction, new folder':<28}{t_new * 1000:9.1f} ms  ({(t_new - t_plain) * 1000:+.1f} ms)")
    print(f"{'transaction, over results':<28}{t_over * 1000:9.1f} ms  ({(t_over - t_plain) * 1000:+.1f} ms)")


if __name__ == "__main__":
    sys.exit(main())
