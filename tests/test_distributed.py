"""Several processes (torchrun, gloo on CPU) train exactly as one process on the same global batch.

One process runs a short GRPO stage; then `torchrun --nproc_per_node 2` runs the same recipe,
replicated ("ddp") and sharded ("fsdp", FSDP2). Each rank samples half of each step's
questions; the mini-batches are the one-process run's shuffled mini-batches (unequal shares
per rank, several micro-batches, token-mean over the global token count, a reference model):
the logged metrics and the final weights must match the one-process run's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch
from conftest import (
    MICRO_BASE,
    MICRO_RECIPE_HEAD,
    MICRO_SAMPLE_STAGE,
    REPO,
    TIMING,
    build_bpe_checkpoint,
    hub_cache_with,
)
from safetensors.torch import load_file

from r1kit.cli import main

SETTINGS = [str(REPO / "recipes" / "zero-tiny.toml"), *MICRO_BASE,
            "--set", "run.progress=false", "--set", "run.tensorboard=false",
            "--set", "stages.zero.steps=2", "--set", "stages.zero.group_size=4",
            "--set", "stages.zero.rollout_batch_size=16",  # 4 questions: 2 per rank
            "--set", "stages.zero.num_minibatches=2",  # shuffled split: unequal shares
            "--set", "stages.zero.micro_batch_size=3",
            "--set", "stages.zero.aggregation=token-mean",
            "--set", "stages.zero.lr=1e-3", "--set", "stages.zero.max_new_tokens=32",
            "--set", "stages.zero.rollout_seeding=question",
            "--set", "stages.zero.ref_refresh_every=1", "--set", "stages.zero.save_every=1",
            "--set", "stages.zero.eval.every=2", "--set", "stages.zero.eval.limit=4",
            "--set", "stages.zero.eval.k=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cache, *args):
    """`torchrun --nproc_per_node 2 -m r1kit ARGS` (gloo, one thread each), which must
    succeed."""
    env = {**os.environ, "R1KIT_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "r1kit",
           *args]
    res = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def _torchrun(out, cache, *extra):
    return _launch(cache, "run", *SETTINGS, *extra, "--out", str(out))


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in path.read_text().splitlines()]


def _one_process_run(tmp_path_factory, monkeypatch):
    """The shared tiny-world cache and the one-process run of SETTINGS (made once, shared by
    the tests that compare with it)."""
    cache = tmp_path_factory.getbasetemp() / "dist-cache"
    one = tmp_path_factory.getbasetemp() / "dist-one"
    monkeypatch.setenv("R1KIT_CACHE", str(cache))
    if not (one / "zero" / "stage.json").is_file():
        assert main(["run", *SETTINGS, "--set", "run.threads=1", "--out", str(one)]) == 0
    return cache, one


def _close(a, b, tol=1e-5):
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= tol * max(1.0, abs(a), abs(b))
    return a == b


def _check_same(one, two):
    # completions.jsonl: the first questions of the global batch (of every rank)
    for name in ("metrics.jsonl", "eval.jsonl", "zero/completions.jsonl"):
        a, b = _rows(one / name), _rows(two / name)
        assert len(a) == len(b) and all(r.keys() == s.keys() for r, s in zip(a, b)), name
        for r, s in zip(a, b):
            bad = {k: (r[k], s[k]) for k in r if not _close(r[k], s[k])}
            assert not bad, (name, r.get("step"), bad)
    wa = load_file(one / "zero" / "model.safetensors")
    wb = load_file(two / "zero" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=1e-4, msg=k)
    return wa


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_train_like_one(tmp_path_factory, monkeypatch, mode):
    cache, one = _one_process_run(tmp_path_factory, monkeypatch)
    two = tmp_path_factory.mktemp(f"two-{mode}")
    _torchrun(two, cache, "--set", f"stages.zero.distributed={mode}")
    weights = _check_same(one, two)
    # the checkpoint after step 1 (gathered from the shards under fsdp) is the same too
    ckpt_a = load_file(one / "zero" / "checkpoints" / "step-1" / "model.safetensors")
    ckpt_b = load_file(two / "zero" / "checkpoints" / "step-1" / "model.safetensors")
    assert ckpt_a.keys() == ckpt_b.keys()
    for k in ckpt_a:
        torch.testing.assert_close(ckpt_b[k], ckpt_a[k], atol=1e-5, rtol=1e-4, msg=k)
    # the check has teeth: training moved the weights far more than the tolerance
    base = load_file(one / "base" / "model.safetensors")
    assert max((weights[k] - base[k]).abs().max().item() for k in base) > 1e-3
    assert len(_rows(two / "metrics.jsonl")) == 2  # rank 0 alone logged


def test_a_one_process_checkpoint_resumes_sharded(tmp_path_factory, monkeypatch):
    """One process's checkpoint (the optimizer's state numbered, as optimizer.state_dict()
    writes it) resumes under torchrun with fsdp (which names it): the same end as the
    one-process run. It failed with KeyError 'state.0.step'."""
    cache, one = _one_process_run(tmp_path_factory, monkeypatch)
    two = tmp_path_factory.mktemp("resume-sharded")
    shutil.copytree(one, two, dirs_exist_ok=True)
    saved = torch.load(two / "zero/checkpoints/step-1/trainer_state.pt", weights_only=True)
    assert all(isinstance(k, int) for k in saved["optimizer"]["state"])
    assert saved["optimizer"]["state"]  # AdamW's moments after step 1: what must carry over
    (two / "zero" / "stage.json").unlink()
    (two / "zero" / "model.safetensors").unlink()
    res = _torchrun(two, cache, "--set", "stages.zero.distributed=fsdp",
                    "--set", "run.threads=1")  # (as the one-process run's)
    assert "resuming from" in res.stdout + res.stderr
    _check_same(one, two)


def test_a_sharded_runs_checkpoint_keeps_its_optimizer_in_shards(tmp_path_factory,
                                                                    monkeypatch, capsys):
    """Under fsdp each rank writes its own shard of the optimizer's state and of the reference
    model into the checkpoint (no rank gathers them whole): the checkpoint holds the shards
    and markers where the whole states were. Resumed under fsdp, and on one process, from the step-1 checkpoint, the run
    ends as the uninterrupted one-process run."""
    cache, one = _one_process_run(tmp_path_factory, monkeypatch)
    two = tmp_path_factory.mktemp("sharded-optimizer")
    _torchrun(two, cache, "--set", "stages.zero.distributed=fsdp", "--set", "run.threads=1")
    ckpt = two / "zero" / "checkpoints" / "step-1"
    saved = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    assert saved["optimizer"] == {"sharded": "optimizer"} and saved["ref"] == {"sharded": "ref"}
    for name in ("optimizer", "ref"):  # (the optimizer's state, the reference model's weights)
        assert (ckpt / name / ".metadata").is_file()
        assert len(list((ckpt / name).glob("*.distcp"))) == 2  # (one file per rank)
    assert not list((two / "zero" / "checkpoints").glob(".*.tmp"))  # (moved in)
    for resumed in ("fsdp", "ddp", "alone"):
        again = tmp_path_factory.mktemp(f"sharded-optimizer-{resumed}")
        shutil.copytree(two, again, dirs_exist_ok=True)
        (again / "zero" / "stage.json").unlink()
        (again / "zero" / "model.safetensors").unlink()
        if resumed != "alone":
            res = _torchrun(again, cache, "--set", f"stages.zero.distributed={resumed}",
                            "--set", "run.threads=1")
            said = res.stdout + res.stderr
        else:
            capsys.readouterr()
            assert main(["run", *SETTINGS, "--set", "run.threads=1", "--out", str(again)]) == 0
            said = capsys.readouterr().out
        assert "resuming from" in said and "checkpoints/step-1" in said, resumed
        _check_same(one, again)


def test_an_optimizers_shards_that_do_not_fit_are_said(tmp_path, monkeypatch):
    """What torch.distributed.checkpoint raises (a CheckpointException, no Exception) comes
    out as its cause: a full disk as the OSError it is (which the command line says as one),
    another layout of parameter groups as an R1kitError. An option this torch's AdamW has and
    the checkpoint lacks does not stop the load (as the optimizer's own load_state_dict)."""
    import errno
    import warnings

    from torch.distributed.checkpoint import FileSystemWriter

    from r1kit import distributed
    from r1kit.errors import R1kitError

    def build(groups=1):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        params = ([{"params": list(m.parameters())} for m in model] if groups == 2 else
                  model.parameters())
        return model, torch.optim.AdamW(params, lr=1e-2)

    model, opt = build()
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    with warnings.catch_warnings():  # (one process: torch says it assumes one)
        warnings.simplefilter("ignore")
        distributed.save_sharded_optimizer(model, opt, tmp_path / "shards")
    newer, newer_opt = build()
    newer_opt.param_groups[0]["an_option_of_a_newer_torch"] = True
    distributed.load_sharded_optimizer(newer, newer_opt, tmp_path / "shards")
    for p, q in zip(model.parameters(), newer.parameters()):
        assert all(torch.equal(opt.state[p][k], newer_opt.state[q][k]) for k in opt.state[p])
    with pytest.raises(R1kitError, match="another number of parameter groups"):
        distributed.load_sharded_optimizer(*build(groups=2), tmp_path / "shards")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileSystemWriter, "write_data", full)
    with pytest.raises(OSError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        distributed.save_sharded_optimizer(model, opt, tmp_path / "full")
    assert info.value.errno == errno.ENOSPC


def test_sharded_bf16_weights_keep_their_float32_master_copies(tmp_path):
    """FSDP2 with bf16 weights: AdamW's float32 master copies (r1kit.optim) are sharded like
    the weights, saved whole and loaded back into a new sharded optimizer, which goes on as
    the uninterrupted one (tests/fsdp_master_weights.py, 2 gloo processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(REPO / "tests" / "fsdp_master_weights.py"), str(tmp_path / "optimizer.pt")]
    res = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert "fsdp master weights: ok" in res.stdout


def test_a_torchrun_checkpoint_resumes_on_one_process_with_its_seeding(tmp_path_factory,
                                                                        monkeypatch):
    """A recipe with the default rollout_seeding = "step" samples per question under torchrun
    (always); resumed in one process from the step-1 checkpoint, it keeps seeding per
    question, so it ends as the uninterrupted two-process run. It switched to step seeding and
    drew other samples, silently."""
    cache = tmp_path_factory.getbasetemp() / "dist-cache"
    monkeypatch.setenv("R1KIT_CACHE", str(cache))
    at = SETTINGS.index("stages.zero.rollout_seeding=question")
    plain = SETTINGS[:at - 1] + SETTINGS[at + 1:]
    monkeypatch.setattr(sys.modules[__name__], "SETTINGS", plain)
    two = tmp_path_factory.mktemp("two-step-seeding")
    _torchrun(two, cache, "--set", "run.threads=1")
    one = tmp_path_factory.mktemp("resumed-alone")
    shutil.copytree(two, one, dirs_exist_ok=True)
    saved = torch.load(one / "zero/checkpoints/step-1/trainer_state.pt", weights_only=True)
    assert saved["question_seeds"] is True
    (one / "zero" / "stage.json").unlink()
    (one / "zero" / "model.safetensors").unlink()
    assert main(["run", *plain, "--set", "run.threads=1", "--out", str(one)]) == 0
    _check_same(two, one)


def test_lora_on_sharded_weights_trains_like_one_process(tmp_path_factory, monkeypatch):
    """LoRA under fsdp: the frozen weights sharded, only the adapters gathered for the
    checkpoints, the adapters merged from the gathered shards at the end. The same metrics,
    checkpointed adapters and merged weights as one process with LoRA; and a sharded run
    resumes from its adapter checkpoint to the same result."""
    cache = tmp_path_factory.getbasetemp() / "dist-cache"
    monkeypatch.setenv("R1KIT_CACHE", str(cache))
    lora = ["--set", "stages.zero.lora_rank=4", "--set", "stages.zero.lora_alpha=8",
            "--set", "stages.zero.lr=1e-2"]
    one = tmp_path_factory.mktemp("lora-one")
    assert main(["run", *SETTINGS, *lora, "--set", "run.threads=1", "--out", str(one)]) == 0
    two = tmp_path_factory.mktemp("lora-two")
    _torchrun(two, cache, *lora, "--set", "stages.zero.distributed=fsdp")
    weights = _check_same(one, two)
    for ckpt in ("zero/checkpoints/step-1/adapter_model.safetensors",
                 "zero/adapter/adapter_model.safetensors"):  # and the final adapters
        ad_a, ad_b = load_file(one / ckpt), load_file(two / ckpt)
        assert ad_a.keys() == ad_b.keys() and any("lora_B" in k for k in ad_a)
        for k in ad_a:
            torch.testing.assert_close(ad_b[k], ad_a[k], atol=1e-5, rtol=1e-4, msg=k)
        # the adapters' config names the model's own class, not FSDP2's wrapper (peft's
        # loaders refuse to import torch's module)
        configs = [json.loads((run / ckpt).with_name("adapter_config.json").read_text())
                   for run in (one, two)]
        assert "fsdp" not in json.dumps(configs[1].get("auto_mapping") or {}).lower()
        for c in configs:  # (set-like and run-specific entries)
            c["target_modules"] = sorted(c["target_modules"])
            c.pop("base_model_name_or_path")
        assert configs[0] == configs[1]
    base = load_file(one / "base" / "model.safetensors")
    moved = [k for k in base if (weights[k] - base[k]).abs().max().item() > 1e-4]
    assert moved and all(k.endswith("proj.weight") for k in moved)  # the adapted layers only
    # resume the sharded run from its checkpoint after step 1: the same end
    (two / "zero" / "stage.json").unlink()
    (two / "zero" / "model.safetensors").unlink()
    res = _torchrun(two, cache, *lora, "--set", "stages.zero.distributed=fsdp")
    assert "resuming from" in res.stdout + res.stderr
    _check_same(one, two)


def test_batch_scaled_advantages_use_every_ranks_rewards(tmp_path_factory, monkeypatch):
    """advantage_scale = "batch" divides by the std of the whole step's rewards: under
    torchrun each process has half of them, and the std is still the whole batch's (each
    rank's own would give other advantages, so other metrics and weights)."""
    cache = tmp_path_factory.getbasetemp() / "dist-cache"
    monkeypatch.setenv("R1KIT_CACHE", str(cache))
    scale = ["--set", "stages.zero.advantage_scale=batch"]
    one = tmp_path_factory.mktemp("one-batch-std")
    assert main(["run", *SETTINGS, *scale, "--set", "run.threads=1", "--out", str(one)]) == 0
    two = tmp_path_factory.mktemp("two-batch-std")
    _torchrun(two, cache, *scale)
    _check_same(one, two)


def test_dynamic_sampling_under_two_processes(tmp_path_factory):
    """Each process fills its own share of the groups with varied rewards; the processes take
    the same number of rounds (their collectives stay in step) and train together."""
    cache = tmp_path_factory.getbasetemp() / "dist-cache"
    two = tmp_path_factory.mktemp("two-dynamic")
    _torchrun(two, cache, "--set", "stages.zero.dynamic_sampling=true",
              "--set", "stages.zero.max_sampling_rounds=3")
    rows = [r for r in _rows(two / "metrics.jsonl") if r["stage"] == "zero"]
    assert len(rows) == 2 and all(1 <= r["sampling_rounds"] <= 3 for r in rows)
    assert any(r["sampling_rounds"] > 1 for r in rows)
    for r in rows:
        assert r["varied_frac"] == 1.0 or r["sampling_rounds"] == 3


SFT_RECIPE = """
[run]
seed = 0
progress = false
tensorboard = false

[stages.base]
kind = "pretrain"

[stages.sft]
kind = "sft"
model = "base"
data = "{data}"
template = "none"
epochs = 2
batch_size = 5  # rows per step: 3 on rank 0, 2 on rank 1 (unequal shares)
micro_batch_size = 2
lr = 1e-3
save_every = 2
"""


@pytest.mark.parametrize("mode", ["ddp", "fsdp", "fsdp-lora"])
def test_two_processes_fine_tune_like_one(tmp_path_factory, monkeypatch, mode):
    """An SFT stage under torchrun: each rank takes its share of every batch, gradients are
    summed; the logged losses, the checkpoint and the final weights are the one-process run's.
    With LoRA under fsdp: the adapters gathered from the shards for the checkpoints and the
    final adapter/, merged from them for the final model."""
    base = tmp_path_factory.getbasetemp()
    cache = base / "dist-cache"
    monkeypatch.setenv("R1KIT_CACHE", str(cache))
    data = base / "sft-dist.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i} + {i % 7} =",
                                        "response": f" {i + i % 7}. Done."}) + "\n"
                            for i in range(15)))
    recipe = base / "sft-dist.toml"
    recipe.write_text(SFT_RECIPE.format(data=data))
    lora = mode.endswith("lora")
    args = [str(recipe), *MICRO_BASE, *(["--set", "stages.sft.lora_rank=4", "--set",
                                         "stages.sft.lr=1e-2"] if lora else [])]
    one = base / ("sft-one-lora" if lora else "sft-one")
    if not (one / "sft" / "stage.json").is_file():
        assert main(["run", *args, "--set", "run.threads=1", "--out", str(one)]) == 0
    two = tmp_path_factory.mktemp(f"sft-two-{mode}")
    env = {**os.environ, "R1KIT_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "r1kit", "run", *args, "--set", f"stages.sft.distributed={mode[:4]}",
           "--out", str(two)]
    res = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    a, b = _rows(one / "metrics.jsonl"), _rows(two / "metrics.jsonl")
    assert len(a) == len(b) == 6  # ceil(2 * 15 / 5) steps, logged by rank 0 alone
    for r, s in zip(a, b):
        assert r.keys() == s.keys()
        bad = {k: (r[k], s[k]) for k in r if not _close(r[k], s[k])}
        assert not bad, (r["step"], bad)
    saved = ("sft/checkpoints/step-4/adapter_model.safetensors",
             "sft/adapter/adapter_model.safetensors") if lora else (
        "sft/checkpoints/step-4/model.safetensors",)
    for where in ("sft/model.safetensors", *saved):
        wa, wb = load_file(one / where), load_file(two / where)
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=1e-4, msg=(where, k))
    start = load_file(one / "base" / "model.safetensors")
    final = load_file(one / "sft" / "model.safetensors")
    assert max((final[k] - start[k]).abs().max().item() for k in start) > 1e-3
    if lora:  # the adapted layers alone moved
        moved = [k for k in start if not torch.equal(final[k], start[k])]
        assert moved and all(k.endswith("proj.weight") for k in moved)
    if mode == "fsdp":  # each rank's shard of the optimizer's state: resumed to the same end
        ckpt = two / "sft" / "checkpoints" / "step-4"
        assert torch.load(ckpt / "trainer_state.pt", weights_only=True)["optimizer"] == {
            "sharded": "optimizer"}
        again = tmp_path_factory.mktemp("sft-two-fsdp-resumed")
        shutil.copytree(two, again, dirs_exist_ok=True)
        (again / "sft" / "stage.json").unlink()
        (again / "sft" / "model.safetensors").unlink()
        res = subprocess.run([*cmd[:-1], str(again)], check=False, env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
        assert "resuming from" in res.stdout + res.stderr
        wa = load_file(one / "sft" / "model.safetensors")
        wb = load_file(again / "sft" / "model.safetensors")
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=1e-4, msg=k)


def test_a_sharded_runs_state_loads_into_one_process():
    """A sharded run's checkpoint keeps one name of each tied tensor (full_state keeps the
    names the model registers: not lm_head.weight when it is the embedding); one process
    resuming from it loads it whole (it failed on the missing name)."""
    from conftest import tiny_llama

    from r1kit.distributed import load_full_state

    saved = tiny_llama(seed=1)
    saved.config.tie_word_embeddings = True
    saved.tie_weights()
    assert saved.lm_head.weight is saved.model.embed_tokens.weight
    registered = {n for n, _ in saved.named_parameters()} | {n for n, _ in saved.named_buffers()}
    state = {k: v for k, v in saved.state_dict().items() if k in registered}
    assert "lm_head.weight" not in state  # as full_state writes it for a sharded model
    model = tiny_llama(seed=2)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    load_full_state(model, state)
    for k, v in saved.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(RuntimeError, match="Missing key"):  # a name truly missing still fails
        load_full_state(tiny_llama(seed=2), {k: v for k, v in state.items()
                                             if k != "model.norm.weight"})


def test_ranks_that_cannot_see_the_run_directory_are_named(tmp_path, monkeypatch):
    """Nodes without a shared file system: rank 0's token file is not seen by rank 1, and the
    run stops before any work, on every rank, naming it (two-process runs above pass the
    check for real)."""
    from r1kit import distributed, pipeline
    from r1kit.errors import R1kitError

    monkeypatch.setattr(distributed, "_world", distributed.World(rank=0, world_size=2))
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: obj)
    monkeypatch.setattr(distributed, "wait_for_main", lambda: None)
    seen = []
    monkeypatch.setattr(distributed, "gather_lists", lambda items: seen.extend(items)
                        or [*items, False])
    with pytest.raises(R1kitError, match="rank 1 cannot see the run directory") as err:
        pipeline._check_shared(tmp_path)
    assert seen == [True] and "shares" in err.value.hint
    assert not list(tmp_path.iterdir())  # rank 0 removed its token file


def test_nodes_started_with_other_settings_stop_before_any_stage(tmp_path):
    """Two nodes (one process each) whose commands disagree on a stage's steps stop before any
    stage, each naming the setting (they used to wait for each other without end)."""
    env = {**os.environ, "R1KIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    port = str(_free_port())
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node",
         "1", "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", port,
         "-m", "r1kit", "run", *SETTINGS, "--set", f"stages.zero.steps={steps}", "--out",
         str(tmp_path / "run")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True) for node, steps in ((0, 12), (1, 8))]
    try:
        said = [p.communicate(timeout=240)[0] for p in nodes]
    finally:
        for p in nodes:  # (each launcher with its worker, where they hang)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
    assert [p.returncode for p in nodes] != [0, 0]
    for text in said:
        assert "rank 1 runs another command than rank 0: its stages.zero.steps is 8, rank 0's " \
            "12" in text, text[-3000:]
    assert not (tmp_path / "cache").exists()  # (before any stage: nothing pretrained)


def test_nodes_may_differ_in_their_display_settings_and_hub_cache_paths(tmp_path, monkeypatch):
    """What each process was asked is compared, not what it resolved: nodes whose Hugging
    Face caches lie at other paths, or that show progress, log or use threads otherwise, run
    the same command."""
    from r1kit import distributed, pipeline
    from r1kit.config import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('[stages.zero]\nkind = "grpo"\nmodel = "Org/model"\n')
    hub_cache_with(tmp_path / "hub", "Org/model", build_bpe_checkpoint(tmp_path / "m"),
                   monkeypatch)
    said = {}

    def asked(overrides, cache):  # the command a rank compares, its cache at `cache`
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        seen = {}
        monkeypatch.setattr(pipeline, "_same_on_every_rank", lambda c: seen.setdefault("c", c))
        monkeypatch.setattr(pipeline, "_previous_run", lambda d: (_ for _ in ()).throw(
            KeyboardInterrupt))  # (stop right after the comparison)
        with pytest.raises(KeyboardInterrupt):
            pipeline._run_recipe(load_recipe(recipe, overrides), tmp_path / "run", None,
                                 print, "cpu")
        return seen["c"]

    first = asked([], tmp_path / "hub")
    assert first["recipe"]["stages"]["zero"]["model"] == "Org/model"
    shutil.copytree(tmp_path / "hub", tmp_path / "other")
    other = asked(["run.threads=2", "run.progress=false", 'run.wandb="p"'], tmp_path / "other")
    assert first == other
    monkeypatch.undo()
    monkeypatch.setattr(distributed, "_world", distributed.World(rank=1, world_size=2))
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: first)
    monkeypatch.setattr(distributed, "gather_lists", lambda items: said.setdefault("g", items))
    pipeline._same_on_every_rank(other)
    assert said["g"] == [None]


def test_a_rank_stopping_is_said_once_not_as_a_traceback(monkeypatch, capsys):
    """Ctrl-C in a stage only rank 0 runs: rank 0 does not tell the other ranks over the
    process group (every rank got the signal, and they are gone), so it stops with its own
    "interrupted" line; an error there is still told to them, and where that fails too,
    rank 0's own error is the one raised. A rank whose collective fails because another rank
    stopped says so in one line (exit 2), without gloo's traceback."""
    from r1kit import distributed
    from r1kit.errors import R1kitError

    monkeypatch.setattr(distributed, "_world", distributed.World(rank=0, world_size=2))
    told = []
    monkeypatch.setattr(distributed, "broadcast_object", lambda obj: told.append(obj) or obj)

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distributed.run_on_main(interrupted)
    assert told == []

    def failing():
        raise R1kitError("bad data")

    with pytest.raises(R1kitError, match="bad data"):
        distributed.run_on_main(failing)
    assert told == [(None, "R1kitError: bad data")]

    def gone(obj):
        raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:1234")

    monkeypatch.setattr(distributed, "broadcast_object", gone)
    with pytest.raises(R1kitError, match="bad data"):
        distributed.run_on_main(failing)

    import r1kit.pipeline as pipeline

    def collective_fails(*args, **kwargs):
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer")

    monkeypatch.setattr(pipeline, "run_recipe", collective_fails)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["run", str(REPO / "recipes" / "zero-tiny.toml"), "--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err
    assert "r1kit (rank 1): error: another process of this run stopped" in err
    assert "Traceback" not in err
    # `r1kit score` under torchrun is refused (it scores a file: nothing to share)
    assert main(["score", "--reward", "math", "--input", "x.jsonl"]) == 2
    assert "r1kit score runs in one process" in capsys.readouterr().err


def test_a_torch_whose_fsdp2_would_average_gradients_is_refused(monkeypatch):
    """FSDP2 without set_gradient_divide_factor / set_force_sum_reduction_for_comms (older
    torch) averages gradients over ranks: every update would be divided by the number of
    ranks, silently. Such a torch is refused with a message, before any stage under torchrun
    and again where a stage shards its model."""
    from torch.distributed.fsdp import FSDPModule

    from r1kit import distributed, pipeline
    from r1kit.config import load_recipe
    from r1kit.errors import R1kitError

    assert distributed.fsdp_missing() is None  # the torch these tests run on has it all
    monkeypatch.delattr(FSDPModule, "set_force_sum_reduction_for_comms")
    assert "set_force_sum_reduction_for_comms" in distributed.fsdp_missing()
    model = torch.nn.Linear(2, 2)
    with pytest.raises(R1kitError, match="set_force_sum_reduction_for_comms") as err:
        distributed.shard(model)
    assert "ddp" in err.value.hint
    assert not distributed.is_sharded(model)  # refused before anything was sharded

    recipe = load_recipe(REPO / "recipes" / "zero-tiny.toml",
                         ['stages.zero.distributed="fsdp"'])
    pipeline._check_fsdp(recipe)  # one process: distributed is not used, nothing to refuse
    monkeypatch.setattr(distributed, "_world", distributed.World(rank=0, world_size=2))
    with pytest.raises(R1kitError, match=r'stages\.zero\.distributed = "fsdp"'):
        pipeline._check_fsdp(recipe)
    pipeline._check_fsdp(load_recipe(REPO / "recipes" / "zero-tiny.toml"))  # ddp: fine


def test_a_failure_only_some_ranks_see_is_said_by_them(monkeypatch, capsys, tmp_path):
    """Before any stage: an error every rank meets is said once per machine; one that only
    some ranks meet (a rank-dependent reward module, a file one node lacks) is said by those
    ranks, and the others name the rank that stopped (they used to say nothing, or that "its
    message is above" where there was none). A stage that rank 0 alone runs: its error is
    said by rank 0, repeated only by the first process of another machine; the others say in
    one line that rank 0 stopped."""
    import socket

    import r1kit.pipeline as pipeline
    from r1kit import distributed
    from r1kit.config import load_recipe
    from r1kit.errors import R1kitError

    recipe = load_recipe(REPO / "recipes" / "zero-tiny.toml")
    here = socket.gethostname()
    monkeypatch.setattr(distributed, "_world", distributed.World(rank=1, world_size=2))
    monkeypatch.setenv("LOCAL_RANK", "1")
    seen = {}

    def gather(items):  # rank 0 (seen["other"]), then this process, rank 1
        seen["sent"] = items
        return [seen["other"]] + items

    monkeypatch.setattr(distributed, "gather_lists", gather)
    seen["other"] = (here, "0", "stages.zero.reward_function: importing 'rf' failed")
    with pytest.raises(R1kitError, match="rank 0 stopped before any stage") as err:
        pipeline._run_recipe(recipe, tmp_path / "run", None, print, "cpu")
    assert seen["sent"] == [(here, "1", None)]
    assert not getattr(err.value, "same_on_every_process", False)

    def bad(_recipe):
        raise R1kitError("stages.zero.train_file: file 'x.jsonl' not found")

    monkeypatch.setattr(pipeline, "check_inputs", bad)
    error = str(R1kitError("stages.zero.train_file: file 'x.jsonl' not found"))
    for other, said_by_its_first in [
            ((here, "0", error), True),  # this machine's first process meets it too: says it
            ((here, "0", None), False),  # this process alone: says it itself
            (("node-b", "0", error), False)]:  # the first process elsewhere: not this machine's
        seen["other"] = other
        with pytest.raises(R1kitError, match="not found") as err:
            pipeline._run_recipe(recipe, tmp_path / "run", None, print, "cpu")
        assert getattr(err.value, "same_on_every_process", False) == said_by_its_first
    assert not (tmp_path / "run").exists()

    def rank_zero_failed(*args, **kwargs):
        raise distributed.RankZeroFailed("rank 0 failed: R1kitError: pretrain: the corpus "
                                         "has no rows")

    monkeypatch.setattr(pipeline, "run_recipe", rank_zero_failed)
    monkeypatch.setenv("WORLD_SIZE", "16")
    for rank, local, full in [("1", "1", False), ("9", "1", False), ("8", "0", True)]:
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", local)
        assert main(["run", str(REPO / "recipes" / "zero-tiny.toml")]) == 2
        said = capsys.readouterr().err
        assert said.count("\n") == 1 and f"r1kit (rank {rank}): error: " in said
        assert ("the corpus has no rows" in said) == full
        assert ("rank 0 stopped (its message is above" in said) == (not full)


def test_r1kit_eval_says_a_model_load_failure_once_per_machine(monkeypatch, capsys, tmp_path,
                                                             bpe_checkpoint):
    """r1kit eval under torchrun loads the model after the processes join: a model that
    every process of a machine fails to load is said by the machine's first process alone
    (each process said it); one that only this process fails to load is said by it; where
    only another rank failed, this one stops too and names it (instead of waiting)."""
    from r1kit import distributed

    bad = tmp_path / "bad"
    shutil.copytree(bpe_checkpoint, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "model_type": "llamaa",
                                                 "architectures": ["LlamaaForCausalLM"]}))
    monkeypatch.setattr(distributed, "_world", distributed.World(rank=1, world_size=2))
    monkeypatch.setattr(distributed, "launched", lambda: False)
    monkeypatch.setattr(distributed, "init", lambda device: device)
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    here = socket.gethostname()
    args = ["--bench", "gsm8k", "--limit", "2", "--k", "1", "--max-new-tokens", "2"]
    for first_met_it in (True, False):  # (rank 0, this machine's first process: the same?)
        monkeypatch.setattr(distributed, "gather_lists", lambda items: [
            (here, "0", items[0][2] if first_met_it else None)] + items)
        assert main(["eval", "--model", str(bad), *args]) == 2
        said = capsys.readouterr().err
        assert ("could not load the model" in said) == (not first_met_it), said
    monkeypatch.setattr(distributed, "gather_lists", lambda items: [
        (here, "0", "could not load the model of 'x': OSError: no such file")] + items)
    assert main(["eval", "--model", str(bpe_checkpoint), *args]) == 2
    assert "error: rank 0 stopped loading the model" in capsys.readouterr().err


def _one_and_two(tmp_path_factory, monkeypatch, text, *two_args):
    """The recipe `text` run in one process into ROOT/one and by torchrun's two into
    ROOT/two (with `two_args` added to its command): (the tiny-world cache, ROOT, torchrun's
    CompletedProcess)."""
    cache = tmp_path_factory.getbasetemp() / "dist-cache"
    root = tmp_path_factory.mktemp("recipe")
    recipe = root / "recipe.toml"
    recipe.write_text(text)
    monkeypatch.setenv("R1KIT_CACHE", str(cache))
    assert main(["run", str(recipe), "--out", str(root / "one")]) == 0
    return cache, root, _launch(cache, "run", str(recipe), "--out", str(root / "two"),
                                *two_args)


SPLIT_RECIPE = MICRO_RECIPE_HEAD + MICRO_SAMPLE_STAGE + """seeding = "question"

[stages.table]
kind = "eval"
models = ["base"]
k = 3
limit = 5
max_new_tokens = 24
seeding = "question"
save_every = 2  # (parts of 2, 2 and 1 problems, split between the processes)

[stages.one]  # one problem: rank 1's share is empty
kind = "eval"
models = ["base"]
k = 3
limit = 1
max_new_tokens = 24
seeding = "question"
"""


def test_sample_and_eval_stages_split_their_questions_like_one_process(tmp_path_factory,
                                                                      monkeypatch):
    """A sample stage (41 questions: 21 and 20 per rank, with a judge) and an eval stage (5
    problems) under torchrun, each rank its share of the questions, seeded per question: the
    same data.jsonl, counts and eval records as one process with seeding = "question". The
    torchrun run samples in resumable parts of 15 questions (save_every: 8 and 7 per rank,
    twice, then 6 and 5), which changes nothing but what is written on the way.
    `r1kit eval` under torchrun likewise gives one process's results with --seeding
    question."""
    cache, root, res = _one_and_two(tmp_path_factory, monkeypatch, SPLIT_RECIPE,
                                    "--set", "stages.data.save_every=15")
    one, two = root / "one", root / "two"
    assert json.loads((two / "config.json").read_text())["stages"]["data"]["save_every"] == 15
    rows = (one / "data" / "data.jsonl").read_text()
    assert rows and (two / "data" / "data.jsonl").read_text() == rows
    counts = [{k: v for k, v in json.loads((d / "data" / "sample.json").read_text()).items()
               if k != "seconds"} for d in (one, two)]
    assert counts[0] == counts[1] and counts[0]["generated"] == 41 * 4
    assert counts[0]["judge_accepted"] > 0 and counts[0]["kept"] > counts[0]["questions_with_rows"]
    tables = [[{k: v for k, v in r.items() if k not in TIMING}
               for r in json.loads((d / "table" / "eval.json").read_text())] for d in (one, two)]
    assert tables[0] == tables[1] and tables[0][0]["n"] == 5
    records = _rows(one / "eval.jsonl")
    assert records == _rows(two / "eval.jsonl") and [r["n"] for r in records] == [5, 1]
    assert res.stdout.count("[data] sample: questions 41") == 1  # rank 0 alone speaks

    base = str(one / "base")
    command = ["eval", "--model", base, "--bench", "tiny", "--limit", "5", "--k", "3",
               "--max-new-tokens", "24", "--seeding", "question"]
    assert main([*command, "--out", str(root / "one.json")]) == 0
    # (2 processes, 2 problems at a time: the parts split between them)
    res = _launch(cache, *command, "--save-every", "2", "--out", str(root / "two.json"))
    results = [[{k: v for k, v in r.items() if k not in TIMING}
                for r in json.loads((root / name).read_text())["results"]]
               for name in ("one.json", "two.json")]
    assert results[0] == results[1] and results[0][0]["n"] == 5
    assert res.stdout.count("| tiny |") == 1


REWARD_RECIPE = MICRO_RECIPE_HEAD + """
[stages.helpful]
kind = "reward_model"
model = "base"
objective = "pairwise"
train_rows = 90
test_rows = 31
batch_size = 15
micro_batch_size = 4
lr = 5e-3

[stages.safety]
kind = "reward_model"
model = "base"
objective = "pointwise"
summary_only = false
train_rows = 60
test_rows = 21
batch_size = 20
micro_batch_size = 6
lr = 5e-3
"""


@pytest.mark.parametrize("mode", ["ddp", "fsdp", "fsdp-lora"])
def test_reward_models_train_under_two_processes_like_one(tmp_path_factory, monkeypatch, mode):
    """reward_model stages under torchrun: each rank its share of every batch (15 pairs: 7
    and 8, in micro-batches), gradients summed: the same weights and held-out accuracy as
    one process, and the weights moved far more than the tolerance. Under fsdp (FSDP2) the
    weights, gradients and optimizer state are sharded, a checkpoint keeps each rank's shard
    of the optimizer's state, and the final model is gathered (with LoRA: the adapters and
    the scalar head merged from the shards as peft merges them in one process)."""
    extra = {"ddp": "", "fsdp": 'distributed = "fsdp"\nsave_every = 2\n',
             "fsdp-lora": 'distributed = "fsdp"\nsave_every = 2\nlora_rank = 4\n'
                          'lora_target_modules = ["q_proj", "v_proj"]\n'}[mode]
    cache, root, _ = _one_and_two(tmp_path_factory, monkeypatch,
                                  REWARD_RECIPE.replace("lr = 5e-3\n", "lr = 5e-3\n" + extra))
    one, two = root / "one", root / "two"
    if mode == "fsdp":
        for stage in ("helpful", "safety"):
            shards = two / stage / "checkpoints" / "step-2" / "optimizer"
            assert len(list(shards.glob("*.distcp"))) == 2, stage
    if mode != "ddp":  # both stages resumed under fsdp from their last checkpoints (step-4,
        # step-2), as if stopped there: the same end
        again = root / "again"
        shutil.copytree(two, again)
        for stage in ("helpful", "safety"):
            (again / stage / "stage.json").unlink()
            (again / stage / "model.safetensors").unlink()
        res = _launch(cache, "run", str(root / "recipe.toml"), "--out", str(again))
        assert "[helpful] resuming from" in res.stdout and "[safety] resuming from" in res.stdout
        two = again
    base = load_file(one / "base" / "model.safetensors")
    for stage, metric in (("helpful", "pairwise_accuracy"), ("safety", "safety_accuracy")):
        summaries = [json.loads((d / stage / "stage.json").read_text())["summary"]
                     for d in (one, two)]
        assert summaries[0][metric] == summaries[1][metric]
        wa = load_file(one / stage / "model.safetensors")
        wb = load_file(two / stage / "model.safetensors")
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=1e-4, msg=k)
        moved = max((wa[k] - base[k]).abs().max().item() for k in base if k in wa)
        assert moved > 1e-3, stage
        if mode == "fsdp-lora":  # the backbone's other weights as they were
            assert all(torch.equal(wa[k], base[k]) for k in base
                       if k in wa and "q_proj" not in k and "v_proj" not in k), stage


def test_fsdp_finds_the_decoder_layers_of_other_architectures(tmp_path_factory, monkeypatch,
                                                              bpe_checkpoint):
    """FSDP2 shards each decoder layer wherever the architecture keeps them: GPT-2's stack is
    transformer.h, not model.layers (it was refused). An sft stage on a GPT-2 checkpoint (tied
    output layer, dropout off) under torchrun with fsdp ends with one process's weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from r1kit.distributed import _decoder_layers
    from r1kit.models import load_tokenizer

    root = tmp_path_factory.mktemp("gpt2-fsdp")
    tok = load_tokenizer(bpe_checkpoint)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=256, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id))
    assert _decoder_layers(model) == list(model.transformer.h)
    model.save_pretrained(root / "gpt2")
    tok.save_pretrained(root / "gpt2")
    data = root / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + 2?",
                                        "response": f"<think>{i}+2</think> {i + 2}"}) + "\n"
                            for i in range(20)))
    recipe = root / "recipe.toml"
    recipe.write_text(f'[run]\nprogress = false\ntensorboard = false\nthreads = 1\n\n'
                      f'[stages.sft]\nkind = "sft"\nmodel = "{root / "gpt2"}"\n'
                      f'data = "{data}"\ntemplate = "none"\nepochs = 1\nbatch_size = 5\n'
                      f'micro_batch_size = 2\nlr = 1e-3\ndistributed = "fsdp"\n')
    assert main(["run", str(recipe), "--out", str(root / "one")]) == 0
    _launch(root / "cache", "run", str(recipe), "--out", str(root / "two"))
    wa = load_file(root / "one" / "sft" / "model.safetensors")
    wb = load_file(root / "two" / "sft" / "model.safetensors")
    base = load_file(root / "gpt2" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=1e-4, msg=k)
    assert max((wa[k] - base[k]).abs().max().item() for k in base if k in wa) > 1e-3
