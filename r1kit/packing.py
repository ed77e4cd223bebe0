"""Packing variable-length sequences into rows without padding waste.

Several sequences share a row; each one's position ids restart at 0, and with no attention
mask and no KV cache (`use_cache=False`: with a cache it does not look for them) transformers
reads those restarts as sequence boundaries, so no token attends across them (the "packed
sequence" format of its masking utilities). A test checks that packed
log-probs equal those of the sequences run one by one.
"""

from __future__ import annotations

import weakref
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


def pack(seqs: list[list[int]], capacity: int, pad_id: int, one_per_row: bool = False) -> Packed:
    """Pack token sequences into rows of at most max(capacity, longest) tokens;
    `one_per_row`: each sequence in a row of its own, right-padded (for models that do not
    read restarting position ids as boundaries, see packs_safely)."""
    lengths = [len(s) for s in seqs]
    bins = ([[i] for i in range(len(seqs))] if one_per_row
            else first_fit(lengths, max(capacity, max(lengths))))
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


_SAFE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def packs_safely(model) -> bool:
    """Whether `model` keeps packed sequences apart (reads the restarting position ids as
    boundaries). Most transformers models do; some (OPT, Bloom) let a sequence attend to the
    ones before it in its row. Checked once per model: the logits of one sequence after two
    different sequences in the same row must not differ (any difference counts, so rounding
    noise can only make a model that packs safely run one sequence per row: slower, never
    wrong)."""
    if model in _SAFE:
        return _SAFE[model]
    device = next(model.parameters()).device
    tail = [5, 6, 7, 8]
    vocab = model.get_input_embeddings().num_embeddings
    rows = torch.tensor([[1, 2, 3, 4, 1, 2] + tail, [9, 3, 9, 3, 9, 3] + tail],
                        device=device) % vocab
    pos = torch.tensor([list(range(6)) + list(range(4))] * 2, device=device)
    was = model.training
    model.eval()
    try:
        logits = model(input_ids=rows, position_ids=pos, use_cache=False).logits[:, 6:].float()
    finally:
        model.train(was)
    scale = float(logits.abs().max()) + 1.0
    _SAFE[model] = bool((logits[0] - logits[1]).abs().max() <= 1e-5 * scale)
    return _SAFE[model]


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A CPU tensor on `device`; to a GPU through pinned memory without waiting for the work
    already queued there (a plain copy from pageable memory waits for it)."""
    if torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
