"""Rule rewards scored while the rollout is still decoding (as in the paper's infrastructure,
where rule rewards run asynchronously, overlapped with the rollout).

The rollout engine hands over each completion as soon as it is complete
(`r1kit.rollout.generate`'s `on_finished`). `OverlappedRewards` turns it into text and scores
it in a background thread while the main thread goes on decoding; math checks run in the
verifier's worker processes, so the thread mostly waits on them. What goes to the thread is
what is safe there and computed per completion: the rule rewards of reasoning data (accuracy,
format, language), as a reward says through its `overlappable(example)`. Rows that need a
reward model (it runs on the training device, where the rollout's CUDA graphs are being
captured and replayed) and custom reward functions (which may use the device, or signal-based
timeouts that work only on the main thread) are scored after the rollout, as before. (Rows
that finish with the rollout go to the thread too; the rollout then waits for them.) The
scores are the same either way: each of these rewards is a function of one completion and
its example.

The GRPO stage's `overlap_rewards = "auto"` does this when the rollout decodes on CUDA, where
the CPU's cores are free meanwhile; on a CPU-only machine decoding and checking compete for
the same cores (bench/reward_overlap.py: on 2 cores the overlap saved less waiting than it
cost in decoding).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self

import torch

from r1kit.tasks.base import Example

Scored = tuple[float, dict]


def wanted(mode: str, device) -> bool:
    """Whether `overlap_rewards = mode` ("auto" | "on" | "off") scores in the background for
    a rollout on `device`: "auto" on CUDA, where the CPU is free while the device decodes."""
    return mode == "on" or (mode == "auto" and torch.device(device).type == "cuda")


def applies(reward, examples: list[Example]) -> bool:
    """Whether any of `examples` would be scored in the background (overlappable)."""
    check = getattr(reward, "overlappable", None)
    return check is not None and any(check(e) for e in examples)


class OverlappedRewards:
    """Scores of one rollout, computed as its rows finish. `reward.score(texts, examples)` is
    the reward; `to_text(token_ids)` a completion's text; `examples[i]`: row i's example.
    Use as a context manager (the thread is waited for on leaving)."""

    def __init__(self, reward, to_text: Callable[[list[int]], str], examples: list[Example],
                 enabled: bool = True):
        check = getattr(reward, "overlappable", None) if enabled else None
        self.eligible = [check is not None and bool(check(e)) for e in examples]
        self.reward, self.to_text, self.examples = reward, to_text, examples
        self.pool = (ThreadPoolExecutor(1, thread_name_prefix="r1kit-rewards")
                     if any(self.eligible) else None)
        self.jobs: list[Future] = []
        # rows handed over and not yet taken by the thread, which takes all of them at once
        # (one batch for the verifier's or the sandbox's pool of processes, not one per check)
        self.waiting: list[tuple[int, list[int]]] = []
        self.lock = threading.Lock()
        self.draining = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    @property
    def callback(self) -> Callable[[list[int], list[list[int]]], None] | None:
        """`finished`, or None when no row is scored in the background."""
        return self.finished if self.pool is not None else None

    def finished(self, rows: list[int], completions: list[list[int]]) -> None:
        """The rollout's callback: these rows are complete (their generated token ids)."""
        take = [(r, c) for r, c in zip(rows, completions) if self.eligible[r]]
        if not take or self.pool is None:
            return
        with self.lock:
            self.waiting += take
            if self.draining:  # the running job takes these too
                return
            self.draining = True
        self.jobs.append(self.pool.submit(self._drain))

    def _drain(self) -> list[tuple[list[int], list[str], list[Scored]]]:
        """Score every waiting row, again until none waits; (rows, texts, scores) batches."""
        done = []
        while True:
            with self.lock:
                batch, self.waiting = self.waiting, []
                if not batch:
                    self.draining = False
                    return done
            rows = [r for r, _ in batch]
            try:
                done.append((rows, *self._score(rows, [c for _, c in batch])))
            except BaseException:
                with self.lock:  # raised by results(); later rows get a job of their own
                    self.draining = False
                raise

    def _score(self, rows: list[int], completions: list[list[int]]):
        texts = [self.to_text(c) for c in completions]
        return texts, self.reward.score(texts, [self.examples[r] for r in rows])

    def results(self, texts: list[str]) -> list[Scored]:
        """(reward, parts) of every row, given the rollout's texts: the rows scored in the
        background (an exception there is raised here), the others now in one call."""
        out: list[Scored | None] = [None] * len(texts)
        batches = [b for job in self.jobs for b in job.result()]
        for rows, done_texts, scored in batches:
            for r, text, s in zip(rows, done_texts, scored):
                if text != texts[r]:
                    raise RuntimeError(
                        f"completion {r} was scored as {text[:60]!r}... while decoding but the "
                        f"rollout returned {texts[r][:60]!r}...: set overlap_rewards = \"off\" "
                        "and report this")
                out[r] = s
        rest = [i for i, s in enumerate(out) if s is None]
        if rest:
            for i, s in zip(rest, self.reward.score([texts[i] for i in rest],
                                                    [self.examples[i] for i in rest])):
                out[i] = s
        return out
