"""DAPO's overlong filtering, soft overlong punishment and dynamic sampling, GSPO's
sequence-level ratio: each option changes what it should and nothing else."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import MICRO_BASE, REPO, rows_without_timings, tiny_llama

from r1kit.cli import main
from r1kit.config import GRPOConfig
from r1kit.lean import LeanLM
from r1kit.rewards.length import overlong_penalty
from r1kit.rollout import Rollouts
from r1kit.stages.grpo import (
    _choose_groups,
    _take_groups,
    _varied,
    make_batch,
    update_policy,
)

EOS, PAD = 1, 0


def test_overlong_penalty_hand_values():
    # cap 100, buffer 20: nothing up to 80 tokens, then linear down to -1 at the cap
    lengths = torch.tensor([10, 80, 81, 90, 99, 100])
    expected = torch.tensor([0.0, 0.0, -0.05, -0.5, -0.95, -1.0])
    torch.testing.assert_close(overlong_penalty(lengths, 100, 20), expected)
    assert torch.equal(overlong_penalty(lengths, 100, 0), torch.zeros(6))


def _rollouts(stopped: list[bool]) -> Rollouts:
    n, width = len(stopped), 5
    lengths = torch.tensor([3 if s else width for s in stopped])
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    tokens = torch.arange(n * width).view(n, width) % 37 + 2  # a different completion per row
    ids = torch.where(mask.bool(), tokens, PAD)
    return Rollouts([[4, 5, 6], [7, 8]], ids, mask, None, torch.tensor(stopped), group_size=2)


def test_mask_truncated_zeroes_exactly_the_rows_cut_at_the_cap():
    ro = _rollouts([True, False, False, True])
    plain = make_batch(ro, torch.zeros(4))
    masked = make_batch(ro, torch.zeros(4), mask_truncated=True)
    assert torch.equal(plain.mask, ro.completion_mask.float())
    assert torch.equal(masked.mask[[0, 3]], plain.mask[[0, 3]])
    assert masked.mask[[1, 2]].sum() == 0 and plain.mask[[1, 2]].sum() == 10
    assert masked.completions == plain.completions  # the rows stay (advantages, metrics)


def _llama():
    return tiny_llama(seed=1, max_positions=64, eos=EOS, pad=PAD)


@pytest.mark.parametrize("aggregation", ["seq-mean-token-mean", "token-mean"])
def test_truncated_completions_masked_out_move_no_weight(aggregation):
    """An update from only truncated completions changes nothing when they are masked out, and
    does change the weights when they are not; a mixed batch moves the weights as the batch
    of its finished completions alone would (token-mean; seq-mean also divides by the
    masked rows, as TRL does)."""
    ro = _rollouts([False, False, True, True])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    cfg = GRPOConfig(model="x", beta=0.0, lr=0.1, group_size=2, rollout_batch_size=4,
                     num_minibatches=1, micro_batch_size=4, clip_eps_low=0.2,
                     aggregation=aggregation)

    def updated(batch):
        policy = _llama()
        opt = torch.optim.SGD(policy.parameters(), lr=cfg.lr)
        update_policy(policy, None, opt, batch, cfg, PAD, torch.Generator().manual_seed(0),
                      lambda: cfg.lr, LeanLM(policy), None)
        return {k: v.detach().clone() for k, v in policy.state_dict().items()}

    start = _llama().state_dict()
    truncated_only = _rollouts([False, False, False, False])
    moved = updated(make_batch(truncated_only, adv))
    kept = updated(make_batch(truncated_only, adv, mask_truncated=True))
    assert max((moved[k] - start[k]).abs().max().item() for k in start) > 1e-4
    assert all(torch.equal(kept[k], start[k]) for k in start)
    if aggregation == "token-mean":
        mixed = updated(make_batch(ro, adv, mask_truncated=True))
        ro_done = Rollouts(ro.prompt_ids[1:], ro.completion_ids[2:], ro.completion_mask[2:],
                           None, ro.stopped[2:], group_size=2)
        alone = updated(make_batch(ro_done, adv[2:]))
        for k in start:
            torch.testing.assert_close(mixed[k], alone[k], atol=1e-6, rtol=1e-5)


def test_grpo_stage_with_dapo_and_gspo_options(tmp_path, monkeypatch):
    """The options together in a run: the soft overlong penalty is a logged reward component
    that adds to the reward, and short caps make it bite."""
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = [*MICRO_BASE, "--set", "run.progress=false", "--set", "run.tensorboard=false",
            "--set", "stages.zero.steps=2", "--set", "stages.zero.rollout_batch_size=32",
            "--set", "stages.zero.eval.every=0", "--set", "stages.zero.max_new_tokens=24",
            "--set", "stages.zero.overlong_buffer=8", "--set", "stages.zero.overlong_weight=0.5",
            "--set", "stages.zero.mask_truncated=true",
            "--set", 'stages.zero.importance_sampling="sequence"']
    assert main(["run", str(REPO / "recipes" / "zero-tiny.toml"), "--out", str(out),
                 *args]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["stage"] == "zero"]
    assert len(rows) == 2
    for r in rows:
        assert -1.0 <= r["reward/overlong"] <= 0.0
        parts = r["reward/accuracy"] + r["reward/format"] + 0.5 * r["reward/overlong"]
        assert r["reward"] == pytest.approx(parts, abs=1e-6)
    # 24 tokens cut most tiny-world solutions: the penalty and the masking had work to do
    assert any(r["truncated"] > 0 for r in rows) and any(r["reward/overlong"] < 0 for r in rows)


@pytest.mark.parametrize("key, value, message", [
    ("importance_sampling", '"seq"', "unknown level 'seq'"),
    ("overlong_buffer", "96", "is not less than the length cap"),
    ("overlong_buffer", "-1", "must be >= 0"),
    ("overlap_rewards", '"yes"', "unknown value 'yes'"),
    ("dynamic_sampling_metric", '"acc"', "unknown metric 'acc'"),
    ("max_sampling_rounds", "0", "must be >= 1"),
])
def test_bad_option_values_are_named(tmp_path, capsys, key, value, message):
    code = main(["run", str(REPO / "recipes" / "zero-tiny.toml"), "--out", str(tmp_path / "r"),
                 "--set", f"stages.zero.{key}={value}"])
    err = capsys.readouterr().err
    assert code == 2 and f"stages.zero.{key}" in err and message in err
    assert "Traceback" not in err


def test_dynamic_sampling_prefers_groups_with_varied_rewards():
    # round 0: groups 1 and 3 varied; round 1: group 0 varied
    varied = [[False, True, False, True], [True, False, False, False]]
    assert _choose_groups(varied, 3) == [(0, 1), (0, 3), (1, 0)]
    assert _choose_groups(varied, 2) == [(0, 1), (0, 3)]
    # short of varied groups: filled with the first groups without, in the order sampled
    assert _choose_groups(varied, 5) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    assert _choose_groups([[False, False]], 2) == [(0, 0), (0, 1)]

    def rollout(width, first):
        ids = torch.arange(first, first + 4 * width).view(4, width)
        return Rollouts([[first], [first + 1]], ids, torch.ones_like(ids),
                        None, torch.tensor([True, False, True, True]), group_size=2)

    a, b = rollout(3, 0), rollout(5, 100)
    took = _take_groups([a, b], [(0, 1), (1, 0)], pad_id=-1)
    assert took.prompt_ids == [[1], [100]]
    assert took.completion_ids.tolist() == [[6, 7, 8, -1, -1], [9, 10, 11, -1, -1],
                                            [100, 101, 102, 103, 104], [105, 106, 107, 108, 109]]
    assert took.completion_mask.sum(1).tolist() == [3, 3, 5, 5]
    assert took.stopped.tolist() == [True, True, True, False]
    assert _take_groups([a], [(0, 0), (0, 1)], pad_id=-1) is a
    # as wide as the chosen rows: a wider group left out does not widen the batch
    assert _take_groups([a, b], [(0, 0), (0, 1)], pad_id=-1).completion_ids.shape == (4, 3)


def test_what_counts_as_a_group_with_a_signal():
    right_with_format = [(2.0, {"accuracy": 1.0, "format": 1.0}),
                         (1.0, {"accuracy": 1.0, "format": 0.0})]
    assert not _varied(right_with_format, "accuracy")  # DAPO: all right
    assert _varied(right_with_format, "reward")
    assert _varied([(0.0, {"accuracy": 0.0}), (1.0, {"accuracy": 1.0})], "accuracy")
    # no accuracy (a reward model's score, your own function): the reward decides
    assert _varied([(0.2, {"helpful": 0.2}), (0.5, {"helpful": 0.5})], "accuracy")
    assert not _varied([(0.7, {"custom": 0.7}), (0.7 + 1e-9, {"custom": 0.7})], "accuracy")


def _zero_rows(out):
    return [r for r in rows_without_timings(out / "metrics.jsonl") if r["stage"] == "zero"]


def test_dynamic_sampling_trains_on_groups_with_a_signal(tmp_path, monkeypatch, capsys):
    """DAPO's dynamic sampling in a run: steps whose first rollout had groups with equal
    rewards sample again, and train only on groups with varied rewards when the rounds
    suffice; with one round allowed it trains on the same batch as a run without it. (The
    run without it also asks for overlap_rewards, which the tiny world's in-process checks
    do not take: it says so and changes nothing.)"""
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    args = [str(REPO / "recipes" / "zero-tiny.toml"), *MICRO_BASE, "--set",
            "run.progress=false", "--set", "run.tensorboard=false",
            "--set", "stages.zero.steps=3", "--set", "stages.zero.rollout_batch_size=32",
            "--set", "stages.zero.eval.every=0"]
    runs = {}
    for name, extra in [("plain", []), ("one", ["max_sampling_rounds=1"]),
                        ("dynamic", ["max_sampling_rounds=4"])]:
        sets = [x for e in (["dynamic_sampling=true"] + extra if extra
                            else ['overlap_rewards="on"'])
                for x in ("--set", f"stages.zero.{e}")]
        assert main(["run", *args, *sets, "--out", str(tmp_path / name)]) == 0
        runs[name] = _zero_rows(tmp_path / name)
        said = "overlap_rewards = on: nothing to score during the rollout" in capsys.readouterr().out
        assert said == (name == "plain")
    extra = ("sampling_rounds", "varied_frac")
    assert [{k: v for k, v in r.items() if k not in extra} for r in runs["one"]] == runs["plain"]
    assert all(r["sampling_rounds"] == 1 for r in runs["one"])
    assert any(r["varied_frac"] < 1 for r in runs["one"])  # the micro base gives equal groups
    rows = runs["dynamic"]
    assert any(r["sampling_rounds"] > 1 for r in rows)
    for r in rows:
        assert 1 <= r["sampling_rounds"] <= 4
        assert r["varied_frac"] == 1.0 or r["sampling_rounds"] == 4
    # rewards, lengths and zero_var_frac are over every group sampled, trained on or not
    assert rows[0]["zero_var_frac"] > 0


def test_kl_ratio_correction_reaches_the_loss(tmp_path, monkeypatch):
    """kl_ratio_correction = true (TRL's use_bias_correction_kl) is what the stage's loss is
    computed with (algos' tests check the loss itself)."""
    from r1kit.stages import grpo

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    seen = []
    real = grpo.policy_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["kl_ratio"])
        return real(*args, **kwargs)

    monkeypatch.setattr(grpo, "policy_loss", spy)
    args = [*MICRO_BASE, "--set", "run.progress=false", "--set", "run.tensorboard=false",
            "--set", "stages.zero.steps=1", "--set", "stages.zero.rollout_batch_size=16",
            "--set", "stages.zero.eval.every=0"]
    for value in (True, False):
        seen.clear()
        out = tmp_path / f"run-{value}"
        assert main(["run", str(REPO / "recipes" / "zero-tiny.toml"), "--out", str(out), *args,
                     "--set", f"stages.zero.kl_ratio_correction={str(value).lower()}"]) == 0
        assert seen and set(seen) == {value}
