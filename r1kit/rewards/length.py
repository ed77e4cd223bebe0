"""DAPO's soft overlong punishment: a length penalty in the last tokens below the length cap.

A completion of L tokens under a cap of C tokens with a buffer of B tokens gets

    0                  when L <= C - B
    (C - B - L) / B    when C - B < L <= C   (from 0 down to -1 at the cap)

so that a response that runs into the cap (and is cut there) is told so by a graded signal
rather than only by a missing answer. L counts the generated tokens, the stop token included.
"""

from __future__ import annotations

import torch


def overlong_penalty(lengths: torch.Tensor, cap: int, buffer: int) -> torch.Tensor:
    """Penalties in [-1, 0] for completion lengths [N] (tokens) under a `cap`; 0 everywhere
    when `buffer` is 0."""
    lengths = lengths.float()
    if buffer <= 0:
        return torch.zeros_like(lengths)
    if buffer > cap:
        raise ValueError(f"overlong buffer {buffer} exceeds the length cap {cap}")
    return ((cap - buffer - lengths) / buffer).clamp(min=-1.0, max=0.0)
