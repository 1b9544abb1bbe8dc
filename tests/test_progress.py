"""Progress on every long step (issue 15): plain lines when output is not a terminal, and in a
pseudo-terminal tqdm bars with a live plotext chart of the learning curves, redrawn in place."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np

from helpers import make_competition, run_cli
from pipeline.progress import Lines, Progress, Step

CURSOR_UP = re.compile(r"\x1b\[(\d+)F")


def in_a_terminal(ws: Path, *args: str, timeout: float = 120) -> str:
    """``python -m pipeline --workdir WS ARGS`` with stdout and stderr on a pseudo-terminal: all it wrote."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))  # a real terminal's size
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE_HOME", "PIPELINE_MIRROR")}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--workdir", str(ws), *args],
                            stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(main)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode("utf-8", errors="replace")


def test_live_chart_is_drawn_then_redrawn_in_place_in_a_terminal(tmp_path):
    """On a terminal, --live is the default for a run with epochs: the chart of epoch 1 is drawn,
    then each later epoch moves the cursor back over it and draws the next one."""
    ws = make_competition(tmp_path / "ws")
    out = in_a_terminal(ws, "cv", "toy", "--model", "mlp", "--epochs", "6")
    titles = re.findall(r"cv toy: mlp \(epoch (\d+)/6\)", out)
    assert titles == [str(e) for e in range(1, 7)], titles
    ups = [int(n) for n in CURSOR_UP.findall(out)]
    assert len(ups) >= 5 and len(set(ups)) == 1 and ups[0] > 10  # the same chart height, redrawn 5 times
    assert "train" in out and "valid" in out and "┌" in out  # a plotext frame with its legend
    assert re.search(r"cv toy: mlp: +\d+%\|", out)  # a tqdm bar with its ETA below the chart


def test_no_live_chart_in_a_terminal_with_no_live_nor_for_members_without_epochs(tmp_path):
    ws = make_competition(tmp_path / "ws")
    out = in_a_terminal(ws, "cv", "toy", "--model", "mlp", "--epochs", "3", "--no-live")
    assert "(epoch 1/3)" not in out and not CURSOR_UP.search(out)
    assert re.search(r"cv toy: mlp: +\d+%\|", out)  # still a bar
    (ws / "params.toml").write_text('[toy]\nensemble = [{model = "lasso", alpha = 0.001}]\n')
    out = in_a_terminal(ws, "cv", "toy")
    assert not CURSOR_UP.search(out) and re.search(r"cv toy: lasso: +\d+%\|.*fit", out)


def test_plain_lines_when_output_is_not_a_terminal_for_every_member(tmp_path, capsys):
    """Piped output gets a line every ~10% of each member's work: epochs, fits, boosting runs."""
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text("[toy]\nepochs = 10\n")
    code, _, err = run_cli(ws, capsys, "cv", "toy")
    assert code == 0
    for member, unit, total in (("mlp", "epoch", 10), ("lightgbm", "fit", 5), ("glm", "fit", 5)):
        lines = re.findall(rf"cv toy: {member}: {unit} (\d+)/{total} \(\d+ s\)", err)
        assert lines and lines[-1] == str(total), (member, err)
    assert "\x1b[" not in err


def test_lines_report_about_every_tenth_and_the_end(capsys):
    import io

    out = io.StringIO()
    step = Lines("cv x", out).step("mlp", 25)
    for _ in range(25):
        step.advance()
    done = [int(n) for n in re.findall(r"epoch (\d+)/25", out.getvalue())]
    assert done == [3, 6, 9, 12, 15, 18, 21, 24, 25]


def test_silent_progress_is_the_librarys_default():
    step = Progress("anything").step("mlp", 3)
    assert isinstance(step, Step)
    step.advance(1, lambda: {"train": np.zeros((1, 1))})  # curves are not even read
    step.close()
