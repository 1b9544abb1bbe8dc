"""Helpers shared by the test modules: tiny competitions, the CLI in-process, one-line error
checks, a local HTTP server that can misbehave on cue, and simulated source edits.

Import them with ``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``); the
``server`` fixture in ``conftest.py`` starts the HTTP server.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import shutil
import threading
import time
import zipfile
from collections import Counter, deque
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import torch

from pipeline import code_graph, make
from pipeline.cli import main
from pipeline.hub import sha1_file
from pipeline.workspace import Workspace, write_json


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def write_idx(path: str | Path, tensor: torch.Tensor) -> Path:
    """Write a 1-D (labels) or 3-D (images) uint8 tensor as IDX, gzipped when ``path`` ends in .gz."""
    magic = {1: 0x00000801, 3: 0x00000803}.get(tensor.dim())
    if magic is None or tensor.dtype != torch.uint8:
        raise ValueError(f"write_idx needs a 1-D or 3-D uint8 tensor, got {tensor.dim()}-D {tensor.dtype}")
    payload = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    payload += tensor.contiguous().cpu().numpy().tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(payload)
    return Path(path)


# ----------------------------------------------------------------------------- competitions


def make_competition(root: Path, rows: int = 240, seed: int = 0, name: str = "toy") -> Path:
    """A small regression competition: numeric and categorical features, NaNs, a positive label."""
    rng = np.random.default_rng(seed)
    n = rows + rows // 2
    frame = pd.DataFrame({
        "key": np.arange(1000, 1000 + n),
        "area": rng.gamma(4.0, 300.0, n),
        "rooms": rng.integers(1, 8, n).astype(float),
        "zone": rng.choice(["A", "B", "C", None], n),
        "age": rng.uniform(0, 80, n),
    })
    frame.loc[rng.random(n) < 0.1, "rooms"] = np.nan
    price = 50_000 + 120 * frame["area"] + 9_000 * frame["rooms"].fillna(3) - 400 * frame["age"]
    price += frame["zone"].map({"A": 30_000, "B": 0, "C": -15_000}).fillna(5_000)
    frame["price"] = (price * rng.lognormal(0, 0.05, n)).round(2)
    root.mkdir(parents=True, exist_ok=True)
    frame.iloc[:rows].to_csv(root / "train.csv", index=False)
    frame.iloc[rows:].drop(columns=["price"]).to_csv(root / "test.csv", index=False)
    (root / "pipeline.toml").write_text(
        f'[target.{name}]\ntrain = "train.csv"\ntest = "test.csv"\nid = "key"\nlabel = "price"\n'
        'task = "regression"\nmetric = "log_rmse"\n')
    (root / "params.toml").write_text(f"[{name}]\nepochs = 5\nlr = 0.05\nbatch_size = 32\n")
    return root


# A 12-row regression target declared in pipeline.toml (see ``workspace``).
TOML = """\
[target.toy]
train = "train.csv"
test = "test.csv"
id = "Id"
label = "Price"
task = "regression"
metric = "log_rmse"
"""


def base_train_lines() -> list[str]:
    """A small valid training file: line k of the file is ``lines[k - 1]``."""
    return ["Id,Area,Kind,Price"] + [f"{i},{40 + (i * 7) % 13},{'ab'[i % 2]},{100 + 10 * i}" for i in range(1, 13)]


def base_test_lines() -> list[str]:
    return ["Id,Area,Kind"] + [f"{i},{40 + i % 5},{'ab'[i % 2]}" for i in range(13, 17)]


def text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def workspace(root: Path, train: str | bytes | None = None, test: str | bytes | None = None,
              toml: str = TOML) -> Path:
    """``root/ws`` with the 12-row ``toy`` target (or the given CSVs and pipeline.toml)."""
    ws = root / "ws"
    ws.mkdir(parents=True)
    defaults = {"train.csv": text(base_train_lines()), "test.csv": text(base_test_lines())}
    for name, content in (("train.csv", train), ("test.csv", test)):
        content = defaults[name] if content is None else content
        (ws / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    (ws / "pipeline.toml").write_text(toml, encoding="utf-8")
    return ws


def declare(name: str, **keys) -> str:
    """A ``[target.NAME]`` table of pipeline.toml with string values."""
    return f"[target.{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- the CLI in-process


def cli(ws: Path, *args: str) -> int:
    """``pipeline --workdir WS ARGS`` in-process: its exit code."""
    try:
        main(["--workdir", str(ws), *args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_cli(ws: Path, capsys, *args: str) -> tuple[int, str, str]:
    """``pipeline --workdir WS ARGS`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(["--workdir", str(ws), *args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Non-zero exit; stderr ends with exactly one ``pipeline: error:`` line; no traceback."""
    assert code != 0
    assert "Traceback" not in err and "Warning" not in err, err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("pipeline: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def table_rows(out: str) -> dict[str, str]:
    """A ``stage state reason`` table (``pipeline status``) as {stage: "state reason"}."""
    lines = out.strip().splitlines()[1:]
    return {line.split()[0]: " ".join(line.split()[1:]) for line in lines}


def statuses(ws: Path, capsys, target: str, *flags: str) -> dict[str, str]:
    """``pipeline status TARGET FLAGS`` as {stage: "state reason"}."""
    capsys.readouterr()
    assert cli(ws, "status", target, *flags) == 0
    return table_rows(capsys.readouterr().out)


def trust_model(ws: Path, section: str, rel: str) -> None:
    """Record ``ws / rel`` as the train stage's output in pipeline.lock, as when a model and its
    lock record are copied in from another machine: later stages load it without retraining."""
    lock = make.read_lock(Workspace(ws))
    lock[section]["train"]["outs"][rel] = sha1_file(ws / rel)
    write_json(ws / "pipeline.lock", lock)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ----------------------------------------------------------------------------- simulated edits


@contextlib.contextmanager
def edited(monkeypatch, tmp_path: Path, *modules: str) -> Iterator[None]:
    """Make :func:`pipeline.make.code_version` read the package from a temporary copy in which
    each of ``modules`` has one comment line added, as if a developer had edited it; no real file
    changes."""
    copy = tmp_path / "edited" / "pipeline"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(code_graph.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for name in modules:
        path = code_graph.module_file(name, copy)
        path.write_bytes(path.read_bytes() + b"\n# an edit\n")
    with monkeypatch.context() as patch:
        patch.setattr(code_graph, "PACKAGE", copy)
        yield


# ----------------------------------------------------------------------------- a local HTTP server


class Server:
    """What the HTTP server serves: ``files`` by path, else files under ``root``.

    ``script(path, *actions, then=...)`` makes the next requests for ``path`` misbehave, one
    action each, then every later request do ``then`` ("ok" serves the file). Actions:
    "500", "404", "cut" (Content-Length larger than the body, then close), "wrong" (other
    bytes), "redirect:<path>", "sleep:<seconds>" (then serve), "trickle:<seconds>" (serve 16 KiB
    per interval). ``counts`` counts requests per path.
    """

    def __init__(self, port: int):
        self.port = port
        self.files: dict[str, bytes] = {}
        self.root: Path | None = None
        self.scripts: dict[str, tuple[deque, str]] = {}
        self.counts: Counter = Counter()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def script(self, path: str, *actions: str, then: str = "ok") -> None:
        self.scripts[path] = (deque(actions), then)

    def next_action(self, path: str) -> str:
        actions, then = self.scripts.get(path, (deque(), "ok"))
        return actions.popleft() if actions else then

    def body(self, path: str) -> bytes | None:
        if path in self.files:
            return self.files[path]
        if self.root is not None and (self.root / path).is_file():
            return (self.root / path).read_bytes()
        return None


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        state: Server = self.server.state
        path = urlsplit(self.path).path.lstrip("/")
        state.counts[path] += 1
        action, _, arg = state.next_action(path).partition(":")
        body = state.body(path)
        if action == "sleep":
            time.sleep(float(arg))
            action = "ok"
        if action == "redirect":
            self.send_response(302)
            self.send_header("Location", "/" + arg)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if action in ("500", "404") or body is None:
            self.send_response(int(action) if action in ("500", "404") else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if action == "wrong":
            body = bytes(b ^ 0xFF for b in body)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if action == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif action == "trickle":
            for start in range(0, len(body), 16384):
                self.wfile.write(body[start : start + 16384])
                self.wfile.flush()
                time.sleep(float(arg))
        else:
            self.wfile.write(body)


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that time out or are killed leave broken pipes behind: expected here


@contextlib.contextmanager
def serving(handler: type[Handler] = Handler, state: type[Server] = Server) -> Iterator[Server]:
    """A local HTTP server on a free port for the duration of the block; ``handler`` and
    ``state`` may extend :class:`Handler` and :class:`Server` (another service's calls)."""
    httpd = QuietServer(("127.0.0.1", 0), handler)
    httpd.state = state(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()


def assert_edits_make_exactly_their_stages_stale(ctx, monkeypatch, tmp_path: Path) -> None:
    """With every stage of ``ctx`` up to date: editing any module of any stage's code (as
    :mod:`pipeline.code_graph` finds it) makes exactly the stages whose code holds it stale with
    "code changed", and ``make.status`` shows them and everything downstream of them stale."""
    stages = ctx.target.stages
    assert [row["state"] for row in make.status(ctx)] == ["up to date"] * len(stages)  # the control
    lock = make.read_lock(ctx.workspace)
    code = {s.name: code_graph.code_modules(s.run, ctx.target) for s in stages}
    for module in sorted(set().union(*code.values())):
        with edited(monkeypatch, tmp_path, module):
            own = {s.name: make.check(s, ctx, lock, set()) for s in stages}
            rows = {row["stage"]: row for row in make.status(ctx)}
        stale: set[str] = set()
        for s in stages:  # declared order: upstream first
            assert own[s.name] == (("stale", "code changed") if module in code[s.name] else ("up to date", "")), \
                (module, s.name, own[s.name])
            if module in code[s.name] or stale & set(s.after):
                stale.add(s.name)
            expected = "stale" if s.name in stale else "up to date"
            assert rows[s.name]["state"] == expected, (module, rows[s.name])
            if module in code[s.name] and not stale & set(s.after):
                assert rows[s.name]["reason"] == "code changed", (module, rows[s.name])
    assert [row["state"] for row in make.status(ctx)] == ["up to date"] * len(stages)  # nothing really changed
