"""What a user coming from OpenRLHF brings: prompt files with `input` and `label` fields, a
reward function written as OpenRLHF's `reward_func(queries, prompts, labels)`, and OpenRLHF's
setting names (its older flat flags and its newer dotted ones)."""

from __future__ import annotations

import json

import pytest
from conftest import readme_recipe, write_jsonl

from r1kit.errors import R1kitError

FUNCS = '''
import torch

calls = []

def reward_func(queries, prompts, labels, **kwargs):
    calls.append((list(queries), list(prompts), list(labels)))
    rewards = torch.tensor([float(q[len(p):].strip().startswith(str(l)))
                            for q, p, l in zip(queries, prompts, labels)])
    return {"rewards": rewards, "scores": rewards,
            "extra_logs": {"accuracy": rewards.mean(), "length": torch.tensor(
                [float(len(q) - len(p)) for q, p in zip(queries, prompts)])}}

def plain(queries, prompts, labels):
    return torch.arange(len(queries)).float()

def as_list(queries, prompts, labels):
    return [0.5] * len(queries)

def tensors(queries, prompts, labels):
    return [torch.tensor(0.25) for q in queries]

def per_sample(queries, prompts, labels):
    return torch.tensor([1.0])

def queries_alone(queries, **kwargs):
    return [1.0] * len(kwargs["completions"])

def scores_differ(queries, prompts, labels):
    return {"rewards": [1.0] * len(queries), "scores": [0.0] * len(queries)}

def no_rewards(queries, prompts, labels):
    return {"scores": [1.0] * len(queries)}

def too_few(queries, prompts, labels):
    return torch.zeros(len(queries) + 1)

def two(queries, prompts):
    return [0.0] * len(queries)

def wants_more(queries, prompts, labels, tokenizer):
    return [0.0] * len(queries)

def raises(queries, prompts, labels):
    return [float(q) for q in queries]
'''


def test_an_openrlhf_reward_func_is_called_as_openrlhf_calls_it(tmp_path, bpe_checkpoint):
    """Positionally, with the queries (prompt and response decoded together from the token
    ids, special tokens kept), the prompts as the model read them and the labels as stored;
    its rewards as a tensor, a list or a dict's "rewards"; the dict's extra_logs are metrics
    (one number per completion: each completion's; a single number: the batch's) and its
    scores a metric where they differ from the rewards; what it gets wrong is said."""
    from r1kit.models import load_tokenizer
    from r1kit.rewards.custom import FunctionReward, OpenRLHFReward, load_function
    from r1kit.tasks.base import Example

    (tmp_path / "reward_func.py").write_text(FUNCS)
    fn = load_function(f"{tmp_path / 'reward_func.py'}:reward_func")
    assert isinstance(fn, OpenRLHFReward)
    tok = load_tokenizer(bpe_checkpoint)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}],
                                     tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    answers = ["4 it is", "5"]
    sampled = [tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
               for a in answers]
    examples = [Example(question=[{"role": "user", "content": "What is 2 + 2?"}], answer="4",
                        meta={"fields": {}, "reference": ref}) for ref in (4, [4, "four"])]
    reward = FunctionReward(fn, tokenizer=tok)
    reward.prompt_ids, reward.sampled_ids = [prompt_ids] * 2, sampled
    scored = reward.score(answers, examples)
    (queries, prompts, labels), = fn.fn.__globals__["calls"]
    assert prompts == [prompt] * 2 and prompt.endswith("<|im_start|>assistant\n")
    assert queries == [prompt + "4 it is<|im_end|>", prompt + "5<|im_end|>"]
    assert labels == [4, [4, "four"]]  # (as stored: a number, a list)
    assert [s for s, _ in scored] == [1.0, 0.0]
    assert [p["custom"] for _, p in scored] == [1.0, 0.0]
    assert all(p["metric/accuracy"] == 0.5 for _, p in scored)  # (the batch's mean)
    assert [p["metric/length"] for _, p in scored] == [len("4 it is<|im_end|>"),
                                                      len("5<|im_end|>")]
    assert [p["metric/scores"] for _, p in scored] == [1.0, 0.0]  # (logged where given)

    # without the token ids (r1kit score): the prompt as stored, then the completion
    plain = FunctionReward(load_function(f"{tmp_path / 'reward_func.py'}:reward_func"))
    rows = [Example(question="What is 2 + 2?", answer="4", meta={"reference": "4"})]
    assert plain.score([" 4"], rows)[0][0] == 1.0
    assert plain.fns[0].fn.__globals__["calls"] == [(["What is 2 + 2? 4"],
                                                     ["What is 2 + 2?"], ["4"])]

    for name, expected in (("plain", [0.0, 1.0]), ("as_list", [0.5, 0.5]),
                           ("tensors", [0.25, 0.25])):
        got = FunctionReward(load_function(f"{tmp_path / 'reward_func.py'}:{name}")).score(
            answers, examples)
        assert [s for s, _ in got] == expected
    got = FunctionReward(load_function(f"{tmp_path / 'reward_func.py'}:scores_differ")).score(
        answers, examples)
    assert [(s, p["metric/scores"]) for s, p in got] == [(1.0, 0.0), (1.0, 0.0)]

    for name, said in (("no_rewards", "without 'rewards'"),
                       ("too_few", "has 3 entries for 2 completions"),
                       ("per_sample", "once for a batch of completions")):
        with pytest.raises(R1kitError, match=said):
            FunctionReward(load_function(f"{tmp_path / 'reward_func.py'}:{name}")).score(
                answers, examples)
    with pytest.raises(R1kitError, match="called with three lists"):
        load_function(f"{tmp_path / 'reward_func.py'}:two")
    # (a function of queries and **kwargs alone is no OpenRLHF one: called as TRL calls it,
    # with the rows' queries field)
    alone = load_function(f"{tmp_path / 'reward_func.py'}:queries_alone")
    assert not isinstance(alone, OpenRLHFReward)
    rows = [Example(question="q", answer="4", meta={"fields": {"queries": "x"}})] * 2
    assert [s for s, _ in FunctionReward(alone).score(answers, rows)] == [1.0, 1.0]
    with pytest.raises(R1kitError, match="calls no reward server") as info:
        load_function("http://localhost:5000/get_reward")
    assert "wrap it in a function of your own" in info.value.hint
    with pytest.raises(R1kitError, match="is not 'module:function'") as info:
        load_function(str(tmp_path / "reward_func.py"))
    assert "reward_func.py:reward_func' (OpenRLHF's name)" in info.value.hint
    with pytest.raises(R1kitError, match="parameter 'tokenizer' is not one of the arguments"):
        load_function(f"{tmp_path / 'reward_func.py'}:wants_more")
    line = FUNCS.splitlines().index("    return [float(q) for q in queries]") + 1
    with pytest.raises(R1kitError, match=rf"raises raised ValueError.*reward_func.py:{line}"):
        FunctionReward(load_function(f"{tmp_path / 'reward_func.py'}:raises")).score(
            answers, examples)


def test_openrlhf_names_get_r1kits(tmp_path):
    """OpenRLHF's flags, flat (in a stage's table) and dotted (on the command line, as
    top-level tables), are answered with r1kit's setting or what r1kit does instead; those
    whose last part means something else alone are read by the whole name."""
    from r1kit.config import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.grpo]\nkind = "grpo"\ntask = "arithmetic"\n')
    said = {}
    for override in ("actor.adam.lr=1e-6", "rollout.n_samples_per_prompt=8",
                     "rollout.batch_size=128", "train.batch_size=1024",
                     "algo.kl.estimator='k3'", "algo.advantage.estimator='group_norm'",
                     "data.input_key='input'", "data.label_key='label'",
                     "reward.remote_url='r.py'", "ds.lora.alpha=32", "vllm.num_engines=2",
                     "eval.n_samples_per_prompt=4", "n_samples_per_prompt=8",
                     "stages.grpo.input_key='input'", "stages.grpo.init_kl_coef=0.001",
                     "stages.grpo.micro_train_batch_size=4",
                     "stages.grpo.advantage_estimator='dr_grpo'",
                     "stages.grpo.remote_rm_url='r.py'", "stages.grpo.num_episodes=1"):
        with pytest.raises(R1kitError) as info:
            load_recipe(recipe, [override])
        said[override.split("=")[0]] = info.value.hint
    assert "r1kit's is stages.grpo.lr" in said["actor.adam.lr"]
    assert "stages.grpo.group_size" in said["rollout.n_samples_per_prompt"]
    assert "stages.grpo.rollout_batch_size, which counts completions" in \
        said["rollout.batch_size"]
    assert "stages.grpo.num_minibatches" in said["train.batch_size"]
    assert "k3" in said["algo.kl.estimator"] and "advantage" not in said["algo.kl.estimator"]
    assert 'group_norm, advantage_scale = "std"' in said["algo.advantage.estimator"]
    assert "stages.grpo.question_field" in said["data.input_key"]
    assert "stages.grpo.answer_field" in said["data.label_key"]
    assert "stages.grpo.reward_function" in said["reward.remote_url"]
    assert "stages.grpo.lora_alpha" in said["ds.lora.alpha"]
    assert "its own engine" in said["vllm.num_engines"]
    assert "k in the stage's eval table" in said["eval.n_samples_per_prompt"]
    assert "--set stages.grpo.group_size=VALUE" in said["n_samples_per_prompt"]
    assert "'question_field'" in said["stages.grpo.input_key"]
    assert "'beta'" in said["stages.grpo.init_kl_coef"]
    assert "'micro_batch_size'" in said["stages.grpo.micro_train_batch_size"]
    assert 'dr_grpo is advantage_scale = "none"' in said["stages.grpo.advantage_estimator"]
    assert "queries, prompts and labels" in said["stages.grpo.remote_rm_url"]
    assert "'steps', which counts rollouts" in said["stages.grpo.num_episodes"]
    # verl's data table keeps its meaning beside OpenRLHF's
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe, ["data.train_batch_size=8"])
    assert "verl's name" in info.value.hint
    recipe.write_text('[actor.adam]\nlr = 1e-6\n[stages.grpo]\nkind = "grpo"\n'
                      'task = "arithmetic"\n')
    with pytest.raises(R1kitError, match="unknown top-level table") as info:
        load_recipe(recipe)
    assert "actor.adam.lr is OpenRLHF's name: r1kit's is stages.grpo.lr" in info.value.hint
    # every setting of a table given whole is answered; r1kit's own names in tables named
    # as OpenRLHF's (eval, reward: common words) keep r1kit's answers
    recipe.write_text('[stages.grpo]\nkind = "grpo"\ntask = "arithmetic"\n'
                      '[stages.grpo.train]\nmicro_batch_size = 2\nbatch_size = 128\n')
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe)
    assert "stages.grpo.micro_batch_size" in info.value.hint
    assert "stages.grpo.num_minibatches" in info.value.hint
    recipe.write_text('[stages.grpo]\nkind = "grpo"\ntask = "arithmetic"\n'
                      'data = "train.jsonl"\n')  # (a setting, not a table: r1kit's answer)
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe)
    assert "'data' is a setting of reward_model and sft stages" in info.value.hint
    # names OpenRLHF does not have, in tables named as its: never its answer (eval.top_p is
    # not the training top_p, reward.model not the policy)
    for override in ("eval.every=10", "eval.top_p=0.9", "reward.model='rm'", "train.steps=3"):
        with pytest.raises(R1kitError) as info:
            load_recipe(recipe, [override])
        assert info.value.hint == "give run.KEY=VALUE or stages.NAME.KEY=VALUE", override
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe, ["algo.advantage.no_std_norm=true"])
    assert "group_norm always divides by the group's std" in info.value.hint
    recipe.write_text('[stages.s]\nkind = "sft"\nmodel = "m"\ndata = "d.jsonl"\n'
                      '[stages.s.eval]\nevery = 10\n')
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe, ["group_size=8"])  # (an sft stage has none)
    assert info.value.hint == "give run.KEY=VALUE or stages.NAME.KEY=VALUE"
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe, ["epochs=3"])
    assert info.value.hint == "a stage's setting: --set stages.s.epochs=VALUE"
    with pytest.raises(R1kitError) as info:  # (the sft stage's own batch_size)
        load_recipe(recipe, ["train.batch_size=64"])
    assert "r1kit's is stages.s.batch_size (" in info.value.hint
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe)
    assert "'eval' is a setting of grpo stages, and this is an sft stage" in info.value.hint
    # its flat flags that r1kit has nothing for: never a near spelling of another meaning
    for name, says in (("ema_beta", "no EMA"), ("local_rank", "torchrun gives"),
                       ("ring_attn_size", "no sequence parallelism"),
                       ("deepcompile", "OpenRLHF's name; r1kit has no setting for it")):
        recipe.write_text(f'[stages.grpo]\nkind = "grpo"\n{name} = 1\n')
        with pytest.raises(R1kitError) as info:
            load_recipe(recipe)
        assert says in info.value.hint and "did you mean" not in info.value.hint, name
    # a grpo stage's notes are not said in other stage kinds
    recipe.write_text('[stages.p]\nkind = "pretrain"\nnum_episodes = 8\n')
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe)
    assert info.value.hint == "r1kit's name for 'num_episodes' is 'steps'"
    # train_sft's flags in an sft stage: its own settings
    recipe.write_text('[stages.s]\nkind = "sft"\nmodel = "m"\ndata = "d.jsonl"\n'
                      'input_key = "q"\noutput_key = "a"\ntrain_batch_size = 64\n'
                      'max_epochs = 3\n')
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe)
    for says in ("'input_key' is prompt_field", "'output_key' is response_field",
                 "'train_batch_size' is batch_size, the rows per optimizer step",
                 "'max_epochs' is epochs, the passes over the data"):
        assert says in info.value.hint, (says, info.value.hint)


README_FUNC = '''
import re

import torch


def reward_func(queries, prompts, labels, **kwargs):
    rewards, lengths = [], []
    for query, prompt, label in zip(queries, prompts, labels):
        response = query[len(prompt):].replace("<|im_end|>", "")
        found = re.findall(r"-?[0-9]+", response)
        lengths.append(len(response))
        rewards.append(float(bool(found) and found[-1] == str(label)) + len(response) / 100)
    rewards = torch.tensor(rewards)
    return {"rewards": rewards, "scores": rewards,
            "extra_logs": {"mean_reward": rewards.mean(), "length": torch.tensor(lengths),
                           "templated": torch.tensor([float(p.startswith("<|im_start|>user"))
                                                      for p in prompts]),
                           "aligned": torch.tensor([float(f"What is {l - 1} + 1?" in p)
                                                    for p, l in zip(prompts, labels)])}}
'''


def test_the_readmes_openrlhf_stage_runs(tmp_path, monkeypatch, bpe_checkpoint):
    """The README's stage for OpenRLHF's prompt files and reward_func runs as written, with
    paths of this test's own, fewer steps, rollouts and shorter completions: every written
    completion's reward is what the function gives its response, the held-out file is
    scored by it, and r1kit score gives the written completions the same rewards again."""
    from r1kit.cli import main

    monkeypatch.chdir(tmp_path)
    rows = [{"input": f"What is {i} + 1?", "label": i + 1} for i in range(16)]
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    write_jsonl(tmp_path / "data" / "test.jsonl", rows[:3])
    (tmp_path / "reward_func.py").write_text(README_FUNC)
    recipe = readme_recipe("Coming from OpenRLHF", tmp_path / "openrlhf.toml", bpe_checkpoint)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--set", "stages.grpo.steps=2",
                 "--set", "stages.grpo.rollout_batch_size=32", "--set",
                 "stages.grpo.max_new_tokens=8", "--set", "stages.grpo.eval.every=2",
                 "--set", "stages.grpo.warmup_steps=1"]) == 0
    config = json.loads((out / "config.json").read_text())["stages"]["grpo"]
    assert (config["lr"], config["group_size"], config["num_minibatches"],
            config["answer_field"], config["adam_betas"]) == (5e-7, 8, 1, "label", [0.9, 0.95])
    written = out / "grpo" / "completions.jsonl"
    done = [json.loads(x) for x in written.read_text().splitlines()]
    scope = {}
    exec(README_FUNC, scope)  # (the function itself, on each written completion's text)
    assert done and all(
        r["custom"] == pytest.approx(scope["reward_func"](
            [r["completion"]], [""], [r["fields"]["label"]])["rewards"].item())
        for r in done)
    assert len({r["custom"] for r in done}) > 1  # (the rewards differ: a check that can fail)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m.get("stage") == "grpo" and "reward" in m]
    assert len(steps) == 2
    assert all(m["reward/metric/mean_reward"] == pytest.approx(m["reward/custom"])
               and m["reward/metric/length"] > 0 for m in steps)
    # (the prompts the model read: through the chat template, decoded from its token ids,
    # each its own completions' and label's)
    assert all(m["reward/metric/templated"] == m["reward/metric/aligned"] == 1.0
               for m in steps)
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2] and all(e["n"] == 3 for e in evals)
    assert all(e["reward/metric/templated"] == e["reward/metric/aligned"] == 1.0 for e in evals)
    again = tmp_path / "again.jsonl"
    assert main(["score", "--reward", "reward_func.py:reward_func", "--set",
                 "answer_field=label", "--input", str(written), "--output", str(again)]) == 0
    assert [json.loads(x)["reward"] for x in again.read_text().splitlines()] == \
        pytest.approx([r["custom"] for r in done])


KWARGS_ONLY = '''
def verl_style(**kwargs):
    return float(kwargs["solution_str"] == kwargs["ground_truth"])

def openrlhf_style(**kwargs):
    return [0.0 for q in kwargs["queries"]]

def infinite(data_source, solution_str, ground_truth, extra_info=None):
    return float("inf")

def trl_style(completions, answer, **kwargs):
    return [{"a": 1}["labels"] for c in completions]

def verl_reads_extra(data_source, solution_str, ground_truth, extra_info=None):
    return float(extra_info["ground_truth"] == solution_str)
'''


def test_a_function_of_kwargs_alone_that_reads_foreign_arguments_is_told_how(tmp_path):
    """A function of **kwargs alone is called as TRL calls it: one that reads verl's or
    OpenRLHF's arguments from them fails with a KeyError, and the error says which parameter
    to name to have it called as its framework calls it; an infinite score names the
    function's file and line."""
    from r1kit.rewards.custom import FunctionReward, load_function
    from r1kit.tasks.base import Example

    (tmp_path / "kw.py").write_text(KWARGS_ONLY)
    rows = [Example(question="q", answer="1", meta={"fields": {}})]
    for name, says in (("verl_style", "name solution_str as a parameter"),
                       ("openrlhf_style", "queries as its first parameter")):
        with pytest.raises(R1kitError, match="raised KeyError") as info:
            FunctionReward(load_function(f"{tmp_path / 'kw.py'}:{name}")).score(["1"], rows)
        assert says in info.value.hint, info.value.hint
    # (a KeyError of a function that names its parameters is its own: no such hint)
    rows = [Example(question="q", answer="1", meta={"fields": {"extra_info": {}}})]
    for name in ("trl_style", "verl_reads_extra"):
        with pytest.raises(R1kitError, match="raised KeyError") as info:
            FunctionReward(load_function(f"{tmp_path / 'kw.py'}:{name}")).score(["1"], rows)
        assert "to have it called as" not in (info.value.hint or ""), name
    line = KWARGS_ONLY.splitlines().index(
        "def infinite(data_source, solution_str, ground_truth, extra_info=None):") + 1
    with pytest.raises(R1kitError, match=rf"returned inf \(.*kw.py:{line}\)"):
        FunctionReward(load_function(f"{tmp_path / 'kw.py'}:infinite")).score(["1"], rows)
