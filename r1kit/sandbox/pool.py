"""Many sandboxed programs in parallel: `SandboxPool` and `run_many`.

Each run is a subprocess that the worker thread supervises (waiting on pipes and a pidfd,
so a thread costs almost nothing while its program runs); the parallelism is the number of
programs alive at once, by default one per CPU. Results come back in input order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self

from r1kit.sandbox.isolation import get_config
from r1kit.sandbox.limits import Limits, RunResult
from r1kit.sandbox.runner import execute


class SandboxPool:
    """A fixed number of concurrent sandboxed runs.

        with SandboxPool() as pool:
            results = pool.map(["print(1)", "print(2)"])
    """

    def __init__(self, workers: int | None = None, *, limits: Limits | None = None,
                 isolation: str | None = None):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.limits = limits or Limits()
        # Probe now, in the caller's thread: the first jobs should not all wait on the probe.
        self.config = get_config(isolation)
        self._executor = ThreadPoolExecutor(max_workers=self.workers,
                                            thread_name_prefix="r1kit-sandbox")

    @property
    def isolation(self) -> str:
        return self.config.mode

    def submit(self, source: str, *, stdin: str = "", limits: Limits | None = None,
               side_input: bytes | None = None) -> Future[RunResult]:
        return self._executor.submit(execute, self.config, source, stdin=stdin,
                                     limits=limits or self.limits, side_input=side_input)

    def map(self, sources: Sequence[str], *, stdin: str | Sequence[str] = "",
            limits: Limits | None = None) -> list[RunResult]:
        stdins = [stdin] * len(sources) if isinstance(stdin, str) else list(stdin)
        if len(stdins) != len(sources):
            raise ValueError(f"{len(sources)} programs but {len(stdins)} stdin texts")
        futures = [self.submit(s, stdin=i, limits=limits) for s, i in zip(sources, stdins)]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_many(sources: Sequence[str], *, stdin: str | Sequence[str] = "",
             limits: Limits | None = None, workers: int | None = None,
             isolation: str | None = None) -> list[RunResult]:
    """Run every program of `sources` in the sandbox, `workers` at a time (default: CPUs)."""
    with SandboxPool(workers, limits=limits, isolation=isolation) as pool:
        return pool.map(sources, stdin=stdin)
