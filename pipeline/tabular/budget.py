"""A time limit, as the recipe spends it: each member of a CV gets an even share of what is
left when its turn comes (so time one member leaves goes to the next), and stops or is cut
when its share runs out:

- a torch member trains as many epochs as fit (the time of an epoch is known after its first
  steps): fewer than asked is "shortened"; not one is "cut";
- LightGBM boosts until its fold's share is spent (each fold gets an even share of the
  member's); a member whose first fold cannot stop early enough is "cut";
- a scikit-learn member (whose solvers cannot stop early) is timed on its first fold and "cut"
  when that fold's time, times the folds left, would end after its share.

A command that trains the final model after its CV keeps a part of the time for it (the final
fit of each member costs about one fold of its CV, a little more for the extra rows). The
report lists what was cut or shortened, and why. Without a limit nothing is planned.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from pipeline.errors import ParamError

UNITS = {"s": 1, "m": 60, "h": 3600}
FINAL_FIT = 0.25  # of what is left after preprocessing, kept for the final fit by a command that trains one


def seconds(value, param: str = "time_limit") -> float | None:
    """``600``, ``"600"``, ``"10m"``, ``"90s"``, ``"1.5h"`` -> seconds; None or 0: no limit."""
    if value in (None, 0, "", "0"):
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(value))
    if not match or float(match.group(1)) <= 0:
        raise ParamError(param, value, "give seconds or a duration such as 90s, 10m or 1.5h")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


class OutOfTime(Exception):
    """A member cannot fit in its share of the time; ``why`` says what was projected."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass
class Budget:
    """The time a CV (or a final fit) may take, and what it had to leave out."""

    deadline: float  # time.monotonic() at which the work must be done
    cut: list[dict] = field(default_factory=list)  # members left out, and why
    shortened: list[dict] = field(default_factory=list)  # members trained less than asked, and how much

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def share(self, members_left: int) -> float:
        """The deadline of the next member: an even part of what is left is its share."""
        return part(self.deadline, max(1, members_left))

    def report(self, limit: float) -> dict:
        return {"seconds": limit, "cut": self.cut, "shortened": self.shortened}


def part(deadline: float | None, parts_left: int) -> float | None:
    """The deadline of the next of ``parts_left`` pieces of work sharing ``deadline`` evenly."""
    return None if deadline is None else time.monotonic() + max(0.0, deadline - time.monotonic()) / parts_left
