"""The `lorascope report` command: re-render one folder, compare several, refuse bad input with exit
code 2."""

from __future__ import annotations

from click.testing import CliRunner
from report.synthetic import synthetic_results

from lorascope.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_rerender_one_folder_in_place_and_to_a_file(tmp_path):
    folder = synthetic_results(2, kind="adapter", r=4, hidden=16).save(tmp_path / "run")
    res = run("report", folder)
    assert res.exit_code == 0, res.output
    assert f"report written to {folder / 'report.html'}" in res.output
    assert (folder / "figures" / "spectra.png").is_file()
    res = run("report", folder, "--out", tmp_path / "elsewhere.html")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "elsewhere.html").is_file() and (
        tmp_path / "elsewhere-figures" / "energy.png"
    ).is_file()


def test_compare_two_folders_with_labels(tmp_path, monkeypatch):
    a = synthetic_results(2, kind="adapter", r=4, hidden=16).save(tmp_path / "a")
    b = synthetic_results(2, kind="full-diff", hidden=16).save(tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    res = run("report", a, b, "--label", "lora", "--label", "full")
    assert res.exit_code == 0, res.output
    out = tmp_path / "reports" / "report-a-vs-b" / "report.html"
    assert out.is_file()
    assert "entropy_rank · lora" in out.read_text(encoding="utf-8")


def test_bad_input_exits_2_without_traceback(tmp_path):
    (tmp_path / "notes.txt").write_text("not results")
    folder = synthetic_results(2, kind="adapter", r=4, hidden=16).save(tmp_path / "run")
    for args in (
        [tmp_path],
        [tmp_path / "missing"],
        [tmp_path, tmp_path, "--label", "only-one"],
        [folder, folder, "--label", "a", "--label", "a"],
    ):
        res = run("report", *args)
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output and "error:" in res.output


def test_an_existing_file_is_replaced_only_when_lorascope_wrote_it(tmp_path):
    folder = synthetic_results(2, kind="adapter", r=4, hidden=16).save(tmp_path / "run")
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my own notes</html>")
    for args in ([folder], [folder, folder]):  # one report, a comparison
        res = run("report", *args, "--out", mine)
        assert res.exit_code == 2 and "refusing to overwrite" in res.output and "Traceback" not in res.output
        assert mine.read_text() == "<html>my own notes</html>"
    ours = tmp_path / "ours.html"
    assert run("report", folder, "--out", ours).exit_code == 0
    res = run("report", folder, "--out", ours)  # a page lorascope wrote is re-rendered in place
    assert res.exit_code == 0, res.output


def test_figures_never_overwrite_pngs_of_a_folder_lorascope_did_not_write(tmp_path):
    folder = synthetic_results(2, kind="adapter", r=4, hidden=16).save(tmp_path / "run")
    slides = tmp_path / "slides"
    (slides / "figures").mkdir(parents=True)
    (slides / "figures" / "spectra.png").write_bytes(b"my own figure")
    res = run("report", folder, "--out", slides)
    assert (
        res.exit_code == 2 and "which lorascope did not write" in res.output and "Traceback" not in res.output
    )
    assert (slides / "figures" / "spectra.png").read_bytes() == b"my own figure"
    assert not (slides / "report.html").exists()
    # the same folder once lorascope's page is in it (it wrote the figures beside it) is re-rendered in place
    fresh = tmp_path / "fresh"
    assert run("report", folder, "--out", fresh).exit_code == 0
    assert run("report", folder, "--out", fresh).exit_code == 0


def test_damaged_results_folders_are_clean_errors(tmp_path):
    import shutil

    good = synthetic_results(2, kind="adapter", r=4, hidden=16).save(tmp_path / "good")
    first = (good / "modules.csv").read_text().splitlines()[1].split(",")[0]
    damage = {
        "modules.csv": ("name,x\n1,2\n", "lacks the column(s) layer, module"),
        "singular_values.safetensors": ("garbage", "could not read the results folder"),
        "summary.json": ("[1, 2]", "holds a list, not the summary object"),
    }
    for i, (name, (content, message)) in enumerate(damage.items()):
        bad = shutil.copytree(good, tmp_path / f"bad{i}")
        (bad / name).write_text(content)
        for cmd in ("report", "sweep"):
            res = run(cmd, bad, "--out", tmp_path / f"{cmd}{i}")
            assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, (
                name,
                res.output,
            )
    bad = shutil.copytree(good, tmp_path / "renamed")
    (bad / "modules.csv").write_text((good / "modules.csv").read_text().replace(first, "model.other"))
    res = run("report", bad)
    assert (
        res.exit_code == 2
        and "have no spectrum in singular_values.safetensors (e.g. model.other" in res.output
    )


def test_an_unexpected_failure_is_one_paragraph_and_exit_code_1(tmp_path, monkeypatch):
    import lorascope.report

    folder = synthetic_results(2, kind="adapter", r=4, hidden=16).save(tmp_path / "run")

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(lorascope.report, "render_report", broken)
    res = run("report", folder)
    assert (
        res.exit_code == 1
        and "unexpected RuntimeError: boom" in res.output
        and "LORASCOPE_DEBUG=1" in res.output
    )
    assert "Traceback" not in res.output
    monkeypatch.setenv("LORASCOPE_DEBUG", "1")
    res = run("report", folder)
    assert isinstance(res.exception, RuntimeError)  # re-raised for the traceback
