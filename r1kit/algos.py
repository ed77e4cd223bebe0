"""GRPO as pure tensor functions (R1-SPEC.md §1). Public API: `group_advantages`, `kl_k3`,
`policy_loss`. Tensors in, tensors (and a metrics dict) out; no config objects, no mutation.

Conventions: `mask` is 1 where a token counts (a generated token, the stop token included)
and 0 on padding. Shapes are written `[B, T]`: B sequences, T token positions.

The paper writes the ratio and the KL per output; the per-token form (per-token ratio, per-token
k3 KL, the sequence advantage copied to every token) is DeepSeekMath's. How token losses are
averaged is left open by the paper; the three verl names are offered, and the default is
DeepSeekMath's "seq-mean-token-mean".
"""

from __future__ import annotations

import torch

ADVANTAGE_SCALES = ("std", "none")
IMPORTANCE_SAMPLING = ("token", "sequence")


def group_advantages(rewards: torch.Tensor, scale: str = "std") -> torch.Tensor:
    """Group-relative advantages (R1-SPEC eq. 3).

    rewards: [B, G], G samples of each of B questions → advantages [B, G].
    scale="std": (r - mean) / std with the sample std (torch.std, correction 1).
    scale="none": r - mean (Dr. GRPO).
    A group whose rewards are all equal gets exactly 0 (never NaN).
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [B, G] with G >= 2, got shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred
    if scale != "std":
        raise ValueError(f"unknown advantage scale {scale!r}; valid: {', '.join(ADVANTAGE_SCALES)}")
    std = rewards.std(dim=1, keepdim=True)  # [B, 1]
    constant = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    return torch.where(constant, torch.zeros_like(centred), centred / torch.where(constant, 1.0, std))


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(π‖π_ref) per token (R1-SPEC eq. 2): exp(d) - d - 1, d = ref - logp.

    Non-negative, and zero exactly where the two log-probs agree.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def _seq_mean_token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_seq = (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.mean()


def _token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _seq_mean_token_sum_norm(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((x * mask).sum(-1) / x.shape[-1]).mean()


AGGREGATIONS = {
    "seq-mean-token-mean": _seq_mean_token_mean,  # DeepSeekMath / GRPO: 1/|o_i| per sequence
    "token-mean": _token_mean,  # DAPO: every token of the batch weighs the same
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,  # Dr. GRPO: a constant normaliser T
}


def aggregate(x: torch.Tensor, mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    """Reduce per-token values x [B, T] to a scalar by one of `AGGREGATIONS`."""
    try:
        fn = AGGREGATIONS[aggregation]
    except KeyError:
        raise ValueError(
            f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}"
        ) from None
    return fn(x, mask.to(x.dtype))


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps_low: float = 0.2,
    clip_eps_high: float | None = None,
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    aggregation: str = "seq-mean-token-mean",
    importance_sampling: str = "token",
    metrics_as_tensors: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO objective, negated for minimisation.

    logp, old_logp, ref_logp, mask: [B, T]; advantages: [B].
    Per token: -min(ρA, clip(ρ, 1-ε_low, 1+ε_high)A) + β·k3(logp, ref_logp), ρ = exp(logp - old_logp),
    then aggregated over tokens and sequences by `aggregation`.
    `importance_sampling="sequence"` (GSPO): one ratio per sequence, the geometric mean of its
    tokens' ratios, ρ_i = exp(mean over its tokens of logp - old_logp), clipped as a whole and
    put on each of its tokens (the KL term stays per token). With "seq-mean-token-mean" this
    is GSPO's objective, the mean over sequences of min(ρ_i A_i, clip(ρ_i) A_i).
    Metrics: clip_frac (share of tokens where the clipped term is the smaller one), kl (mean k3
    over tokens, 0 without a reference), ratio_mean, pg_loss: floats, or with
    `metrics_as_tensors` 0-dim tensors on logp's device (reading a float waits for the device).
    """
    if clip_eps_high is None:
        clip_eps_high = clip_eps_low
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]  # [B, 1], the sequence advantage on every token
    if importance_sampling == "token":
        ratio = torch.exp(logp - old_logp)  # [B, T]
    elif importance_sampling == "sequence":  # [B, 1]
        log_ratio = ((logp - old_logp) * mask).sum(-1, keepdim=True)
        ratio = torch.exp(log_ratio / mask.sum(-1, keepdim=True).clamp(min=1))
    else:
        raise ValueError(f"unknown importance_sampling {importance_sampling!r}; valid: "
                         f"{', '.join(IMPORTANCE_SAMPLING)}")
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps_low, 1 + clip_eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped).expand_as(mask)  # [B, T]
    pg_loss = aggregate(per_token, mask, aggregation)
    loss = pg_loss
    with torch.no_grad():
        n_tokens = mask.sum().clamp(min=1)
        metrics = {
            "clip_frac": ((clipped < unclipped).to(mask.dtype) * mask).sum() / n_tokens,
            "ratio_mean": (ratio * mask).sum() / n_tokens,
            "pg_loss": pg_loss.detach(),
            "kl": torch.zeros((), device=logp.device),
        }
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp)  # [B, T]
        if beta > 0:
            loss = loss + beta * aggregate(kl, mask, aggregation)
        metrics["kl"] = (kl.detach() * mask).sum() / mask.sum().clamp(min=1)
    if not metrics_as_tensors:
        metrics = {k: v.item() for k, v in metrics.items()}
    return loss, metrics
