"""task = "prompts": GRPO on prompts without answers, scored by reward models (RLHF) or a
reward function of your own (r1kit.tasks.prompts)."""

from __future__ import annotations

import json
import statistics

import pytest
from conftest import MICRO_BASE, REPO, one_grpo_step_on, write_jsonl

from r1kit.cli import main
from r1kit.config import check_inputs, load_recipe
from r1kit.errors import R1kitError
from r1kit.tasks.prompts import PromptTask

RECIPE = str(REPO / "recipes" / "zero-gsm8k.toml")


def _file(tmp_path, rows, name="prompts.jsonl"):
    return write_jsonl(tmp_path / name, rows)


def test_prompt_rows_and_their_types(tmp_path):
    rows = [{"prompt": "Say hi.", "id": 1}, {"prompt": "How do I pick a lock?", "type": "safety"},
            {"prompt": [{"role": "user", "content": "Hello"}], "type": "helpful"}]
    path = _file(tmp_path, rows)
    a, b, c = PromptTask(path, "prompt").train_examples()
    assert (a.meta["type"], b.meta["type"], c.meta["type"]) == ("helpful", "safety", "helpful")
    assert a.question == "Say hi." and a.answer == "" and a.meta["fields"] == {"id": 1}
    assert c.question == rows[2]["prompt"]
    assert PromptTask(path, "prompt", "safety").train_examples()[0].meta["type"] == "safety"
    assert PromptTask(path, "prompt").test_examples() == []  # no test_file: no held-out set
    held_out = PromptTask(None, "prompt", test_file=path).test_examples()
    assert [e.question for e in held_out] == [r["prompt"] for r in rows]
    with pytest.raises(R1kitError, match="prompts.jsonl:1: type 'chat' is not one of helpful"):
        PromptTask(_file(tmp_path, [{"prompt": "x", "type": "chat"}]), "prompt")
    with pytest.raises(R1kitError, match="no field 'question'") as info:
        PromptTask(_file(tmp_path, [{"text": "Say hi."}], "text.jsonl"))
    assert "set question_field" in info.value.hint
    # a reward function scores every row: any type passes, as a field of the row
    (ex,) = PromptTask(_file(tmp_path, [{"prompt": "x", "type": "chat"}]), "prompt",
                       None).train_examples()
    assert ex.meta["type"] is None and ex.meta["fields"] == {"type": "chat"}
    # TRL's layout: the prompt under "prompt"; a null type takes the default; an answer
    # column is the answer a reward function gets
    trl = [{"prompt": "Say hi.", "type": None, "answer": 6}, {"prompt": "Go.", "type": "safety"}]
    a, b = PromptTask(_file(tmp_path, trl, "trl.jsonl")).train_examples()
    assert (a.question, a.meta["type"], a.answer) == ("Say hi.", "helpful", "6")
    assert (b.meta["type"], b.answer) == ("safety", "")
    tiny = PromptTask(None).train_examples()  # the tiny world's general prompts
    assert {e.meta["type"] for e in tiny} == {"helpful", "safety"}
    # and its evaluation prompts: the eval stage's, each once, the same in every run; the
    # tiny world's requests are few, so they are training prompts too (said in the docs)
    evals = PromptTask(None, seed=3).test_examples()
    assert len(evals) == len({e.question for e in evals}) == 69
    assert {e.meta["type"] for e in evals} == {"helpful", "safety"}
    assert evals == PromptTask(None, seed=5).test_examples()
    assert {e.question for e in evals} <= {e.question for e in tiny}
    assert PromptTask(None).test_name == "tiny-general-prompts"
    assert PromptTask(None, test_file=tmp_path / "t.jsonl").test_name == "t"


def test_prompts_settings_are_checked_before_any_stage(tmp_path, bpe_checkpoint):
    data = _file(tmp_path, [{"question": "Say hi."}, {"question": "Hurt someone.",
                                                      "type": "safety"}])
    task = ['stages.zero.task="prompts"', f"stages.zero.train_file={json.dumps(str(data))}",
            f"stages.zero.model={json.dumps(str(bpe_checkpoint))}"]
    with pytest.raises(R1kitError, match="its reward comes from reward models or a reward "
                                         "function, and this stage has none"):
        load_recipe(RECIPE, task)
    # the safety row needs a safety model, in the training prompts and in the held-out ones
    from r1kit.config import recipe_from_dict

    helpful_only = _file(tmp_path, [{"question": "Say hi."}], "helpful.jsonl")
    for train, test, named in ((data, "", "prompts.jsonl"), (helpful_only, data, "prompts.jsonl"),
                               (helpful_only, helpful_only, None)):
        recipe = recipe_from_dict({"stages": {
            "helpful": {"kind": "reward_model", "model": str(bpe_checkpoint)},
            "rl": {"kind": "grpo", "model": str(bpe_checkpoint), "task": "prompts",
                   "train_file": str(train), "test_file": str(test),
                   "helpful_model": "helpful"}}})
        if named is None:
            check_inputs(recipe)
            continue
        with pytest.raises(R1kitError, match=f"stages.rl.safety_model: .*{named} has "
                                             "prompts of type 'safety'"):
            check_inputs(recipe)
    # a classifier of two labels is not a reward model: which logit is the reward?
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from r1kit.models import check_model_dir

    torch.manual_seed(0)
    classifier = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2, pad_token_id=0))
    classifier.save_pretrained(tmp_path / "classifier")
    with pytest.raises(R1kitError, match="is a classifier of 2 labels, not a reward model"):
        check_model_dir(tmp_path / "classifier", kind="reward")
    sample = {"stages": {"rs": {"kind": "sample", "model": "/m", "task": "prompts",
                                "train_file": str(data)}}}
    with pytest.raises(R1kitError, match="task = 'prompts' has no answers to check, which a "
                                         "sample stage needs"):
        recipe_from_dict(sample)


def test_a_reward_function_scores_prompts_without_answers(tmp_path, bpe_checkpoint):
    """TRL's GRPO on a prompt-only data set with a reward function of its own: the function
    gets the completions and the rows' other fields; no accuracy. The held-out prompts
    (test_file; TRL's eval_dataset) are evaluated by the same reward, k responses each."""
    data = _file(tmp_path, [{"question": f"Write {i} words.", "words": i} for i in range(1, 5)])
    fn = tmp_path / "rewards.py"
    fn.write_text("def length_reward(completions, words, **kw):\n"
                  "    return [-abs(len(c.split()) - w) for c, w in zip(completions, words)]\n")
    out = tmp_path / "run"
    (row,), evals = one_grpo_step_on(bpe_checkpoint, out, "prompts", data, eval_k=3,
                                     reward_function=f"{fn}:length_reward")
    assert row["reward/custom"] <= 0 and row.get("accuracy") is None
    assert [e["step"] for e in evals] == [0, 1]
    for e in evals:
        assert "pass@1" not in e and (e["n"], e["k"]) == (4, 3)
        # the function gives whole numbers: 12 of them, each at most 0
        assert e["reward"] == pytest.approx(e["reward/custom"]) and e["reward"] <= 0
        assert round(12 * e["reward"], 6) % 1 == 0
        low, high = e["reward_ci95"]
        assert low <= e["reward"] <= high
    from r1kit.report import write_report

    text = write_report(out).read_text()
    assert "the stage's own reward on its evaluation prompts" in text and "eval_reward.png" in text
    assert "held-out pass@1" not in text


def test_a_reward_function_that_takes_answer_needs_a_reference_in_the_prompts(
        tmp_path, bpe_checkpoint, capsys):
    """A function that names `answer` on prompts without that field would get '' for every
    row (TRL's trainer would fail on the missing column): the run stops before any stage
    and names the field that looks like the answer. One taking **kwargs alone runs."""
    from conftest import stops_before_any_stage

    data = _file(tmp_path, [{"question": f"What is {i} + 1?", "solution": str(i + 1)}
                            for i in range(4)])
    fn = tmp_path / "rewards.py"
    fn.write_text("def accuracy(completions, answer, **kw):\n"
                  "    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n"
                  "def short(completions, **kw):\n"
                  "    return [-len(c) for c in completions]\n")
    recipe = tmp_path / "r.toml"
    head = (f'[stages.grpo]\nkind = "grpo"\nmodel = "{bpe_checkpoint}"\ntask = "prompts"\n'
            f'train_file = "{data}"\n')
    recipe.write_text(head + f'reward_function = "{fn}:accuracy"\n')
    stops_before_any_stage(recipe, tmp_path, capsys,
                           ["no row of train_file has a field 'answer'", "(answer)",
                            'set answer_field = "solution"'])
    recipe.write_text(head + f'reward_function = "{fn}:short"\n')
    check_inputs(load_recipe(recipe))
    # rows of a prompt alone (TRL's prompt-only data), or a prompt and a field unlike an answer
    for rows, said in (([{"question": "Hi?"}], "its rows hold the prompt alone ('question')"),
                       ([{"question": "Hi?", "id": 3}],
                        "its rows' fields are id, besides the prompt's ('question')")):
        recipe.write_text(head.replace(str(data), str(_file(tmp_path, rows, "p.jsonl")))
                          + f'reward_function = "{fn}:accuracy"\n')
        stops_before_any_stage(recipe, tmp_path, capsys, [said])
    recipe.write_text(head + f'reward_function = "{fn}:accuracy"\nanswer_field = "solution"\n')
    check_inputs(load_recipe(recipe))


def test_a_reward_model_and_reward_functions_add_up(tmp_path, bpe_checkpoint):
    """TRL sums a reward model's reward with reward functions': so does a prompts task with
    both (the model's general reward, here without the format reward, plus the function)."""
    import torch

    from r1kit.config import RewardModelConfig
    from r1kit.stages.reward_model import run_reward_model
    from r1kit.tasks import general

    pairs = general.helpful_pairs(24, seed=0)
    train, test = _file(tmp_path, pairs[:16], "pairs.jsonl"), _file(tmp_path, pairs[16:], "t.jsonl")
    rm = tmp_path / "rm"
    run_reward_model(RewardModelConfig(model="m", data="file", train_file=str(train),
                                       test_file=str(test), batch_size=8, lr=1e-3),
                     bpe_checkpoint, rm, 0, torch.device("cpu"), torch.float32,
                     log=lambda _: None)
    data = _file(tmp_path, [{"prompt": f"Say hello to Ann {i}."} for i in range(4)])
    fn = tmp_path / "rewards.py"
    fn.write_text("def one(completions, **kw):\n    return [1.0] * len(completions)\n")
    (row,), _ = one_grpo_step_on(bpe_checkpoint, tmp_path / "run", "prompts", data,
                                 evaluate=False, helpful_model=str(rm),
                                 reward_function=f"{fn}:one", format_weight=0)
    assert row["reward/custom"] == 1.0 and 0.0 < row["reward/helpful"] < 1.0
    assert row["reward"] == pytest.approx(row["reward/helpful"] + 1.0)


def test_grpo_on_reward_models_alone_raises_their_reward(tmp_path, monkeypatch):
    """recipes/rlhf-tiny.toml at micro size: reward models, then GRPO on the tiny world's
    general prompts scored by them alone; the helpful model's reward on the policy's samples
    rises (the mean of the last 10 of 60 steps against the first 10), and on fresh samples of
    the evaluation prompts (before the first step against after the last)."""
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    small = [arg for stage in ("helpful", "safety") for arg in (
        "--set", f"stages.{stage}.train_rows=1200", "--set", f"stages.{stage}.test_rows=200",
        "--set", f"stages.{stage}.lr=2e-3")]
    assert main(["run", str(REPO / "recipes" / "rlhf-tiny.toml"), "--out", str(out),
                 *MICRO_BASE, *small, "--set", "stages.rl.steps=60",
                 "--set", "stages.rl.rollout_batch_size=64",
                 "--set", "stages.rl.max_new_tokens=64", "--set", "stages.rl.lr=3e-3",
                 "--set", "stages.rl.eval.every=60", "--set", "run.progress=false"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["stage"] == "rl"]
    assert len(rows) == 60 and all(r["general_frac"] == 0.0 and r["accuracy"] is None
                                   for r in rows)
    helpful = [r["reward/helpful"] for r in rows if "reward/helpful" in r]
    first, last = statistics.mean(helpful[:10]), statistics.mean(helpful[-10:])
    assert last > first + 0.1, (first, last)
    # and on the evaluation prompts (the tiny world's 69 distinct general prompts, training
    # prompts too), 2 fresh responses each at the evaluation temperature
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert [(e["step"], e["n"], e["k"]) for e in evals] == [(0, 69, 2), (60, 69, 2)]
    assert evals[0]["benchmark"] == "tiny-general-prompts/main"
    before, after = (e["reward/helpful"] for e in evals)
    assert after > before + 0.1, (before, after)
    from r1kit.report import write_report

    assert "helpful reward " in write_report(out).read_text()
