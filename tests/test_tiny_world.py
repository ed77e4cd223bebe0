"""The tiny world: generator, held-out sets, corpus, tokenizer, and a micro end-to-end run."""

from __future__ import annotations

import json
import random

import torch
from conftest import MICRO_BASE, REPO
from safetensors.torch import load_file

from r1kit.cli import main
from r1kit.models import build_tiny_tokenizer, load_tokenizer
from r1kit.rewards import RuleReward
from r1kit.tasks.arithmetic import ArithmeticTask, WorldConfig, evaluate_chain, make_problem

REQUIRED_METRICS = {
    "stage", "step", "reward", "reward/accuracy", "reward/format", "accuracy",
    "response_length", "response_length_max", "truncated", "zero_var_frac", "kl", "clip_frac",
    "entropy", "grad_norm", "lr", "tokens_per_s", "step_seconds",
}


def test_problems_are_valid_chains():
    rng = random.Random(0)
    for level in range(1, 6):
        for _ in range(200):
            operands, ops = make_problem(rng, level)
            assert len(ops) == level and all(1 <= x <= 9 for x in operands)
            assert min(evaluate_chain(operands, ops)) >= 0  # never below zero on the way


def test_held_out_sets_are_fixed_and_excluded():
    a, b = ArithmeticTask(seed=0), ArithmeticTask(seed=5)
    main_a = [e.question for e in a.test_examples()]
    assert main_a == [e.question for e in b.test_examples()]  # independent of the run seed
    assert len(main_a) == 200 and len(set(main_a)) == 200
    assert {e.level for e in a.test_examples()} == {2, 3, 4}
    held_out = {e.question for split in ["main", *[f"level{i}" for i in range(1, 6)]]
                for e in a.test_examples(split)}
    assert not held_out & {e.question for e in a.train_examples()}
    corpus_questions = {p.split("User: ")[1].rsplit(". Assistant:", 1)[0]
                        for p, _ in a.corpus(3000, seed=0)}
    assert not held_out & corpus_questions


def test_corpus_mix_and_working_helps():
    """Worked solutions are mostly right; answer-only guesses on several operations rarely are."""
    task = ArithmeticTask(WorldConfig(train_pool=10))
    reward = RuleReward(task)
    right = {"worked": [], "answer_only_multi": []}
    kinds = {"wait": 0, "zh": 0}
    for prompt, response in task.corpus(4000, seed=1):
        question = prompt.split("User: ")[1].rsplit(". Assistant:", 1)[0]
        operands = [int(t) for t in question[len("What is "):-1].split() if t.isdigit()]
        ops = [t for t in question.split() if t in "+-"]
        from r1kit.tasks.base import Example

        ex = Example(question, str(evaluate_chain(operands, ops)[-1]), len(ops))
        score, parts = reward(response, ex)
        assert parts["format"] == 1.0
        if "<think> </think>" in response:
            if len(ops) > 1:
                right["answer_only_multi"].append(parts["accuracy"])
        else:
            right["worked"].append(parts["accuracy"])
        kinds["wait"] += "wait" in response
        kinds["zh"] += "加" in response or "减" in response
    worked = sum(right["worked"]) / len(right["worked"])
    guessed = sum(right["answer_only_multi"]) / len(right["answer_only_multi"])
    assert worked > 0.75 and guessed < 0.25, (worked, guessed)  # expected: 0.8 and 0.15
    assert kinds["wait"] > 200 and kinds["zh"] > 100


def test_tiny_tokenizer_round_trip(tmp_path):
    task = ArithmeticTask(WorldConfig(train_pool=10))
    docs = task.corpus(300, seed=0)
    tok = build_tiny_tokenizer([p + r for p, r in docs], vocab_size=512)
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    for prompt, response in docs[:50]:
        for text in (prompt, response):
            ids = loaded(text, add_special_tokens=False)["input_ids"]
            assert loaded.decode(ids, skip_special_tokens=False) == text
    ids = loaded("17+3=20.", add_special_tokens=False)["input_ids"]
    assert [loaded.decode([i]) for i in ids] == ["17", "+", "3", "=", "20", "."]  # whole numbers
    assert len(loaded("<think>", add_special_tokens=False)["input_ids"]) == 1
    # text the corpus never showed is kept (ASCII) or marked unknown, never dropped
    text = "Hello, XYZ! x^2 ~ {q} | 你"
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(ids, skip_special_tokens=False) == "Hello, XYZ! x^2 ~ {q} | <|unk|>"


def test_micro_run_end_to_end(tmp_path, monkeypatch):
    """pretrain (micro) -> grpo: weights change, metrics.jsonl has every required key."""
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = [
        "run", str(REPO / "recipes" / "zero-tiny.toml"), "--out", str(out),
        *MICRO_BASE,
        "--set", "stages.zero.steps=3", "--set", "stages.zero.rollout_batch_size=32",
        "--set", "stages.zero.num_minibatches=2", "--set", "stages.zero.micro_batch_size=8",
        "--set", "stages.zero.max_new_tokens=24", "--set", "stages.zero.lr=1e-2",
        "--set", "stages.zero.eval.every=3", "--set", "stages.zero.eval.limit=8",
        "--set", "stages.zero.eval.k=2", "--set", "run.progress=false",
    ]
    assert main(args) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3
    for m in metrics:
        assert REQUIRED_METRICS <= set(m), REQUIRED_METRICS - set(m)
        assert m["reward"] == m["reward/accuracy"] + m["reward/format"]
    assert any(m["zero_var_frac"] < 1 for m in metrics)  # some groups carried a signal
    before = load_file(str(out / "base" / "model.safetensors"))
    after = load_file(str(out / "zero" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 3]
    assert {"pass@1", "cons@2", "mean_tokens", "stage", "benchmark"} <= set(evals[0])
    assert json.loads((out / "zero" / "stage.json").read_text())["status"] == "done"
    assert (out / "figure1.png").is_file() and (out / "config.json").is_file()
    # the same command again skips both finished stages; other settings are refused
    assert main(args) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert main([*args, "--set", "stages.zero.lr=0.5"]) == 2
    tok = load_tokenizer(out / "zero")
    assert tok.decode(tok("<think> 1+2=3 </think>", add_special_tokens=False)["input_ids"]) \
        == "<think> 1+2=3 </think>"


def test_reference_refresh_and_length_schedule(tmp_path, monkeypatch):
    """With the reference reset to the policy after every step and one update per rollout,
    the KL measured during each update is exactly 0; without resets it grows. The length cap
    follows its schedule."""
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    common = [
        *MICRO_BASE,
        "--set", "stages.zero.steps=3", "--set", "stages.zero.rollout_batch_size=32",
        "--set", "stages.zero.lr=1e-2", "--set", "stages.zero.eval.every=0",
        "--set", "stages.zero.max_new_tokens=24",
        "--set", "stages.zero.max_new_tokens_schedule=[[2, 32]]", "--set", "run.progress=false",
    ]
    kls = {}
    for refresh in (1, 0):
        out = tmp_path / f"refresh{refresh}"
        assert main(["run", str(REPO / "recipes" / "zero-tiny.toml"), "--out", str(out), *common,
                     "--set", f"stages.zero.ref_refresh_every={refresh}"]) == 0
        metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [m["max_new_tokens"] for m in metrics] == [24, 24, 32]
        assert any(m["zero_var_frac"] < 1 for m in metrics[:2])  # the policy really moves
        assert all(m["response_length_max"] <= m["max_new_tokens"] for m in metrics)
        kls[refresh] = [m["kl"] for m in metrics]
    assert kls[1] == [0.0, 0.0, 0.0]
    assert kls[0][0] == 0.0 and kls[0][2] > 0.0
