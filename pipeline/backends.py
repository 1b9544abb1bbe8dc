"""Where a sweep's or a CV's tasks run: in this process, or as Ray tasks on a cluster.

A task is a module-level function applied to the work's shared inputs (the features and the
folds, put into Ray's object store once) and its own arguments (the configs that share one
stacked model, or one recipe member). Both backends run the same functions on the same
inputs, so they give the same results; Ray spreads them over its workers, retries a task
whose worker dies (``max_retries``), and names the configs of any task that still fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable

from pipeline.errors import ParamError, PipelineError, TrainingError
from pipeline.progress import Progress

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
RETRIES = 3  # a task whose worker process dies is run again this many times
CONNECT_SECONDS = 10  # how long a cluster's address may take to accept a connection


@dataclass(frozen=True)
class Task:
    label: str  # what the task trains, for progress and for the error when it fails
    args: tuple


class Local:
    """Every task in this process, in order."""

    name = "local"
    workers = 1

    def __enter__(self) -> "Local":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def map(self, function: Callable, shared: Any, tasks: list[Task], progress: Progress = Progress()) -> list:
        return [function(shared, *task.args, progress) for task in tasks]


def _ray():
    try:
        import ray
    except ImportError:
        raise ParamError("backend", "ray", "needs Ray and Optuna: pip install -e \".[scale]\"") from None
    return ray


class Ray:
    """Tasks on a Ray cluster: ``address`` (or ``$RAY_ADDRESS``) joins one; without either, a
    local instance with this machine's CPUs starts for the run and stops after it."""

    name = "ray"

    def __init__(self, address: str | None = None, retries: int = RETRIES):
        self.ray = _ray()
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.retries = retries
        self.started = False
        self.quiet_stdout = contextlib.ExitStack()

    def __enter__(self) -> "Ray":
        # Ray's driver prints its notices (a worker died, a task is retried) on stdout from a
        # background thread; they belong with the progress on stderr, so `--json` stays parseable
        self.quiet_stdout.enter_context(contextlib.redirect_stdout(sys.stderr))
        if not self.ray.is_initialized():
            if self.address:
                _answers(self.address)
                self.ray.init(address=self.address, log_to_driver=False)
            else:
                self.ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            self.started = True
        return self

    def __exit__(self, *exc) -> None:
        self.quiet_stdout.close()
        if self.started:
            self.ray.shutdown()  # a cluster we joined keeps running; our local instance stops
            self.started = False

    @property
    def workers(self) -> int:
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def map(self, function: Callable, shared: Any, tasks: list[Task], progress: Progress = Progress()) -> list:
        """Run the tasks on the cluster; the shared inputs travel to the object store once."""
        ray = self.ray
        reference = ray.put(shared)
        remote = ray.remote(max_retries=self.retries, num_cpus=1)(function)
        futures = {remote.remote(reference, *task.args, Progress()): i for i, task in enumerate(tasks)}
        results: list = [None] * len(tasks)
        failed: list[str] = []
        step = progress.step(f"{len(tasks)} Ray tasks on {self.workers} CPUs", len(tasks), "task")
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = futures[done[0]]
            try:
                results[i] = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:  # the task itself raised: a bad param, a bug
                cause = getattr(exc, "cause", None)
                if isinstance(cause, PipelineError):
                    raise cause from None
                raise
            except ray.exceptions.RayError as exc:  # its worker died, on every try
                log.warning("Ray task %s failed: %s", tasks[i].label, type(exc).__name__)
                failed.append(tasks[i].label)
            step.advance()
        step.close()
        if failed:
            raise TrainingError(f"{len(failed)} of {len(tasks)} Ray tasks failed after {self.retries} retries "
                                f"(their workers died): {'; '.join(failed)}; nothing was saved")
        return results


def _answers(address: str) -> None:
    """Refuse, in one line, a cluster address where nothing listens: Ray itself retries such an
    address for minutes, repeating its warnings. ``auto`` (Ray finds a local cluster) passes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or type(exc).__name__
        raise ParamError("address", address, f"no Ray cluster answers there ({reason} within "
                         f"{CONNECT_SECONDS} s); start one with `ray start --head` or leave --address out") from None


def backend(name: str, address: str | None = None) -> Local | Ray:
    """The backend called ``name``, to use as a context manager: refused in one line when
    unknown, or when Ray is not installed."""
    if name not in BACKENDS:
        raise ParamError("backend", name, f"not one of {', '.join(BACKENDS)}")
    return Local() if name == "local" else Ray(address)
