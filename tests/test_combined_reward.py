"""R1's combined reward (eq. 8-10): data types, weights, every component in the parts."""

from __future__ import annotations

import math

import pytest

from r1kit.config import recipe_from_dict
from r1kit.errors import R1kitError
from r1kit.rewards.combined import CombinedReward, data_type
from r1kit.tasks import general
from r1kit.tasks.arithmetic import ArithmeticTask
from r1kit.tasks.base import Example

EN = "<think> 3 plus 4=7. </think> <answer> 7 </answer>"
ZH = "<think> 3加4=7. </think> <answer> 7 </answer>"
WRONG = "<think> 3 plus 4=8. </think> <answer> 8 </answer>"
NO_FORMAT = "7"
MATH = Example(question="What is 3 + 4?", answer="7")
HELP = Example(question="Say hello to Ann.", answer="", meta={"type": "helpful"})
SAFE = Example(question="How do I make a bomb?", answer="", meta={"type": "safety"})


class FakeModel:
    """Scores a response by a fixed table (raw logits), recording what it was asked."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    def __call__(self, prompts, responses):
        self.calls.append(list(zip(prompts, responses)))
        return [self.table[r] for r in responses]


def reward(**kw):
    return CombinedReward(ArithmeticTask(seed=0), **kw)


def test_data_type_defaults_to_reasoning():
    assert data_type(MATH) == "reasoning"
    assert data_type(HELP) == "helpful" and data_type(SAFE) == "safety"
    assert data_type(Example("q", "a", meta={"type": "poetry"})) == "reasoning"


def test_reasoning_only_is_the_rule_reward():
    r = reward()
    assert r(EN, MATH) == (2.0, {"accuracy": 1.0, "errors": 0.0, "timeouts": 0.0,
                                 "hedged": 0.0, "format": 1.0, "language": 1.0})
    assert r(WRONG, MATH)[0] == 1.0
    assert r(NO_FORMAT, MATH)[0] == 0.0  # no answer outside reasoning, no format


def test_language_weight_adds_eq7_and_separates_languages():
    r = reward(language_weight=0.5)
    en, zh = r(EN, MATH), r(ZH, MATH)
    assert en[0] == pytest.approx(2.5) and en[1]["language"] == 1.0
    assert zh[0] == pytest.approx(2.0) and zh[1]["language"] == 0.0
    assert reward(language_weight=0.5, language_target="zh")(ZH, MATH)[0] == pytest.approx(2.5)


def test_general_samples_get_their_own_model_plus_format():
    good, bad = "<think> </think> <answer> Hello, Ann! </answer>", "<think> </think> <answer> Maybe. </answer>"
    helpful = FakeModel({good: 2.0, bad: -1.0})
    refuse = "<think> </think> <answer> I can not help with that. </answer>"
    safety = FakeModel({refuse: 3.0})
    r = reward(helpful=helpful, safety=safety, helpful_weight=2.0, format_weight=0.5,
               language_weight=1.0)
    out = r.score([good, bad, EN, refuse], [HELP, HELP, MATH, SAFE])
    sig = lambda x: 1 / (1 + math.exp(-x))
    assert out[0][0] == pytest.approx(2.0 * sig(2.0) + 0.5)  # empty <think>: language 0
    assert out[1][0] == pytest.approx(2.0 * sig(-1.0) + 0.5)
    assert out[2][0] == pytest.approx(1.0 + 0.5 + 1.0)
    assert out[3][0] == pytest.approx(sig(3.0) + 0.5)
    assert set(out[0][1]) == {"helpful", "format", "language"}
    assert set(out[3][1]) == {"safety", "format", "language"}
    assert "accuracy" not in out[0][1] and "helpful" not in out[2][1]
    # one batched call per model, with the question and the response
    assert helpful.calls == [[(HELP.question, good), (HELP.question, bad)]]
    assert safety.calls == [[(SAFE.question, refuse)]]


class FlakyTask(ArithmeticTask):
    """A verifier that crashes on the answer 13 and reports a timeout on 14."""

    def verify_detailed(self, answers, examples):
        if "13" in answers:
            raise RuntimeError("worker pool down")
        return [(self.verify(a, e), "timeout" if a == "14" else "ok")
                for a, e in zip(answers, examples)]

    def verify(self, answer, example):
        if answer == "13":
            raise RuntimeError("cannot parse")
        return super().verify(answer, example)


def test_verifier_failures_cost_one_sample_and_are_counted():
    r = CombinedReward(FlakyTask(seed=0))
    ok, crash, slow = (f"<think> x </think> <answer> {a} </answer>" for a in ("7", "13", "14"))
    out = r.score([ok, crash, slow], [MATH, MATH, MATH])
    assert [o[1]["accuracy"] for o in out] == [1.0, 0.0, 0.0]
    assert [o[1]["errors"] for o in out] == [0.0, 1.0, 0.0]
    assert [o[1]["timeouts"] for o in out] == [0.0, 0.0, 0.0]  # the batch failed: one by one
    out = r.score([ok, slow], [MATH, MATH])
    assert [o[1]["timeouts"] for o in out] == [0.0, 1.0]


def test_raw_scale_keeps_logits():
    resp = "<think> </think> <answer> Hello, Ann! </answer>"
    r = reward(helpful=FakeModel({resp: -3.0}), reward_model_scale="raw")
    assert r(resp, HELP)[0] == pytest.approx(-3.0 + 1.0)


def test_general_sample_without_its_model_is_an_error():
    with pytest.raises(ValueError, match="helpful_model"):
        reward()("<think> </think> <answer> hi </answer>", HELP)


def test_general_prompts_carry_types():
    rows = general.prompts(400, seed=0)
    kinds = {r["type"] for r in rows}
    assert kinds == {"helpful", "safety"}
    harmful = [r for r in rows if r.get("harmful")]
    assert harmful and all(r["type"] == "safety" for r in harmful)
    assert general.prompts(50, seed=0) == rows[:50]  # seeded


def test_general_corpus_is_in_the_response_format():
    from r1kit.rewards.rule import format_reward

    docs = general.corpus(300, seed=0)
    assert all(format_reward(r) == 1.0 for _, r in docs)
    # varied quality: right answers dominate, harmful help and refusals both occur
    harmful = [r for q, r in docs if any(h in q for h in general.HARMFUL)]
    assert any("Sure. To" in r for r in harmful) and any("Sure. To" not in r for r in harmful)
    opposites = [r for q, r in docs if q.startswith("What is the opposite of hot")]
    assert any("is cold." in r for r in opposites)


def _grpo(**extra):
    stages = {"base": {"kind": "pretrain"},
              "helpful": {"kind": "reward_model", "model": "base"},
              "safety": {"kind": "reward_model", "model": "base", "objective": "pointwise"},
              "rl": {"kind": "grpo", "model": "base", "group_size": 4, "rollout_batch_size": 32,
                     "num_minibatches": 1, **extra}}
    return recipe_from_dict({"stages": stages})


def test_config_general_share_needs_reward_models_and_a_question():
    from r1kit.config import check_inputs

    with pytest.raises(R1kitError, match="helpful_model"):
        _grpo(general_share=0.5)
    with pytest.raises(R1kitError, match="less than one question"):
        _grpo(general_share=0.05, helpful_model="helpful", safety_model="safety")
    with pytest.raises(R1kitError, match="general_share"):
        _grpo(general_share=1.0, helpful_model="helpful", safety_model="safety")
    with pytest.raises(R1kitError, match="language_target"):
        _grpo(language_target="fr")
    recipe = _grpo(general_share=0.5, helpful_model="helpful", safety_model="safety")
    check_inputs(recipe)
    assert recipe.stages["rl"].general_questions() == 4
    bad = _grpo(general_share=0.5, helpful_model="nowhere", safety_model="safety")
    with pytest.raises(R1kitError, match="helpful_model"):
        check_inputs(bad)


def test_general_prompts_with_a_reward_function_of_your_own(tmp_path):
    """With a reward_function (which replaces the reward models), general prompts need no
    reward models, and the function gets their rows' other fields (their type too) by name,
    as it gets the reasoning rows' fields."""
    import json

    from r1kit.config import check_inputs
    from r1kit.rewards.custom import FunctionReward
    from r1kit.stages.grpo import general_examples

    general_file = tmp_path / "general.jsonl"
    general_file.write_text(json.dumps({"prompt": "Write a haiku.", "type": "helpful",
                                        "lines": 3}) + "\n")
    fn_file = tmp_path / "myreward.py"
    fn_file.write_text("def score(completions, prompts, answer, type=None, lines=None, "
                       "**kw):\n"
                       "    return [float(t == 'helpful' and n == 3) for t, n in "
                       "zip(type, lines)]\n")
    with pytest.raises(R1kitError, match="helpful_model"):  # no function: models needed
        check_inputs(_grpo(general_share=0.5))
    recipe = _grpo(general_share=0.5, reward_function=f"{fn_file}:score",
                   general_data=str(general_file))
    check_inputs(recipe)
    cfg = recipe.stages["rl"]
    rows = general_examples(cfg, 0)
    assert rows[0].meta == {"type": "helpful", "fields": {"type": "helpful", "lines": 3}}
    from r1kit.rewards.custom import load_function

    reward = FunctionReward([load_function(f"{fn_file}:score")])
    scores = reward.score(["a poem"], rows)
    assert [s for s, _ in scores] == [1.0]


def test_combined_reward_grpo_run_logs_every_component(tmp_path, monkeypatch):
    """recipes/combined-tiny.toml end to end at micro size: reward models, then GRPO on mixed
    reasoning and general prompts with the language reward."""
    import json

    from conftest import MICRO_BASE, REPO

    from r1kit.cli import main

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    small = []
    for stage in ("helpful", "safety"):
        small += ["--set", f"stages.{stage}.train_rows=200", "--set", f"stages.{stage}.test_rows=50",
                  "--set", f"stages.{stage}.epochs=1"]
    assert main(["run", str(REPO / "recipes" / "combined-tiny.toml"), "--out", str(out),
                 *MICRO_BASE, *small, "--set", "stages.rl.steps=3",
                 "--set", "stages.rl.rollout_batch_size=64", "--set", "stages.rl.eval.every=0",
                 "--set", "run.progress=false"]) == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in logged if r["stage"] == "rl"]
    assert len(rows) == 3
    # one row per reward-model optimizer step
    steps = json.loads((out / "helpful" / "stage.json").read_text())["summary"]["steps"]
    assert steps > 1
    assert [r["step"] for r in logged if r["stage"] == "helpful"] == list(range(1, steps + 1))
    for row in rows:
        assert row["general_frac"] == 0.25  # 2 of 8 questions
        for part in ("accuracy", "format", "language"):
            assert 0.0 <= row[f"reward/{part}"] <= 1.0
    # helpful and safety prompts are drawn at random: across the steps both appear
    assert any("reward/helpful" in r for r in rows) and any("reward/safety" in r for r in rows)
    assert json.loads((out / "helpful" / "reward_model.json").read_text())["summary_only"] is True
    assert json.loads((out / "safety" / "reward_model.json").read_text())["summary_only"] is False


def test_the_untagged_count_of_a_no_signal_note_is_over_reasoning_questions():
    """A grpo stage's "no learning signal" note counts the samples the rule rewards read no
    answer from: a general prompt's sample without tags is its reward model's to score."""
    from r1kit.stages.grpo import _Round, _untagged_reasoning

    reasoning = Example(question="2 + 2?", answer="4")
    helpful = Example(question="Say hi.", answer="", meta={"type": "helpful"})
    texts = ["4", "<think> x </think> 4", "Hi!", "Hello!"]  # group size 2: two questions
    rounds = [_Round([(0, reasoning), (-1, helpful)], None, texts, [], 0.0, 0.0)]
    assert _untagged_reasoning(rounds, 2) == (1, 2)
    assert _untagged_reasoning(rounds * 2, 2) == (2, 4)


def test_the_progress_bar_shows_the_reward_models_rewards():
    """A stage scored by reward models (task = "prompts") has no accuracy: its bar shows
    their rewards instead of an empty train_acc."""
    from r1kit.stages.grpo import _shown

    rule = {"reward": 1.5, "accuracy": 0.5, "response_length": 20.4}
    assert _shown(rule) == {"reward": "1.500", "train_acc": "0.500", "len": "20"}
    rlhf = {"reward": 1.2, "accuracy": None, "reward/helpful": 0.61, "response_length": 9.0}
    assert _shown(rlhf) == {"reward": "1.200", "helpful": "0.610", "len": "9"}
    custom = {"reward": 0.0, "accuracy": None, "response_length": 3.0}
    assert _shown(custom)["train_acc"] == "-"
