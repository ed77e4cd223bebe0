"""What a run logs besides its JSONL files: Weights & Biases (through a stand-in module, so that
the test needs neither the package nor the network)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types

from conftest import MICRO_BASE, REPO

from r1kit.cli import main

ARGS = ["run", str(REPO / "recipes" / "zero-tiny.toml"), *MICRO_BASE,
        "--set", "run.progress=false", "--set", "run.tensorboard=false",
        "--set", "stages.zero.steps=2", "--set", "stages.zero.rollout_batch_size=32",
        "--set", "stages.zero.eval.every=2", "--set", "stages.zero.eval.limit=8",
        "--set", "stages.zero.eval.k=1"]


def _fake_wandb(calls: list):
    """A stand-in for the wandb package that records what it is asked to do."""
    mod = types.ModuleType("wandb")
    mod.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # transformers looks for it

    class Run:
        def define_metric(self, name, step_metric=None):
            calls.append(("define_metric", name, step_metric))

        def log(self, data):
            calls.append(("log", dict(data)))

        def finish(self):
            calls.append(("finish",))

    def init(**kw):
        calls.append(("init", kw))
        return Run()

    mod.init = init
    return mod


def test_wandb_gets_every_logged_number_per_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("R1KIT_CACHE", str(tmp_path / "cache"))
    calls: list = []
    monkeypatch.setitem(sys.modules, "wandb", _fake_wandb(calls))
    out = tmp_path / "run"
    assert main([*ARGS, "--set", "run.wandb=r1-tiny", "--out", str(out)]) == 0
    (init,) = [c[1] for c in calls if c[0] == "init"]
    saved = json.loads((out / "wandb.json").read_text())
    assert init["project"] == "r1-tiny" and init["id"] == saved["id"] and init["resume"] == "allow"
    assert init["name"] == "run" and init["config"]["stages"]["zero"]["steps"] == 2
    assert ("define_metric", "zero/*", "zero/step") in calls
    logs = [c[1] for c in calls if c[0] == "log"]
    train = [d for d in logs if "zero/train/reward" in d]
    assert [d["zero/step"] for d in train] == [1, 2]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["stage"] == "zero"]
    for d, row in zip(train, rows):  # the numbers of metrics.jsonl
        assert d["zero/train/reward"] == row["reward"] and d["zero/train/kl"] == row["kl"]
    evals = [d for d in logs if any(k.startswith("zero/eval/") for k in d)]
    assert [d["zero/step"] for d in evals] == [0, 2]
    assert any(k.endswith("/pass@1") for k in evals[-1])
    assert calls[-1] == ("finish",)

    # the same command again (a finished run; e.g. after an interruption) continues that W&B
    # run; a change of the display settings (or of overlap_rewards and compile, which change
    # speed only) alone is not a different run
    calls.clear()
    assert main([*ARGS, "--set", "run.wandb=r1-tiny", "--set", "run.progress=true",
                 "--set", 'stages.zero.overlap_rewards="off"', "--set", "stages.zero.compile=false",
                 "--out", str(out)]) == 0
    (init,) = [c[1] for c in calls if c[0] == "init"]
    assert init["id"] == saved["id"]


def test_wandb_without_the_package_stops_before_any_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    out = tmp_path / "run"
    code = main([*ARGS, "--set", "run.wandb=r1-tiny", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "wandb package is not installed" in err and "pip install wandb" in err
    assert "Traceback" not in err and not (out / "base").exists()


def test_wandb_that_cannot_start_is_an_error_before_any_stage(tmp_path, monkeypatch, capsys):
    mod = _fake_wandb([])

    def init(**kw):
        raise RuntimeError("No API key configured. Use `wandb login` to log in.")

    mod.init = init
    monkeypatch.setitem(sys.modules, "wandb", mod)
    out = tmp_path / "run"
    code = main([*ARGS, "--set", "run.wandb=r1-tiny", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "W&B did not start a run" in err and "WANDB_MODE=offline" in err
    assert "Traceback" not in err and not (out / "base").exists()


def test_a_log_line_cut_short_is_dropped_and_a_broken_one_named(tmp_path):
    """A run killed mid-write (or out of disk) leaves a last line without its newline: the
    resumed run reads the log without it and appends whole lines after the whole ones (it
    failed with a JSONDecodeError traceback)."""
    import pytest

    from r1kit.errors import R1kitError
    from r1kit.runlog import RunLog, read_jsonl

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"stage": "rl", "step": 1}\n{"stage": "rl", "step": 2}\n'
                       '{"stage": "rl", "step": 3, "rew')
    assert read_jsonl(metrics) == [{"stage": "rl", "step": 1}, {"stage": "rl", "step": 2}]
    log = RunLog(tmp_path, tensorboard=False)
    log.drop("rl", after_step=2)  # a resume from step 2: nothing to drop but the cut line
    log.metrics({"stage": "rl", "step": 3})
    assert metrics.read_text() == ('{"stage": "rl", "step": 1}\n{"stage": "rl", "step": 2}\n'
                                   '{"stage": "rl", "step": 3}\n')
    metrics.write_text('{"stage": "rl", "step": 1}\n{"stage": "rl", "st\n{"stage": "rl"}\n')
    with pytest.raises(R1kitError, match="metrics.jsonl:2: a line is not JSON"):
        read_jsonl(metrics)
