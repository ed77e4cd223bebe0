"""Runs that are killed, verifiers that fail, losses that go NaN."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import MICRO_BASE, REPO, readme_recipe, rows_without_timings, stops_before_any_stage
from safetensors.torch import load_file

import r1kit.stages.grpo as grpo
from r1kit.cli import main
from r1kit.tasks.arithmetic import ArithmeticTask

RECIPE = str(REPO / "recipes" / "zero-tiny.toml")
SMALL = [*MICRO_BASE, "--set", "run.progress=false", "--set", "run.tensorboard=false",
         "--set", "stages.zero.rollout_batch_size=32", "--set", "stages.zero.eval.every=2",
         "--set", "stages.zero.eval.limit=16"]


def test_sigkill_at_a_random_step_then_resume_gives_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    args = [*SMALL, "--set", "stages.zero.steps=6", "--set", "stages.zero.save_every=1"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["run", RECIPE, "--out", str(whole), *args]) == 0  # also caches the base

    kill_after = random.randint(1, 4)  # the checkpoint after which the run is killed
    print(f"killing after checkpoint step-{kill_after}")
    proc = subprocess.Popen([sys.executable, "-m", "r1kit", "run", RECIPE, "--out", str(killed),
                             *args], env=os.environ.copy(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = killed / "zero" / "checkpoints" / f"step-{kill_after}"
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "zero" / "stage.json").exists(), "the run finished before the kill"

    assert main(["run", RECIPE, "--out", str(killed), *args]) == 0
    for name in ("metrics.jsonl", "eval.jsonl"):
        assert rows_without_timings(killed / name) == rows_without_timings(whole / name), name
    a = load_file(whole / "zero" / "model.safetensors")
    b = load_file(killed / "zero" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # SIGTERM (kill, timeout, preemption) stops as Ctrl-C does, and says how to go on
    termed = tmp_path / "termed"
    proc = subprocess.Popen([sys.executable, "-m", "r1kit", "run", RECIPE, "--out", str(termed),
                             *args], env=os.environ.copy(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    target = termed / "zero" / "checkpoints" / "step-1"
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert "r1kit: terminated; run the same command again" in err and "Traceback" not in err


def test_a_reward_that_keeps_failing_stops_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))

    def broken(self, answer, example):
        raise RuntimeError("verifier bug")

    monkeypatch.setattr(ArithmeticTask, "verify", broken)
    code = main(["run", RECIPE, "--out", str(tmp_path / "run"), *SMALL,
                 "--set", "stages.zero.steps=3", "--set", "stages.zero.eval.every=0",
                 "--set", "stages.zero.max_reward_failures=0.1"])
    err = capsys.readouterr().err
    assert code == 2 and "step 1: the reward failed for" in err and "Traceback" not in err


def test_nan_updates_are_skipped_then_stop_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    real = grpo.policy_loss

    def nan_loss(*args, **kw):
        loss, metrics = real(*args, **kw)
        return loss * float("nan"), metrics

    monkeypatch.setattr(grpo, "policy_loss", nan_loss)
    out = tmp_path / "run"
    code = main(["run", RECIPE, "--out", str(out), *SMALL, "--set", "stages.zero.steps=5",
                 "--set", "stages.zero.eval.every=0", "--set", "stages.zero.save_every=1",
                 "--set", "stages.zero.max_nonfinite_steps=3"])
    err = capsys.readouterr().err
    assert code == 2 and "3 steps in a row with a NaN" in err and "step-2" in err
    rows = rows_without_timings(out / "metrics.jsonl")
    assert [r["skipped_updates"] for r in rows] == [1.0, 1.0, 1.0]
    # no update was applied: the last good checkpoint still holds the base weights
    base = load_file(out / "base" / "model.safetensors")
    kept = load_file(out / "zero" / "checkpoints" / "step-2" / "model.safetensors")
    assert all(torch.equal(base[k], kept[k]) for k in base)


@pytest.mark.parametrize("writer", ["python", "torch", "safetensors"])
def test_out_of_disk_is_a_clear_error_and_keeps_earlier_checkpoints(tmp_path, monkeypatch,
                                                                    capsys, writer):
    """A full disk while step-2's checkpoint is written, in the words each writer uses for it
    (measured on a full tmpfs: Python's OSError; torch.save's RuntimeError, which names no
    errno, on a disk with no room left; safetensors' SafetensorError with the errno): a clear
    error, exit status 2, the half checkpoint's space freed, and the same command resumes."""
    import errno
    import shutil

    import transformers.modeling_utils as modeling
    from safetensors import SafetensorError

    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    real_save, real_usage, real_safe = torch.save, shutil.disk_usage, modeling.safe_save_file

    def full_disk(obj, f, *args, **kw):
        if "step-2" in str(f) and writer == "python":
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        if "step-2" in str(f) and writer == "torch":
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 "
                               "vs 534")
        return real_save(obj, f, *args, **kw)

    def safe_full(tensors, filename, *args, **kw):
        if "step-2" in str(filename) and writer == "safetensors":
            raise SafetensorError("Error while serializing: I/O error: No space left on device "
                                  "(os error 28)")
        return real_safe(tensors, filename, *args, **kw)

    def no_room(path):  # (torch's failure names no errno: the disk's room tells)
        usage = real_usage(path)
        return usage._replace(free=1 << 20) if "step-2" in str(path) else usage

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(modeling, "safe_save_file", safe_full)
    monkeypatch.setattr(shutil, "disk_usage", no_room)
    out = tmp_path / "run"
    code = main(["run", RECIPE, "--out", str(out), *SMALL, "--set", "stages.zero.steps=4",
                 "--set", "stages.zero.eval.every=0", "--set", "stages.zero.save_every=1"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert "step-2" in err  # (where)
    assert grpo.latest_checkpoint(out / "zero") == out / "zero" / "checkpoints" / "step-1"
    assert not list((out / "zero" / "checkpoints").glob(".*"))  # (the half one's space freed)
    (out / "zero" / "checkpoints" / ".step-9.tmp").mkdir()  # (as a killed write leaves it)
    monkeypatch.setattr(torch, "save", real_save)  # space freed: the same command resumes,
    monkeypatch.setattr(modeling, "safe_save_file", real_safe)
    # here with fewer rows sampled at once (what a stage out of memory sampling needs)
    capsys.readouterr()
    assert main(["run", RECIPE, "--out", str(out), *SMALL, "--set", "stages.zero.steps=4",
                 "--set", "stages.zero.eval.every=0", "--set", "stages.zero.save_every=1",
                 "--set", "stages.zero.generation_rows=8"]) == 0
    said = capsys.readouterr().out
    assert "resuming from" in said and "generation_rows 8 (was 1024)" in said
    assert len(rows_without_timings(out / "metrics.jsonl")) == 4
    assert not list((out / "zero" / "checkpoints").glob(".*"))


def test_an_overlong_jsonl_line_is_an_error_naming_the_line(tmp_path, monkeypatch):
    import pytest

    import r1kit.tasks.math as math_task
    from r1kit.errors import R1kitError

    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n{"question": "' + "x" * 500 + '"}\n')
    monkeypatch.setattr(math_task, "MAX_LINE_BYTES", 100)
    with pytest.raises(R1kitError, match="rows.jsonl:2: line of 5"):
        math_task.read_jsonl(path)


def test_bad_data_files_stop_the_run_before_any_stage(tmp_path, capsys):
    """Invalid JSON, invalid UTF-8, an empty file, a missing or mistyped field: the message names
    file, line and field; no run directory is created."""
    cases = [
        (b'{"prompt": "a", "response": "b"}\n{"prompt": "a", "resp', ["data.jsonl:2", "invalid JSON"]),
        (b'{"prompt": "a", "response": "b"}\n\xff\xfe\n', ["data.jsonl:2", "UTF-8"]),
        (b"", ["no rows", "empty"]),
        (b'{"prompt": "a", "answer": "b"}\n', ["data.jsonl:1", "'response'"]),
        (b'{"prompt": "a", "response": ["b"]}\n', ["data.jsonl:1", "'response'", "list"]),
        (b'{"prompt": "a", "response": 7}\n', ["data.jsonl:1", "'response'", "an integer, not text"]),
    ]
    for content, expected in cases:
        data = tmp_path / "data.jsonl"
        data.write_bytes(content)
        recipe = tmp_path / "r.toml"
        recipe.write_text('[stages.base]\nkind = "pretrain"\n\n[stages.sft]\nkind = "sft"\n'
                          f'model = "base"\ndata = "{data}"\n')
        stops_before_any_stage(recipe, tmp_path, capsys, expected)


def test_a_model_directory_that_is_not_a_causal_lm(tmp_path, capsys):
    model = tmp_path / "rm"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["LlamaForSequenceClassification"]}')
    assert main(["eval", "--model", str(model), "--bench", "tiny"]) == 2
    assert "not a causal language model" in capsys.readouterr().err


def test_bad_math_and_reward_model_data_stop_the_run_before_any_stage(tmp_path, capsys):
    """Rows without a reference answer, an empty or unreadable parquet file, a directory, and a
    reward-model label that is not true/false: each named before any stage runs."""
    good = tmp_path / "good.jsonl"
    good.write_text('{"q": "1+1", "a": 2}\n')
    math_cases = [
        ('{"q": "1+1", "a": 2}\n{"q": "2+2", "a": null}\n', ["rows.jsonl:2", "'a' is null"]),
        ('{"q": "1+1", "a": ""}\n', ["rows.jsonl:1", "no answer"]),
        ('{"q": "1+1", "a": NaN}\n', ["rows.jsonl:1", "no answer"]),
        (tmp_path, ["is a directory"]),
    ]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # the parquet cases need pyarrow (the test extra installs it)
        pa = None
    if pa is not None:
        empty = tmp_path / "empty.parquet"
        pq.write_table(pa.table({"q": pa.array([], pa.string()),
                                 "a": pa.array([], pa.string())}), empty)
        fake = tmp_path / "fake.parquet"
        fake.write_text('{"q": "1+1", "a": 2}\n')
        math_cases += [(empty, ["empty.parquet", "no rows"]),
                       (fake, ["fake.parquet", "not a readable parquet file"])]
    for content, expected in math_cases:
        if isinstance(content, str):
            path = tmp_path / "rows.jsonl"
            path.write_text(content)
        else:
            path = content
        recipe = tmp_path / "r.toml"
        recipe.write_text('[stages.base]\nkind = "pretrain"\n\n[stages.zero]\nkind = "grpo"\n'
                          f'model = "base"\ntask = "math"\ntrain_file = "{path}"\n'
                          f'test_file = "{good}"\nquestion_field = "q"\nanswer_field = "a"\n')
        stops_before_any_stage(recipe, tmp_path, capsys, expected)

    rm_cases = [
        ('{"prompt": "p", "response": "r", "safe": "false"}\n', ["rm.jsonl:1", "'safe'", "false"]),
        ('{"prompt": "p", "response": null, "safe": true}\n', ["rm.jsonl:1", "'response'", "null"]),
    ]
    for content, expected in rm_cases:
        path = tmp_path / "rm.jsonl"
        path.write_text(content)
        recipe = tmp_path / "r.toml"
        recipe.write_text('[stages.base]\nkind = "pretrain"\n\n[stages.safety]\n'
                          'kind = "reward_model"\nmodel = "base"\nobjective = "pointwise"\n'
                          f'data = "file"\ntrain_file = "{path}"\ntest_file = "{path}"\n')
        stops_before_any_stage(recipe, tmp_path, capsys, expected)


def test_reference_answers_read_as_the_numbers_they_are(tmp_path):
    """GSM8K's '#### 72', floats that str() would write with an exponent, a byte order mark."""
    from r1kit.tasks.math import MathTask, math_equal

    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"question": "a", "answer": "#### 72"}\n'
                     b'{"question": "b", "answer": 0.00005}\n'
                     b'{"question": "c", "answer": 1e16}\n')
    answers = [e.answer for e in MathTask("t", path).train_examples()]
    assert answers == ["72", "0.00005", "10000000000000000"]
    assert all(math_equal(a, r) for a, r in zip(["72", "0.00005", "10^16"], answers))


def test_gzip_compressed_jsonl_is_read(tmp_path):
    """HumanEval ships as HumanEval.jsonl.gz: read as the JSONL in it (it was "not valid
    UTF-8"); a damaged one is an error naming it."""
    import gzip

    from r1kit.errors import R1kitError
    from r1kit.tasks.math import read_rows

    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"question": "a", "answer": "1"}\n\n'
                                   b'{"question": "b", "answer": "2"}\n'))
    assert read_rows(path) == [(1, {"question": "a", "answer": "1"}),
                               (3, {"question": "b", "answer": "2"})]
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(R1kitError, match="rows.jsonl.gz:1: the gzip-compressed file is damaged"):
        read_rows(path)


def test_eval_command_input_errors_name_the_problem(tmp_path, capsys):
    """A run directory given as the model, an unknown device or dtype, CUDA on a machine
    without it: exit status 2 and a message, no traceback."""
    run = tmp_path / "run"
    (run / "zero").mkdir(parents=True)
    (run / "config.json").write_text('{"run": {}, "stages": {}}')
    (run / "zero" / "config.json").write_text('{"model_type": "llama"}')
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        '{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    bare = tmp_path / "bare"  # weights and config, no tokenizer
    bare.mkdir()
    (bare / "config.json").write_text((model / "config.json").read_text())
    remote = tmp_path / "remote"  # a checkpoint that brings its own model code
    remote.mkdir()
    (remote / "config.json").write_text('{"model_type": "mine", "auto_map": '
                                        '{"AutoModelForCausalLM": "modeling_mine.Mine"}}')
    (model / "tokenizer_config.json").write_text("{}")
    for d in (model, bare):  # weights present (what they hold is read only when loading)
        (d / "model.safetensors").write_bytes(b"")
    cases = [
        (["--model", str(bare)], ["no tokenizer files"]),
        (["--model", str(remote)], ["auto_map", "own model code"]),
        (["--model", str(run)], ["no model_type", str(run / "zero")]),
        (["--model", str(model), "--device", "gpu"], ["unknown device 'gpu'"]),
        (["--model", str(model), "--dtype", "fp16"], ["unknown dtype 'fp16'", "bfloat16"]),
        (["--model", str(model), "--out", str(tmp_path)], ["is a directory"]),
        (["--model", str(model), "--out", "/proc/r1kit-results.json"], ["cannot be written"]),
        (["--model", str(model), "--device", "mps"], ["runs on the CPU or CUDA"]),
    ]
    if not torch.cuda.is_available():
        cases.append((["--model", str(model), "--device", "cuda"], ["no CUDA GPU"]))
    for args, expected in cases:
        assert main(["eval", "--bench", "tiny", *args]) == 2
        err = capsys.readouterr().err
        assert all(e in err for e in expected), (expected, err)
        assert "Traceback" not in err


def test_a_custom_reward_that_returns_no_scores_is_an_error():
    from r1kit.errors import R1kitError
    from r1kit.rewards.custom import FunctionReward
    from r1kit.tasks.base import Example

    examples = [Example(question="q", answer="1")] * 2
    for returned, expected in [(None, "NoneType, not a list"), (["1.0", 0.0], "'1.0' among"),
                               ([1.0], "1 score for 2")]:
        reward = FunctionReward(lambda completions, prompts, answer, r=returned: r)
        with pytest.raises(R1kitError, match=expected):
            reward.score(["a", "b"], examples)


def test_a_custom_reward_of_none_for_a_completion_scores_it_0(recwarn):
    """As TRL's reward functions may: None for a completion it cannot score (open-r1's
    accuracy reward for an unparsable reference). It scores 0, one warning says so (pointing
    at the function), and reward/custom_none logs the share."""
    from r1kit.rewards.custom import FunctionReward
    from r1kit.stages.grpo import _component_means
    from r1kit.tasks.base import Example

    def accuracy(completions, prompts, answer):
        return [None if a == "?" else float(c == a) for c, a in zip(completions, answer)]

    reward = FunctionReward(accuracy)
    examples = [Example(question="q", answer=a) for a in ("1", "?", "2", "?")]
    scored = reward.score(["1", "1", "3", "2"], examples)
    assert [s for s, _ in scored] == [1.0, 0.0, 0.0, 0.0]
    means = _component_means(scored)
    assert means == {"reward/custom": 0.5, "reward/custom_none": 0.5}  # custom: scored ones
    told = [w for w in recwarn if "returned None (or NaN) for 2 of 4" in str(w.message)]
    assert len(told) == 1 and told[0].filename == __file__
    reward.score(["1"], examples[:1])
    assert _component_means(reward.score(["1", "2"], examples[:2]))["reward/custom_none"] == 0.5
    assert len([w for w in recwarn if "returned None" in str(w.message)]) == 1  # once
    # on every row, so that the mean over calls (ranks, sampling rounds) is the share
    assert reward.score(["1"], examples[:1]) == [(1.0, {"custom": 1.0, "custom_none": 0.0})]


def test_several_reward_functions_are_summed_with_their_weights(tmp_path, recwarn):
    """TRL's reward_funcs and reward_weights: the reward is the weighted sum; each function
    is logged as reward/custom/NAME; a None adds nothing (TRL's nansum); a recipe names a
    list of functions, and a weight count that does not match is an error."""
    from r1kit.config import check_inputs, load_recipe
    from r1kit.errors import R1kitError
    from r1kit.rewards.custom import FunctionReward
    from r1kit.stages.grpo import _component_means
    from r1kit.tasks.base import Example

    def accuracy(completions, answer, **kw):
        return [None if a == "?" else float(c == a) for c, a in zip(completions, answer)]

    def short(completions, **kw):
        return [1.0 if len(c) < 3 else 0.0 for c in completions]

    examples = [Example(question="q", answer=a) for a in ("1", "?", "2")]
    scored = FunctionReward([accuracy, short], [2.0, 0.5]).score(["1", "1", "333"], examples)
    assert [s for s, _ in scored] == [2.5, 0.5, 0.0]
    assert _component_means(scored) == pytest.approx({
        "reward/custom/accuracy": 0.5, "reward/custom/short": 2 / 3,
        "reward/custom_none": 1 / 3})
    told = "accuracy returned None (or NaN) for 1 of 3"
    assert len([w for w in recwarn if told in str(w.message)]) == 1

    fn = tmp_path / "rw.py"
    fn.write_text("def a(completions, **kw):\n    return [1.0] * len(completions)\n"
                  "def b(completions, **kw):\n    return [0.5] * len(completions)\n")
    recipe = tmp_path / "r.toml"
    body = ('[stages.base]\nkind = "pretrain"\nsteps = 1\n[stages.zero]\nkind = "grpo"\n'
            f'model = "base"\nreward_function = ["{fn}:a", "{fn}:b"]\n')
    recipe.write_text(body + "reward_weights = [1.0]\n")
    with pytest.raises(R1kitError, match="1 weights for 2 reward functions"):
        load_recipe(recipe)
    recipe.write_text(body + "reward_weights = [1.0, 2.0]\n")
    check_inputs(load_recipe(recipe))  # both functions found and their signatures checked


def test_math_task_files_and_names(tmp_path, capsys):
    """An eval stage needs the held-out file (not a training file); the task is named after the
    held-out file; task = 'gsm8k' on a file of another format says to use task = 'math'."""
    from r1kit.config import EvalStageConfig, GRPOConfig
    from r1kit.errors import R1kitError
    from r1kit.tasks import make_task

    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[stages.table]\nkind = "eval"\nmodels = ["{tmp_path}"]\ntask = "math"\n'
                      f'train_file = "{tmp_path / "train.jsonl"}"\n')
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    assert "stages.table.test_file" in capsys.readouterr().err

    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text('{"question": "1+1", "answer": "#### 2"}\n')
    task = make_task(EvalStageConfig(task="math", test_file=str(held_out)), 0)
    assert task.name == "held_out" and [e.answer for e in task.test_examples()] == ["2"]
    assert task.train_examples() == []
    train = tmp_path / "train.jsonl"
    train.write_text('{"question": "1+1", "answer": "2"}\n')
    assert make_task(GRPOConfig(task="math", train_file=str(train)), 0).name == "train"
    with pytest.raises(R1kitError, match="use task = 'math'"):
        make_task(GRPOConfig(task="gsm8k", train_file=str(train)), 0)


def test_a_missing_reward_function_stops_the_run_before_any_stage(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.base]\nkind = "pretrain"\n\n[stages.zero]\nkind = "grpo"\n'
                      f'model = "base"\nreward_function = "{tmp_path / "missing.py"}:score"\n')
    stops_before_any_stage(recipe, tmp_path, capsys, ["no file", "missing.py"])


def test_the_readmes_trl_defaults_stage_runs(tmp_path, monkeypatch, bpe_checkpoint):
    """The README's stage with TRL's defaults (chat prompts under `prompt`, open-r1's
    `solution`, open-r1-style reward functions) runs as written, with paths of this test's
    own, fewer steps and shorter completions."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "solution": str(i + 1)})
        + "\n" for i in range(16)))
    (tmp_path / "rewards.py").write_text(
        "import re\n"
        "def accuracy_reward(completions, solution, **kwargs):\n"
        "    texts = [c[0]['content'] for c in completions]\n"
        "    return [float(re.search(r'\\d+', t) is not None and\n"
        "                  re.search(r'\\d+', t).group() == s) for t, s in zip(texts, solution)]\n"
        "def format_reward(completions, **kwargs):\n"
        "    return [float('<think>' in c[0]['content']) for c in completions]\n"
        "def solution_value(completions, solution, **kwargs):\n"
        "    return [float(s) for s in solution]\n")
    recipe = readme_recipe("Coming from TRL's GRPOTrainer", tmp_path / "trl.toml",
                           bpe_checkpoint)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--set", "stages.grpo.steps=2",
                 "--set", "stages.grpo.max_new_tokens=8", "--set", "stages.grpo.eval.every=0",
                 "--set", "stages.grpo.save_every=0"]) == 0
    config = json.loads((out / "config.json").read_text())["stages"]["grpo"]
    assert (config["lr"], config["group_size"], config["clip_eps_low"], config["beta"]) == \
        (1e-6, 8, 0.2, 0.0)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == "grpo" and "reward" in r]
    assert len(steps) == 2 and all("reward/custom/accuracy_reward" in r for r in steps)
    # TRL's linear decay to 0 over the stage's 2 updates (transformers' schedule: 1, 1/2)
    assert [r["lr"] for r in steps] == pytest.approx([1e-6, 5e-7], rel=1e-9)
    # the written completions keep the rows' own `solution`: r1kit score gives it to the
    # function again, which scores them as the stage did
    written = out / "grpo" / "completions.jsonl"
    logged = [json.loads(x) for x in written.read_text().splitlines()]
    assert logged and all(r["fields"]["solution"] == r["answer"] for r in logged)
    rescored = tmp_path / "rescored.jsonl"
    assert main(["score", "--reward", "rewards.py:accuracy_reward", "--input", str(written),
                 "--output", str(rescored)]) == 0
    again = [json.loads(x) for x in rescored.read_text().splitlines()]
    assert [r["reward"] for r in again] == [r["custom/accuracy_reward"] for r in logged]
    assert main(["score", "--reward", "rewards.py:solution_value", "--input", str(written),
                 "--output", str(rescored)]) == 0  # (each row's own solution, 1 to 16)
    again = [json.loads(x) for x in rescored.read_text().splitlines()]
    assert [r["reward"] for r in again] == [float(r["answer"]) for r in logged]


def test_reward_function_mistakes_say_what_was_meant(tmp_path, monkeypatch):
    """A relative file is relative to the directory the command runs in (said, with it); a
    list without its quotes says how to quote one; a function written for conversations
    that gets text (or the other way round) hears which it got."""
    from r1kit.errors import R1kitError
    from r1kit.rewards.custom import FunctionReward, load_function
    from r1kit.tasks.base import Example

    monkeypatch.chdir(tmp_path)
    with pytest.raises(R1kitError, match="no file 'rw.py'") as info:
        load_function("rw.py:f")
    assert f"relative to the directory the command runs in, {tmp_path}" in info.value.hint
    with pytest.raises(R1kitError, match="no file") as info:
        load_function("[/x/rw.py:f]")  # (--set without quotes: bare text)
    assert "a list of quoted names" in info.value.hint

    def for_chat(completions, **kw):
        return [float(c[0]["content"] == "1") for c in completions]

    examples = [Example(question="q", answer="1")]
    with pytest.raises(R1kitError, match="raised TypeError") as info:
        FunctionReward(for_chat).score(["1"], examples)
    assert "after text prompts each completion is text" in info.value.hint
    chat = [Example(question=[{"role": "user", "content": "q"}], answer="1")]
    assert FunctionReward(for_chat).score(["1"], chat)[0][0] == 1.0

    def one_answer(completions, answer, **kw):  # answer taken for one string, not a list
        return [float(c.strip() == answer.strip()) for c in completions]

    with pytest.raises(R1kitError, match="'list' object has no attribute 'strip'") as info:
        FunctionReward(one_answer).score(["1"], examples)
    assert info.value.hint.startswith("every argument is a list with one entry per completion")

    def wants_a_field(completions, **kwargs):  # an error of its own: no word on shapes
        return [float(s == "1") for s in kwargs["solution"]]

    with pytest.raises(R1kitError, match="raised KeyError: 'solution'") as info:
        FunctionReward(wants_a_field).score(["1"], examples)
    assert not info.value.hint


def test_the_chat_completions_notice_is_for_functions_that_score_nothing(recwarn):
    """After chat prompts a function that scores some completion of the first batch (one
    written for conversations) hears nothing about their shape; one that scores every
    completion 0 (a function written for text, whose regex finds nothing in a list) hears it
    once, pointed at its own line."""
    from r1kit.rewards.custom import FunctionReward
    from r1kit.tasks.base import Example

    def for_chat(completions, **kw):
        return [float(c[0]["content"] == "1") for c in completions]

    def for_text(completions, **kw):
        return [float(isinstance(c, str) and c == "1") for c in completions]

    chat = [Example(question=[{"role": "user", "content": "q"}], answer="1")] * 2
    reward = FunctionReward(for_chat)
    for _ in range(2):
        reward.score(["1", "2"], chat)
    assert not [w for w in recwarn if "'role': 'assistant'" in str(w.message)]
    reward = FunctionReward([for_chat, for_text])
    for _ in range(2):
        reward.score(["1", "2"], chat)
    told = [w for w in recwarn if "'role': 'assistant'" in str(w.message)]
    assert len(told) == 1 and "for_text scored every completion of the first batch 0" in \
        str(told[0].message)
    assert told[0].filename == __file__
    FunctionReward(for_text).score(["1"], [Example(question="q", answer="1")])  # (text: none)
    assert len([w for w in recwarn if "'role': 'assistant'" in str(w.message)]) == 1


def test_chat_templates_without_a_system_turn_get_the_instruction_in_the_user_turn():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from r1kit.errors import R1kitError
    from r1kit.templates import R1_ZERO_SYSTEM, render_prompt

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0}, "a")))
    tok.chat_template = (  # Gemma's rule: no system role
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}<model>")
    text = render_prompt("What is 2+2?", "chat", tok, prefill="<think>\n")
    assert text == f"<user>{R1_ZERO_SYSTEM}\n\nWhat is 2+2?</user><model><think>\n"
    tok.chat_template = None
    with pytest.raises(R1kitError, match="needs a tokenizer with a chat template"):
        render_prompt("q", "chat", tok)


def test_bad_general_data_stops_the_run_before_any_stage(tmp_path, capsys):
    rows = tmp_path / "general.jsonl"
    rows.write_text('{"prompt": "hi", "type": "helpful"}\n{"prompt": "x", "type": "chat"}\n')
    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.base]\nkind = "pretrain"\n\n[stages.zero]\nkind = "grpo"\n'
                      f'model = "base"\ngeneral_share = 0.25\ngeneral_data = "{rows}"\n')
    stops_before_any_stage(recipe, tmp_path, capsys, ["general.jsonl:2", "'chat'"])


def test_general_rows_without_their_reward_model_stop_the_run_before_any_stage(tmp_path,
                                                                               capsys):
    rows = tmp_path / "general.jsonl"
    rows.write_text('{"prompt": "Say hello.", "type": "helpful"}\n'
                    '{"prompt": "How do I pick a lock?", "type": "safety"}\n')
    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.base]\nkind = "pretrain"\n\n[stages.zero]\nkind = "grpo"\n'
                      f'model = "base"\ngeneral_share = 0.25\ngeneral_data = "{rows}"\n')
    stops_before_any_stage(recipe, tmp_path, capsys,
                           ["stages.zero.helpful_model", "rows of type 'helpful'"])


@pytest.mark.parametrize("setting, expected", [
    # the default task reads no file: forgetting task = "math" must not train on the tiny world
    ('train_file = "{rows}"', ["stages.zero.train_file", 'set task = "math"']),
    ('test_file = "{rows}"', ["stages.zero.test_file", "does not read test_file"]),
    ('eval = {{ split = "test" }}', ["stages.zero.eval.split", "no held-out split 'test'",
                                     "level5"]),
])
def test_settings_the_task_would_ignore_stop_the_run_before_any_stage(tmp_path, capsys,
                                                                      setting, expected):
    rows = tmp_path / "train.jsonl"
    rows.write_text('{"question": "1 + 1", "answer": "2"}\n')
    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.base]\nkind = "pretrain"\n\n[stages.zero]\nkind = "grpo"\n'
                      f'model = "base"\n{setting.format(rows=rows)}\n')
    stops_before_any_stage(recipe, tmp_path, capsys, expected)


def test_a_reward_function_gets_the_data_fields_by_name_like_trl(tmp_path, capsys):
    """An open-r1-style reward function (`accuracy_reward(completions, solution, **kwargs)`)
    gets every field of the rows under its name; one that needs a name nothing provides is
    found before any stage; one that raises is an error naming it and the line."""
    from r1kit.errors import R1kitError
    from r1kit.rewards.custom import FunctionReward
    from r1kit.tasks.math import read_examples

    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "1+1", "answer": "2", "solution": "1+1 = 2", "source": "a"}\n'
                    '{"question": "2+2", "answer": "#### 4", "solution": "4"}\n')
    examples = read_examples(data, "question", "answer")
    seen = {}

    def accuracy_reward(completions, solution, **kwargs):
        seen.update(solution=solution, **kwargs)
        return [1.0 if s.endswith(c) else 0.0 for c, s in zip(completions, solution)]

    scores = FunctionReward(accuracy_reward).score(["2", "5"], examples)
    assert [s for s, _ in scores] == [1.0, 0.0]
    assert seen["solution"] == ["1+1 = 2", "4"] and seen["source"] == ["a", None]
    assert seen["answer"] == ["2", "4"] and seen["prompts"] == ["1+1", "2+2"]

    # the documented signature of before: the data's other fields are not forced on it
    def plain(completions, prompts, answer):
        return [float(c == a) for c, a in zip(completions, answer)]

    assert [s for s, _ in FunctionReward(plain).score(["2", "5"], examples)] == [1.0, 0.0]

    def broken(completions, **kwargs):
        return [1 / 0 for _ in completions]

    with pytest.raises(R1kitError, match=r"broken raised ZeroDivisionError.*test_reliability"):
        FunctionReward(broken).score(["2", "5"], examples)

    def exits(completions, **kwargs):  # ended the run silently, with its code (0 too)
        import sys

        sys.exit(0)

    with pytest.raises(R1kitError, match=r"exits raised SystemExit: 0 .*test_reliability"):
        FunctionReward(exits).score(["2", "5"], examples)

    # a row's own `answer` column where answer_field names another: `answer` is the
    # reference (r1kit's argument), so the column cannot reach the function, and is named
    from r1kit.config import GRPOConfig
    from r1kit.rewards.custom import shadowed_fields
    from r1kit.tasks.base import Example

    by_solution = read_examples(data, "question", "solution")
    assert shadowed_fields(by_solution, GRPOConfig(answer_field="solution")) == ["answer"]
    assert shadowed_fields(examples, GRPOConfig(answer_field="answer")) == []
    logs = [Example(question="q", answer="1", meta={"fields": {"log_metric": 1, "id": 2}})]
    assert shadowed_fields(logs, GRPOConfig()) == ["log_metric"]  # (r1kit gives its own)

    def bad_argument(completions, **kwargs):  # fails inside the standard library
        import re

        return [float(bool(re.match(7, c))) for c in completions]

    with pytest.raises(R1kitError) as info:
        FunctionReward(bad_argument).score(["2", "5"], examples)
    line = bad_argument.__code__.co_firstlineno + 3
    assert f"test_reliability.py:{line}, in __init__.py:" in str(info.value)

    rewards = tmp_path / "myreward.py"
    rewards.write_text("def needs_gold(completions, gold_answer, **kw):\n"
                       "    return [0.0] * len(completions)\n"
                       "def by_field(completions, solution, **kw):\n    return [0.0] * len(completions)\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.base]\nkind = "pretrain"\n\n[stages.rl]\nkind = "grpo"\n'
                      f'model = "base"\ntask = "math"\ntrain_file = "{data}"\n'
                      f'reward_function = "{rewards}:needs_gold"\n')
    stops_before_any_stage(recipe, tmp_path, capsys, ["parameter 'gold_answer'", "solution"])
    from r1kit.rewards.custom import BUILT_IN, check_signature, load_function

    check_signature(load_function(f"{rewards}:by_field"), [*BUILT_IN, "solution"], "x")
    with pytest.raises(R1kitError, match="parameter 'solution'"):
        check_signature(load_function(f"{rewards}:by_field"), list(BUILT_IN), "x")
    with pytest.raises(R1kitError, match="takes no prompts, answer"):  # it could not be called
        check_signature(lambda completions, *args: [], list(BUILT_IN), "x")


def test_a_reward_function_gets_completion_ids_and_trainer_state_like_trl(bpe_checkpoint):
    """open-r1's soft_overlong_punishment(completion_ids, **kwargs) runs unchanged: a grpo
    stage gives a function that names them, or takes **kwargs, each completion's sampled
    token ids (here, without a rollout, its text encoded by the model's tokenizer) and
    trainer_state (global_step, max_steps), as TRL does; the recipe check accepts them."""
    from r1kit.models import load_tokenizer
    from r1kit.rewards.custom import BUILT_IN, GRPO_EXTRAS, FunctionReward, check_signature
    from r1kit.tasks.base import Example

    tok = load_tokenizer(bpe_checkpoint)
    seen = {}

    def soft_overlong_punishment(completion_ids, **kwargs):
        seen.update(kwargs)
        return [-0.5 if len(ids) > 3 else 0.0 for ids in completion_ids]

    check_signature(soft_overlong_punishment, [*BUILT_IN, *GRPO_EXTRAS], "x")
    reward = FunctionReward(soft_overlong_punishment, tokenizer=tok)
    reward.trainer_state.global_step, reward.trainer_state.max_steps = 7, 10
    texts = ["72", "The answer is seventy two, as the sum says."]
    scores = reward.score(texts, [Example(question="q", answer="72")] * 2)
    assert len(tok("72", add_special_tokens=False)["input_ids"]) <= 3
    assert [s for s, _ in scores] == [0.0, -0.5]
    assert seen["trainer_state"].global_step == 7 and seen["answer"] == ["72", "72"]  # **kw
    reward.sampled_ids = [[5, 6, 7, 8], [9]]  # a grpo stage's: the rollout's own ids
    scores = reward.score(texts, [Example(question="q", answer="72")] * 2)
    assert [s for s, _ in scores] == [-0.5, 0.0]

    def counts_steps(completions, trainer_state, **kwargs):  # named, without completion_ids
        seen.update(kwargs)
        return [float(trainer_state.global_step)] * len(completions)

    steps = FunctionReward(counts_steps, tokenizer=tok)  # (see the run below)
    steps.trainer_state.global_step = 7
    seen.clear()
    assert [s for s, _ in steps.score(["a"], [Example(question="q", answer="1")])] == [7.0]
    assert seen["completion_ids"] == [tok("a", add_special_tokens=False)["input_ids"]]

    def only_named(completions, prompts, answer, trainer_state):  # no **kwargs: what it names
        return [float(trainer_state.global_step)] * len(completions)

    only = FunctionReward(only_named, tokenizer=tok)
    assert [s for s, _ in only.score(["a"], [Example(question="q", answer="1")])] == [0.0]


def test_async_reward_functions_nan_scores_and_log_metric_as_trl():
    """TRL 1.16 awaits async reward functions, reads NaN as None (no score), and gives
    log_metric(name, value) for numbers of the function's own: the same here (logged as
    reward/metric/NAME, the mean of a batch's values)."""
    import asyncio

    from r1kit.rewards.custom import FunctionReward, check_signature
    from r1kit.stages.grpo import _component_means
    from r1kit.tasks.base import Example

    async def judged(completions, **kwargs):  # e.g. a judge model behind an async client
        await asyncio.sleep(0)
        kwargs["log_metric"]("judge_calls", len(completions))
        return [1.0 if c == "yes" else float("nan") for c in completions]

    def lengths(completions, log_metric, **kwargs):
        log_metric("mean_chars", sum(map(len, completions)) / len(completions))
        log_metric("mean_chars", 0.0)  # twice in a batch: its mean
        return [0.5] * len(completions)

    check_signature(lengths, ["completions", "prompts", "answer"], "x")  # log_metric is given
    examples = [Example(question="q", answer="1")] * 3
    scored = FunctionReward([judged, lengths]).score(["yes", "no", "yes"], examples)
    assert [s for s, _ in scored] == [1.5, 0.5, 1.5]  # NaN: no score from judged
    assert [p["custom_none"] for _, p in scored] == [0.0, 1.0, 0.0]
    means = _component_means(scored)
    assert means["reward/metric/judge_calls"] == 3.0
    assert means["reward/metric/mean_chars"] == pytest.approx((8 / 3) / 2)
    with pytest.raises(Exception, match="returned inf"):  # infinity is still an error
        FunctionReward(lambda completions, **kw: [float("inf")] * len(completions)).score(
            ["a"], examples[:1])

    def logs_nan(completions, log_metric, **kw):
        log_metric("x", float("nan"))
        return [0.0] * len(completions)

    with pytest.raises(Exception, match=r"log_metric\('x', nan\): log finite numbers"):
        FunctionReward(logs_nan).score(["a"], examples[:1])
    # what an async function keeps between calls (a semaphore, an async HTTP client) stays
    # bound to one event loop, as under TRL: a loop per call failed from the second call on
    limit = asyncio.Semaphore(1)

    async def limited(completions, **kwargs):
        async def one(c):
            async with limit:
                await asyncio.sleep(0)
                return float(len(c))
        return await asyncio.gather(*(one(c) for c in completions))

    reward = FunctionReward(limited)
    for _ in range(2):
        assert [s for s, _ in reward.score(["ab", "c"], examples[:2])] == [2.0, 1.0]


def test_log_extra_adds_columns_to_the_written_completions(tmp_path, capsys):
    """TRL's log_extra(column, values), one value per completion: a column of the completions
    written (completions.jsonl's `extra`, r1kit score's output rows), not a metric."""
    from r1kit.rewards.custom import FunctionReward
    from r1kit.stages.grpo import _component_means
    from r1kit.tasks.base import Example

    def judged(completions, log_extra, **kw):
        log_extra("verdict", ["long" if len(c) > 1 else "short" for c in completions])
        return [1.0] * len(completions)

    def counted(completions, **kwargs):  # (**kwargs: given it too, as TRL)
        kwargs["log_extra"]("chars", (len(c) for c in completions))
        return [0.0] * len(completions)

    examples = [Example(question="q", answer="1")] * 2
    scored = FunctionReward([judged, counted]).score(["ab", "c"], examples)
    assert [p.extra for _, p in scored] == [{"verdict": "long", "chars": 2},
                                           {"verdict": "short", "chars": 1}]
    assert not any("verdict" in k or "chars" in k for k in _component_means(scored))

    def miscounted(completions, log_extra, **kw):
        log_extra("x", [1])
        return [0.0] * len(completions)

    with pytest.raises(Exception, match=r"log_extra\('x', ...\): 1 values for 2 completions"):
        FunctionReward(miscounted).score(["a", "b"], examples)
    rw = tmp_path / "rw.py"
    rw.write_text("def judged(completions, log_extra, **kw):\n"
                  "    log_extra('first', [c[:1] for c in completions])\n"
                  "    return [1.0] * len(completions)\n")
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"prompt": "q", "completion": "yes"}\n{"prompt": "q", "completion": "no"}\n')
    assert main(["score", "--reward", f"{rw}:judged", "--input", str(src),
                 "--output", str(dst)]) == 0
    rows = [json.loads(x) for x in dst.read_text().splitlines()]
    assert [r["extra"] for r in rows] == [{"first": "y"}, {"first": "n"}]
    assert all(r["reward"] == 1.0 for r in rows)


def test_a_grpo_stage_gives_its_sampled_ids_and_step(tmp_path, monkeypatch):
    """In a run, completion_ids are the rollout's sampled ids, stop token included (their
    mean length is the logged response_length), and trainer_state counts the steps."""
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    fn = tmp_path / "rw.py"
    fn.write_text("def by_length(completions, completion_ids, trainer_state, **kw):\n"
                  "    assert trainer_state.max_steps == 2\n"
                  "    kw['log_extra']('ids', [len(ids) for ids in completion_ids])\n"
                  "    return [len(ids) / 1000 + trainer_state.global_step for ids in "
                  "completion_ids]\n")
    out = tmp_path / "run"
    assert main(["run", RECIPE, "--out", str(out), *SMALL, "--set", "stages.zero.steps=2",
                 "--set", "stages.zero.eval.every=0",
                 "--set", f'stages.zero.reward_function="{fn}:by_length"']) == 0
    # log_extra's column: each written completion's own value (its token count)
    samples = [json.loads(x) for x in (out / "zero" / "completions.jsonl").read_text()
               .splitlines()]
    assert samples and all(r["extra"] == {"ids": r["tokens"]} for r in samples)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(x).get("stage") == "zero"]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        # (the reward is averaged in float32)
        assert (r["reward"] - (r["step"] - 1)) * 1000 == pytest.approx(r["response_length"],
                                                                       abs=0.01)


def test_a_run_directory_with_other_settings_names_them(tmp_path, monkeypatch, capsys):
    """The same run directory with changed settings is refused, naming the keys; --from STAGE
    reruns from STAGE with new settings for it and later stages, but not with changed settings
    of the stages it keeps (their results would not match what config.json records)."""
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    args = ["run", RECIPE, "--out", str(out), *SMALL, "--set", "stages.zero.steps=1",
            "--set", "stages.zero.eval.every=0"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--set", "stages.zero.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "other settings: stages.zero.lr" in err and "--from zero" in err
    # more steps for a finished stage: the message says how to train it further
    assert main([*args, "--set", "stages.zero.steps=3"]) == 2
    err = capsys.readouterr().err
    assert "other settings: stages.zero.steps" in err and "keep its steps at 1 and add a " \
        "stage after it with model = \"zero\"" in err
    assert main([*args, "--set", "stages.base.lr=0.5", "--from", "zero"]) == 2
    err = capsys.readouterr().err
    assert "stages.base.lr" in err and "stages before it are kept" in err
    assert main([*args, "--set", "run.seed=5", "--from", "zero"]) == 2  # base ran with seed 0
    assert "run.seed" in capsys.readouterr().err
    assert main([*args, "--set", "stages.zero.lr=0.5", "--from", "zero"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["stages"]["zero"]["lr"] == 0.5
    # a run directory written before some settings existed: they ran at their defaults
    for table in (saved["run"], saved["stages"]["zero"]):
        table.pop("wandb", None)
        table.pop("mask_truncated", None)
    (out / "config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert main([*args, "--set", "stages.zero.lr=0.5"]) == 0
    assert "[zero] already done" in capsys.readouterr().out
    # memory-only settings may differ (a smaller micro-batch after running out of memory),
    # what is logged, how often checkpoints are written and kept, the CPU threads, and
    # whether AdamW keeps float32 master copies of bf16 weights (a run written before them)
    assert main([*args, "--set", "stages.zero.lr=0.5", "--set", "stages.zero.micro_batch_size=3",
                 "--set", "stages.zero.activation_checkpointing=true",
                 "--set", "stages.zero.log_completions=7", "--set", "stages.zero.save_every=1",
                 "--set", "stages.zero.keep_checkpoints=5", "--set", "run.threads=1",
                 "--set", "run.master_weights=false",
                 "--set", "stages.zero.generation_rows=8"]) == 0
    assert "[zero] already done" in capsys.readouterr().out
    # a stage that stopped before any result (here: its stage.json gone, as after an error at
    # its start) may take new settings; the finished stage before it still may not
    (out / "zero" / "stage.json").unlink()
    assert main([*args, "--set", "stages.zero.lr=0.25", "--set", "stages.base.lr=0.5"]) == 2
    assert "other settings: stages.base.lr" in capsys.readouterr().err
    assert main([*args, "--set", "run.seed=3"]) == 2  # [run]: base holds results
    err = capsys.readouterr().err
    assert "run.seed" in err and "--from base: [run]'s settings apply to every stage" in err
    assert main([*args, "--set", "stages.zero.lr=0.25"]) == 0
    said = capsys.readouterr().out
    assert "taking the new settings (stages.zero.lr)" in said and "[zero] grpo stage" in said
    assert json.loads((out / "config.json").read_text())["stages"]["zero"]["lr"] == 0.25
    # a stage taken out of the recipe: the stages that remain stand, with a note; put back
    # with the same settings, its results stand too
    text = Path(RECIPE).read_text()
    base_only = tmp_path / "base-only.toml"
    base_only.write_text(text[:text.index("[stages.zero]")])
    assert main(["run", str(base_only), "--out", str(out), *MICRO_BASE,
                 "--set", "run.progress=false", "--set", "run.tensorboard=false"]) == 0
    said = capsys.readouterr().out
    assert "stage zero no longer in the recipe" in said and "[base] already done" in said
    assert "zero" in json.loads((out / "config.json").read_text())["dropped_stages"]
    assert main([*args, "--set", "stages.zero.lr=0.25"]) == 0
    said = capsys.readouterr().out
    assert "[zero] already done" in said and "no longer in the recipe" not in said
    assert "dropped_stages" not in json.loads((out / "config.json").read_text()) or not \
        json.loads((out / "config.json").read_text())["dropped_stages"]


def test_train_and_test_files_may_name_their_fields_differently(tmp_path):
    from r1kit.config import GRPOConfig
    from r1kit.errors import R1kitError
    from r1kit.tasks import make_task

    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text('{"problem": "1+1", "solution": "2"}\n')
    test.write_text('{"question": "2+2", "answer": "4"}\n')
    cfg = GRPOConfig(task="math", train_file=str(train), test_file=str(test),
                     question_field="problem", answer_field="solution")
    with pytest.raises(R1kitError, match="test.jsonl:1: no field 'problem'"):
        make_task(cfg, 0)
    cfg.test_question_field, cfg.test_answer_field = "question", "answer"
    task = make_task(cfg, 0)
    assert [(e.question, e.answer) for e in task.train_examples()] == [("1+1", "2")]
    assert [(e.question, e.answer) for e in task.test_examples()] == [("2+2", "4")]
