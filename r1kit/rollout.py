"""The built-in rollout engine: batched sampling with a KV cache.

- Each prompt is prefilled once; its KV cache is then repeated for the G samples of its group.
- A sequence that emits a stop token leaves the batch at once (its rows are dropped from the
  KV cache), so finished sequences stop costing compute.
- Llama-family models (LoRA-adapted ones too) decode with r1kit's lean forward
  (r1kit/lean.py): a preallocated KV cache and, on CUDA, a captured CUDA graph per batch size
  and cache-length bucket that is replayed for every token (finished rows are compacted away,
  and the graph of the next smaller batch size takes over). Other models decode with
  transformers' forward and its dynamic cache.
- Unless `logprobs=False`, for every sampled token the engine returns the log-probability
  under the distribution it was sampled from, softmax(logits / temperature) before any top-p
  truncation: the same quantity the training pass computes, so it can serve as the behaviour
  policy's log-prob.
- With `seeds` (one per prompt) each group draws its random numbers from its own generator,
  so a group's samples do not depend on which other prompts share the batch: the same
  completions whether a step's prompts are sampled in one process or split across several.
- With `on_finished`, each completion is handed over as soon as it is complete (its stop
  token sampled, or at the end of its chunk of prompts), so that its reward can be computed
  while the other rows are still decoding.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from r1kit.errors import R1kitError, out_of_memory
from r1kit.lean import LeanLM
from r1kit.logprobs import compiled_version, softmax_stats
from r1kit.models import trained_positions


@dataclass
class Rollouts:
    """G completions for each of B prompts, in prompt-major order (row i*G + j)."""

    prompt_ids: list[list[int]]  # [B] token ids of each prompt
    completion_ids: torch.Tensor  # [B*G, T] right-padded with pad_id
    completion_mask: torch.Tensor  # [B*G, T] 1 = a generated token (stop token included)
    logprobs: torch.Tensor | None  # [B*G, T] sampling log-probs, 0 where mask is 0 (None:
    # not asked for)
    stopped: torch.Tensor  # [B*G] bool: ended with a stop token (False: hit the length cap)
    group_size: int

    @property
    def lengths(self) -> torch.Tensor:  # [B*G]
        return self.completion_mask.sum(-1)


def _cache_kwarg(model) -> str:
    # transformers 5.2x renames forward's `past_key_values` to `cache`; accept both versions.
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _select_rows(cache, index: torch.Tensor) -> None:
    for layer in cache.layers:
        layer.batch_select_indices(index)


def _repeat_rows(cache, repeats: int) -> None:
    for layer in cache.layers:
        layer.batch_repeat_interleave(repeats)


# torch.multinomial draws an exponential for every vocabulary entry: on a 2-core CPU, 128 rows
# of a 32k vocabulary took 125 ms per decode step against 15 ms for one uniform number per row
# and a cumulative sum (bench/sampling.py). Small vocabularies (the tiny world's 73 entries:
# 0.3 ms) keep torch.multinomial, so their runs draw the same samples as before.
MULTINOMIAL_MAX_VOCAB = 4096


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                  generator: torch.Generator | None,
                  uniforms: torch.Tensor | None = None, banned: torch.Tensor | None = None,
                  with_logprobs: bool = True, compiled: bool = False,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample one token per row. logits [N, V] → (tokens [N], log-probs [N] or None).

    The log-prob is that of softmax(logits / temperature); top-p only restricts the choice.
    temperature 0 means greedy decoding. `banned` (token ids): never sampled (their logits
    count as -inf, also for the log-prob). `uniforms` [N] in [0, 1): sample each row by
    inverting its cumulative distribution at that number instead of drawing from `generator`.
    Otherwise, on CUDA (without top-p) the draw is the exponential race
    argmax(p / E) = argmax(logits - T log E), E ~ Exp(1): an exact sample of p without a
    softmax or a cumulative sum over the vocabulary. Elsewhere, from MULTINOMIAL_MAX_VOCAB
    entries up, it inverts the cumulative distribution at one uniform number per row drawn
    from `generator`; below that it is torch.multinomial. `with_logprobs` False: the log-probs
    are not computed (None). `compiled`: the race's arithmetic after the draws, and the
    log-probs, through torch.compile (one pass over the logits each).
    """
    if top_p >= 1.0 and logits.is_cuda and uniforms is None and temperature > 0:
        tokens = race_sample(logits, temperature, generator, banned, compiled)
        if not with_logprobs:
            return tokens, None
        if banned is not None:
            logits = logits.index_fill(-1, banned, float("-inf"))
        if compiled:
            return tokens, compiled_version(softmax_stats)(logits, tokens, temperature, False)[0]
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
    logits = logits.float()
    if banned is not None:
        logits = logits.index_fill(-1, banned, float("-inf"))
    if temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, torch.zeros_like(tokens, dtype=torch.float32) if with_logprobs else None
    if with_logprobs:
        logp = torch.log_softmax(logits / temperature, dim=-1)  # [N, V]
        probs = logp.exp()
    else:
        probs = torch.softmax(logits / temperature, dim=-1)
    if uniforms is None and logits.shape[-1] >= MULTINOMIAL_MAX_VOCAB:
        uniforms = torch.rand(logits.shape[0], generator=generator, device=logits.device,
                              dtype=torch.float64)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        # drop a token when the tokens ranked above it already cover top_p
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        if uniforms is not None:
            choice = _inverse_cdf(sorted_p, uniforms)[:, None]
        else:
            choice = torch.multinomial(sorted_p, 1, generator=generator)  # [N, 1]
        tokens = order.gather(-1, choice).squeeze(-1)
    elif uniforms is not None:
        tokens = _inverse_cdf(probs, uniforms)
    else:
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    if not with_logprobs:
        return tokens, None
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def race_sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None,
                banned: torch.Tensor | None = None, compiled: bool = False) -> torch.Tensor:
    """One token per row of softmax(logits / temperature) (temperature > 0) by the exponential
    race: argmax(logits - temperature * log E), E ~ Exp(1) drawn in float32; `banned` ids
    lose every race. Reads the logits in their own dtype, no softmax. `compiled`: the
    arithmetic after the draws as one compiled pass (race_winners)."""
    race = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    race.exponential_(generator=generator)
    if banned is not None:
        race.index_fill_(-1, banned, float("inf"))
    if compiled:
        return compiled_version(race_winners)(logits, race, temperature)
    return torch.sub(logits, race.log_(), alpha=temperature).argmax(-1)


def race_winners(logits: torch.Tensor, draws: torch.Tensor, temperature: float) -> torch.Tensor:
    """argmax(logits - temperature * log draws) per row, in float32."""
    return (logits.float() - temperature * draws.log()).argmax(-1)


CDF_BLOCK = 1024  # entries per block of _inverse_cdf's running sums


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the entry i whose slot [cdf[i-1], cdf[i]) of the cumulative weights holds
    u * total (u in [0, 1), float64 as drawn; zero weights have no slot, never chosen).

    The running sum is taken in two levels: within blocks of CDF_BLOCK entries in the
    weights' dtype, and over the blocks' totals in float64; the row's block is found first,
    then the entry within it. One float32 running sum over the vocabulary would give an
    entry of probability below ~6e-8 that comes after most of the mass no slot at all (never
    drawn, its share moved to a neighbour: ~1e-3 of a 150k-entry distribution); in blocks,
    an entry only loses out against its own block's mass (~1e-5), at the cost of one float32
    sum (a float64 sum over the vocabulary took 3x as long on a CPU). Up to 4 blocks: one
    float64 sum. Weights that are not finite (NaN logits) give some index in range, as
    torch.multinomial's errors would not on CUDA."""
    N, V = weights.shape
    if V <= 4 * CDF_BLOCK:  # small: one float64 sum costs least
        ends = weights.double().cumsum(-1)
        target = torch.minimum(u.to(ends)[:, None] * ends[:, -1:],
                               torch.nextafter(ends[:, -1:], torch.zeros_like(ends[:, -1:])))
        return torch.searchsorted(ends, target, right=True).squeeze(1).clamp(max=V - 1)
    if weights.dtype in (torch.float16, torch.bfloat16):  # sums within blocks need float32
        weights = weights.float()
    full = V // CDF_BLOCK
    blocks = weights[:, :full * CDF_BLOCK].view(N, full, CDF_BLOCK).cumsum(-1)  # [N, full, B]
    tail = weights[:, full * CDF_BLOCK:].cumsum(-1)  # [N, V - full * B]
    totals = torch.cat([blocks[:, :, -1], tail[:, -1:]], 1).double()  # [N, blocks]
    ends = totals.cumsum(-1)
    target = torch.minimum(u.to(ends)[:, None] * ends[:, -1:],
                           torch.nextafter(ends[:, -1:], torch.zeros_like(ends[:, -1:])))
    b = torch.searchsorted(ends, target, right=True).clamp(max=ends.shape[1] - 1)  # its
    # block [N, 1] (of positive total; the clamp: NaN weights)
    start = torch.where(b > 0, ends.gather(1, (b - 1).clamp(min=0)), 0.0)
    total = totals.gather(1, b)
    rest = torch.minimum(target - start, torch.nextafter(total, torch.zeros_like(total)))
    row = torch.full((N, CDF_BLOCK), float("inf"), dtype=torch.float64, device=weights.device)
    if full:
        row = blocks[torch.arange(N, device=weights.device), b.squeeze(1).clamp(max=full - 1)]
        row = row.double()
    if tail.shape[1]:
        padded = torch.full((N, CDF_BLOCK), float("inf"), dtype=torch.float64,
                            device=weights.device)
        padded[:, :tail.shape[1]] = tail
        row = torch.where(b == full, padded, row)
    return (b * CDF_BLOCK + torch.searchsorted(row, rest, right=True)).squeeze(1).clamp(max=V - 1)


def question_seed(seed: int, step: int, j: int) -> int:
    """The sampling seed of question j of a step (per-question seeding: `seeds`)."""
    return ((seed * 1_000_003 + step) * 1_000_033 + j) % (1 << 62)


class _GroupUniforms:
    """The random numbers of per-prompt seeded sampling: prompt i's generator gives its G rows
    `block` numbers at a time, however the rows are batched or how many have finished."""

    def __init__(self, seeds: list[int], G: int, device, block: int = 256):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.G, self.device, self.block = G, device, block
        self.buf = None

    def at(self, t: int, rows: torch.Tensor) -> torch.Tensor:
        if t % self.block == 0:
            self.buf = torch.cat([torch.rand(self.G, self.block, generator=g,
                                             dtype=torch.float64)  # (_inverse_cdf)
                                  for g in self.gens]).to(self.device)
        return self.buf[rows, t % self.block]


_WARNED_POSITIONS: set[int] = set()


class PositionWarning(UserWarning):
    """Prompts plus max_new_tokens reach past the positions the model was trained on."""


def check_positions(model, prompts: list[list[int]], max_new_tokens: int,
                    warn: bool = True, stacklevel: int = 4) -> None:
    """An R1kitError where the prompts plus max_new_tokens reach past the positions the model
    can hold; with `warn`, a PositionWarning (once per process and length) where they reach past
    the positions it was trained on, said of the frame `stacklevel` up (generate's caller)."""
    limit = position_limit(model)
    longest = max((len(p) for p in prompts), default=0) + max_new_tokens
    if limit is not None and longest > limit:
        raise R1kitError(f"prompts of up to {longest - max_new_tokens} tokens plus "
                         f"max_new_tokens = {max_new_tokens} reach position {longest}, past the "
                         f"{limit} positions this model has learned",
                         "lower max_new_tokens (eval: eval.max_new_tokens or --max-new-tokens) "
                         "or use shorter prompts")
    config = getattr(model, "config", None)
    trained = trained_positions(config) if config is not None else None
    if warn and limit is None and isinstance(trained, int) and longest > trained \
            and trained not in _WARNED_POSITIONS:
        _WARNED_POSITIONS.add(trained)  # once per process and length
        warnings.warn(f"prompts plus max_new_tokens can reach position {longest}, past the model's "
                      f"{trained} trained positions: the model was not trained on such "
                      "positions, and its samples there may be poor (lower max_new_tokens or "
                      "use shorter prompts)", PositionWarning, stacklevel=stacklevel)


@torch.no_grad()
def generate(model, prompts: list[list[int]], *, group_size: int, max_new_tokens: int,
             temperature: float, top_p: float = 1.0, stop_ids: list[int], pad_id: int,
             generator: torch.Generator | None = None, max_rows: int = 1024,
             min_new_tokens: int = 0, engine: str = "auto", cuda_graphs: bool = True,
             seeds: list[int] | None = None, logprobs: bool = True,
             on_finished: OnFinished | None = None, compiled: bool = False) -> Rollouts:
    """Sample `group_size` completions for each prompt (token ids, no padding).

    `min_new_tokens`: stop tokens cannot be sampled before that many tokens. `engine`:
    "auto" decodes with r1kit's lean forward where the model allows it, "hf" always with
    transformers' forward. `seeds`: one per prompt; each group samples from its own seeded
    random numbers (`generator` is then unused). `logprobs` False: the sampling log-probs
    are not computed (Rollouts.logprobs is None), which saves a softmax over the vocabulary
    per token where sampling needs none (CUDA, no top-p). `on_finished(rows, completions)`:
    called during decoding with the rows (indices into the returned completions, prompt-major)
    that have just completed and their generated token ids (the stop token included, as in
    completion_mask); every row is handed over exactly once, at the latest when its chunk of
    prompts ends. The engine checks for finished rows at the points where it already waits
    for the device (every token on the CPU, every 8 with CUDA graphs). `compiled`: sampling's
    arithmetic through torch.compile (r1kit's lean engine, on CUDA)."""
    check_positions(model, prompts, max_new_tokens)  # (said of the caller, past no_grad's)
    longest = max((len(p) for p in prompts), default=0) + max_new_tokens
    device = next(model.parameters()).device
    if not prompts:  # nothing to sample (e.g. a process's empty share)
        empty = torch.zeros((0, 0), dtype=torch.long, device=device)
        return Rollouts([], empty, empty.clone(), torch.zeros((0, 0), device=device)
                        if logprobs else None, torch.zeros(0, dtype=torch.bool, device=device),
                        group_size)
    per_chunk = max(1, max_rows // group_size)
    decoder = lean_decoder(model, cuda_graphs, compiled) if engine == "auto" else None
    try:
        parts = _generate_parts(model, prompts, decoder, per_chunk, group_size, max_new_tokens,
                                min_new_tokens, temperature, top_p, stop_ids, pad_id, generator,
                                device, seeds, logprobs, on_finished)
    except RuntimeError as exc:
        if not out_of_memory(exc):
            raise
        rows = min(len(prompts), per_chunk) * group_size
        raise R1kitError(f"out of memory sampling {rows} rows at once of up to {longest} "
                         f"tokens ({str(exc).splitlines()[0]})",
                         "lower generation_rows (r1kit eval: --generation-rows) or "
                         "max_new_tokens") from exc
    width = max(p[0].shape[1] for p in parts)

    def cat(idx, fill):
        return torch.cat([torch.nn.functional.pad(p[idx], (0, width - p[idx].shape[1]), value=fill)
                          for p in parts])

    return Rollouts(
        prompt_ids=[list(p) for p in prompts],
        completion_ids=cat(0, pad_id),
        completion_mask=cat(1, 0),
        logprobs=cat(2, 0.0) if logprobs else None,
        stopped=torch.cat([p[3] for p in parts]),
        group_size=group_size,
    )


def _generate_parts(model, prompts, decoder, per_chunk, group_size, max_new_tokens,
                    min_new_tokens, temperature, top_p, stop_ids, pad_id, generator, device,
                    seeds, logprobs, on_finished) -> list[tuple]:
    """generate's chunks of prompts, each decoded at once: (ids, mask, log-probs, stopped)."""
    return [
        (_generate_lean(decoder, prompts[i:i + per_chunk], group_size, max_new_tokens,
                        min_new_tokens, temperature, top_p, stop_ids, pad_id, generator, device,
                        None if seeds is None else seeds[i:i + per_chunk], logprobs,
                        _Handover(on_finished, i * group_size))
         if decoder is not None else
         _generate_chunk(model, prompts[i:i + per_chunk], group_size, max_new_tokens,
                         min_new_tokens, temperature, top_p, stop_ids, pad_id, generator, device,
                         None if seeds is None else seeds[i:i + per_chunk], logprobs,
                         _Handover(on_finished, i * group_size)))
        for i in range(0, len(prompts), per_chunk)
    ]


OnFinished = Callable[[list[int], list[list[int]]], None]


class _Handover:
    """Hands finished rows of one chunk to `on_finished` (rows numbered from `offset`), each
    once; a no-op without a callback."""

    def __init__(self, on_finished: OnFinished | None, offset: int):
        self.fn, self.offset, self.given = on_finished, offset, None

    def __call__(self, tokens: torch.Tensor, lengths: torch.Tensor, finished: torch.Tensor,
                 ) -> None:
        """tokens [N, T] and lengths [N] of the chunk's rows; finished [N] bool: complete."""
        if self.fn is None:
            return
        if self.given is None:
            self.given = torch.zeros_like(finished)
        new = (finished & ~self.given).nonzero().squeeze(-1)
        if new.numel() == 0:
            return
        self.given[new] = True
        rows, lens = new.tolist(), lengths[new].tolist()
        ids = tokens[new, :max(lens)].tolist()
        self.fn([self.offset + r for r in rows], [t[:n] for t, n in zip(ids, lens)])

    def rest(self, tokens: torch.Tensor, lengths: torch.Tensor) -> None:
        """The chunk has ended: every row not yet handed over."""
        self(tokens, lengths, torch.ones_like(lengths, dtype=torch.bool))


def position_limit(model) -> int | None:
    """The length of a model's table of learned absolute positions (GPT-2's wpe, OPT's
    embed_positions), which it cannot go past; None for rotary or ALiBi models."""
    for name, module in model.named_modules():
        if (isinstance(module, torch.nn.Embedding)
                and name.rsplit(".", 1)[-1] in ("wpe", "embed_positions", "position_embeddings")):
            return module.num_embeddings - int(getattr(module, "offset", 0))
    return None


def _generate_chunk(model, prompts, G, max_new_tokens, min_new_tokens, temperature, top_p,
                    stop_ids, pad_id, generator, device, seeds=None, with_logprobs=True,
                    handover: _Handover | None = None):
    handover = handover or _Handover(None, 0)
    from transformers import DynamicCache

    B, P = len(prompts), max(len(p) for p in prompts)
    input_ids = torch.full((B, P), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: every prompt ends at column P-1
        input_ids[i, P - len(p):] = torch.tensor(p)
        attn[i, P - len(p):] = 1
    input_ids, attn = input_ids.to(device), attn.to(device)
    positions = (attn.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    kw = _cache_kwarg(model)
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=positions,
                use_cache=True, logits_to_keep=1, **{kw: cache})
    logits = out.logits[:, -1].repeat_interleave(G, 0)  # [B*G, V]
    _repeat_rows(cache, G)
    attn = attn.repeat_interleave(G, 0)
    next_pos = positions[:, -1:].repeat_interleave(G, 0) + 1  # [B*G, 1]

    N = B * G
    tokens = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logps = (torch.zeros((N, max_new_tokens), dtype=torch.float32, device=device)
             if with_logprobs else None)
    lengths = torch.zeros(N, dtype=torch.long, device=device)
    stopped = torch.zeros(N, dtype=torch.bool, device=device)
    active = torch.arange(N, device=device)  # rows still generating, in cache order
    stop = torch.tensor(stop_ids, device=device)
    uniforms = _GroupUniforms(seeds, G, device) if seeds is not None else None
    for t in range(max_new_tokens):
        banned = stop if t < min_new_tokens and stop.numel() else None
        u = uniforms.at(t, active) if uniforms is not None else None
        tok, lp = sample_tokens(logits, temperature, top_p, generator, u, banned, with_logprobs)
        tokens[active, t] = tok
        if logps is not None:
            logps[active, t] = lp
        lengths[active] += 1
        done = torch.isin(tok, stop)
        stopped[active[done]] = True
        if t == max_new_tokens - 1:
            break
        if done.any():
            handover(tokens, lengths, stopped)
            keep = (~done).nonzero().squeeze(-1)
            if keep.numel() == 0:
                break
            active, tok = active[keep], tok[keep]
            _select_rows(cache, keep)
            attn, next_pos = attn[keep], next_pos[keep]
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=-1)
        out = model(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos,
                    use_cache=True, **{kw: cache})
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    handover.rest(tokens, lengths)
    T = int(lengths.max().item()) if N else 0
    mask = torch.arange(max_new_tokens, device=device)[None, :] < lengths[:, None]
    return (tokens[:, :T].cpu(), mask[:, :T].long().cpu(),
            logps[:, :T].cpu() if logps is not None else None, stopped.cpu())


# ----- the lean decoder ----------------------------------------------------------------------

def lean_decoder(model, cuda_graphs: bool = True, compiled: bool = False):
    """A lean decoder for the model, or None when the model needs transformers' own forward.
    Its buffers (cache, fused weights, graphs) exist only during a rollout. `compiled`:
    sampling's arithmetic through torch.compile (sample_tokens)."""
    if LeanLM.unsupported(model, decoding=True) is not None:
        return None
    return LeanDecoder(LeanLM(model, compiled), cuda_graphs)


def _buckets(n: int) -> list[int]:
    """Batch sizes that CUDA graphs are captured for: n, then powers of two below it."""
    out, b = [n], 1
    while b < n:
        out.append(b)
        b *= 2
    return sorted(set(out))


LENGTH_BUCKET = 64  # CUDA graphs: attention spans a multiple of this many cache slots
# the cache and the token buffers start with room for this many new tokens and double when a
# row gets there, so that memory follows the longest completion so far, not max_new_tokens
FIRST_WIDTH = 512
# the prefill runs its prompts in chunks of at most this many tokens (padding included) and
# of attention scores (rows x heads x P x P elements): a benchmark of long prompts prefilled
# at once would hold scores for every prompt together (MATH-500 at k = 1: 500 prompts, up to
# ~1,400 tokens each with the tiny world's character tokenizer, tens of GB)
PREFILL_TOKENS = 16384
PREFILL_SCORES = 1 << 27


def prefill_rows(prompts: int, length: int, heads: int) -> int:
    """How many prompts of `length` tokens (padded) one prefill pass takes."""
    length = max(1, length)
    return max(1, min(prompts, PREFILL_TOKENS // length,
                      PREFILL_SCORES // (heads * length * length)))


class LeanDecoder:
    """Decoding with a preallocated cache and fused projection weights; on CUDA each decode
    step of a given batch size is captured once per rollout as a CUDA graph and replayed.
    Everything is released after the rollout (`release`), so training has that memory."""

    def __init__(self, lean: LeanLM, cuda_graphs: bool, simulate_graphs: bool = False):
        self.lean = lean
        self.device = lean.head.weight.device
        # simulate_graphs: the graph path's logic (static shapes, batch-size buckets, late
        # drops of finished rows) with eager replays, so that a CPU test can check it
        self.simulate = simulate_graphs
        self.use_graphs = (cuda_graphs and self.device.type == "cuda") or simulate_graphs
        self.release()

    def release(self) -> None:
        self.cache = self.fused = self.pool = None
        self.graphs: dict[tuple[int, int], tuple] = {}
        self.ids = self.pos = self.start = self.bias = self.logits_out = None
        self.next_slot = None  # the slot in `start` (graphs advance it)

    def begin(self, rows: int, length: int) -> None:
        """Buffers for `rows` sequences of at most `length` tokens; fused weights copied."""
        lean, dev = self.lean, self.device
        self.next_slot = None
        self.cache = lean.new_cache(rows, length)
        self.buckets = _buckets(rows)
        self.fused = lean.decode_weights()
        self.length = length
        self.ids = torch.zeros((rows, 1), dtype=torch.long, device=dev)
        self.pos = torch.zeros((rows, 1), dtype=torch.long, device=dev)
        self.start = torch.zeros((1,), dtype=torch.long, device=dev)
        if self.use_graphs:  # every graph writes its logits here (one buffer, not one each)
            w = lean.head.weight
            self.logits_out = torch.empty((rows, w.shape[0]), dtype=w.dtype, device=dev)
        self.bias = torch.full((rows, 1, 1, length), float("-inf"),
                               dtype=self.cache.k[0].dtype, device=dev)

    def grow(self, length: int, used: int, n: int) -> None:
        """Room for `length` cache slots (slots 0..used-1 kept) for the first `n` rows, those
        still decoding (with graphs: as many as the smallest batch bucket that holds them);
        graphs captured for the old buffers are dropped and captured again as needed."""
        rows = next(b for b in self.buckets if b >= n) if self.use_graphs else n
        self.cache.grow(length, used, rows)
        bias = torch.full((rows, *self.bias.shape[1:3], length), float("-inf"),
                          dtype=self.bias.dtype, device=self.device)
        bias[..., :used] = self.bias[:rows, ..., :used]
        self.bias, self.length, self.graphs = bias, length, {}

    def worth_compacting(self, n: int, alive: int) -> bool:
        """Drop finished rows when that saves work: on CUDA when a smaller graph fits them,
        on CPU when an eighth of the rows are done (each drop copies the cache)."""
        if alive == n:
            return False
        if self.use_graphs:
            fit = self.buckets
            return next(b for b in fit if b >= alive) < next(b for b in fit if b >= n)
        return n - alive >= max(1, n // 8)

    def compact(self, keep: torch.Tensor, used: int) -> None:
        self.cache.keep(keep, used)
        n = keep.numel()
        for t in (self.pos, self.bias):
            t[:n] = t.index_select(0, keep)

    def step(self, tok: torch.Tensor, slot: int) -> torch.Tensor:
        """Feed tok [n] (written to cache slot `slot`); returns logits [n, V]."""
        n = tok.shape[0]
        self.ids[:n, 0] = tok
        if not self.use_graphs:
            self.bias[:n, 0, 0, slot] = 0.0
            h = self.lean.cached_forward(self.ids[:n], self.pos[:n], self.cache, slot,
                                         self.bias[:n, :, :, :slot + 1], slot + 1, self.fused)
            self.pos[:n] += 1
            return self.lean.logits(h)
        # a graph unmasks its slot and advances the slot and the positions itself, so a step
        # is two launches (the token's copy and the replay)
        if self.next_slot != slot:
            self.start.fill_(slot)
        b = next(x for x in self.buckets if x >= n)
        # attention reads the cache up to the next multiple of LENGTH_BUCKET slots: a graph
        # per (batch size, length) bucket, so early tokens do not read the empty tail
        attend = min(self.length, -(-(slot + 1) // LENGTH_BUCKET) * LENGTH_BUCKET)
        g = self.graphs.get((b, attend))
        if g is None:
            g = self.graphs[(b, attend)] = self._capture(b, attend)
        g[0].replay()
        self.next_slot = slot + 1
        return g[1][:n]

    def _capture(self, b: int, attend: int):
        lean = self.lean

        def run():
            self.bias[:b].index_fill_(3, self.start, 0.0)
            h = lean.cached_forward(self.ids[:b], self.pos[:b], self.cache, self.start,
                                    self.bias[:b, :, :, :attend], attend, self.fused)
            out = lean.logits(h, out=self.logits_out[:b])
            self.pos[:b] += 1
            self.start += 1
            return out

        # the warm-up run below advances the slot and positions: put them back after it
        saved = self.pos.clone(), self.start.clone()
        if self.simulate:
            out = run()
            self.pos.copy_(saved[0])
            self.start.copy_(saved[1])
            return _EagerGraph(run), out
        # warm up on a side stream (as capture requires); the slot it writes is the one the
        # replay writes next, with the same values. One side stream per device for the whole
        # process: each new stream would get (and keep) its own cuBLAS workspace.
        side = _side_stream(self.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run()
        torch.cuda.current_stream().wait_stream(side)
        self.pos.copy_(saved[0])
        self.start.copy_(saved[1])
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=side):
            out = run()
        return graph, out


_SIDE_STREAMS: dict[int, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(device=index)
    return _SIDE_STREAMS[index]


class _EagerGraph:
    """Stands in for a CUDA graph in simulation: replay reruns the step (which writes its
    logits into the decoder's output buffer)."""

    def __init__(self, run):
        self.run = run

    def replay(self) -> None:
        self.run()


@torch.no_grad()
def _generate_lean(dec: LeanDecoder, prompts, G, max_new_tokens, min_new_tokens, temperature,
                   top_p, stop_ids, pad_id, generator, device, seeds=None, with_logprobs=True,
                   handover: _Handover | None = None):
    try:
        return _decode(dec, prompts, G, max_new_tokens, min_new_tokens, temperature, top_p,
                       stop_ids, pad_id, generator, device, seeds, with_logprobs,
                       handover or _Handover(None, 0))
    finally:
        dec.release()


def _decode(dec: LeanDecoder, prompts, G, max_new_tokens, min_new_tokens, temperature, top_p,
            stop_ids, pad_id, generator, device, seeds, with_logprobs, handover: _Handover):
    lean = dec.lean
    B, P = len(prompts), max(len(p) for p in prompts)
    N = B * G
    ids = torch.full((B, P), pad_id, dtype=torch.long)
    valid = torch.zeros((B, P), dtype=torch.bool)
    for i, p in enumerate(prompts):  # left padding: every prompt ends at slot P-1
        ids[i, P - len(p):] = torch.tensor(p)
        valid[i, P - len(p):] = True
    ids, valid = ids.to(device), valid.to(device)
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    width = min(max_new_tokens, FIRST_WIDTH)  # history columns (and cache slots past P) so far
    dec.begin(N, P + width)
    cache, dtype = dec.cache, dec.cache.k[0].dtype
    # prefill each prompt once: causal attention over its own tokens (a padding slot sees
    # itself only, so no row is empty); its cache rows are then copied to the G samples.
    # Long prompts go in chunks (prefill_rows), each into its own rows of the cache.
    causal = torch.ones((P, P), dtype=torch.bool, device=device).tril()[None]
    itself = torch.eye(P, dtype=torch.bool, device=device)[None]
    rows = prefill_rows(B, P, lean.n_heads)
    hs = []
    for a in range(0, B, rows):
        allowed = causal & valid[a:a + rows, None, :] | itself
        bias = torch.zeros((allowed.shape[0], 1, P, P), dtype=dtype, device=device).masked_fill(
            ~allowed[:, None], float("-inf"))
        hs.append(lean.cached_forward(ids[a:a + rows], positions[a:a + rows],
                                      cache.rows(a, a + rows), 0, bias, P, dec.fused))
        del allowed, bias
    logits = lean.logits(torch.cat(hs) if len(hs) > 1 else hs[0]).repeat_interleave(G, 0)
    cache.repeat_prefix(B, G, P)
    dec.bias[:, 0, 0, :P] = torch.where(valid, 0.0, float("-inf")).to(dtype).repeat_interleave(G, 0)
    dec.pos[:] = positions[:, -1:].repeat_interleave(G, 0) + 1

    # Per step only the sampled token (and log-prob) is written, into the history of the cache's
    # rows; stops are found at the checks (where the engine waits for the device anyway) and
    # the histories go to the rows' places in the output when rows are dropped and at the end.
    hist = torch.full((N, width), pad_id, dtype=torch.long, device=device)
    hist_lp = (torch.zeros((N, width), dtype=torch.float32, device=device)
               if with_logprobs else None)
    tokens = torch.full_like(hist, pad_id)
    logps = torch.zeros_like(hist_lp) if hist_lp is not None else None
    never = max_new_tokens  # "no stop yet"
    first_stop = torch.full((N,), never, dtype=torch.long, device=device)  # per cache row
    stops_at = torch.full((N,), never, dtype=torch.long, device=device)  # per output row
    active = torch.arange(N, device=device)  # the output row of each cache row
    stop = torch.tensor(stop_ids, dtype=torch.long, device=device)
    uniforms = _GroupUniforms(seeds, G, device) if seeds is not None else None
    check_every = 1 if not dec.use_graphs else 8  # each check waits for the GPU
    n, seen = N, 0  # cache rows; history columns searched for stops

    def find_stops(upto: int) -> None:  # first stops in history columns seen..upto-1
        nonlocal seen
        if upto > seen and stop.numel():
            hit = torch.isin(hist[:n, seen:upto], stop)
            at = torch.where(hit.any(-1), hit.int().argmax(-1) + seen, never)
            torch.minimum(first_stop[:n], at, out=first_stop[:n])
        seen = upto

    def publish() -> None:  # the cache rows' histories (so far) and stops to their output rows
        tokens[active, :t + 1] = hist[:n, :t + 1]
        if logps is not None:
            logps[active, :t + 1] = hist_lp[:n, :t + 1]
        stops_at[active] = first_stop[:n]

    def lengths_now(t: int) -> torch.Tensor:  # output rows' lengths after column t
        return torch.where(stops_at < never, stops_at + 1, t + 1)

    def widen(new: int) -> None:  # room for `new` columns and cache slots P..P+new-1
        nonlocal width, hist, hist_lp, tokens, logps
        bufs = [hist, hist_lp, tokens, logps]
        for i, (buf, fill) in enumerate(zip(bufs, (pad_id, 0.0, pad_id, 0.0))):
            if buf is not None:
                bufs[i] = torch.cat([buf, buf.new_full((N, new - width), fill)], dim=1)
        hist, hist_lp, tokens, logps = bufs
        dec.grow(P + new, P + t, n)
        width = new

    t = -1  # the last column written
    for t in range(max_new_tokens):
        if t == width:  # (with graphs, stops are found every 8 tokens: look before growing)
            find_stops(t)
            if not bool((first_stop[:n] == never).any()):
                t -= 1  # every row has stopped: column t - 1 was the last one written
                break
            widen(min(max_new_tokens, 2 * width))
        banned = stop if t < min_new_tokens and stop.numel() else None
        u = uniforms.at(t, active) if uniforms is not None else None
        tok, lp = sample_tokens(logits, temperature, top_p, generator, u, banned, with_logprobs,
                                lean.compiled)
        hist[:n, t] = tok
        if hist_lp is not None:
            hist_lp[:n, t] = lp
        if t == max_new_tokens - 1:
            break
        if t % check_every == 0:
            find_stops(t + 1)
            alive = first_stop[:n] == never
            n_alive = int(alive.sum())
            if n_alive < n and handover.fn is not None:
                publish()
                handover(tokens, lengths_now(t), stops_at < never)
            if n_alive == 0:
                break
            if dec.worth_compacting(n, n_alive):
                publish()
                keep = alive.nonzero().squeeze(-1)
                for buf in (hist, hist_lp, first_stop):
                    if buf is not None:
                        buf[:n_alive] = buf[:n].index_select(0, keep)
                active, tok, n = active[keep], tok[keep], n_alive
                dec.compact(keep, P + t)
        logits = dec.step(tok, P + t)
    find_stops(t + 1)
    publish()
    lengths = lengths_now(t)
    stopped = stops_at < never
    handover.rest(tokens, lengths)
    T = int(lengths.max().item()) if N else 0
    mask = torch.arange(width, device=device)[None, :] < lengths[:, None]
    tokens = tokens.masked_fill(~mask, pad_id)
    return (tokens[:, :T].cpu(), mask[:, :T].long().cpu(),
            logps.masked_fill(~mask, 0.0)[:, :T].cpu() if logps is not None else None,
            stopped.cpu())
