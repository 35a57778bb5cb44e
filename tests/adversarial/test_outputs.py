"""Results folders as transactions: concurrent runs, faults mid-write, a full disk, a killed run, files of the
user's own — the earlier results survive every one of them, and nothing lorascope did not write is touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import peft_folder
from click.testing import CliRunner

from lorascope.cli import main
from lorascope.errors import LorascopeError
from lorascope.outputs import MANIFEST, read_manifest, writing
from lorascope.results import Results, load_results, modules_frame

ROOT = Path(__file__).resolve().parents[2]


def results(seed: int, n: int = 3) -> Results:
    """Small results whose every file differs from another seed's."""
    rng = np.random.default_rng(seed)
    spectra = {f"model.layers.{i}.q_proj": np.sort(rng.random(4))[::-1] for i in range(n)}
    rows = [
        {
            "name": k,
            "layer": i,
            "module": "q_proj",
            "rows": 8,
            "cols": 8,
            "source": "lora",
            "method": "factored",
            "fro_norm": float(np.linalg.norm(v)),
            "n_singular": 4,
        }
        for i, (k, v) in enumerate(spectra.items())
    ]
    summary = {"inputs": [{"path": f"/x/{seed}"}], "options": {"seed": seed}, "run": seed}
    return Results(modules_frame(rows), spectra, summary)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def adapter(tmp_path: Path, name: str = "ad") -> Path:
    g = torch.Generator().manual_seed(0)
    prefix = "model.layers.0.self_attn.q_proj"
    return peft_folder(
        tmp_path / name,
        {
            f"{prefix}.lora_A.weight": torch.randn(4, 8, generator=g),
            f"{prefix}.lora_B.weight": torch.randn(8, 4, generator=g),
        },
        {"r": 4, "lora_alpha": 8},
    )


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


# ---- concurrency -----------------------------------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import sys, time, pathlib
    sys.path.insert(0, {tests!r})
    from adversarial.test_outputs import results
    from lorascope.outputs import writing
    out, seed, mode = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    signal = out.parent / f"staged-{{seed}}"
    go = out.parent / f"go-{{seed}}"
    if mode == "hold":  # stage everything, say so, then wait to be told to commit
        with writing(out, "save") as tx:
            results(seed).write(tx.stage)
            signal.write_text("staged")
            while not go.exists():
                time.sleep(0.02)
    else:
        results(seed).save(out)
    print("committed", seed)
""")


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "writer.py"
    path.write_text(SCRIPT.format(tests=str(ROOT / "tests")))
    return path


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("wait", ["0", "60"])
def test_two_processes_one_folder_forced_interleaving(tmp_path, wait):
    """A holds the folder with its results staged; B starts then. B refuses (LORASCOPE_WAIT=0) or waits and
    writes
    after A (LORASCOPE_WAIT=60): either way the folder holds one run's files, all of them, never a mix."""
    out = tmp_path / "out"
    results(0).save(out)
    script = _script(tmp_path)
    env = {**os.environ, "LORASCOPE_WAIT": wait}
    a = subprocess.Popen(
        [sys.executable, script, out, "1", "hold"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(tmp_path / "staged-1")
    b = subprocess.Popen(
        [sys.executable, script, out, "2", "save"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if wait == "0":
        _, err_b = b.communicate(timeout=120)
        assert b.returncode != 0 and "another lorascope run is writing" in err_b and str(out) in err_b
    else:
        time.sleep(1.0)
        assert b.poll() is None, "B did not wait for A's lock"
    assert load_results(out).summary["run"] == 0  # A has not committed: the earlier results are all there
    (tmp_path / "go-1").write_text("go")
    assert a.wait(timeout=120) == 0, a.stderr.read()
    if wait != "0":
        assert b.wait(timeout=120) == 0, b.stderr.read()
    final = load_results(out)  # checks every results file against the manifest's sha256
    want = 1 if wait == "0" else 2
    assert final.summary["run"] == want
    np.testing.assert_array_equal(
        final.spectrum("model.layers.0.q_proj"),
        results(want).spectrum("model.layers.0.q_proj").astype(np.float32),
    )
    assert not [p.name for p in tmp_path.iterdir() if "stage-" in p.name or "old-" in p.name]


def test_files_mixed_from_two_runs_are_refused_not_rendered(tmp_path):
    """The interleaving the lock prevents, made by hand: modules of one run beside the summary of another."""
    a, b = results(0).save(tmp_path / "a"), results(1).save(tmp_path / "b")
    shutil.copy(b / "modules.csv", a / "modules.csv")
    with pytest.raises(LorascopeError, match="modules.csv differ from what lorascope wrote"):
        load_results(a)
    res = run("report", a)
    assert res.exit_code == 2 and "differ from what lorascope wrote" in res.output


# ---- faults ------------------------------------------------------------------------------------------------


def test_an_oserror_mid_write_leaves_the_earlier_results(tmp_path, monkeypatch):
    out = results(0).save(tmp_path / "out")
    before = files(out)

    def failing_write(self, folder):
        (Path(folder) / "modules.csv").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Results, "write", failing_write)
    with pytest.raises(OSError) as info:
        results(1).save(out)
    assert f"{out} was left as it was" in " ".join(info.value.__notes__)
    assert files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lorascope-lock", "out"]  # no stage left


def test_a_failure_at_the_swap_leaves_the_earlier_results(tmp_path, monkeypatch):
    import lorascope.outputs as outputs

    out = results(0).save(tmp_path / "out")
    before = files(out)
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        results(1).save(out)
    assert files(out) == before
    monkeypatch.undo()
    results(1).save(out)  # the next run is not blocked by anything the failed one left
    assert load_results(out).summary["run"] == 1


def test_the_cli_says_the_earlier_results_were_left_as_they_were(tmp_path):
    ad = adapter(tmp_path)
    out = tmp_path / "out"
    assert run("spectrum", ad, "--out", out, "-q").exit_code == 0
    before = files(out)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    (ad / "adapter_config.json").write_text(json.dumps({**cfg, "lora_alpha": -1}))
    res = run("spectrum", ad, "--out", out, "-q")
    assert res.exit_code == 2 and f"{out} was left as it was (no file in it changed)" in res.output
    assert files(out) == before


KILL = textwrap.dedent("""
    import os, sys, pathlib
    sys.path.insert(0, {tests!r})
    from adversarial.test_outputs import results
    import lorascope.outputs as outputs
    out, where = pathlib.Path(sys.argv[1]), sys.argv[2]
    if where == "staging":  # killed while the stage is half written
        with outputs.writing(out, "save") as tx:
            results(1).write(tx.stage)
            os._exit(9)
    else:  # killed right after the swap, before the previous folder was cleaned up (or mid-fallback)
        if where == "fallback":
            outputs._exchange = lambda a, b: False
            real = os.rename
            calls = []
            def rename(a, b):
                calls.append(a)
                real(a, b)
                if len(calls) == 1:
                    os._exit(9)
            os.rename = rename
        outputs._cleanup_old = lambda old, new: os._exit(9)
        results(1).save(out)
""")


@pytest.mark.parametrize("where", ["staging", "after-swap", "fallback"])
def test_a_killed_run_is_finished_or_undone_by_the_next(tmp_path, where):
    out = results(0).save(tmp_path / "out")
    (out / "notes.txt").write_text("mine")
    before = files(out)
    script = tmp_path / "kill.py"
    script.write_text(KILL.format(tests=str(ROOT / "tests")))
    proc = subprocess.run([sys.executable, script, out, where], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    if where == "staging":
        assert files(out) == before  # the killed run changed nothing
        assert any("stage-" in p.name for p in tmp_path.iterdir())
    results(2).save(out)  # the next run cleans up (or completes) what the killed one left
    assert load_results(out).summary["run"] == 2
    assert (out / "notes.txt").read_text() == "mine"
    leftovers = [p.name for p in tmp_path.iterdir() if "lorascope-" in p.name and not p.name.endswith("lock")]
    assert leftovers == [], leftovers


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_a_full_disk_leaves_the_earlier_results(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "2m"):
        pytest.skip("this machine does not allow mounting a tmpfs (needs root and CAP_SYS_ADMIN)")
    try:
        out = results(0).save(disk / "out")
        before = files(out)
        st = os.statvfs(disk)
        (disk / "filler").write_bytes(b"\0" * max(st.f_bavail * st.f_frsize - 64 * 1024, 0))  # 64 KB left
        big = results(1, n=20_000)  # about 1 MB of tables and spectra
        with pytest.raises(OSError) as info:
            big.save(out)
        assert info.value.errno == 28  # ENOSPC
        assert files(out) == before
        assert not [p for p in disk.iterdir() if "stage-" in p.name]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)


# ---- what the user put there ------------------------------------------------------------------------------


def test_files_of_the_user_are_kept_and_never_overwritten(tmp_path):
    ad = adapter(tmp_path)
    out = tmp_path / "out"
    assert run("spectrum", ad, "--out", out, "-q").exit_code == 0
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "plot.png").write_bytes(b"my own figure")
    inode = (out / "notes.txt").stat().st_ino
    # other options: earlier tables of ours go, the user's files stay (same file, same content)
    assert run("spectrum", ad, "--out", out, "-q", "--seed", "3").exit_code == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "notes.txt").stat().st_ino == inode
    assert (out / "mine" / "plot.png").read_bytes() == b"my own figure"
    # a file of the user's under a name a command writes: refused before anything changes
    (out / "selection.csv").write_text("my selection")
    before = files(out)
    res = run("select", out, "--energy", "0.9", "--out", out, "-q")
    assert res.exit_code == 2 and "selection.csv" in res.output and "did not write" in res.output
    assert files(out) == before
    # ... and a report never reads it as lorascope's
    res = run("report", out)
    assert res.exit_code == 0, res.output
    assert "my selection" not in (out / "report.html").read_text()


def test_no_report_removes_the_report_lorascope_wrote(tmp_path):
    ad = adapter(tmp_path)
    out = tmp_path / "out"
    assert run("spectrum", ad, "--out", out, "-q").exit_code == 0
    assert (out / "report.html").is_file() and (out / "figures").is_dir()
    assert run("spectrum", ad, "--out", out, "-q", "--no-report").exit_code == 0
    assert not (out / "report.html").exists() and not (out / "figures").exists()
    assert set(read_manifest(out)["files"]) == {
        "modules.csv",
        "singular_values.safetensors",
        "summary.json",
        "vectors.csv",
    }


def test_a_folder_without_a_manifest_is_not_overwritten(tmp_path):
    ad = adapter(tmp_path)
    out = tmp_path / "out"
    assert run("spectrum", ad, "--out", out, "-q", "--no-report").exit_code == 0
    (out / MANIFEST).unlink()  # as a folder written by hand, or by another tool
    before = files(out)
    res = run("spectrum", ad, "--out", out, "-q")
    assert res.exit_code == 2 and "did not write" in res.output
    assert files(out) == before


def test_default_folders_of_different_inputs_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # both default to spectrum-lora
    a, b = adapter(tmp_path / "one", "lora"), adapter(tmp_path / "two", "lora")
    assert run("spectrum", a, "-q", "--no-report").exit_code == 0
    assert run("spectrum", b, "-q", "--no-report").exit_code == 0
    assert run("spectrum", a, "-q", "--no-report").exit_code == 0  # the same input reuses its folder
    folders = sorted(p.name for p in (tmp_path / "reports").iterdir() if not p.name.startswith("."))
    assert len(folders) == 2 and folders[0] == "spectrum-lora", folders
    assert folders[1].startswith("spectrum-lora-"), folders
    summaries = [json.loads((tmp_path / "reports" / f / "summary.json").read_text()) for f in folders]
    paths = {s["inputs"][0]["path"] for s in summaries}
    assert paths == {str(a.resolve()), str(b.resolve())}


def test_a_page_beside_other_files_is_written_atomically_and_refused_over_a_foreign_page(tmp_path):
    folder = results(0).save(tmp_path / "run")
    shared = tmp_path / "pages"
    shared.mkdir()
    (shared / "theirs.html").write_text("<html>someone else's</html>")
    res = run("report", folder, "--out", shared / "theirs.html")
    assert res.exit_code == 2 and "did not write" in res.output
    assert (shared / "theirs.html").read_text() == "<html>someone else's</html>"
    assert run("report", folder, "--out", shared / "mine.html").exit_code == 0
    assert (shared / "mine.html").is_file() and (shared / "mine-figures" / MANIFEST).is_file()
    assert sorted(p.name for p in shared.iterdir() if not p.name.startswith(".")) == [
        "mine-figures",
        "mine.html",
        "theirs.html",
    ]


def test_an_existing_file_as_out_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(LorascopeError, match="is an existing file"):
        with writing(tmp_path / "out", "save"):
            pass
    assert (tmp_path / "out").read_text() == "x"


# ---- exit codes of the CLI ---------------------------------------------------------------------------------


def test_a_closed_stdout_is_a_quiet_exit(tmp_path):
    ad = adapter(tmp_path)
    out = tmp_path / "out"
    status = subprocess.run(
        f"set -o pipefail; {sys.executable} -m lorascope.cli spectrum {ad} --out {out} "
        "| head -c 10 > /dev/null",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr and "BrokenPipe" not in status.stderr, status.stderr
    assert (out / "report.html").is_file()  # the work was finished; only the printing stopped
    assert load_results(out).modules.shape[0] == 1


@pytest.mark.parametrize(
    "value, traceback", [("0", False), ("false", False), ("", False), ("1", True), ("true", True)]
)
def test_lorascope_debug_values(tmp_path, monkeypatch, value, traceback):
    import lorascope.cli as cli

    monkeypatch.setenv("LORASCOPE_DEBUG", value)
    assert cli.debug_enabled() is traceback


def test_an_unexpected_error_is_one_paragraph_exit_1_and_debug_0_shows_no_traceback(tmp_path):
    ad = adapter(tmp_path)
    (tmp_path / "boom.py").write_text(
        textwrap.dedent(f"""
        import sys
        import lorascope.analysis
        def boom(*a, **k):
            raise RuntimeError("boom")
        lorascope.analysis.analyze = boom
        from lorascope.cli import main
        sys.argv = ["lorascope", "spectrum", {str(ad)!r}, "--out", {str(tmp_path / "out")!r}]
        main()
    """)
    )
    proc = subprocess.run(
        [sys.executable, tmp_path / "boom.py"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LORASCOPE_DEBUG": "0"},
    )
    assert proc.returncode == 1 and "unexpected RuntimeError: boom" in proc.stderr
    assert "Traceback" not in proc.stderr and "was left as it was (not created)" in proc.stderr
    proc = subprocess.run(
        [sys.executable, tmp_path / "boom.py"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LORASCOPE_DEBUG": "1"},
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_a_second_run_into_a_locked_folder_is_refused_with_exit_2(tmp_path):
    from filelock import FileLock

    ad = adapter(tmp_path)
    out = tmp_path / "out"
    with FileLock(str(tmp_path / ".out.lorascope-lock")):
        holder = subprocess.run(
            [sys.executable, "-m", "lorascope.cli", "spectrum", str(ad), "--out", str(out), "-q"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "LORASCOPE_WAIT": "0"},
        )
    assert holder.returncode == 2 and "another lorascope run is writing" in holder.stderr
    assert not out.exists()


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_lorascope_wait_is_a_clean_error(tmp_path, monkeypatch, value):
    monkeypatch.setenv("LORASCOPE_WAIT", value)
    res = run("spectrum", adapter(tmp_path), "--out", tmp_path / "out", "-q")
    assert res.exit_code == 2 and "LORASCOPE_WAIT" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["lots", "-5G", "0"])
def test_a_bad_lorascope_max_read_is_a_clean_error(tmp_path, monkeypatch, value):
    monkeypatch.setenv("LORASCOPE_MAX_READ", value)
    res = run("spectrum", adapter(tmp_path), "--out", tmp_path / "out", "-q")
    assert res.exit_code == 2 and "LORASCOPE_MAX_READ" in res.output and "Traceback" not in res.output
