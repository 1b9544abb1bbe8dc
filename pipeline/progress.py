"""Progress of long steps: what the library reports, and the ways a front end shows it.

A stage asks for ``progress = ctx.progress("cv house")``; each member then opens one step per
fit, ``progress.step("mlp", total=30, unit="epoch")``, and advances it per epoch, fold or
boosting round, with the epoch's learning curves when it has them. :class:`Progress` shows
nothing (the library's default); :class:`Bars` draws tqdm bars with an ETA on a terminal,
:class:`Lines` prints a plain line every ~10% (logs, CI), and :class:`Live` adds a plotext chart
of the curves, redrawn in place each epoch (d2l's ``Animator``, in a terminal).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, TextIO

import numpy as np

Curves = Callable[[], dict[str, np.ndarray]]  # -> {"train": (groups, configs), "valid": ...} for one epoch


class Step:
    """One fit of one member: ``total`` units of work."""

    def advance(self, n: int = 1, curves: Curves | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class Progress:
    """Silent: where nobody watches (tests, library calls)."""

    def __init__(self, desc: str = ""):
        self.desc = desc

    def step(self, name: str, total: int, unit: str = "epoch", higher_is_better: bool = False) -> Step:
        """``higher_is_better``: the direction of the curves' metric (a sweep's chart shows its best)."""
        return Step()

    def label(self, name: str) -> str:
        return f"{self.desc}: {name}" if self.desc else name


class _LineStep(Step):
    def __init__(self, label: str, total: int, unit: str, out: TextIO):
        self.label, self.total, self.unit, self.out = label, total, unit, out
        self.done, self.started, self.every = 0, time.monotonic(), max(1, math.ceil(total / 10))

    def advance(self, n: int = 1, curves: Curves | None = None) -> None:
        self.done += n
        if self.done == self.total or self.done % self.every == 0:
            print(f"{self.label}: {self.unit} {self.done}/{self.total} ({time.monotonic() - self.started:.0f} s)",
                  file=self.out, flush=True)


class Lines(Progress):
    """A plain line every ~10% of a step: for output that is not a terminal."""

    def __init__(self, desc: str = "", out: TextIO | None = None):
        super().__init__(desc)
        self.out = out or sys.stderr

    def step(self, name: str, total: int, unit: str = "epoch", higher_is_better: bool = False) -> Step:
        return _LineStep(self.label(name), total, unit, self.out)


class _BarStep(Step):
    def __init__(self, bar):
        self.bar = bar

    def advance(self, n: int = 1, curves: Curves | None = None) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class Bars(Progress):
    """tqdm bars with an ETA, one per fit (``tqdm.auto``: widgets in Jupyter)."""

    def __init__(self, desc: str = "", out: TextIO | None = None):
        super().__init__(desc)
        self.out = out or sys.stderr

    def step(self, name: str, total: int, unit: str = "epoch", higher_is_better: bool = False) -> Step:
        from tqdm.auto import tqdm

        return _BarStep(tqdm(total=total, desc=self.label(name), unit=unit, leave=False, file=self.out))


class _LiveStep(_BarStep):
    """A bar, and above it a chart of the mean train and valid curves, redrawn each epoch."""

    SHOWN = 4  # configs on the chart: a sweep shows its best few

    def __init__(self, bar, label: str, total: int, out: TextIO, higher_is_better: bool):
        super().__init__(bar)
        self.label, self.total, self.out, self.higher = label, total, out, higher_is_better
        self.history: dict[str, list[np.ndarray]] = {}
        self.drawn = 0  # lines of the last chart, to move the cursor back over

    def advance(self, n: int = 1, curves: Curves | None = None) -> None:
        if curves is not None:
            for name, values in curves().items():
                self.history.setdefault(name, []).append(np.nanmean(values, axis=0))  # mean over folds
            self._draw()
        super().advance(n)

    def _draw(self) -> None:
        import plotext as plt

        valid = np.array(self.history.get("valid") or self.history["train"])  # (epochs, configs)
        last = valid[-1]
        order = np.argsort(np.where(np.isnan(last), np.inf, -last if self.higher else last))[: self.SHOWN]
        plt.clf()
        plt.theme("pro")  # the terminal's own background
        plt.plotsize(72, 18)
        plt.title(f"{self.label} (epoch {len(valid)}/{self.total})")
        epochs = list(range(1, len(valid) + 1))
        for name, values in self.history.items():
            values = np.array(values)
            for c in order:
                tag = f"{name}" if len(last) == 1 else f"{name} #{c + 1}"
                plt.plot(epochs, np.nan_to_num(values[:, c], nan=0.0).tolist(), label=tag,
                         marker="braille")
        plt.xlim(1, max(2, self.total))
        chart = plt.build()
        self.bar.clear()  # the bar sits on the line below the chart: clear it, go up, redraw both
        self.out.write((f"\x1b[{self.drawn}F" if self.drawn else "") + chart + "\n")
        self.out.flush()
        self.drawn = chart.count("\n") + 1
        self.bar.refresh()


class Live(Bars):
    """Bars, and for members trained in epochs a live chart of their learning curves."""

    def step(self, name: str, total: int, unit: str = "epoch", higher_is_better: bool = False) -> Step:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=self.label(name), unit=unit, leave=False, file=self.out)
        if unit != "epoch":
            return _BarStep(bar)
        return _LiveStep(bar, self.label(name), total, self.out, higher_is_better)
