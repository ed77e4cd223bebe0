"""Slow, obviously-correct reference implementations of the GRPO maths in r1kit.algos.

Everything here works on plain Python lists of floats with explicit nested loops and
`math.exp`, no vectorisation and no torch, so that each line can be checked by eye against
the formulas (R1-SPEC §1, DeepSeekMath's per-token GRPO). The tests compare the vectorised
torch code with these loops on random inputs: a disagreement means one of the two is wrong,
and these are written to be the one that is easy to trust.

Inputs are nested lists: rewards [B][G], logp/old_logp/ref_logp/mask [B][T], advantages [B].
"""

from __future__ import annotations

import math

AGGREGATION_NAMES = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")


def ref_group_advantages(rewards: list[list[float]], scale: str = "std") -> list[list[float]]:
    """Per group: r - mean, divided by the sample std (correction 1) when scale == "std",
    by the sample std of every reward of the batch when scale == "batch".

    A group whose rewards are all equal gets exactly 0 (it carries no learning signal, and
    dividing by its zero std would give NaN).
    """
    out: list[list[float]] = []
    flat = [r for group in rewards for r in group]
    batch_mean = 0.0
    for r in flat:
        batch_mean += r
    batch_mean /= len(flat)
    batch_var = 0.0
    for r in flat:
        batch_var += (r - batch_mean) ** 2
    batch_std = math.sqrt(batch_var / (len(flat) - 1))
    for group in rewards:
        g = len(group)
        mean = 0.0
        for r in group:
            mean += r
        mean /= g
        if scale == "none":
            out.append([r - mean for r in group])
            continue
        all_equal = True
        for r in group:
            if r != group[0]:
                all_equal = False
        if all_equal:
            out.append([0.0 for _ in group])
            continue
        var = 0.0
        for r in group:
            var += (r - mean) ** 2
        var /= g - 1  # sample variance: Bessel's correction, like torch.std's default
        std = batch_std if scale == "batch" else math.sqrt(var)
        out.append([(r - mean) / std for r in group])
    return out


def ref_kl_k3(logp: float, ref_logp: float) -> float:
    """k3 estimator of KL(pi || pi_ref) for one token: exp(d) - d - 1 with d = ref - logp."""
    d = ref_logp - logp
    return math.exp(d) - d - 1.0


def _aggregate(values: list[list[float]], mask: list[list[float]], aggregation: str) -> float:
    """Reduce per-token values [B][T] to one number, counting only tokens with mask 1."""
    b = len(values)
    t = len(values[0])  # the tensor's last dimension, the Dr. GRPO constant normaliser
    if aggregation == "seq-mean-token-mean":
        total = 0.0
        for i in range(b):
            s, n = 0.0, 0.0
            for j in range(t):
                if mask[i][j]:
                    s += values[i][j]
                    n += 1.0
            total += s / n
        return total / b
    if aggregation == "token-mean":
        s, n = 0.0, 0.0
        for i in range(b):
            for j in range(t):
                if mask[i][j]:
                    s += values[i][j]
                    n += 1.0
        return s / n
    if aggregation == "seq-mean-token-sum-norm":
        total = 0.0
        for i in range(b):
            s = 0.0
            for j in range(t):
                if mask[i][j]:
                    s += values[i][j]
            total += s / t
        return total / b
    raise ValueError(f"unknown aggregation {aggregation!r}")


def ref_policy_loss(
    logp: list[list[float]],
    old_logp: list[list[float]],
    advantages: list[float],
    mask: list[list[float]],
    *,
    clip_eps_low: float = 0.2,
    clip_eps_high: float | None = None,
    beta: float = 0.0,
    ref_logp: list[list[float]] | None = None,
    aggregation: str = "seq-mean-token-mean",
) -> tuple[float, dict[str, float]]:
    """The GRPO loss, token by token.

    Per token: -min(ratio*A, clip(ratio, 1-eps_low, 1+eps_high)*A) + beta*k3, with
    ratio = exp(logp - old_logp), then aggregated. Adding beta*k3 per token before the
    aggregation equals r1kit's "aggregate the KL with the same aggregation and add", since
    every aggregation is linear in the per-token values.

    Returns (loss, {"clip_frac", "kl"}): clip_frac is the share of masked tokens where the
    clipped term is strictly smaller than the unclipped one (clipping is what the min picks),
    kl the mean k3 over masked tokens (0 without a reference).
    """
    if clip_eps_high is None:
        clip_eps_high = clip_eps_low
    b = len(logp)
    t = len(logp[0])
    per_token = [[0.0] * t for _ in range(b)]
    n_masked = 0.0
    n_clipped = 0.0
    kl_sum = 0.0
    for i in range(b):
        a = advantages[i]
        for j in range(t):
            ratio = math.exp(logp[i][j] - old_logp[i][j])
            clipped_ratio = min(max(ratio, 1.0 - clip_eps_low), 1.0 + clip_eps_high)
            unclipped_term = ratio * a
            clipped_term = clipped_ratio * a
            value = -min(unclipped_term, clipped_term)
            kl = ref_kl_k3(logp[i][j], ref_logp[i][j]) if ref_logp is not None else 0.0
            value += beta * kl
            per_token[i][j] = value
            if mask[i][j]:
                n_masked += 1.0
                kl_sum += kl
                if clipped_term < unclipped_term:
                    n_clipped += 1.0
    loss = _aggregate(per_token, mask, aggregation)
    return loss, {"clip_frac": n_clipped / n_masked, "kl": kl_sum / n_masked}
