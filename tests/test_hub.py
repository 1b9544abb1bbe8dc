"""The data hub against a real local HTTP server that can misbehave on cue (the ``server``
fixture, see ``helpers.Server``), and the real data."""

from __future__ import annotations

import gzip
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from helpers import Server, sha1
from pipeline.errors import DownloadError, UsageError
from pipeline.hub import (
    DATA_HUB,
    GROUPS,
    DataFile,
    download,
    download_group,
    resolve_names,
    status,
    verify,
)

REPO = Path(__file__).resolve().parents[1]
FAST = dict(progress=False, retries=2, backoff=0.01, timeout=(2, 2))
HINT = "set a mirror (mirrors: a folder or URL) or the PIPELINE_MIRROR environment variable"


def make_entry(server: Server, name: str = "blob", data: bytes = b"hello hub\n" * 1000,
               path: str = "blob.bin") -> DataFile:
    """A DataFile served by ``server`` at ``path``, with the real SHA-1 of ``data``."""
    server.files[path] = data
    return DataFile(name, server.url(path), sha1(data), None, path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_cache_clean(cache: Path, *entries: DataFile) -> None:
    """The cache holds only verifying files of ``entries``: no bad bytes, no .part leftovers."""
    by_path = {cache / e.path: e for e in entries}
    for file in cache.rglob("*") if cache.exists() else ():
        if file.is_file():
            assert file in by_path, f"unexpected file in cache: {file}"
            assert verify(by_path[file], file), f"cache holds a file failing its hash: {file}"


def served_from(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "pipeline.hub" and "downloaded from" in r.getMessage()]


# --- hashes -----------------------------------------------------------------------------------


def test_verify_accepts_right_bytes_and_rejects_wrong_bytes(tmp_path):
    entry = DataFile("x", "http://example.invalid/x", sha1(b"right"), None, "x")
    (tmp_path / "good").write_bytes(b"right")
    (tmp_path / "bad").write_bytes(b"wrong")
    assert verify(entry, tmp_path / "good")
    assert not verify(entry, tmp_path / "bad")
    assert not verify(entry, tmp_path / "missing")


def test_verify_identifies_gz_by_payload_across_two_encodings(tmp_path):
    payload = bytes(range(256)) * 500
    fast = gzip.compress(payload, compresslevel=1, mtime=0)
    best = gzip.compress(payload, compresslevel=9, mtime=123456)
    assert fast != best
    entry = DataFile("g", "http://example.invalid/g.gz", sha1(fast), sha1(payload), "g.gz")
    for name, data in {"fast.gz": fast, "best.gz": best}.items():
        (tmp_path / name).write_bytes(data)
        assert verify(entry, tmp_path / name)
    (tmp_path / "other.gz").write_bytes(gzip.compress(payload + b"!"))
    (tmp_path / "truncated.gz").write_bytes(best[:-20])
    (tmp_path / "plain.gz").write_bytes(payload)
    for name in ("other.gz", "truncated.gz", "plain.gz"):
        assert not verify(entry, tmp_path / name), name


def test_verify_without_hashes_accepts_any_existing_file(tmp_path):
    entry = DataFile("any", "http://example.invalid/a", None, None, "a")
    (tmp_path / "a").write_bytes(b"whatever")
    assert verify(entry, tmp_path / "a")
    assert not verify(entry, tmp_path / "b")


def test_registry_has_the_six_real_entries_and_groups():
    assert set(DATA_HUB) == set(GROUPS["house"]) | set(GROUPS["fashion"])
    assert len(DATA_HUB) == 6
    house = DATA_HUB["kaggle_house_train"]
    assert house.url == "http://d2l-data.s3-accelerate.amazonaws.com/kaggle_house_pred_train.csv"
    assert house.sha1 == "585e9cc93e70b39160e7921475f9bcd7d31219ce"
    images = DATA_HUB["fashion_train_images"]
    assert images.url == ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
                          "train-images-idx3-ubyte.gz")
    assert images.path == "fashion-mnist/train-images-idx3-ubyte.gz"
    assert images.payload_sha1 == "b9bd999c0106c9b8b4b0cefce58c9a6060f27095"


def test_resolve_names_expands_groups_names_and_all():
    assert resolve_names("house") == ["kaggle_house_train", "kaggle_house_test"]
    assert resolve_names("fashion_test_labels") == ["fashion_test_labels"]
    assert resolve_names("all") == list(DATA_HUB)


def test_resolve_names_unknown_is_a_one_line_usage_error_listing_valid_names():
    with pytest.raises(UsageError) as info:
        resolve_names("nope")
    message = str(info.value)
    assert "\n" not in message and "'nope'" in message
    for valid in ("all", "house", "fashion", *DATA_HUB):
        assert valid in message
    assert info.value.exit_code == 2
    with pytest.raises(UsageError):
        download("nope", "unused")


# --- cache ------------------------------------------------------------------------------------


def test_second_download_makes_no_request(tmp_path, server, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.hub")
    entry = make_entry(server)
    path = download(entry, tmp_path, **FAST)
    assert path == tmp_path / "blob.bin" and path.read_bytes() == server.files["blob.bin"]
    assert server.counts["blob.bin"] == 1 and len(served_from(caplog)) == 1
    caplog.clear()
    assert download(entry, tmp_path, **FAST) == path
    assert server.counts["blob.bin"] == 1 and served_from(caplog) == []


def test_corrupted_cached_file_is_fetched_again(tmp_path, server):
    entry = make_entry(server)
    (tmp_path / "blob.bin").write_bytes(b"corrupted")
    path = download(entry, tmp_path, **FAST)
    assert verify(entry, path) and server.counts["blob.bin"] == 1


def test_corrupted_cached_file_is_removed_even_if_fetching_fails(tmp_path):
    entry = DataFile("blob", f"http://127.0.0.1:{free_port()}/blob.bin", sha1(b"x"), None, "b")
    (tmp_path / "b").write_bytes(b"corrupted")
    with pytest.raises(DownloadError):
        download(entry, tmp_path, **FAST)
    assert not (tmp_path / "b").exists()
    assert_cache_clean(tmp_path, entry)


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path, server, capsys):
    entry = make_entry(server)
    download(entry, tmp_path / "a", **{**FAST, "progress": True})
    assert "blob" in capsys.readouterr().err
    download(entry, tmp_path / "b", **{**FAST, "progress": None})  # stderr is captured: no tty
    download(entry, tmp_path / "c", **FAST)
    assert capsys.readouterr().err == ""


# --- sources ----------------------------------------------------------------------------------


def test_first_verifying_mirror_wins_after_missing_and_wrong_mirrors(tmp_path, server, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.hub")
    entry = make_entry(server, path="sub/blob.bin")
    missing, wrong, good = (tmp_path / n for n in ("missing", "wrong", "good"))
    (wrong / "sub").mkdir(parents=True)
    (wrong / "sub/blob.bin").write_bytes(b"wrong bytes")
    (good / "sub").mkdir(parents=True)
    (good / "sub/blob.bin").write_bytes(server.files["sub/blob.bin"])
    server.files["http-mirror/sub/blob.bin"] = server.files["sub/blob.bin"]
    cache = tmp_path / "cache"
    mirrors = [missing, wrong, server.url("http-mirror/"), good]
    path = download(entry, cache, mirrors, **FAST)
    assert verify(entry, path)
    assert server.counts == Counter({"http-mirror/sub/blob.bin": 1})  # canonical never asked
    served = server.url("http-mirror/sub/blob.bin")
    assert served_from(caplog) == [f"blob: downloaded from {served}"]
    assert_cache_clean(cache, entry)


def test_local_folder_and_file_url_mirrors_are_copied_without_requests(tmp_path, server, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.hub")
    entry = make_entry(server)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "blob.bin").write_bytes(server.files["blob.bin"])
    for i, spec in enumerate([str(mirror), mirror.as_uri()]):
        assert verify(entry, download(entry, tmp_path / f"cache{i}", [spec], **FAST))
    assert sum(server.counts.values()) == 0
    assert [m.split(" from ")[1] for m in served_from(caplog)] == [str(mirror / "blob.bin")] * 2


def test_http_mirror_with_wrong_bytes_is_skipped_and_canonical_url_is_last(tmp_path, server):
    entry = make_entry(server)
    server.files["m/blob.bin"] = b"not it"
    path = download(entry, tmp_path, [server.url("m")], **FAST)
    assert verify(entry, path)
    assert server.counts == Counter({"m/blob.bin": 1, "blob.bin": 1})


# --- HTTP failures ----------------------------------------------------------------------------


def test_500_once_then_success(tmp_path, server):
    entry = make_entry(server)
    server.script("blob.bin", "500")
    assert verify(entry, download(entry, tmp_path, **FAST))
    assert server.counts["blob.bin"] == 2


def test_500_always_gives_up_after_retries(tmp_path, server):
    entry = make_entry(server)
    server.script("blob.bin", then="500")
    with pytest.raises(DownloadError, match=r"HTTP 500 after 3 attempts"):
        download(entry, tmp_path, **FAST)
    assert server.counts["blob.bin"] == 3
    assert_cache_clean(tmp_path, entry)


def test_body_cut_short_then_success_on_retry(tmp_path, server):
    entry = make_entry(server, data=os.urandom(300_000))
    server.script("blob.bin", "cut")
    assert verify(entry, download(entry, tmp_path, **FAST))
    assert server.counts["blob.bin"] == 2
    assert_cache_clean(tmp_path, entry)


def test_body_always_cut_short_is_reported_and_not_cached(tmp_path, server):
    entry = make_entry(server, data=os.urandom(300_000))
    server.script("blob.bin", then="cut")
    with pytest.raises(DownloadError, match="body cut short after 3 attempts"):
        download(entry, tmp_path, **FAST)
    assert_cache_clean(tmp_path, entry)


def test_read_timeout_then_success(tmp_path, server):
    entry = make_entry(server)
    server.script("blob.bin", "sleep:1.0")
    path = download(entry, tmp_path, **{**FAST, "timeout": (2, 0.2)})
    assert verify(entry, path) and server.counts["blob.bin"] == 2


def test_wrong_bytes_everywhere_names_dataset_and_urls_and_caches_nothing(tmp_path, server):
    entry = make_entry(server)
    server.script("blob.bin", then="wrong")
    server.files["m/blob.bin"] = b"also wrong"
    local = tmp_path / "local"
    (local).mkdir()
    (local / "blob.bin").write_bytes(b"wrong too")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        download(entry, cache, [local, server.url("m/")], **FAST)
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot download blob:")
    for source in (str(local / "blob.bin"), server.url("m/blob.bin"), server.url("blob.bin")):
        assert f"{source} (wrong bytes" in message
    assert HINT in message
    assert server.counts["blob.bin"] == 1  # wrong bytes are not retried
    assert list(cache.iterdir()) == []  # not even a .part file
    assert_cache_clean(cache, entry)


def test_404_moves_on_without_retry(tmp_path, server):
    entry = make_entry(server)
    server.script("blob.bin", then="404")
    with pytest.raises(DownloadError, match=r"blob\.bin \(HTTP 404\);"):
        download(entry, tmp_path, [server.url("absent/")], **FAST)
    assert server.counts == Counter({"absent/blob.bin": 1, "blob.bin": 1})
    assert_cache_clean(tmp_path, entry)


def test_redirect_is_followed(tmp_path, server):
    entry = make_entry(server, path="new.bin")
    entry = DataFile(entry.name, server.url("old.bin"), entry.sha1, None, "blob.bin")
    server.script("old.bin", "redirect:new.bin")
    assert verify(entry, download(entry, tmp_path, **FAST))
    assert server.counts == Counter({"old.bin": 1, "new.bin": 1})


def test_connection_refused_is_a_one_line_error_with_the_mirror_hint(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/blob.bin"
    entry = DataFile("blob", url, sha1(b"x"), None, "blob.bin")
    with pytest.raises(DownloadError) as info:
        download(entry, tmp_path, **FAST)
    message = str(info.value)
    assert "\n" not in message
    assert f"{url} (connection refused after 3 attempts)" in message and HINT in message
    assert_cache_clean(tmp_path, entry)


def test_unknown_host_is_a_one_line_error_with_the_mirror_hint(tmp_path):
    entry = DataFile("blob", "http://nonexistent.invalid/x", sha1(b"x"), None, "blob.bin")
    with pytest.raises(DownloadError) as info:
        download(entry, tmp_path, **{**FAST, "retries": 0})
    message = str(info.value)
    assert "\n" not in message
    assert "http://nonexistent.invalid/x (unknown host)" in message and HINT in message
    assert_cache_clean(tmp_path, entry)


# --- interruption -----------------------------------------------------------------------------


class InterruptingSession(requests.Session):
    """Delivers the first chunk of each body, then raises KeyboardInterrupt (as Ctrl-C would)."""

    def request(self, *args, **kwargs):
        response = super().request(*args, **kwargs)
        chunks = response.iter_content

        def iter_content(*a, **kw):
            iterator = chunks(*a, **kw)
            yield next(iterator)
            raise KeyboardInterrupt

        response.iter_content = iter_content
        return response


def test_keyboard_interrupt_mid_stream_leaves_no_file(tmp_path, server):
    entry = make_entry(server, data=os.urandom(500_000))
    with pytest.raises(KeyboardInterrupt):
        download(entry, tmp_path, session=InterruptingSession(), **FAST)
    assert server.counts["blob.bin"] == 1
    assert list(tmp_path.iterdir()) == []


def test_sigkill_midway_leaves_no_complete_file_and_next_download_succeeds(tmp_path, server):
    entry = make_entry(server, data=os.urandom(1_000_000))
    server.script("blob.bin", then="trickle:0.02")  # ~1.2 s for the whole body
    code = (
        "import sys\n"
        "from pipeline.hub import DataFile, download\n"
        f"entry = DataFile('blob', {entry.url!r}, {entry.sha1!r}, None, 'blob.bin')\n"
        f"download(entry, {str(tmp_path)!r}, progress=False, retries=0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 15
        parts: list[Path] = []
        while not any(p.stat().st_size > 0 for p in parts if p.exists()):
            assert proc.poll() is None, "the download finished before it could be killed"
            assert time.monotonic() < deadline, "the download never started writing"
            time.sleep(0.01)
            parts = list(tmp_path.glob(".blob.bin.*.part"))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "blob.bin").exists()
    assert parts and all(p.exists() for p in parts)  # the stale temporary file a kill leaves
    server.script("blob.bin")
    path = download(entry, tmp_path, **FAST)
    assert verify(entry, path)
    assert list(tmp_path.iterdir()) == [path]  # stale .part removed


# --- groups and status ------------------------------------------------------------------------


def test_status_lists_every_entry_as_missing_in_an_empty_cache(tmp_path):
    rows = status(tmp_path)
    assert [row["name"] for row in rows] == list(DATA_HUB)
    assert all(set(row) == {"name", "url", "path", "cached", "verified"} for row in rows)
    assert not any(row["cached"] or row["verified"] for row in rows)
    (tmp_path / "kaggle_house_pred_train.csv").write_text("not the data")
    row = status(tmp_path)[0]
    assert row["cached"] and not row["verified"]


def test_download_group_unknown_name_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        download_group("nope", tmp_path)


def test_real_data_from_local_mirror(tmp_path, shared_datasets, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.hub")
    paths = download_group("all", tmp_path, mirrors=[shared_datasets], progress=False)
    assert set(paths) == set(DATA_HUB)
    for name, path in paths.items():
        assert path == tmp_path / DATA_HUB[name].path and verify(name, path)
    assert len(served_from(caplog)) == 6
    before = {name: (p.stat().st_ino, p.stat().st_mtime_ns) for name, p in paths.items()}
    caplog.clear()
    download_group("all", tmp_path, mirrors=[shared_datasets], progress=False)
    assert served_from(caplog) == []
    assert {name: (p.stat().st_ino, p.stat().st_mtime_ns) for name, p in paths.items()} == before
    assert all(row["cached"] and row["verified"] for row in status(tmp_path))
    assert_cache_clean(tmp_path, *DATA_HUB.values())


def test_real_data_from_http_mirror(tmp_path, shared_datasets, server):
    server.root = shared_datasets
    paths = download_group("all", tmp_path, mirrors=[server.url()], progress=False)
    assert all(verify(name, path) for name, path in paths.items())
    assert server.counts == Counter({entry.path: 1 for entry in DATA_HUB.values()})
    download_group("fashion", tmp_path, mirrors=[server.url()], progress=False)
    assert sum(server.counts.values()) == 6
    assert_cache_clean(tmp_path, *DATA_HUB.values())


class TruncatingSession(requests.Session):
    """Stops each body after its first chunk without an error, as urllib3 1.x does when the
    server closes early: only the Content-Length check can notice."""

    def request(self, *args, **kwargs):
        response = super().request(*args, **kwargs)
        chunks = response.iter_content
        response.iter_content = lambda *a, **kw: iter([next(chunks(*a, **kw))])
        return response


def test_body_shorter_than_content_length_is_retried_then_reported(tmp_path, server):
    entry = make_entry(server, data=os.urandom(300_000))
    with pytest.raises(DownloadError, match=r"body cut short \(65536 of 300000 bytes\) after 3"):
        download(entry, tmp_path, session=TruncatingSession(), **FAST)
    assert server.counts["blob.bin"] == 3
    assert_cache_clean(tmp_path, entry)
