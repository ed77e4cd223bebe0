"""Tests of r1kit.algos: hand-computed values, then equivalence with the loop references.

The hand values pin the formulas down on cases small enough to check with a pencil; the
random comparisons against tests/reference_loops.py cover the masking and aggregation
bookkeeping, which is where vectorised loss code usually goes wrong.
"""

from __future__ import annotations

import math

import pytest
import torch
from reference_loops import (
    AGGREGATION_NAMES,
    ref_group_advantages,
    ref_kl_k3,
    ref_policy_loss,
)

from r1kit.algos import AGGREGATIONS, group_advantages, kl_k3, policy_loss

TOL = 1e-5
SQRT3_OVER_2 = math.sqrt(3) / 2  # 0.8660254...


# ----- group_advantages ----------------------------------------------------------------------


def test_group_advantages_hand_values() -> None:
    # [1, 0, 1, 0]: mean 0.5, sample std sqrt(sum (±0.5)^2 / (4-1)) = sqrt(1/3),
    # so (±0.5) / sqrt(1/3) = ±sqrt(3)/2. A population std (correction 0) would give ±1 here,
    # so this also pins down the correction.
    adv = group_advantages(torch.tensor([[1.0, 0.0, 1.0, 0.0]]), eps=0)  # the paper's formula
    expected = torch.tensor([[SQRT3_OVER_2, -SQRT3_OVER_2, SQRT3_OVER_2, -SQRT3_OVER_2]])
    assert adv.shape == (1, 4)
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)


def test_group_advantages_one_right_of_four() -> None:
    # [1, 0, 0, 0]: mean 0.25, deviations (0.75, -0.25 x3), var = (0.5625 + 3*0.0625)/3 = 0.25,
    # std 0.5 → advantages (1.5, -0.5, -0.5, -0.5). Groups are independent of one another.
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]]), eps=0)
    torch.testing.assert_close(
        adv, torch.tensor([[1.5, -0.5, -0.5, -0.5], [-1.5, 0.5, 0.5, 0.5]]), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize(
    "rewards",
    [
        [[1.0, 1.0, 1.0, 1.0]],  # all right
        [[0.0, 0.0, 0.0, 0.0]],  # all wrong: std 0 must not become 0/0 = NaN
        [[2.0, 2.0]],  # the smallest group, G = 2
        [[0.3, 0.3, 0.3]],
    ],
)
def test_group_advantages_equal_group_is_exactly_zero(rewards: list[list[float]]) -> None:
    # A group where every sample scored the same carries no signal: exactly 0, never NaN.
    for scale in ("std", "batch", "none"):
        adv = group_advantages(torch.tensor(rewards), scale=scale)
        assert not torch.isnan(adv).any()
        assert torch.equal(adv, torch.zeros_like(adv))


def test_group_advantages_equal_group_next_to_varied_group() -> None:
    # The constant-group special case must be per row, not for the whole batch.
    adv = group_advantages(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0],
                                         [1.0, 1.0, 1.0, 1.0]]), eps=0)
    assert torch.equal(adv[0], torch.zeros(4))
    assert torch.equal(adv[2], torch.zeros(4))
    torch.testing.assert_close(
        adv[1], torch.tensor([SQRT3_OVER_2, -SQRT3_OVER_2, SQRT3_OVER_2, -SQRT3_OVER_2]),
        atol=1e-6, rtol=0,
    )


def test_group_advantages_scale_none() -> None:
    # Dr. GRPO: only centred, never divided by the std.
    adv = group_advantages(torch.tensor([[1.0, 0.0, 1.0, 0.0], [3.0, 0.0, 0.0, 1.0]]),
                           scale="none")
    torch.testing.assert_close(
        adv, torch.tensor([[0.5, -0.5, 0.5, -0.5], [2.0, -1.0, -1.0, 0.0]]), atol=1e-6, rtol=0
    )


def test_group_advantages_integer_rewards_give_float() -> None:
    # Rewards built from int tensors must not be floor-divided or rejected.
    adv = group_advantages(torch.tensor([[1, 0, 1, 0]]), eps=0)
    assert adv.is_floating_point()
    torch.testing.assert_close(adv[0, 0], torch.tensor(SQRT3_OVER_2), atol=1e-6, rtol=0)


def test_group_advantages_scale_batch() -> None:
    """TRL's scale_rewards = "batch": each group's mean, the whole batch's std."""
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [3.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    adv = group_advantages(rewards, scale="batch", eps=0)
    flat = [1.0, 0.0, 1.0, 0.0, 3.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]  # mean 14 / 12
    std = (sum((r - 14 / 12) ** 2 for r in flat) / 11) ** 0.5
    want = torch.tensor([[0.5, -0.5, 0.5, -0.5], [2.0, -1.0, -1.0, 0.0], [0.0] * 4]) / std
    torch.testing.assert_close(adv, want, atol=1e-6, rtol=1e-6)
    assert (adv[2] == 0).all()  # an equal group: exactly 0


def test_group_advantages_batch_rewards_is_the_whole_batch() -> None:
    """A part of the batch (one process's groups) scaled by the whole batch's rewards gets the
    whole batch's advantages for its rows; scaled by its own, other ones."""
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(6, 4, generator=g)
    whole = group_advantages(rewards, scale="batch")
    for rows in (slice(0, 2), slice(2, 6)):
        got = group_advantages(rewards[rows], scale="batch", batch_rewards=rewards)
        torch.testing.assert_close(got, whole[rows])
    assert not torch.allclose(group_advantages(rewards[:2], scale="batch"), whole[:2])
    with pytest.raises(ValueError, match="batch_rewards must be finite"):
        group_advantages(rewards, scale="batch",
                         batch_rewards=torch.tensor([1.0, float("nan")]))


@pytest.mark.parametrize("scale", ["std", "batch", "none"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_advantages_matches_reference(scale: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    continuous = torch.randn(5, 6, generator=g)
    # binary rewards, as rule rewards are, so some groups are all-equal
    binary = (torch.rand(5, 6, generator=g) < 0.5).float()
    binary[0] = 1.0
    binary[1] = 0.0
    for rewards in (continuous, binary):
        got = group_advantages(rewards, scale=scale)
        want = torch.tensor(ref_group_advantages(rewards.tolist(), scale=scale))
        torch.testing.assert_close(got, want, atol=TOL, rtol=TOL)


def test_group_advantages_invalid_scale_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        group_advantages(torch.tensor([[1.0, 0.0]]), scale="zscore")
    msg = str(info.value)
    assert "zscore" in msg and "std" in msg and "batch" in msg and "none" in msg


@pytest.mark.parametrize("shape", [(4,), (2, 1), (2, 3, 4)])
def test_group_advantages_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    # [B] would silently be treated as one group (or broadcast wrongly); G = 1 has no std.
    with pytest.raises(ValueError):
        group_advantages(torch.ones(shape))


# ----- kl_k3 ---------------------------------------------------------------------------------


def test_kl_k3_zero_where_equal() -> None:
    logp = torch.tensor([[-0.1, -2.0, -5.0, 0.0]])
    assert torch.equal(kl_k3(logp, logp.clone()), torch.zeros_like(logp))


def test_kl_k3_hand_value() -> None:
    # logp = 0, ref = log 0.5: d = -0.693147, exp(d) - d - 1 = 0.5 + 0.693147 - 1 = 0.193147
    got = kl_k3(torch.tensor([0.0]), torch.tensor([math.log(0.5)]))
    assert got.item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert got.item() == pytest.approx(0.193147, abs=1e-6)
    # The direction matters: d = ref - logp, not logp - ref. Swapping gives exp(ln2)-ln2-1.
    swapped = kl_k3(torch.tensor([math.log(0.5)]), torch.tensor([0.0]))
    assert swapped.item() == pytest.approx(2 - math.log(2) - 1, abs=1e-6)


def test_kl_k3_positive_and_matches_reference() -> None:
    g = torch.Generator().manual_seed(3)
    logp = -torch.rand(4, 7, generator=g, dtype=torch.float64) * 3
    ref = -torch.rand(4, 7, generator=g, dtype=torch.float64) * 3
    kl = kl_k3(logp, ref)
    assert (kl > 0).all()
    want = torch.tensor([[ref_kl_k3(a, b) for a, b in zip(ra, rb)]
                         for ra, rb in zip(logp.tolist(), ref.tolist())], dtype=torch.float64)
    torch.testing.assert_close(kl, want, atol=1e-12, rtol=1e-12)


# ----- policy_loss: hand examples ------------------------------------------------------------


def _one_token(logp: float, adv: float, **kw):
    return policy_loss(torch.tensor([[logp]]), torch.tensor([[0.0]]), torch.tensor([adv]),
                       torch.tensor([[1.0]]), **kw)


def test_policy_loss_positive_advantage_clips_high_ratio() -> None:
    # ratio = e, A = +1, eps 0.2: -min(e*1, 1.2*1) = -1.2, and clipping is what the min picks.
    loss, m = _one_token(1.0, 1.0, clip_eps_low=0.2)
    assert loss.item() == pytest.approx(-1.2, abs=1e-6)
    assert m["clip_frac"] == 1.0
    assert m["pg_loss"] == pytest.approx(-1.2, abs=1e-6)
    assert m["ratio_mean"] == pytest.approx(math.e, abs=1e-5)
    assert m["kl"] == 0.0


def test_policy_loss_negative_advantage_does_not_clip_high_ratio() -> None:
    # ratio = e, A = -1: -min(-e, -1.2) = e. The pessimistic min keeps the unclipped term,
    # so a bad action whose probability went up is still pushed down with full force.
    loss, m = _one_token(1.0, -1.0, clip_eps_low=0.2)
    assert loss.item() == pytest.approx(math.e, abs=1e-6)
    assert m["clip_frac"] == 0.0


def test_policy_loss_negative_advantage_clips_low_ratio() -> None:
    # ratio = e^-1 = 0.3679, A = -1: -min(-0.3679, -0.8) = 0.8 (clipped at 1 - eps_low)
    loss, m = _one_token(-1.0, -1.0, clip_eps_low=0.2)
    assert loss.item() == pytest.approx(0.8, abs=1e-6)
    assert m["clip_frac"] == 1.0
    # ... and a positive advantage at a low ratio is not clipped: -min(0.3679, 0.8) = -0.3679
    loss, m = _one_token(-1.0, 1.0, clip_eps_low=0.2)
    assert loss.item() == pytest.approx(-math.exp(-1), abs=1e-6)
    assert m["clip_frac"] == 0.0


def test_policy_loss_ratio_inside_the_trust_region_is_not_clipped() -> None:
    # ratio = e^0.1 = 1.105 < 1.2: clipped == unclipped, which is not "strictly smaller".
    loss, m = _one_token(0.1, 2.0, clip_eps_low=0.2)
    assert loss.item() == pytest.approx(-2 * math.exp(0.1), abs=1e-6)
    assert m["clip_frac"] == 0.0


def test_policy_loss_asymmetric_clip() -> None:
    # DAPO's clip-higher: eps_low 0.2, eps_high 0.28. The high side uses 1.28 ...
    loss, m = _one_token(1.0, 1.0, clip_eps_low=0.2, clip_eps_high=0.28)
    assert loss.item() == pytest.approx(-1.28, abs=1e-6)
    assert m["clip_frac"] == 1.0
    # ... the low side still uses 1 - 0.2 = 0.8 (not 1 - 0.28 = 0.72)
    loss, m = _one_token(-1.0, -1.0, clip_eps_low=0.2, clip_eps_high=0.28)
    assert loss.item() == pytest.approx(0.8, abs=1e-6)
    # ratio e^0.22 = 1.246: clipped by a symmetric 0.2, not by eps_high 0.28
    loss, m = _one_token(0.22, 1.0, clip_eps_low=0.2, clip_eps_high=0.28)
    assert loss.item() == pytest.approx(-math.exp(0.22), abs=1e-6)
    assert m["clip_frac"] == 0.0
    loss, m = _one_token(0.22, 1.0, clip_eps_low=0.2)
    assert loss.item() == pytest.approx(-1.2, abs=1e-6)
    assert m["clip_frac"] == 1.0


def test_policy_loss_hand_aggregations() -> None:
    # Two sequences, T = 4, lengths 1 and 3, ratio 1 everywhere (logp == old_logp), so the
    # per-token loss is -A_i: seq 0 → -2 on 1 token, seq 1 → +1 on 3 tokens.
    logp = torch.zeros(2, 4)
    mask = torch.tensor([[1.0, 0, 0, 0], [1.0, 1, 1, 0]])
    adv = torch.tensor([2.0, -1.0])
    expected = {
        # per sequence means (-2, 1), then mean over sequences
        "seq-mean-token-mean": (-2.0 + 1.0) / 2,
        # (-2 + 3*1) / 4 tokens
        "token-mean": (-2.0 + 3.0) / 4,
        # sums (-2, 3) divided by T = 4, then mean over sequences
        "seq-mean-token-sum-norm": (-2.0 / 4 + 3.0 / 4) / 2,
    }
    assert set(expected) == set(AGGREGATIONS)
    for aggregation, want in expected.items():
        loss, _ = policy_loss(logp, logp.clone(), adv, mask, aggregation=aggregation)
        assert loss.item() == pytest.approx(want, abs=1e-6), aggregation


def test_policy_loss_kl_hand_value() -> None:
    # One token, ratio 1, A = 0: the loss is beta * k3 alone. logp = 0, ref = log 0.5.
    loss, m = policy_loss(torch.tensor([[0.0]]), torch.tensor([[0.0]]), torch.tensor([0.0]),
                          torch.tensor([[1.0]]), beta=0.5, ref_logp=torch.tensor([[math.log(0.5)]]))
    assert loss.item() == pytest.approx(0.5 * 0.193147, abs=1e-6)
    assert m["kl"] == pytest.approx(0.193147, abs=1e-6)
    assert m["pg_loss"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("importance_sampling", ["token", "sequence"])
def test_policy_loss_kl_ratio_is_trls_bias_corrected_kl(importance_sampling) -> None:
    """kl_ratio: the k3 term times the ratio, as TRL 1.16's use_bias_correction_kl (its
    formula written out here): off-policy the loss is TRL's; on-policy its value is k3's and
    its gradient gains beta * k3 per token (the ratio's own gradient)."""
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(3, 5, generator=g) * 0.3 - 1
    old = logp + torch.randn(3, 5, generator=g) * 0.2
    ref = logp + torch.randn(3, 5, generator=g) * 0.5
    adv, mask = torch.randn(3, generator=g), torch.ones(3, 5)
    mask[1, 3:] = 0
    beta = 0.04
    kw = dict(beta=beta, ref_logp=ref, aggregation="token-mean",
              importance_sampling=importance_sampling)
    plain, m_plain = policy_loss(logp, old, adv, mask, **kw)
    fixed, m_fixed = policy_loss(logp, old, adv, mask, kl_ratio=True, **kw)
    # TRL 1.16: per_token_kl = k3 * coef_1 (coef_1: the token's ratio, or the sequence's)
    log_ratio = logp - old
    if importance_sampling == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1)).unsqueeze(-1)
    k3 = torch.exp(ref - logp) - (ref - logp) - 1
    trl_kl = (k3 * torch.exp(log_ratio) * mask).sum() / mask.sum()
    plain_kl = (k3 * mask).sum() / mask.sum()
    assert (fixed - plain).item() == pytest.approx(beta * (trl_kl - plain_kl).item(), abs=1e-7)
    assert abs((fixed - plain).item()) > 1e-4  # off-policy the two differ
    assert m_fixed["kl"] == pytest.approx(m_plain["kl"])  # the metric: k3 alone
    # on-policy: the same value, and the gradient gains beta * k3 / tokens per token
    x = logp.clone().requires_grad_(True)
    y = logp.clone().requires_grad_(True)
    a, _ = policy_loss(x, logp, adv, mask, **kw)
    b, _ = policy_loss(y, logp, adv, mask, kl_ratio=True, **kw)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    a.backward()
    b.backward()
    if importance_sampling == "token":
        torch.testing.assert_close(y.grad - x.grad, beta * k3 * mask / mask.sum())
    else:  # the sequence's ratio: each token gets its sequence's mean k3 share
        per_seq = (k3 * mask).sum(-1, keepdim=True) / mask.sum()
        torch.testing.assert_close(y.grad - x.grad, beta * per_seq * mask / mask.sum(-1, True))


def test_policy_loss_kl_metric_without_penalty() -> None:
    # beta = 0 with a reference: the KL is reported but does not enter the loss.
    logp = torch.tensor([[0.0, -1.0]])
    ref = torch.tensor([[math.log(0.5), -1.0]])
    adv = torch.tensor([1.0])
    mask = torch.ones(1, 2)
    loss0, m0 = policy_loss(logp, logp.clone(), adv, mask, beta=0.0, ref_logp=ref)
    loss_none, _ = policy_loss(logp, logp.clone(), adv, mask)
    assert loss0.item() == pytest.approx(loss_none.item(), abs=1e-7)
    assert m0["kl"] == pytest.approx(0.193147 / 2, abs=1e-6)


# ----- policy_loss: against the loop reference -----------------------------------------------


def _random_batch(seed: int, ragged: bool):
    """Random [B, T] inputs with a wide ratio spread and masks of varied lengths."""
    g = torch.Generator().manual_seed(seed)
    b = 3 + seed % 3  # 3..5
    t = 4 + seed % 4  # 4..7
    old = -torch.rand(b, t, generator=g) * 3
    # logp - old in [-1.2, 1.2): ratios from 0.30 to 3.3, so a clip of 0.1 binds often while
    # 1 + 10 = 11 is never reached
    logp = old + (torch.rand(b, t, generator=g) * 2.4 - 1.2)
    ref = -torch.rand(b, t, generator=g) * 3
    adv = torch.randn(b, generator=g)
    if ragged:
        # holes anywhere, at least one counted token per row
        mask = (torch.rand(b, t, generator=g) < 0.5).float()
        mask[torch.arange(b), torch.randint(0, t, (b,), generator=g)] = 1.0
    else:
        # right-padded responses of different lengths, one of them full width
        lengths = torch.randint(1, t + 1, (b,), generator=g)
        lengths[0] = t
        lengths[1] = 1
        mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    assert (mask.sum(-1) >= 1).all()
    assert len(set(mask.sum(-1).tolist())) > 1 or ragged  # rows really differ in length
    return logp, old, adv, mask, ref


CLIP_CASES = {
    "tight": dict(clip_eps_low=0.1, clip_eps_high=None),
    "asymmetric": dict(clip_eps_low=0.1, clip_eps_high=0.28),
    "never-binds": dict(clip_eps_low=10.0, clip_eps_high=None),
}


@pytest.mark.parametrize("aggregation", AGGREGATION_NAMES)
@pytest.mark.parametrize("clip", list(CLIP_CASES))
@pytest.mark.parametrize("with_kl", [False, True], ids=["no-kl", "kl"])
@pytest.mark.parametrize("seed,ragged", [(0, False), (1, True), (2, False), (5, True)])
def test_policy_loss_matches_reference(aggregation: str, clip: str, with_kl: bool, seed: int,
                                       ragged: bool) -> None:
    logp, old, adv, mask, ref = _random_batch(seed, ragged)
    beta = 0.04 if with_kl else 0.0
    ref_logp = ref if with_kl else None
    kw = dict(CLIP_CASES[clip], beta=beta, aggregation=aggregation)

    loss, m = policy_loss(logp, old, adv, mask, ref_logp=ref_logp, **kw)
    want, want_m = ref_policy_loss(
        logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(),
        ref_logp=ref_logp.tolist() if ref_logp is not None else None, **kw)

    assert loss.dim() == 0
    assert loss.item() == pytest.approx(want, abs=TOL, rel=TOL)
    assert m["clip_frac"] == pytest.approx(want_m["clip_frac"], abs=TOL)
    assert m["kl"] == pytest.approx(want_m["kl"], abs=TOL)
    # pg_loss is the loss without its KL term
    want_pg, _ = ref_policy_loss(logp.tolist(), old.tolist(), adv.tolist(), mask.tolist(),
                                 **dict(kw, beta=0.0))
    assert m["pg_loss"] == pytest.approx(want_pg, abs=TOL, rel=TOL)
    # the regimes really are what their names say, so the comparison covers both branches
    if clip == "never-binds":
        assert m["clip_frac"] == 0.0
    else:
        assert 0.0 < m["clip_frac"] < 1.0
    if with_kl:
        assert m["kl"] > 0.0
        assert loss.item() != pytest.approx(m["pg_loss"], abs=1e-6)
    else:
        assert m["kl"] == 0.0


@pytest.mark.parametrize("aggregation", AGGREGATION_NAMES)
def test_policy_loss_ignores_masked_out_values(aggregation: str) -> None:
    # Whatever (finite) numbers sit on padding must not change the loss or the metrics.
    logp, old, adv, mask, ref = _random_batch(4, ragged=True)
    pad = mask == 0
    assert pad.any()
    logp2, old2, ref2 = logp.clone(), old.clone(), ref.clone()
    logp2[pad] = -7.0
    old2[pad] = 0.5
    ref2[pad] = -0.01
    a = policy_loss(logp, old, adv, mask, beta=0.04, ref_logp=ref, aggregation=aggregation)
    b = policy_loss(logp2, old2, adv, mask, beta=0.04, ref_logp=ref2, aggregation=aggregation)
    assert a[0].item() == pytest.approx(b[0].item(), abs=1e-6)
    for key in ("clip_frac", "kl", "ratio_mean", "pg_loss"):
        assert a[1][key] == pytest.approx(b[1][key], abs=1e-6), key


def test_policy_loss_accepts_bool_mask() -> None:
    # The rollout mask may arrive as bool; the result must equal the float-mask result.
    logp, old, adv, mask, ref = _random_batch(2, ragged=False)
    a, ma = policy_loss(logp, old, adv, mask, beta=0.04, ref_logp=ref)
    b, mb = policy_loss(logp, old, adv, mask.bool(), beta=0.04, ref_logp=ref)
    assert a.item() == pytest.approx(b.item(), abs=1e-7)
    assert ma == pytest.approx(mb)


# ----- policy_loss: gradient ----------------------------------------------------------------


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_policy_loss_gradient_at_ratio_one(level) -> None:
    # On-policy (old_logp = logp.detach(), ratio 1) the clip is inactive and
    # d(-ratio*A)/dlogp = -A, so with seq-mean-token-mean d loss / d logp[i, t] = -A_i / n_i / B
    # on counted tokens and exactly 0 on padding. This is the DeepSeekMath GRPO gradient, and
    # GSPO's too: d exp(mean_t (logp - old)) / d logp[i, t] = 1 / n_i at ratio 1.
    logp0, _, adv, mask, _ = _random_batch(1, ragged=True)
    logp = logp0.clone().requires_grad_(True)
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, clip_eps_low=0.2,
                          aggregation="seq-mean-token-mean", importance_sampling=level)
    loss.backward()
    b = logp.shape[0]
    n = mask.sum(-1, keepdim=True)
    expected = -adv[:, None] / n / b * mask
    torch.testing.assert_close(logp.grad, expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(logp.grad[mask == 0], torch.zeros(int((mask == 0).sum())))
    assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-6)


# ----- policy_loss: sequence-level importance sampling (GSPO) ----------------------------------


def test_sequence_ratio_is_the_geometric_mean_of_the_token_ratios() -> None:
    # one sequence of 3 counted tokens (and one padding token whose value must not matter):
    # token log-ratios 0.3, -0.1, 0.4 → sequence ratio exp(0.2); A = 1, eps 0.5, no clipping
    logp = torch.tensor([[0.3, -0.1, 0.4, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, m = policy_loss(logp, torch.zeros(1, 4), torch.tensor([1.0]), mask, clip_eps_low=0.5,
                          importance_sampling="sequence")
    assert loss.item() == pytest.approx(-math.exp(0.2), abs=1e-6)
    assert m["ratio_mean"] == pytest.approx(math.exp(0.2), abs=1e-6)
    assert m["clip_frac"] == 0.0
    # token level: the mean of the three ratios, a different number
    loss_t, _ = policy_loss(logp, torch.zeros(1, 4), torch.tensor([1.0]), mask,
                            clip_eps_low=0.5)
    expected = -(math.exp(0.3) + math.exp(-0.1) + math.exp(0.4)) / 3
    assert loss_t.item() == pytest.approx(expected, abs=1e-6)


def test_sequence_ratio_is_clipped_as_a_whole() -> None:
    # log-ratios 0.5 and 0.1: mean 0.3, ratio 1.35 > 1.2 with A > 0 → the whole sequence is
    # clipped and gets no gradient, also at the token whose own ratio (1.105) is inside
    logp = torch.tensor([[0.5, 0.1]], requires_grad=True)
    loss, m = policy_loss(logp, torch.zeros(1, 2), torch.tensor([2.0]), torch.ones(1, 2),
                          clip_eps_low=0.2, importance_sampling="sequence")
    loss.backward()
    assert loss.item() == pytest.approx(-2 * 1.2, abs=1e-6)
    assert m["clip_frac"] == 1.0
    assert torch.equal(logp.grad, torch.zeros(1, 2))
    # per token, the second token is not clipped and keeps a gradient
    logp_t = torch.tensor([[0.5, 0.1]], requires_grad=True)
    policy_loss(logp_t, torch.zeros(1, 2), torch.tensor([2.0]), torch.ones(1, 2),
                clip_eps_low=0.2)[0].backward()
    assert logp_t.grad[0, 1].item() != 0.0


def test_unknown_importance_sampling_names_valid_ones() -> None:
    with pytest.raises(ValueError, match="token, sequence"):
        _one_token(0.0, 1.0, importance_sampling="seq")


# ----- policy_loss: errors and purity --------------------------------------------------------


def test_policy_loss_unknown_aggregation_names_valid_ones() -> None:
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError) as info:
        policy_loss(x, x, torch.zeros(1), torch.ones(1, 2), aggregation="seq-sum")
    msg = str(info.value)
    assert "seq-sum" in msg
    for name in AGGREGATION_NAMES:
        assert name in msg


def test_policy_loss_beta_without_reference_raises() -> None:
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(x, x, torch.zeros(1), torch.ones(1, 2), beta=0.04)


def test_policy_loss_does_not_mutate_inputs() -> None:
    logp, old, adv, mask, ref = _random_batch(3, ragged=True)
    logp.requires_grad_(True)
    inputs = {"logp": logp, "old": old, "adv": adv, "mask": mask, "ref": ref}
    before = {k: v.detach().clone() for k, v in inputs.items()}
    loss, _ = policy_loss(logp, old, adv, mask, beta=0.04, ref_logp=ref, clip_eps_low=0.1,
                          aggregation="token-mean")
    loss.backward()
    for k, v in inputs.items():
        assert torch.equal(v.detach(), before[k]), k
        assert v.dtype == before[k].dtype, k


# ----- inputs a direct API user may pass -------------------------------------------------------


def test_dr_grpo_normaliser_is_the_given_constant_not_the_padding() -> None:
    """seq-mean-token-sum-norm (Dr. GRPO) divides by a constant: with norm_length the loss of
    the same completions does not change with the batch's padded width (the GRPO stage passes
    the step's max_new_tokens); without it, the width T is the normaliser."""
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([1.0, -0.5])
    old = logp - 0.1
    losses = []
    for pad in (0, 2, 7):
        wide = torch.nn.functional.pad
        args = (wide(logp, (0, pad)), wide(old, (0, pad)), adv, wide(mask, (0, pad)))
        fixed, _ = policy_loss(*args, aggregation="seq-mean-token-sum-norm", norm_length=16)
        plain, _ = policy_loss(*args, aggregation="seq-mean-token-sum-norm")
        losses.append((fixed.item(), plain.item(), 3 + pad))
    ratio = math.exp(0.1)
    sums = (-ratio * 3 * 1.0, -ratio * 2 * -0.5)  # per sequence: -ratio * A per token
    for fixed, plain, width in losses:
        assert fixed == pytest.approx((sums[0] / 16 + sums[1] / 16) / 2, rel=1e-6)
        assert plain == pytest.approx((sums[0] / width + sums[1] / width) / 2, rel=1e-6)


def test_policy_loss_computes_in_float32_and_treats_old_and_ref_as_constants() -> None:
    """bf16 log-probs: the k3 KL of a small difference is not rounded to 0; an old_logp that
    is the same tensor as logp (not detached) still gives the policy gradient."""
    g = torch.Generator().manual_seed(0)
    logp32 = -torch.rand(4, 6, generator=g) * 3
    ref32 = logp32 + 0.05 * torch.randn(4, 6, generator=g)
    mask = torch.ones(4, 6)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    _, m16 = policy_loss(logp32.bfloat16(), logp32.bfloat16(), adv, mask, beta=0.1,
                         ref_logp=ref32.bfloat16())
    _, m32 = policy_loss(logp32, logp32, adv, mask, beta=0.1, ref_logp=ref32)
    assert m16["kl"] > 0 and m16["kl"] == pytest.approx(m32["kl"], rel=0.2)
    logp = logp32.clone().requires_grad_()
    loss, _ = policy_loss(logp, logp, adv, mask)  # old_logp not detached by the caller
    loss.backward()
    assert logp.grad.abs().sum() > 0


def test_policy_loss_ignores_nan_and_minus_inf_on_padding() -> None:
    logp = torch.tensor([[-1.0, float("-inf")], [-0.5, float("nan")]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    ref = torch.tensor([[-1.1, float("nan")], [-0.4, float("-inf")]])
    for aggregation in AGGREGATIONS:
        for sampling in ("token", "sequence"):
            loss, m = policy_loss(logp, logp, torch.tensor([1.0, -1.0]), mask, beta=0.1,
                                  ref_logp=ref, aggregation=aggregation,
                                  importance_sampling=sampling)
            assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in m.values())


def test_policy_loss_names_a_wrong_advantage_shape() -> None:
    logp = torch.zeros(3, 4)
    for adv in (torch.zeros(3, 1), torch.zeros(1), torch.zeros(4)):
        with pytest.raises(ValueError, match="advantages \\[B\\]"):
            policy_loss(logp, logp, adv, torch.ones(3, 4))


def test_group_advantages_refuse_non_finite_and_damp_rounding_noise() -> None:
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            group_advantages(torch.tensor([[1.0, bad, 0.0]]))
    # scores equal but for float32 rounding (a reward model's): no full-size signal
    noise = group_advantages(torch.tensor([[1.0, 1.0, 1.0, 1.0000001]]))
    assert noise.abs().max() < 0.2  # (the paper's formula, eps = 0, gives 1.5 here)
    assert group_advantages(torch.tensor([[1.0, 1.0, 1.0, 1.0000001]]), eps=0).max() > 1
    real = group_advantages(torch.tensor([[0.0, 0.001, 0.0, 0.001]]))  # a real spread stays
    torch.testing.assert_close(real, group_advantages(torch.tensor([[0.0, 1.0, 0.0, 1.0]])),
                               atol=1e-2, rtol=0)


def test_kl_k3_is_never_negative_from_rounding() -> None:
    logp = -torch.rand(100_000, generator=torch.Generator().manual_seed(1)) * 5
    d = torch.randn(100_000, generator=torch.Generator().manual_seed(2)) * 1e-3
    assert (kl_k3(logp, logp + d) >= 0).all()
