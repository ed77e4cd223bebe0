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

ADVANTAGE_SCALES = ("std", "batch", "none")
IMPORTANCE_SAMPLING = ("token", "sequence")


def group_advantages(rewards: torch.Tensor, scale: str = "std", eps: float = 1e-6,
                     batch_rewards: torch.Tensor | None = None) -> torch.Tensor:
    """Group-relative advantages (R1-SPEC eq. 3).

    rewards: [B, G], G samples of each of B questions → advantages [B, G] in float32.
    scale="std": (r - mean) / (std + eps) with the sample std (torch.std, correction 1); `eps`
    (verl's 1e-6) keeps float rounding in nearly equal scores (a reward model's) from becoming
    a full-size signal, and changes real spreads by a millionth of their size.
    scale="batch": (r - mean of the group) / (std of the whole batch + eps), the sample std of
    every reward of the step (TRL's scale_rewards = "batch", PPO-Lite's): a question whose
    samples differ a little gets a small signal, not a full-size one. `batch_rewards` (any
    shape) is the whole batch when `rewards` is only part of it (one process's groups under
    torchrun); by default it is `rewards`.
    scale="none": r - mean (Dr. GRPO).
    A group whose rewards are all equal gets exactly 0 (never NaN). NaN or infinite rewards
    are an error (they would make their group's advantages NaN).
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [B, G] with G >= 2, got shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards must be finite: NaN or infinity among them")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred
    if scale == "std":
        std = rewards.std(dim=1, keepdim=True)  # [B, 1]
    elif scale == "batch":
        whole = rewards if batch_rewards is None else batch_rewards.float()
        if not bool(torch.isfinite(whole).all()):
            raise ValueError("batch_rewards must be finite: NaN or infinity among them")
        std = whole.reshape(-1).std().reshape(1, 1)  # [1, 1] (a group varies: the batch does)
    else:
        raise ValueError(f"unknown advantage scale {scale!r}; valid: {', '.join(ADVANTAGE_SCALES)}")
    constant = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)
    return torch.where(constant, torch.zeros_like(centred),
                       centred / torch.where(constant, 1.0, std + eps))


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(π‖π_ref) per token (R1-SPEC eq. 2): exp(d) - d - 1, d = ref - logp,
    computed as expm1(d) - d: non-negative (no rounding below 0 where d is small), and zero
    exactly where the two log-probs agree.
    """
    d = ref_logp - logp
    return torch.expm1(d) - d


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x where mask is set, 0 elsewhere: a NaN or -inf on padding stays out of the sums."""
    return torch.where(mask > 0, x * mask, torch.zeros((), dtype=x.dtype, device=x.device))


def _seq_mean_token_mean(x: torch.Tensor, mask: torch.Tensor, norm_length=None) -> torch.Tensor:
    per_seq = _masked(x, mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.mean()


def _token_mean(x: torch.Tensor, mask: torch.Tensor, norm_length=None) -> torch.Tensor:
    return _masked(x, mask).sum() / mask.sum().clamp(min=1)


def _seq_mean_token_sum_norm(x: torch.Tensor, mask: torch.Tensor,
                             norm_length: int | None = None) -> torch.Tensor:
    return (_masked(x, mask).sum(-1) / (norm_length or x.shape[-1])).mean()


AGGREGATIONS = {
    "seq-mean-token-mean": _seq_mean_token_mean,  # DeepSeekMath / GRPO: 1/|o_i| per sequence
    "token-mean": _token_mean,  # DAPO: every token of the batch weighs the same
    # Dr. GRPO: a constant normaliser (norm_length: the generation budget; else the width T)
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
}


def aggregate(x: torch.Tensor, mask: torch.Tensor, aggregation: str,
              norm_length: int | None = None) -> torch.Tensor:
    """Reduce per-token values x [B, T] to a scalar by one of `AGGREGATIONS`. `norm_length`:
    seq-mean-token-sum-norm's constant (Dr. GRPO: the generation budget, the same for every
    batch); None divides by T, the width of x (which varies with each batch's padding)."""
    try:
        fn = AGGREGATIONS[aggregation]
    except KeyError:
        raise ValueError(
            f"unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}"
        ) from None
    return fn(x, mask.to(x.dtype), norm_length)


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
    norm_length: int | None = None,
    kl_ratio: bool = False,
    metrics_as_tensors: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO objective, negated for minimisation.

    logp, old_logp, ref_logp, mask: [B, T]; advantages: [B].
    Per token: -min(ρA, clip(ρ, 1-ε_low, 1+ε_high)A) + β·k3(logp, ref_logp), ρ = exp(logp - old_logp),
    then aggregated over tokens and sequences by `aggregation` (`norm_length`: see `aggregate`).
    Computed in float32 whatever the inputs' dtype (bf16 rounds a small KL to 0); old_logp and
    ref_logp are constants (detached here); padded positions (mask 0) may hold anything.
    `importance_sampling="sequence"` (GSPO): one ratio per sequence, the geometric mean of its
    tokens' ratios, ρ_i = exp(mean over its tokens of logp - old_logp), clipped as a whole and
    put on each of its tokens (the KL term stays per token). With "seq-mean-token-mean" this
    is GSPO's objective, the mean over sequences of min(ρ_i A_i, clip(ρ_i) A_i).
    `kl_ratio`: the k3 term times the (unclipped) ratio ρ, token's or sequence's, as TRL 1.16
    does by default (use_bias_correction_kl, from DeepSeek-V3.2): its gradient is then the
    unbiased gradient of KL(π‖π_ref) for samples drawn from the old policy; on-policy (ρ = 1)
    the loss's value is unchanged and its gradient gains β·k3 per token. The paper's (the
    default): k3 alone.
    Metrics: clip_frac (share of tokens where the clipped term is the smaller one), kl (mean k3
    over tokens, 0 without a reference; k3 alone, with kl_ratio too), ratio_mean, pg_loss:
    floats, or with
    `metrics_as_tensors` 0-dim tensors on logp's device (reading a float waits for the device).
    """
    if clip_eps_high is None:
        clip_eps_high = clip_eps_low
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    if logp.dim() != 2 or advantages.shape != logp.shape[:1]:
        raise ValueError(f"logp must be [B, T] and advantages [B]: got logp "
                         f"{tuple(logp.shape)}, advantages {tuple(advantages.shape)}")
    logp = logp.float()
    old_logp = old_logp.detach().float()
    ref_logp = ref_logp.detach().float() if ref_logp is not None else None
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]  # [B, 1], the sequence advantage on every token
    if importance_sampling == "token":
        ratio = torch.exp(logp - old_logp)  # [B, T]
    elif importance_sampling == "sequence":  # [B, 1]
        log_ratio = _masked(logp - old_logp, mask).sum(-1, keepdim=True)
        ratio = torch.exp(log_ratio / mask.sum(-1, keepdim=True).clamp(min=1))
    else:
        raise ValueError(f"unknown importance_sampling {importance_sampling!r}; valid: "
                         f"{', '.join(IMPORTANCE_SAMPLING)}")
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps_low, 1 + clip_eps_high) * adv
    per_token = -torch.minimum(unclipped, clipped).expand_as(mask)  # [B, T]
    pg_loss = aggregate(per_token, mask, aggregation, norm_length)
    loss = pg_loss
    with torch.no_grad():
        n_tokens = mask.sum().clamp(min=1)
        metrics = {
            "clip_frac": ((clipped < unclipped).to(mask.dtype) * mask).sum() / n_tokens,
            "ratio_mean": _masked(ratio.expand_as(mask), mask).sum() / n_tokens,
            "pg_loss": pg_loss.detach(),
            "kl": torch.zeros((), device=logp.device),
        }
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp)  # [B, T]
        if beta > 0:
            term = kl * ratio if kl_ratio else kl  # (the metric below stays k3 alone)
            loss = loss + beta * aggregate(term, mask, aggregation, norm_length)
        metrics["kl"] = _masked(kl.detach(), mask).sum() / mask.sum().clamp(min=1)
    if not metrics_as_tensors:
        metrics = {k: v.item() for k, v in metrics.items()}
    return loss, metrics
