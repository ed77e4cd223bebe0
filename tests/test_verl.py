"""What a user coming from verl brings: parquet rows in verl's layout (`prompt` as chat
messages, `reward_model.ground_truth`, `data_source`, `extra_info`), a reward function written
as verl's `compute_score`, and verl's setting names."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import readme_recipe, write_jsonl

from r1kit.errors import R1kitError


def verl_rows(n: int, source: str = "openai/gsm8k") -> list[dict]:
    return [{"data_source": source,
             "prompt": [{"role": "user", "content": f"What is {i} + 1? Answer after ####."}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
             "extra_info": {"split": "train", "index": i}} for i in range(n)]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_a_dotted_field_name_reads_inside_an_object(tmp_path):
    """answer_field = "reward_model.ground_truth" reads verl's reference (math and prompts
    tasks); the rows' own fields go to reward functions as they are (no dotted one); a field
    that is an object, or a missing field whose likely value is inside one, names the dotted
    name to give."""
    from r1kit.tasks.math import MathTask
    from r1kit.tasks.prompts import PromptTask

    data = write_parquet(tmp_path / "train.parquet", verl_rows(3))
    task = MathTask("verl", data, question_field="prompt",
                    answer_field="reward_model.ground_truth")
    examples = task.train_examples()
    assert [e.answer for e in examples] == ["1", "2", "3"]
    assert examples[1].question == [{"role": "user",
                                     "content": "What is 1 + 1? Answer after ####."}]
    fields = examples[1].meta["fields"]
    assert fields["reward_model"] == {"style": "rule", "ground_truth": "2"}
    assert fields["extra_info"] == {"split": "train", "index": 1}
    assert "reward_model.ground_truth" not in fields

    prompts = PromptTask(data, "prompt", None, 0, "reward_model.ground_truth")
    assert [e.answer for e in prompts.train_examples()] == ["1", "2", "3"]
    with pytest.raises(R1kitError, match="no field 'reward_model.groundtruth'") as info:
        PromptTask(data, "prompt", None, 0, "reward_model.groundtruth").train_examples()
    assert "'reward_model.ground_truth' looks like the answer" in info.value.hint
    # (rows without it beside rows with it, as general prompts beside reasoning ones: read)
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "Hi", "type": "helpful"},
                                                   {"prompt": "1+1?", "solution": "2"}])
    assert [e.meta.get("reference") for e in
            PromptTask(mixed, "prompt", None, 0, "solution").train_examples()] == [None, "2"]

    with pytest.raises(R1kitError, match="field 'reward_model' is an object") as info:
        MathTask("verl", data, question_field="prompt", answer_field="reward_model")
    assert 'answer_field = "reward_model.ground_truth"' in info.value.hint
    with_solution = [{**r, "extra_info": {**r["extra_info"], "answer": "so 1 #### 1"}}
                     for r in verl_rows(3)]  # (verl's gsm8k rows keep the solution there)
    data = write_parquet(tmp_path / "train.parquet", with_solution)
    with pytest.raises(R1kitError, match="no field 'answer'") as info:
        MathTask("verl", data, question_field="prompt")
    assert "'reward_model.ground_truth' looks like the answer" in info.value.hint
    with pytest.raises(R1kitError, match="no field 'reward_model.truth'"):
        MathTask("verl", data, question_field="prompt", answer_field="reward_model.truth")


SCORE = '''
calls = []

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    calls.append((data_source, solution_str, ground_truth, extra_info))
    found = solution_str.rsplit("####", 1)[-1].strip() if "####" in solution_str else None
    if found is None:
        return None
    return {"score": float(found == ground_truth), "acc": found == ground_truth,
            "pred": found}

def no_score(data_source, solution_str, ground_truth, extra_info=None):
    return {"acc": 1.0}

def three(data_source, solution_str, ground_truth):
    calls.append((data_source, solution_str, ground_truth))
    return 0.5

def wants_more(data_source, solution_str, ground_truth, extra_info, tokenizer):
    return 0.0

def raises(data_source, solution_str, ground_truth, extra_info=None):
    return int(solution_str)

def shape(data_source, solution_str, ground_truth, extra_info=None):
    return float(solution_str["content"] == ground_truth)

def numpy_values(data_source, solution_str, ground_truth, extra_info=None):
    import numpy as np
    seen.append(ground_truth)
    return {"score": np.float32(0.5), "acc": np.bool_(len(solution_str) == 1),
            "n": np.int64(len(solution_str)) if solution_str != "zz" else None,
            "tag": "x"}

seen = []
'''


def test_a_verl_compute_score_is_called_as_verl_calls_it(tmp_path):
    """Once per completion with data_source, the completion's text (after chat prompts too:
    no conversation, no notice about one), the reference as text and extra_info; a dict's
    score is the reward and its other entries are columns of the written completions (the
    numbers among them logged as metrics); None is no score; a dict without "score", a
    parameter verl does not give, and an error in the function are said."""
    from r1kit.rewards.custom import FunctionReward, VerlScore, load_function
    from r1kit.tasks.math import MathTask

    (tmp_path / "verl_reward.py").write_text(SCORE)
    data = write_parquet(tmp_path / "train.parquet", verl_rows(3))
    examples = MathTask("verl", data, question_field="prompt",
                        answer_field="reward_model.ground_truth").train_examples()
    fn = load_function(f"{tmp_path / 'verl_reward.py'}:compute_score")
    assert isinstance(fn, VerlScore)
    calls = fn.fn.__globals__["calls"]  # (the file's module: each load runs it anew)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scored = FunctionReward(fn).score(["so #### 1", "#### 9", "no answer"], examples)
    said = [str(w.message) for w in caught]
    assert not any("'role'" in m for m in said) and any("returned None" in m for m in said)
    assert calls == [("openai/gsm8k", "so #### 1", "1", {"split": "train", "index": 0}),
                     ("openai/gsm8k", "#### 9", "2", {"split": "train", "index": 1}),
                     ("openai/gsm8k", "no answer", "3", {"split": "train", "index": 2})]
    assert [s for s, _ in scored] == [1.0, 0.0, 0.0]
    assert [p["custom_none"] for _, p in scored] == [0.0, 0.0, 1.0]
    assert scored[0][1].extra == {"acc": True, "pred": "1"}
    assert scored[2][1].extra == {"acc": None, "pred": None}
    # (acc: each completion's own, where it gave one; pred is text: no metric)
    assert [p.get("metric/acc") for _, p in scored] == [1.0, 0.0, None]
    assert not any("metric/pred" in p for _, p in scored)

    three = load_function(f"{tmp_path / 'verl_reward.py'}:three")
    calls = three.fn.__globals__["calls"]
    rows = [examples[0].__class__(question="q", answer="7", meta={"fields": {}})]
    assert FunctionReward(three).score(["x"], rows)[0][0] == 0.5
    assert calls == [(None, "x", "7")]  # (a row without data_source: None)

    with pytest.raises(R1kitError, match="without 'score'"):
        FunctionReward(load_function(f"{tmp_path / 'verl_reward.py'}:no_score")).score(
            ["x"], examples[:1])
    with pytest.raises(R1kitError, match="parameter 'tokenizer' is not one of the keyword "
                                         "arguments a verl compute_score gets"):
        load_function(f"{tmp_path / 'verl_reward.py'}:wants_more")
    with pytest.raises(R1kitError, match="raised TypeError") as info:  # (it gets text: no
        FunctionReward(load_function(f"{tmp_path / 'verl_reward.py'}:shape")).score(  # word
            ["x"], examples[:1])  # on conversations)
    assert not info.value.hint

    # the reference as stored (a list, a number); numpy values as Python's; a column's
    # numbers (where given) logged as their mean, other columns only written
    stored = [{**verl_rows(1)[0], "reward_model": {"ground_truth": ["72", "72.0"]}},
              {**verl_rows(1)[0], "reward_model": {"ground_truth": 72}},
              {**verl_rows(1)[0], "reward_model": {"ground_truth": "72"}}]
    from r1kit.tasks.prompts import PromptTask

    rows = PromptTask(write_jsonl(tmp_path / "stored.jsonl", stored), "prompt", None, 0,
                      "reward_model.ground_truth").train_examples()  # (JSONL: mixed types)
    fn = load_function(f"{tmp_path / 'verl_reward.py'}:numpy_values")
    scored = FunctionReward(fn).score(["a", "bcd", "zz"], rows)
    assert fn.fn.__globals__["seen"] == [["72", "72.0"], 72, "72"]
    assert [s for s, _ in scored] == [0.5] * 3
    assert scored[0][1].extra == {"acc": True, "n": 1, "tag": "x"}
    assert scored[2][1].extra == {"acc": False, "n": None, "tag": "x"}
    assert [p.get("metric/acc") for _, p in scored] == [1.0, 0.0, 0.0]
    assert [p.get("metric/n") for _, p in scored] == [1.0, 3.0, None]  # (zz gave none)
    assert not any("metric/tag" in p for _, p in scored)
    # a step's metric: the mean over the completions that gave one, also when they are
    # scored in several calls (processes, sampling rounds), not a mean of each call's means
    from r1kit.stages.grpo import _component_means

    more = FunctionReward(fn).score(["zz", "abcdef"], rows[:2])
    assert _component_means(scored + more)["reward/metric/n"] == pytest.approx((1 + 3 + 6) / 3)

    # several functions: each its own metric names; a TRL function's log_metric of the same
    # name keeps its batch mean; a data field named row_metric is a field like any other
    def trl(completions, log_metric, **kwargs):
        log_metric("acc", 0.25)
        return [0.0] * len(completions)

    other = load_function(f"{tmp_path / 'verl_reward.py'}:numpy_values")
    scored = FunctionReward([fn, other, trl]).score(["a", "bcd", "zz"], rows)
    for key in ("metric/numpy_values_0/acc", "metric/numpy_values_1/acc"):  # (as custom/)
        assert [p.get(key) for _, p in scored] == [1.0, 0.0, 0.0]
    assert all(p["metric/acc"] == 0.25 for _, p in scored)
    field = [rows[0].__class__(question="q", answer="1", meta={"fields": {"row_metric": 3}})]
    assert FunctionReward(fn).score(["a"], field)[0][0] == 0.5

    line = SCORE.splitlines().index("    return int(solution_str)") + 1
    with pytest.raises(R1kitError, match=rf"raises raised ValueError.*verl_reward.py:{line}\)"):
        FunctionReward(load_function(f"{tmp_path / 'verl_reward.py'}:raises")).score(
            ["x"], examples[:1])


def test_verl_names_get_r1kits(tmp_path):
    """verl's dotted names on the command line and its keys in a stage's table are answered
    with r1kit's setting (never a near spelling with another meaning)."""
    from r1kit.config import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.grpo]\nkind = "grpo"\ntask = "arithmetic"\n')
    said = {}
    for override in ("actor_rollout_ref.actor.optim.lr=1e-6", "data.train_batch_size=8",
                     "actor_rollout_ref.rollout.n=5", "actor_rollout_ref.model.path='m'",
                     "custom_reward_function.path='r.py'", "algorithm.adv_estimator='grpo'",
                     "stages.grpo.ppo_mini_batch_size=4", "stages.grpo.use_kl_loss=true",
                     "stages.grpo.kl_loss_type='low_var_kl'"):
        with pytest.raises(R1kitError) as info:
            load_recipe(recipe, [override])
        said[override.split("=")[0]] = info.value.hint
    assert "r1kit's is stages.grpo.lr" in said["actor_rollout_ref.actor.optim.lr"]
    assert "stages.grpo.rollout_batch_size, which counts completions" in \
        said["data.train_batch_size"]
    assert "stages.grpo.group_size" in said["actor_rollout_ref.rollout.n"]
    assert "stages.grpo.model" in said["actor_rollout_ref.model.path"]
    assert "stages.grpo.reward_function" in said["custom_reward_function.path"]
    assert "advantages are GRPO's" in said["algorithm.adv_estimator"]
    assert "num_minibatches" in said["stages.grpo.ppo_mini_batch_size"]
    assert "micro_batch_size?" not in said["stages.grpo.ppo_mini_batch_size"]
    assert "'beta'" in said["stages.grpo.use_kl_loss"]
    assert "low_var_kl" in said["stages.grpo.kl_loss_type"]
    # the tables above a name change its meaning: never the policy's setting for these
    for override, said_instead in (
            ("algorithm.kl_ctrl.kl_coef=0.001", "no KL penalty in the reward"),
            ("critic.optim.lr=1e-5", "no critic"), ("critic.model.path='c'", "no critic"),
            ("reward_model.model.path='rm'", "helpful_model and safety_model"),
            ("actor_rollout_ref.rollout.val_kwargs.n=1", "stages.grpo.eval.k"),
            ("actor_rollout_ref.rollout.val_kwargs.temperature=0", "stages.grpo.eval.temp"),
            ("actor_rollout_ref.rollout.name='vllm'", "its own engine")):
        with pytest.raises(R1kitError) as info:
            load_recipe(recipe, [override])
        assert said_instead in info.value.hint, (override, info.value.hint)
        assert "stages.grpo.beta (" not in info.value.hint or "kl_ctrl" in override
    recipe.write_text('[stages.grpo]\nkind = "grpo"\ntask = "arithmetic"\n'
                      '[stages.grpo.actor_rollout_ref.actor]\nppo_epochs = 1\n')
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe)
    assert "actor_rollout_ref.actor.ppo_epochs is verl's name: r1kit's is " \
        "stages.grpo.ppo_epochs" in info.value.hint
    recipe.write_text('[data]\ntrain_batch_size = 8\n[stages.grpo]\nkind = "grpo"\n'
                      'task = "arithmetic"\n[stages.grpo.trainer]\nsave_freq = 10\n')
    with pytest.raises(R1kitError, match="unknown top-level table") as info:
        load_recipe(recipe)
    assert "stages.grpo.rollout_batch_size" in info.value.hint
    recipe.write_text('[stages.grpo]\nkind = "grpo"\ntask = "arithmetic"\n'
                      '[stages.grpo.trainer]\nsave_freq = 10\n')
    with pytest.raises(R1kitError) as info:
        load_recipe(recipe)
    assert "stages.grpo.save_every" in info.value.hint
    # in an sft stage: its own settings (an sft stage counts epochs, has no group_size)
    for table, says in (("[stages.s.trainer]\ntotal_epochs = 3", "stages.s.epochs"),
                        ("[stages.s.actor_rollout_ref.rollout]\nn = 3",
                         "rollout.n is verl's name (a stage's settings are the flat keys")):
        recipe.write_text(f'[stages.s]\nkind = "sft"\nmodel = "m"\ndata = "d.jsonl"\n{table}\n')
        with pytest.raises(R1kitError) as info:
            load_recipe(recipe)
        assert says in info.value.hint and "stages.s.group_size" not in info.value.hint


README_SCORE = '''
import re

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    found = re.findall(r"#### (\\-?[0-9\\.\\,]+)", solution_str)
    return {"score": float(bool(found) and found[-1] == ground_truth),
            "length": len(solution_str), "gt": ground_truth, "source": data_source}
'''


def test_the_readmes_verl_stage_runs(tmp_path, monkeypatch, bpe_checkpoint):
    """The README's stage for verl's parquet files and compute_score runs as written, with
    paths of this test's own, fewer steps and shorter completions: every written completion's
    reward is what the function gives it, and the held-out file is scored by it."""
    from r1kit.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "gsm8k").mkdir(parents=True)
    write_parquet(tmp_path / "data" / "gsm8k" / "train.parquet", verl_rows(32))
    write_parquet(tmp_path / "data" / "gsm8k" / "test.parquet", verl_rows(4))
    (tmp_path / "gsm8k_reward.py").write_text(README_SCORE)
    recipe = readme_recipe("Coming from verl", tmp_path / "verl.toml", bpe_checkpoint)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--set", "stages.grpo.steps=2",
                 "--set", "stages.grpo.max_new_tokens=8", "--set", "stages.grpo.eval.every=2",
                 "--set", "stages.grpo.save_every=0"]) == 0
    config = json.loads((out / "config.json").read_text())["stages"]["grpo"]
    assert (config["lr"], config["group_size"], config["rollout_batch_size"],
            config["num_minibatches"], config["answer_field"]) == \
        (1e-6, 5, 80, 2, "reward_model.ground_truth")
    written = out / "grpo" / "completions.jsonl"
    rows = [json.loads(x) for x in written.read_text().splitlines()]
    assert rows and all(r["extra"] == {"length": len(r["completion"]), "gt": r["answer"],
                                       "source": "openai/gsm8k"} for r in rows)
    scored = {}
    exec(README_SCORE, scored)  # (the function itself, on each written completion)
    assert all(r["custom"] == scored["compute_score"]("openai/gsm8k", r["completion"],
                                                      r["answer"])["score"] for r in rows)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if m.get("stage") == "grpo" and "reward" in m]
    assert len(steps) == 2 and all(m["reward/metric/length"] > 0 for m in steps)
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2] and all(e["n"] == 4 for e in evals)
    # the written completions scored again as the README says: the same references reach
    # the function (through the rows' fields), the same scores come back
    again = tmp_path / "again.jsonl"
    assert main(["score", "--reward", "gsm8k_reward.py:compute_score", "--set",
                 "answer_field=reward_model.ground_truth", "--input", str(written),
                 "--output", str(again)]) == 0
    rescored = [json.loads(x) for x in again.read_text().splitlines()]
    assert [r["reward"] for r in rescored] == [r["custom"] for r in rows]
    assert [r["extra"] for r in rescored] == [r["extra"] for r in rows]


def test_r1kit_score_reads_verls_rows(tmp_path, capsys):
    """r1kit score with answer_field = reward_model.ground_truth: a verl compute_score and
    the math reward get verl's reference."""
    from r1kit.cli import main

    rows = [{**r, "completion": f"<think>x</think> #### {r['reward_model']['ground_truth']}"
             f" \\boxed{{{r['reward_model']['ground_truth']}}}" if i % 2 == 0 else "#### 0"}
            for i, r in enumerate(verl_rows(4))]
    data = write_parquet(tmp_path / "rollouts.parquet", rows)
    (tmp_path / "gsm8k_reward.py").write_text(README_SCORE)
    out = tmp_path / "scored.jsonl"
    for reward in (f"{tmp_path / 'gsm8k_reward.py'}:compute_score", "math"):
        assert main(["score", "--reward", reward, "--set",
                     "answer_field=reward_model.ground_truth", "--input", str(data),
                     "--output", str(out)]) == 0, capsys.readouterr().err
        scored = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["reward"] for r in scored] == [1.0, 0.0, 1.0, 0.0], reward
    assert main(["score", "--reward", f"{tmp_path / 'gsm8k_reward.py'}:compute_score",
                 "--set", "answer_field=reward_model.truth", "--input", str(data)]) != 0
    assert "no field 'reward_model.truth'" in capsys.readouterr().err


def test_a_verl_function_without_a_reference_stops_the_run_before_any_stage(
        tmp_path, capsys, bpe_checkpoint):
    """task = "prompts" reads no reference where answer_field is left at "answer": a verl
    compute_score would get none, so the run stops and names verl's field."""
    from conftest import stops_before_any_stage

    data = write_parquet(tmp_path / "train.parquet", verl_rows(4))
    (tmp_path / "gsm8k_reward.py").write_text(README_SCORE)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[stages.grpo]\nkind = "grpo"\nmodel = "{bpe_checkpoint}"\n'
                      f'task = "prompts"\ntrain_file = "{data}"\nquestion_field = "prompt"\n'
                      f'template = "chat"\n'
                      f'reward_function = "{tmp_path / "gsm8k_reward.py"}:compute_score"\n')
    stops_before_any_stage(recipe, tmp_path, capsys,
                           ["answer_field", 'set answer_field = "reward_model.ground_truth"'])


def test_written_completions_keep_the_small_fields_of_their_rows():
    """completions.jsonl keeps a data row's fields of up to FIELD_CHARS characters as JSON:
    not whole traces, not bytes (images)."""
    from r1kit.stages.grpo import FIELD_CHARS, _logged_fields
    from r1kit.tasks.base import Example

    fields = {"solution": "72", "extra_info": {"index": 3},
              "generations": ["x" * FIELD_CHARS], "image": b"\x89PNG"}
    assert _logged_fields(Example(question="q", answer="72", meta={"fields": fields})) == {
        "fields": {"solution": "72", "extra_info": {"index": 3}}}
    assert _logged_fields(Example(question="q", answer="72")) == {}
