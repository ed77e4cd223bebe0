"""Rule rewards scored while the rollout decodes (r1kit/rewards/overlap.py): the rollout hands
over every completion once, as it finishes, with the tokens it returns; scoring in the
background gives the same rewards and the same run as scoring after the rollout."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from conftest import MICRO_BASE, REPO, rows_without_timings, tiny_llama

from r1kit.cli import main
import r1kit.rollout as rollout
from r1kit.lean import LeanLM
from r1kit.rewards.overlap import OverlappedRewards
from r1kit.rollout import LeanDecoder, generate
from r1kit.tasks.base import Example


@pytest.mark.parametrize("engine, max_rows", [("auto", 1024), ("auto", 12), ("hf", 1024),
                                              ("hf", 12), ("graphs", 1024), ("graphs", 12)])
def test_every_completion_is_handed_over_once_as_it_finishes(engine, max_rows, monkeypatch):
    """Both engines, one chunk of prompts or two (max_rows 12: 2 prompts of 6 samples each),
    and the CUDA-graph path (run eagerly: finished rows are checked every 8 tokens)."""
    model = tiny_llama(seed=3).eval()
    if engine == "graphs":
        monkeypatch.setattr(rollout, "lean_decoder", lambda m, *a, **kw: LeanDecoder(
            LeanLM(m), cuda_graphs=True, simulate_graphs=True))
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    calls: list[tuple[list[int], list[list[int]]]] = []
    ro = generate(model, prompts, group_size=6, max_new_tokens=40, temperature=1.0,
                  stop_ids=[1], pad_id=0, generator=torch.Generator().manual_seed(0),
                  engine="hf" if engine == "hf" else "auto", max_rows=max_rows,
                  on_finished=lambda rows, comps: calls.append((rows, comps)))
    handed = {}
    for rows, comps in calls:
        for r, c in zip(rows, comps):
            assert r not in handed, f"row {r} handed over twice"
            handed[r] = c
    assert sorted(handed) == list(range(24))
    for r, c in handed.items():
        n = int(ro.lengths[r])
        assert c == ro.completion_ids[r, :n].tolist()
        assert (c[-1] == 1) == bool(ro.stopped[r])  # a finished row ends with its stop token
    # rows that stopped early were handed over during decoding, not all at the end
    assert ro.stopped.any() and not ro.stopped.all() and len(calls) >= 3
    # the rows cut at the cap come last (of their chunk); with graphs, with the rows that
    # stopped after the last check
    chunk = 24 if max_rows > 24 else 12
    cut = [r for r in range(24 - chunk, 24) if not ro.stopped[r]]
    assert set(cut) <= set(calls[-1][0])
    assert engine == "graphs" or sorted(calls[-1][0]) == cut


class _Reward:
    """Reward = text length; examples with an even `i` are rule-scored (overlappable)."""

    def __init__(self, fail_on: str | None = None):
        self.threads: dict[int, str] = {}
        self.fail_on = fail_on

    def overlappable(self, example: Example) -> bool:
        return example.meta["i"] % 2 == 0

    def score(self, texts, examples):
        if self.fail_on in texts:
            raise ValueError("broken check")
        for e in examples:
            self.threads[e.meta["i"]] = threading.current_thread().name
        return [(float(len(t)), {"length": float(len(t))}) for t in texts]


def _examples(n):
    return [Example(question=f"q{i}", answer="0", meta={"i": i}) for i in range(n)]


def _text(ids):
    return "".join(chr(97 + t) for t in ids)


def test_background_scores_equal_scores_after_the_rollout():
    completions = [[i % 5] * (i + 1) for i in range(8)]
    texts = [_text(c) for c in completions]
    reward = _Reward()
    with OverlappedRewards(reward, _text, _examples(8)) as ov:
        ov.finished([3, 0, 6], [completions[3], completions[0], completions[6]])
        ov.finished([1, 2], [completions[1], completions[2]])
        scored = ov.results(texts)
    assert scored == _Reward().score(texts, _examples(8))
    # rule-scored rows that finished early went to the background; the rest after the rollout
    for i in (0, 2, 6):
        assert reward.threads[i].startswith("r1kit-rewards")
    for i in (1, 3, 4, 5, 7):
        assert reward.threads[i] == threading.current_thread().name


def test_off_scores_everything_after_the_rollout():
    reward = _Reward()
    with OverlappedRewards(reward, _text, _examples(4), enabled=False) as ov:
        assert ov.callback is None
        texts = [_text([i]) for i in range(4)]
        assert ov.results(texts) == _Reward().score(texts, _examples(4))
    assert set(reward.threads.values()) == {threading.current_thread().name}


def test_a_failure_in_the_background_is_raised_after_the_rollout():
    with OverlappedRewards(_Reward(fail_on="c"), _text, _examples(4)) as ov:
        ov.finished([2], [[2]])  # text "c"
        with pytest.raises(ValueError, match="broken check"):
            ov.results([_text([i]) for i in range(4)])
    with OverlappedRewards(_Reward(), _text, _examples(4)) as ov:
        ov.finished([0], [[3]])
        with pytest.raises(RuntimeError, match="scored as 'd'"):
            ov.results([_text([i]) for i in range(4)])


def test_only_checks_in_worker_processes_are_overlapped(tmp_path):
    """A MathTask's own checks run in math-verify's worker processes; a subclass with a check
    of its own (which may use signal-based timeouts, main thread only) is scored after the
    rollout."""
    from r1kit.rewards.combined import CombinedReward
    from r1kit.tasks.arithmetic import ArithmeticTask
    from r1kit.tasks.math import MathTask

    class OwnCheck(MathTask):
        def verify(self, answer, example):
            return float(answer == example.answer)

    data = _arithmetic_as_math(tmp_path / "rows.jsonl", n=3)
    ex = Example(question="q", answer="1")
    assert CombinedReward(MathTask("t", data)).overlappable(ex)
    assert not CombinedReward(OwnCheck("t", data)).overlappable(ex)
    assert not CombinedReward(ArithmeticTask(seed=0)).overlappable(ex)  # in-process checks
    general = Example(question="q", answer="", meta={"type": "helpful"})
    assert not CombinedReward(MathTask("t", data)).overlappable(general)  # a reward model
    # evaluation's verdicts: shipped benchmarks check in worker processes (math-verify's, the
    # code sandbox's), the tiny world in this one
    from r1kit.eval.benchmarks import BenchmarkTask
    from r1kit.eval.core import _Verdicts

    assert _Verdicts(BenchmarkTask("gsm8k")).overlappable(ex)
    assert _Verdicts(BenchmarkTask("humaneval")).overlappable(ex)
    assert not _Verdicts(ArithmeticTask(seed=0)).overlappable(ex)


def _arithmetic_as_math(path, n=300):
    from r1kit.tasks.arithmetic import ArithmeticTask

    path.write_text("".join(json.dumps({"question": e.question, "answer": e.answer}) + "\n"
                            for e in ArithmeticTask(seed=0).train_examples()[:n]))
    return path


def _count_background(monkeypatch) -> list[int]:
    """Rows scored in OverlappedRewards' background thread, appended per job."""
    counted: list[int] = []
    score = OverlappedRewards._score
    monkeypatch.setattr(OverlappedRewards, "_score",
                        lambda self, rows, comps: counted.append(len(rows)) or score(
                            self, rows, comps))
    return counted


def test_rejection_sampling_is_the_same_with_and_without_overlap(tmp_path, monkeypatch):
    """The sample stage verifies answers while the rest decode: the same rows are kept."""
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    data = _arithmetic_as_math(tmp_path / "train.jsonl")
    background = _count_background(monkeypatch)
    recipe = tmp_path / "rs.toml"
    recipe.write_text(f'[run]\nprogress = false\n[stages.base]\nkind = "pretrain"\n'
                      f'[stages.rs]\nkind = "sample"\nmodel = "base"\ntask = "math"\n'
                      f'train_file = "{data}"\nprompts = 24\nsamples_per_prompt = 4\n'
                      f'max_new_tokens = 64\nfilters = []\n')
    out = {}
    for mode in ("on", "off"):
        assert main(["run", str(recipe), *MICRO_BASE, "--set",
                     f'stages.rs.overlap_rewards="{mode}"', "--out", str(tmp_path / mode)]) == 0
        summary = json.loads((tmp_path / mode / "rs" / "sample.json").read_text())
        out[mode] = ((tmp_path / mode / "rs" / "data.jsonl").read_text(),
                     {k: v for k, v in summary.items() if k != "seconds"}, sum(background))
        background.clear()
    assert out["on"][:2] == out["off"][:2]
    assert out["on"][2] == 24 * 4 and out["off"][2] == 0
    assert 0 < out["on"][1]["correct"] < 24 * 4  # answers were checked, some right


def test_a_math_run_is_the_same_with_and_without_overlapped_rewards(tmp_path, monkeypatch):
    """task = "math" (math-verify's checks in worker processes): overlap_rewards = "on" scores
    rollouts and evaluations in the background, on the CPU too, and the run's metrics and
    evaluations equal those of "off"."""
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    data = _arithmetic_as_math(tmp_path / "train.jsonl")
    background = _count_background(monkeypatch)
    runs, counts = {}, {}
    for mode in ("on", "off"):
        out = tmp_path / mode
        assert main(["run", str(REPO / "recipes" / "zero-tiny.toml"), "--out", str(out),
                     *MICRO_BASE, "--set", "run.progress=false", "--set",
                     "run.tensorboard=false", "--set", 'stages.zero.task="math"',
                     "--set", f'stages.zero.train_file="{data}"', "--set",
                     "stages.zero.steps=2", "--set", "stages.zero.rollout_batch_size=32",
                     "--set", f'stages.zero.test_file="{data}"', "--set",
                     "stages.zero.eval.every=2", "--set", "stages.zero.eval.limit=16", "--set",
                     "stages.zero.eval.k=4", "--set", f'stages.zero.overlap_rewards="{mode}"']) == 0
        rows = [r for r in rows_without_timings(out / "metrics.jsonl") if r["stage"] == "zero"]
        evals = [r for r in rows_without_timings(out / "eval.jsonl") if r["stage"] == "zero"]
        runs[mode], counts[mode] = (rows, evals), sum(background)
        background.clear()
    assert len(runs["on"][0]) == 2 and len(runs["on"][1]) == 2  # steps 0 and 2 evaluated
    assert runs["on"] == runs["off"]
    # every completion of the 2 steps and of the 2 evaluations scored in the background
    assert counts == {"on": 2 * 32 + 2 * 16 * 4, "off": 0}
    # the checks had answers to verify: some right, some wrong
    assert 0 < runs["on"][0][-1]["reward/accuracy"] < 1 and 0 < runs["on"][1][-1]["pass@1"] < 1

