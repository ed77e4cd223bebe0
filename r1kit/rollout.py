"""The built-in rollout engine: batched sampling with a KV cache.

- Each prompt is prefilled once; its KV cache is then repeated for the G samples of its group.
- A sequence that emits a stop token leaves the batch at once (its rows are dropped from the
  KV cache), so finished sequences stop costing compute.
- For every sampled token the engine returns the log-probability under the distribution it
  was sampled from, softmax(logits / temperature) before any top-p truncation: the same
  quantity the training pass computes, so it can serve as the behaviour policy's log-prob.
- With `seeds` (one per prompt) each group draws its random numbers from its own generator,
  so a group's samples do not depend on which other prompts share the batch: the same
  completions whether a step's prompts are sampled in one process or split across several.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch


@dataclass
class Rollouts:
    """G completions for each of B prompts, in prompt-major order (row i*G + j)."""

    prompt_ids: list[list[int]]  # [B] token ids of each prompt
    completion_ids: torch.Tensor  # [B*G, T] right-padded with pad_id
    completion_mask: torch.Tensor  # [B*G, T] 1 = a generated token (stop token included)
    logprobs: torch.Tensor  # [B*G, T] sampling log-probs, 0 where mask is 0
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


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                  generator: torch.Generator | None,
                  uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row. logits [N, V] → (tokens [N], log-probs [N]).

    The log-prob is that of softmax(logits / temperature); top-p only restricts the choice.
    temperature 0 means greedy decoding. `uniforms` [N] in [0, 1): sample each row by
    inverting its cumulative distribution at that number instead of drawing from `generator`.
    """
    logits = logits.float()
    if temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, torch.zeros_like(tokens, dtype=torch.float32)
    logp = torch.log_softmax(logits / temperature, dim=-1)  # [N, V]
    probs = logp.exp()
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
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the first index whose cumulative weight exceeds u * total (zero weights are
    never chosen)."""
    cdf = weights.cumsum(-1)
    target = (u.to(cdf.dtype) * cdf[:, -1])[:, None]
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=weights.shape[-1] - 1)


class _GroupUniforms:
    """The random numbers of per-prompt seeded sampling: prompt i's generator gives its G rows
    `block` numbers at a time, however the rows are batched or how many have finished."""

    def __init__(self, seeds: list[int], G: int, device, block: int = 256):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.G, self.device, self.block = G, device, block
        self.buf = None

    def at(self, t: int, rows: torch.Tensor) -> torch.Tensor:
        if t % self.block == 0:
            self.buf = torch.cat([torch.rand(self.G, self.block, generator=g)
                                  for g in self.gens]).to(self.device)
        return self.buf[rows, t % self.block]


@torch.no_grad()
def generate(model, prompts: list[list[int]], *, group_size: int, max_new_tokens: int,
             temperature: float, top_p: float = 1.0, stop_ids: list[int], pad_id: int,
             generator: torch.Generator | None = None, max_rows: int = 1024,
             seeds: list[int] | None = None) -> Rollouts:
    """Sample `group_size` completions for each prompt (token ids, no padding).

    `seeds`: one per prompt; each group samples from its own seeded random numbers
    (`generator` is then unused)."""
    device = next(model.parameters()).device
    per_chunk = max(1, max_rows // group_size)
    parts = [
        _generate_chunk(model, prompts[i:i + per_chunk], group_size, max_new_tokens,
                        temperature, top_p, stop_ids, pad_id, generator, device,
                        None if seeds is None else seeds[i:i + per_chunk])
        for i in range(0, len(prompts), per_chunk)
    ]
    width = max(p[0].shape[1] for p in parts)

    def cat(idx, fill):
        return torch.cat([torch.nn.functional.pad(p[idx], (0, width - p[idx].shape[1]), value=fill)
                          for p in parts])

    return Rollouts(
        prompt_ids=[list(p) for p in prompts],
        completion_ids=cat(0, pad_id),
        completion_mask=cat(1, 0),
        logprobs=cat(2, 0.0),
        stopped=torch.cat([p[3] for p in parts]),
        group_size=group_size,
    )


def _generate_chunk(model, prompts, G, max_new_tokens, temperature, top_p, stop_ids, pad_id,
                    generator, device, seeds=None):
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
    logps = torch.zeros((N, max_new_tokens), dtype=torch.float32, device=device)
    lengths = torch.zeros(N, dtype=torch.long, device=device)
    stopped = torch.zeros(N, dtype=torch.bool, device=device)
    active = torch.arange(N, device=device)  # rows still generating, in cache order
    stop = torch.tensor(stop_ids, device=device)
    uniforms = _GroupUniforms(seeds, G, device) if seeds is not None else None
    for t in range(max_new_tokens):
        u = uniforms.at(t, active) if uniforms is not None else None
        tok, lp = sample_tokens(logits, temperature, top_p, generator, u)
        tokens[active, t] = tok
        logps[active, t] = lp
        lengths[active] += 1
        done = torch.isin(tok, stop)
        stopped[active[done]] = True
        if t == max_new_tokens - 1:
            break
        if done.any():
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
    T = int(lengths.max().item()) if N else 0
    mask = torch.arange(max_new_tokens, device=device)[None, :] < lengths[:, None]
    return tokens[:, :T].cpu(), mask[:, :T].long().cpu(), logps[:, :T].cpu(), stopped.cpu()
