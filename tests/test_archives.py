"""download_extract: archives unpack beside the download, and hostile members are refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipeline import hub
from pipeline.errors import DataError
from pipeline.hub import DataFile, download_extract


def serve(tmp_path: Path, name: str, data: bytes) -> tuple[DataFile, Path, Path]:
    """Put ``data`` in a local mirror; return its entry, the mirror and an empty cache."""
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    (mirror / name).parent.mkdir(parents=True)
    (mirror / name).write_bytes(data)
    sha1 = hashlib.sha1(data).hexdigest()
    entry = DataFile("arc", "http://127.0.0.1:9/" + name, sha1, None, name)
    return entry, mirror, cache


def make_tar(members: list[tuple[str, str, bytes | str]], mode: str = "w:gz") -> bytes:
    """Members are (kind, name, data-or-link-target) with kind "file", "dir", "sym" or "hard"."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for kind, name, value in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
                continue
            kinds = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}
            info.type = kinds[kind]
            info.linkname = value if kind != "dir" else ""
            tar.addfile(info)
    return buffer.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def only_the_archive_is_left(cache: Path, name: str) -> bool:
    return sorted(p.name for p in cache.iterdir()) == [name]


@pytest.mark.parametrize("name, mode", [("data.tar.gz", "w:gz"), ("data.tgz", "w:gz"),
                                        ("data.tar", "w")])
def test_tar_with_normal_members_and_inside_links_extracts(tmp_path, name, mode):
    archive = make_tar([("dir", "d", ""), ("file", "d/a.txt", b"alpha"), ("file", "top.txt", b"t"),
                        ("sym", "d/link", "../top.txt"), ("hard", "hard.txt", "d/a.txt")], mode)
    entry, mirror, cache = serve(tmp_path, name, archive)
    folder = download_extract(entry, cache, [mirror])
    assert folder == cache / "data"
    assert (folder / "d/a.txt").read_bytes() == b"alpha"
    assert (folder / "d/link").is_symlink() and (folder / "d/link").read_bytes() == b"t"
    assert (folder / "hard.txt").read_bytes() == b"alpha"
    assert sorted(p.name for p in cache.iterdir()) == ["data", name]  # no temp folder left


def test_zip_with_normal_members_extracts_into_the_given_folder(tmp_path):
    entry, mirror, cache = serve(tmp_path, "z.zip", make_zip({"x/y.txt": b"why", "top": b"t"}))
    folder = download_extract(entry, cache, [mirror], folder=tmp_path / "out")
    assert folder == tmp_path / "out"
    assert (folder / "x/y.txt").read_bytes() == b"why" and (folder / "top").read_bytes() == b"t"


def test_extracting_again_replaces_the_folder(tmp_path):
    entry, mirror, cache = serve(tmp_path, "z.zip", make_zip({"a.txt": b"a"}))
    folder = download_extract(entry, cache, [mirror])
    (folder / "stale.txt").write_text("left over")
    assert download_extract(entry, cache, [mirror]) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]


HOSTILE_TAR = {
    "absolute path": ("file", "/tmp/evil.txt", b"x"),
    "dot-dot": ("file", "../evil.txt", b"x"),
    "nested dot-dot": ("file", "d/../../evil.txt", b"x"),
    "symlink outside": ("sym", "d/link", "../../outside"),
    "absolute symlink": ("sym", "link", "/etc/passwd"),
    "hardlink outside": ("hard", "hard", "../outside"),
    "hardlink outside from a subfolder": ("hard", "d/hard", "../outside"),  # root-relative
    "absolute hardlink": ("hard", "hard", "/etc/passwd"),
}


@pytest.fixture(params=["with-python-filter", "name-checks-only"])
def tar_filter(request, monkeypatch):
    """Run hostile-tar tests with Python's "data" filter and without it (as on older Pythons),
    so the hub's own member checks are tested too."""
    if request.param == "name-checks-only":
        monkeypatch.setattr(hub, "_TAR_FILTER", {})


@pytest.mark.parametrize("member", HOSTILE_TAR.values(), ids=HOSTILE_TAR.keys())
def test_tar_with_hostile_member_is_refused_and_nothing_is_extracted(tmp_path, tar_filter, member):
    archive = make_tar([("file", "ok.txt", b"fine"), member])
    entry, mirror, cache = serve(tmp_path, "bad.tar.gz", archive)
    with pytest.raises(DataError) as info:
        download_extract(entry, cache, [mirror])
    message = str(info.value)
    assert "\n" not in message and "bad.tar.gz" in message and repr(member[1]) in message
    assert only_the_archive_is_left(cache, "bad.tar.gz")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "outside").exists()


def test_tar_with_a_chain_of_links_escaping_is_refused(tmp_path):
    # Each link alone stays inside by name ("x" -> ".", "y" -> "x/.."), but "y" resolves to
    # the parent of the folder once "x" exists on disk.
    archive = make_tar([("sym", "x", "."), ("sym", "y", "x/.."), ("file", "y/evil.txt", b"x")])
    entry, mirror, cache = serve(tmp_path, "chain.tar", archive)
    with pytest.raises(DataError, match="chain.tar"):
        download_extract(entry, cache, [mirror])
    assert only_the_archive_is_left(cache, "chain.tar")
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("name", ["/abs.txt", "../evil.txt", "a/../../evil.txt"])
def test_zip_with_hostile_member_is_refused_and_nothing_is_extracted(tmp_path, name):
    entry, mirror, cache = serve(tmp_path, "bad.zip", make_zip({"ok.txt": b"fine", name: b"x"}))
    with pytest.raises(DataError) as info:
        download_extract(entry, cache, [mirror])
    assert "bad.zip" in str(info.value) and repr(name) in str(info.value)
    assert only_the_archive_is_left(cache, "bad.zip")


def test_plain_gz_decompresses_to_the_name_without_gz(tmp_path):
    payload = b"idx payload " * 1000
    entry, mirror, cache = serve(tmp_path, "sub/file.idx.gz", gzip.compress(payload))
    out = download_extract(entry, cache, [mirror])
    assert out == cache / "sub/file.idx" and out.read_bytes() == payload


def test_corrupt_gz_and_unknown_extension_are_data_errors(tmp_path):
    entry, mirror, cache = serve(tmp_path, "f.gz", b"not gzip at all")
    with pytest.raises(DataError, match="not a valid gzip file"):
        download_extract(entry, cache, [mirror])
    assert only_the_archive_is_left(cache, "f.gz")
    entry, mirror, cache = serve(tmp_path / "2", "f.rar", b"whatever")
    with pytest.raises(DataError, match="cannot extract"):
        download_extract(entry, cache, [mirror])
