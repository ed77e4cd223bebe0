"""Packing variable-length sequences into rows without padding waste.

Several sequences share a row; each one's position ids restart at 0, and with no attention
mask and no KV cache (`use_cache=False`: with a cache it does not look for them) transformers
reads those restarts as sequence boundaries, so no token attends across them (the "packed
sequence" format of its masking utilities). A test checks that packed
log-probs equal those of the sequences run one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Packed:
    input_ids: torch.Tensor  # [R, L]
    position_ids: torch.Tensor  # [R, L], restarting at 0 at each sequence
    spans: list[tuple[int, int, int]]  # per input sequence: (row, start, length), input order


def first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of total length <= capacity (first fit, longest first).
    A sequence longer than `capacity` gets a bin of its own."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return bins


def pack(seqs: list[list[int]], capacity: int, pad_id: int) -> Packed:
    """Pack token sequences into rows of at most max(capacity, longest) tokens."""
    lengths = [len(s) for s in seqs]
    bins = first_fit(lengths, max(capacity, max(lengths)))
    width = max(sum(lengths[i] for i in b) for b in bins)
    ids = torch.full((len(bins), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(bins), width), dtype=torch.long)
    spans: list[tuple[int, int, int]] = [(0, 0, 0)] * len(seqs)
    for r, b in enumerate(bins):
        at = 0
        for i in b:
            n = lengths[i]
            ids[r, at:at + n] = torch.tensor(seqs[i], dtype=torch.long)
            pos[r, at:at + n] = torch.arange(n)
            spans[i] = (r, at, n)
            at += n
        pos[r, at:] = torch.arange(width - at)  # the padding tail is a sequence of its own
    return Packed(ids, pos, spans)
