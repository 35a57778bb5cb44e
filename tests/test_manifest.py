"""lorascope/manifest.py: which files of a folder lorascope wrote, and whether they changed since."""

import hashlib

from lorascope.manifest import (
    INTERNAL,
    MANIFEST,
    file_sha256,
    read_manifest,
    under,
    verify,
    walk,
    written_files,
)
from lorascope.outputs import writing


def test_file_sha256_is_hashlibs(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 9000)  # more than one 1 MiB chunk? no: 2.3 MB, three chunks
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_transaction_writes_a_manifest_that_verifies(tmp_path):
    out = tmp_path / "out"
    with writing(out, "test") as tx:
        (tx.stage / "a.csv").write_text("x\n")
        (tx.stage / "sub").mkdir()
        (tx.stage / "sub" / "b.txt").write_text("y")
    manifest = read_manifest(out)
    assert manifest["command"] == "test" and written_files(out) == {"a.csv", "sub/b.txt"}
    assert manifest["files"]["a.csv"]["sha256"] == hashlib.sha256(b"x\n").hexdigest()
    assert verify(out, ["a.csv", "sub/b.txt"]) == []
    (out / "a.csv").write_text("changed\n")
    assert verify(out, ["a.csv", "missing.csv"]) == ["a.csv", "missing.csv"]
    files, dirs = walk(out)
    assert set(files) == {"a.csv", "sub/b.txt"} and dirs == ["sub"]  # the manifest is an internal name


def test_no_manifest_and_internal_names(tmp_path):
    assert (
        read_manifest(tmp_path) is None and written_files(tmp_path) == set() and verify(tmp_path, ["x"]) == []
    )
    (tmp_path / MANIFEST).write_text("[1, 2]")
    assert read_manifest(tmp_path) is None  # not lorascope's
    (tmp_path / f"x{INTERNAL}lock").write_text("")
    assert walk(tmp_path)[0] == []  # internal names (the manifest, locks) are left out
    assert (
        under("figures/a.png", ["figures"])
        and under("figures", ["figures"])
        and not under("fig.png", ["fig"])
    )
