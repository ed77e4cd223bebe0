"""Runs a recipe's stages in order, each in its own directory of the run.

A stage hands over through its directory: a Hugging Face checkpoint plus `stage.json`
(kind, status, seconds, summary). A later stage names an earlier one (`model = "base"`) and
loads that directory. A stage whose `stage.json` says "done" is skipped when the same command
runs again; `--from STAGE` reruns from that stage on.

Under torchrun (r1kit/distributed.py) every process runs this: grpo, sft, reward_model, sample
and eval stages run on all ranks (each its share of the work), the tiny world's pretrain stage
on rank 0 while the rest wait, and rank 0 alone writes the run's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch

from r1kit import distributed
from r1kit.checkpoints import latest_checkpoint
from r1kit.config import (
    STAGE_KINDS,
    EvalStageConfig,
    GRPOConfig,
    PretrainConfig,
    Recipe,
    RewardModelConfig,
    RunConfig,
    SampleConfig,
    SFTConfig,
    check_inputs,
    from_hub_cache,
    reads_general_file,
    reward_specs,
    to_dict,
)
from r1kit.errors import R1kitError
from r1kit.models import (
    adapter_base,
    check_model_dir,
    hub_snapshot,
    is_adapter,
    resolve_device,
    resolve_dtype,
    trusting_remote_code,
)
from r1kit.optim import keeping_master_weights
from r1kit.rewards.custom import source_file
from r1kit.runlog import RunLog
from r1kit.tasks.math import data_files, is_pattern


def default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / Path(recipe.source).stem


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def run_recipe(recipe: Recipe, run_dir: Path | None = None, from_stage: str | None = None,
               print_fn=print) -> dict:
    run = recipe.run
    device = distributed.init(resolve_device(run.device))  # joins torchrun's group, if any
    threads = torch.get_num_threads()  # run.threads applies to this run only
    try:
        with trusting_remote_code(run.trust_remote_code), \
                keeping_master_weights(run.master_weights):
            summaries = _run_recipe(recipe, run_dir, from_stage, print_fn, device)
    except BaseException:
        distributed.shutdown(wait=False)  # the other ranks may never get here
        raise
    finally:
        torch.set_num_threads(threads)
    distributed.shutdown()
    return summaries


def stage_of(key: str, names: list[str]) -> str | None:
    """The stage a settings key belongs to ("stages.NAME" or "stages.NAME.field"; a name
    may hold dots), or None for [run]'s keys."""
    found = [n for n in names if key == f"stages.{n}" or key.startswith(f"stages.{n}.")]
    return max(found, key=len) if found else None


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")


def _more_steps(changed: list[str], previous: dict, resolved: dict, names: list[str]
                ) -> tuple[str, int] | None:
    """(stage, its old steps) where the first refused change raises a stage's `steps`: the
    way to train it further is a stage that starts from its model."""
    stage = stage_of(changed[0], names)
    if stage is None or changed[0] != f"stages.{stage}.steps":
        return None
    old = (previous.get("stages") or {}).get(stage, {}).get("steps")
    new = resolved["stages"].get(stage, {}).get("steps")
    if isinstance(old, int) and isinstance(new, int) and new > old:
        return stage, old
    return None


def _moved_revisions(changed: list[str], previous: dict, resolved: dict
                     ) -> list[tuple[str, str, str]]:
    """(repo, the old commit, the new one) for each model setting among `changed` that names
    a Hub id's snapshot in the Hugging Face cache (config.from_hub_cache) whose
    revision moved since the run began (`huggingface-cli download` of a newer one)."""
    def value(config, key: str):
        for part in key.split("."):
            config = config.get(part) if isinstance(config, dict) else None
        return config

    out = []
    for key in changed:
        olds, news = value(previous, key), value(resolved, key)
        if not isinstance(olds, list):
            olds, news = [olds], [news]
        for old, new in zip(olds, news if isinstance(news, list) else []):
            a = hub_snapshot(old) if isinstance(old, str) else None
            b = hub_snapshot(new) if isinstance(new, str) else None
            if a and b and a[0] == b[0] and a[1] != b[1] and (a[0], a[1], b[1]) not in out:
                out.append((a[0], a[1], b[1]))
    return out


def _holds_results(stage_dir: Path) -> bool:
    """Whether a stage directory holds what a run would keep: the stage done, or a
    checkpoint it would resume from."""
    meta = stage_dir / "stage.json"
    try:
        done = meta.is_file() and json.loads(meta.read_text()).get("status") == "done"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        done = True  # unreadable: keep the refusal
    return done or latest_checkpoint(stage_dir) is not None


# ----- what a finished stage read from outside the run: changed since? ----------------------

INPUT_FILES = ("train_file", "test_file", "data", "general_data")
MODEL_REFS = ("model", "helpful_model", "safety_model", "judge_model")
HASHED_UP_TO = 64 << 20  # files up to this size also keep a sha256 (a touched file is the same)


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_files(directory: Path) -> list[Path]:
    """The files of a checkpoint directory that make the model: config, weights, tokenizer."""
    from r1kit.models import TOKENIZER_FILES, WEIGHT_FILES

    names = ("config.json", "adapter_config.json", *TOKENIZER_FILES)
    found = {f for f in directory.iterdir() if f.is_file() and f.name in names}
    for pattern in (*WEIGHT_FILES, "adapter_model.*"):
        found.update(directory.glob(pattern))
    return sorted(found)


def _fingerprint(path: Path) -> dict:
    if path.is_dir():  # per file: size, time and, up to HASHED_UP_TO, sha256 (else None)
        return {f.name: [f.stat().st_size, f.stat().st_mtime_ns,
                         _hash(f) if f.stat().st_size <= HASHED_UP_TO else None]
                for f in _model_files(path)}
    st = path.stat()
    out = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if st.st_size <= HASHED_UP_TO:
        out["sha256"] = _hash(path)
    return out


def stage_inputs(cfg, recipe: Recipe) -> dict[str, dict]:
    """Fingerprints of what a stage reads from outside the run directory: its data files,
    checkpoint directories that are not stages, reward-function files."""
    data = [getattr(cfg, f, "") for f in INPUT_FILES
            if f != "general_data" or reads_general_file(cfg)]
    paths = data + [getattr(cfg, f, "") for f in MODEL_REFS]
    paths += list(getattr(cfg, "models", []) or [])
    paths += [source_file(spec) for spec in reward_specs(getattr(cfg, "reward_function", ""))]
    out = {}
    for value in paths:
        if (isinstance(value, str) and value and value not in recipe.stages and value in data
                and is_pattern(value)):
            for shard in data_files(value):  # each shard of a glob (a new shard: see below)
                out[str(shard.resolve())] = _fingerprint(shard)
            out[value] = {"shards": [str(f.resolve()) for f in data_files(value)]}
            continue
        if isinstance(value, str) and value and value not in recipe.stages:
            out.update(fingerprints(Path(value)))
    return out


def fingerprints(path: Path) -> dict[str, dict]:
    """_fingerprint of a file or checkpoint directory by its resolved path, and of a peft
    adapter's base model too ({} for a path that is neither)."""
    out = {}
    if path.is_file() or path.is_dir():
        out[str(path.resolve())] = _fingerprint(path)
    if path.is_dir() and is_adapter(path):  # a peft adapter: its base model too
        base = adapter_base(path)
        out[str(base.resolve())] = _fingerprint(base)
    return out


def _input_changed(path: str, saved: dict) -> bool:
    if "shards" in saved:  # a glob: the same files must match it
        try:
            return [str(f.resolve()) for f in data_files(path)] != saved["shards"]
        except R1kitError:
            return True
    p = Path(path)
    if not p.exists():
        return True
    if p.is_dir():
        return _dir_changed(p, saved)
    now = {"size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
    if "size" not in saved:
        return True
    if (now["size"], now["mtime_ns"]) == (saved["size"], saved.get("mtime_ns")):
        return False
    return "sha256" not in saved or now["size"] != saved["size"] or _hash(p) != saved["sha256"]


def _dir_changed(directory: Path, saved: dict) -> bool:
    """Whether a checkpoint directory's model files differ from `saved` (_fingerprint's): other
    files, sizes, or a file whose time changed and whose sha256 differs or was not kept (a
    file over HASHED_UP_TO: its time decides; a copy without its times is "changed")."""
    files = {f.name: f for f in _model_files(directory)}
    if set(files) != set(saved):
        return True
    for name, f in files.items():
        st, was = f.stat(), saved[name]
        if not isinstance(was, list) or len(was) < 2 or st.st_size != was[0]:
            return True
        if st.st_mtime_ns != was[1] and (len(was) < 3 or was[2] is None or _hash(f) != was[2]):
            return True
    return False


def _check_done_inputs(recipe: Recipe, run_dir: Path, from_stage: str | None) -> None:
    """An R1kitError, before any stage runs, when a finished stage (one this command would
    skip) read a file or checkpoint outside the run that has changed since: its results are
    of the old one."""
    names = list(recipe.stages)
    kept = names[:names.index(from_stage)] if from_stage is not None else names
    for name in kept:
        meta = run_dir / name / "stage.json"
        try:
            saved = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(saved, dict) or saved.get("status") != "done":
            continue
        # (a stage.json without "inputs": an older r1kit's, which kept none to compare)
        changed = _changed_inputs(saved.get("inputs"), stage_inputs(recipe.stages[name], recipe))
        if changed:
            raise R1kitError(f"stage {name!r} is done, but {changed[0]} is not what it read "
                             "(changed since, or another file): its results are of the old one",
                             f"--from {name} reruns it and the stages after it with the new "
                             "one; or restore the old one, or use a new --out")


INPUTS_FILE = "inputs.json"  # a running stage's stage_inputs, for a resume to compare


def _changed_inputs(saved: dict, now: dict) -> list[str]:
    """What a stage read from outside the run (`saved`, stage_inputs' record) that is not
    what it would read now: a file or checkpoint changed since, or one it did not read (a
    relative path from another working directory names another file)."""
    if not isinstance(saved, dict):
        return []  # (no record)
    changed = [p for p, fp in saved.items() if _input_changed(p, fp)]
    return changed + [p for p in now if p not in saved]


def _check_resume_inputs(name: str, stage_dir: Path, now: dict) -> None:
    """An R1kitError when an interrupted stage would resume from its checkpoint although a
    file or checkpoint it reads from outside the run has changed since it started
    (_changed_inputs): its steps so far are of the old one, the rest would be of the new."""
    if latest_checkpoint(stage_dir) is None:
        return  # it starts over
    try:
        saved = json.loads((stage_dir / INPUTS_FILE).read_text())
    except (OSError, ValueError):
        return  # (a run of an older r1kit)
    changed = _changed_inputs(saved, now)
    if changed:
        raise R1kitError(f"stage {name!r} was interrupted after a checkpoint, but {changed[0]} "
                         "is not what the stage read when it started (changed since, or "
                         "another file): resuming would mix the two",
                         f"restore the old one to resume; --from {name} starts the stage over "
                         "(and the stages after it) with the new one; or use a new --out")


PRECISION_FILE = "precision.json"  # a running stage's device and dtype, for a resume to say


def _note_precision(name: str, stage_dir: Path, device, dtype, print_fn) -> None:
    """A note where an interrupted stage resumes from its checkpoint in another dtype or on
    another kind of device than it ran on so far: run.dtype = "auto" (and device = "auto")
    pick by the machine, so a stage begun on a laptop's CPU (float32) goes on in bf16 on a
    GPU. The record is rewritten: it is what the stage's newest steps ran with."""
    now = {"device": torch.device(device).type, "dtype": str(dtype).removeprefix("torch.")}
    path = stage_dir / PRECISION_FILE
    if latest_checkpoint(stage_dir) is not None:
        try:
            then = json.loads(path.read_text())
        except (OSError, ValueError):
            then = None  # (a run of an older r1kit)
        if isinstance(then, dict) and then != now:
            print_fn(f"[{name}] note: resumes in {now['dtype']} on {now['device']}; its steps "
                     f"so far ran in {then.get('dtype')} on {then.get('device')} (run.dtype "
                     "and run.device \"auto\" pick by the machine): the steps from here on "
                     f"are computed in {now['dtype']}")
    _write_json(path, now)


def _check_fsdp(recipe: Recipe) -> None:
    """Under torchrun, a stage asking for FSDP2 on a torch that cannot run it is named before
    any stage runs (not when its turn comes, after the stages before it)."""
    if not distributed.current().enabled:
        return  # (one process: `distributed` is not used)
    sharded = [n for n, cfg in recipe.stages.items() if getattr(cfg, "distributed", "") == "fsdp"]
    missing = distributed.fsdp_missing() if sharded else None
    if missing:
        raise R1kitError(f'stages.{sharded[0]}.distributed = "fsdp": {missing}',
                         'use distributed = "ddp", or a newer torch')


def _check_shared(run_dir: Path) -> None:
    """Under torchrun, every rank must see rank 0's files in the run directory (stages hand
    over through it): a token rank 0 writes there is read back by all, before any work; an
    R1kitError on every rank where one does not see it (nodes without a shared file system)."""
    world = distributed.current()
    if not world.enabled:
        return
    import uuid

    token = distributed.broadcast_object(uuid.uuid4().hex if world.is_main else None)
    marker = run_dir / f".shared-check-{token}"
    if world.is_main:
        marker.write_text(token)
    distributed.wait_for_main()
    seen = False
    for _ in range(20):  # a network file system may answer from a stale cache for a while:
        try:  # listing the directory refreshes it
            seen = marker.read_text() == token
        except OSError:
            seen = False
        if seen or world.is_main:
            break
        try:
            os.listdir(run_dir)
        except OSError:
            pass
        time.sleep(1.0)
    blind = [r for r, ok in enumerate(distributed.gather_lists([seen])) if not ok]
    if world.is_main:
        marker.unlink(missing_ok=True)
    if blind:
        raise R1kitError(f"rank {', '.join(map(str, blind))} cannot see the run directory "
                         f"{run_dir} that rank 0 writes: the stages hand over through it",
                         "give --out a directory on a file system that every node shares "
                         "(the same absolute path on each)")


def _previous_run(run_dir: Path) -> dict | None:
    """The settings an earlier run wrote to `run_dir` (its config.json), None for a new or
    empty directory; an R1kitError for a directory that is not a run's (a model checkpoint:
    the run's config.json would overwrite the model's)."""
    from r1kit.models import TOKENIZER_FILES, WEIGHT_FILES

    fix = "give --out a new directory, or one an earlier r1kit run wrote"
    saved = run_dir / "config.json"
    if not saved.is_file():
        if run_dir.is_dir() and any(next(run_dir.glob(pattern), None) for pattern in
                                    (*WEIGHT_FILES, "adapter_config.json", *TOKENIZER_FILES)):
            raise R1kitError(f"the run directory {str(run_dir)!r} holds a model's files, not "
                             "an r1kit run's", fix)
        return None
    try:
        previous = json.loads(saved.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise R1kitError(f"{saved} is not valid JSON ({exc}): {str(run_dir)!r} is not a run "
                         "directory r1kit can resume", fix) from exc
    if isinstance(previous, dict) and (previous.get("model_type") or
                                       previous.get("architectures")):
        raise R1kitError(f"the run directory {str(run_dir)!r} is a model checkpoint (its "
                         "config.json is a model's): the run would overwrite it", fix)
    if not isinstance(previous, dict) or not isinstance(previous.get("stages"), dict):
        raise R1kitError(f"{saved} is not an r1kit run's settings: {str(run_dir)!r} is not a "
                         "run directory", fix)
    return previous


def _run_recipe(recipe: Recipe, run_dir: Path | None, from_stage: str | None, print_fn,
                device) -> dict:
    main = distributed.current().is_main
    if not main:
        print_fn = _silent
    run_dir = Path(run_dir or default_run_dir(recipe))
    if run_dir.exists() and not run_dir.is_dir():
        raise R1kitError(f"the run directory {str(run_dir)!r} is a file",
                         "give --out a directory (new, or one an earlier run wrote)")
    # what each process was asked to run, before its own Hugging Face cache names paths
    asked = {"recipe": {"run": {k: v for k, v in _plain(recipe.run).items() if k not in _OWN},
                        "stages": _plain(recipe.stages)},
             "--out": str(run_dir.absolute()), "--from": from_stage}
    failed = None
    try:
        for line in from_hub_cache(recipe):
            print_fn(line)
        check_inputs(recipe)
        _check_fsdp(recipe)
    except R1kitError as exc:
        failed = exc
    # (the processes of a machine read the same files: said once per machine)
    distributed.agree_on_failure(failed, "before any stage")
    _same_on_every_rank(asked)
    if from_stage is not None and from_stage not in recipe.stages:
        raise R1kitError(f"--from {from_stage!r}: no such stage",
                         f"stages of this recipe: {', '.join(recipe.stages)}")
    resolved = {"run": _plain(recipe.run), "stages": _plain(recipe.stages)}
    saved = run_dir / "config.json"
    previous = _previous_run(run_dir)
    no_run = distributed.broadcast_object(previous is None)  # rank 0's view decides for all
    if no_run and from_stage is not None and from_stage != next(iter(recipe.stages)):
        raise R1kitError(f"--from {from_stage}: {run_dir} holds no run, so the stages before "
                         f"{from_stage!r} would run again from their start",
                         "give --out the run directory that holds them, or leave --from out "
                         "to run every stage")
    if previous is not None:
        # stages taken out of the recipe earlier keep their settings in "dropped_stages":
        # put back with the same settings, their results stand
        was_dropped = previous.get("dropped_stages") or {}
        if isinstance(previous.get("stages"), dict) and isinstance(was_dropped, dict):
            previous["stages"] = {**previous["stages"], **{
                n: t for n, t in was_dropped.items()
                if n in recipe.stages and n not in previous["stages"]}}
            resolved["dropped_stages"] = {n: t for n, t in was_dropped.items()
                                          if n not in recipe.stages}
        changed = _changed_keys(_results_settings(_with_defaults(previous)),
                                _results_settings(resolved))
        if from_stage is not None:  # the stages before it are kept: their settings must be
            # too, and so must [run]'s (a seed or dtype they did not run with) when any is kept
            kept = [f"stages.{n}" for n in list(recipe.stages)[:list(recipe.stages)
                                                                .index(from_stage)]]
            kept += ["run"] if kept else []
            changed = [k for k in changed if any(k == s or k.startswith(s + ".") for s in kept)]
        # a stage taken out of the recipe: the stages that remain did not read its results
        # (the recipe names no stage it lacks), so they stand; its settings are kept
        old_names = list(previous.get("stages") or {})
        dropped = [n for n in old_names if n not in recipe.stages]
        if dropped:
            changed = [k for k in changed if stage_of(k, old_names) not in dropped]
            resolved.setdefault("dropped_stages", {}).update(
                {n: previous["stages"][n] for n in dropped})
            print_fn(f"{run_dir}: {'stages' if len(dropped) > 1 else 'stage'} "
                     f"{', '.join(dropped)} no longer in the recipe; "
                     f"{'their directories are' if len(dropped) > 1 else 'its directory is'}"
                     f" left as {'they were' if len(dropped) > 1 else 'it was'}")
        # a stage that holds no result (not done, no checkpoint: it stopped before any, and
        # runs again from its start) may take new settings; [run]'s only while no stage does
        names = [*old_names, *recipe.stages]
        any_held = changed and any(_holds_results(d) for d in run_dir.iterdir() if d.is_dir())
        locked = [k for k in changed if (_holds_results(run_dir / stage_of(k, names))
                                         if stage_of(k, names) else any_held)]
        if changed and not locked:
            print_fn(f"{run_dir}: taking the new settings ({_shown(changed)}): the stages they "
                     "change hold no results under the old ones yet")
        changed = locked
        if changed:
            shown = _shown(changed)
            stage = stage_of(changed[0], names)
            more = _more_steps(changed, previous, resolved, names)
            moved = _moved_revisions(changed, _with_defaults(previous), resolved)
            raise R1kitError(
                f"{run_dir} holds a run with other settings: {shown}"
                + (f" (with --from {from_stage}, the stages before it are kept as they are)"
                   if from_stage is not None else ""),
                "use --out with a new directory, or --from STAGE to rerun stages with the new "
                "settings" + (f" (--from {stage}: that stage and the ones after it)"
                              if stage in recipe.stages else
                              f" (--from {next(iter(recipe.stages))}: [run]'s settings apply "
                              "to every stage)" if stage is None and from_stage is None
                              else "")
                + (f"; to train stage {more[0]!r} further without starting it over, keep its "
                   f"steps at {more[1]} and add a stage after it with model = \"{more[0]}\" "
                   f"and the steps to add (its optimizer, and its reference model for the KL "
                   "term, start from there)" if more else "")
                + "".join(f"; in the Hugging Face cache, {repo}'s revision is {new[:12]} now, "
                          f"{old[:12]} when this run began: to go on with that one, name it "
                          f"{repo}@{old}" for repo, old, new in moved))
    distributed.wait_for_main()  # every rank has compared before rank 0 writes
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(saved, resolved)
    _check_shared(run_dir)
    _check_done_inputs(recipe, run_dir, from_stage)

    run = recipe.run
    if run.threads:
        torch.set_num_threads(run.threads)
    dtype = resolve_dtype(run.dtype, device)
    log = (RunLog(run_dir, tensorboard=run.tensorboard, wandb=run.wandb, config=resolved)
           if main else distributed.NullLog())
    summaries: dict[str, dict] = {}
    rerun = from_stage is not None
    names = list(recipe.stages)
    try:
        for name, cfg in recipe.stages.items():
            stage_dir = run_dir / name
            meta_path = stage_dir / "stage.json"
            if rerun and name == from_stage:
                rerun = False
                for later in names[names.index(name):]:
                    if main and (run_dir / later).exists():
                        shutil.rmtree(run_dir / later)
            distributed.wait_for_main()  # rank 0's removals and stage.json writes are done
            if meta_path.is_file() and json.loads(meta_path.read_text()).get("status") == "done":
                print_fn(f"[{name}] already done: skipping ({stage_dir})")
                summaries[name] = json.loads(meta_path.read_text()).get("summary", {})
                continue
            if main:
                stage_dir.mkdir(parents=True, exist_ok=True)
            distributed.wait_for_main()
            print_fn(f"[{name}] {cfg.kind} stage -> {stage_dir}")
            t0 = time.time()
            inputs = stage_inputs(cfg, recipe)  # as it starts to read them
            _check_resume_inputs(name, stage_dir, inputs)  # (every rank: each would raise)
            if main:
                _write_json(stage_dir / INPUTS_FILE, inputs)
                _note_precision(name, stage_dir, device, dtype, print_fn)
            if not isinstance(cfg, (GRPOConfig, SFTConfig, RewardModelConfig,
                                    EvalStageConfig)):  # those may resume: they drop their
                log.drop(name)  # own rows

            def stage(name=name, cfg=cfg, stage_dir=stage_dir):
                return _run_stage(name, cfg, recipe, run_dir, stage_dir, device, dtype, log,
                                  print_fn)

            # every stage but the tiny world's pretrain on every rank (each its share of the
            # work); pretrain on rank 0 while the others wait
            summary = (stage() if isinstance(cfg, EVERY_RANK)
                       else distributed.run_on_main(stage))
            meta = {"kind": cfg.kind, "status": "done", "seconds": time.time() - t0,
                    "summary": summary, "inputs": inputs}
            if main:
                _write_json(meta_path, meta)
            summaries[name] = summary
            print_fn(f"[{name}] done in {meta['seconds']:.0f}s")
    finally:
        log.close()
    if not main:
        return summaries
    from r1kit.plots import plot_figure1

    figure = plot_figure1(run_dir)
    if figure:
        print_fn(f"figure: {figure}")
    from r1kit.report import write_report

    try:
        print_fn(f"report: {write_report(run_dir)}")
    except R1kitError:  # nothing to report yet (e.g. a recipe with no RL or eval stage)
        pass
    return summaries


# the stage kinds every process runs under torchrun, each its share of the work
EVERY_RANK = (GRPOConfig, SFTConfig, SampleConfig, EvalStageConfig, RewardModelConfig)

# [run] settings that change what a run shows, not what it computes: a run may continue
# with other values of these
DISPLAY_ONLY = ("progress", "tensorboard", "wandb")
# [run] settings of speed: results differ only in float rounding (as with micro_batch_size)
RUN_SPEED_ONLY = ("threads",)
# how exactly AdamW keeps bf16 / fp16 weights' updates (float32 weights: nothing changes): a
# run may take it up mid-stage, e.g. one written before master copies existed, which updated
# its bf16 weights directly (the copies start from the weights)
RUN_PRECISION_ONLY = ("master_weights",)
# stage settings of what is logged or kept, not what is computed: how often a resumable
# checkpoint is written (more of them while a long stage runs) and how many are kept
LOGGING_ONLY = ("log_completions", "save_every", "keep_checkpoints")
# stage settings that change how fast a stage runs or the memory it takes, not what it
# computes (up to float rounding, as another GPU would): a stage may resume with other values,
# e.g. a smaller micro_batch_size after running out of memory
SPEED_ONLY = ("overlap_rewards", "compile", "logprob_chunk_tokens", "logprob_micro_batch_size",
              "micro_batch_size", "activation_checkpointing", "distributed")
# how many sequences are sampled at once: memory only where each question is seeded on its
# own (rollout_seeding = "question", torchrun); with a step's one stream, the samples after
# the change differ from those the old value would have drawn, as on resuming on another
# number of processes (the grpo stage says so). A stage that ran out of memory sampling
# resumes with a smaller value.
SAMPLING_MEMORY = ("generation_rows",)


def _results_settings(resolved: dict) -> dict:
    run = {k: v for k, v in resolved.get("run", {}).items()
           if k not in DISPLAY_ONLY + RUN_SPEED_ONLY + RUN_PRECISION_ONLY}
    stages = {name: _applied_schedule({k: v for k, v in stage.items()
                                       if k not in SPEED_ONLY + LOGGING_ONLY + SAMPLING_MEMORY})
              for name, stage in resolved.get("stages", {}).items()}
    return {**{k: v for k, v in resolved.items() if k != "dropped_stages"}, "run": run,
            "stages": stages}


def _applied_schedule(stage: dict) -> dict:
    """A grpo stage's settings with the max_new_tokens_schedule entries that never apply
    (from a step at or past its steps) left out: they change no result. (A run written when a
    stage's own max_new_tokens kept the paper's [[512, 65536]] resumes unchanged if its 512
    steps were never reached.)"""
    schedule, steps = stage.get("max_new_tokens_schedule"), stage.get("steps")
    if not isinstance(schedule, list) or not isinstance(steps, int):
        return stage
    return {**stage, "max_new_tokens_schedule": [
        e for e in schedule if not (isinstance(e, list) and e and isinstance(e[0], int)
                                    and e[0] >= steps)]}


def _plain(config) -> dict:
    """A config as config.json holds it (JSON types only)."""
    return json.loads(json.dumps(to_dict(config), default=str))


def _with_defaults(saved: dict) -> dict:
    """A config.json with the settings it lacks (written before they existed) at their
    defaults, which is what those runs ran with."""
    def merged(defaults, given):
        if isinstance(defaults, dict) and isinstance(given, dict):
            return {**defaults, **{k: merged(defaults.get(k), v) for k, v in given.items()}}
        return given

    out = dict(saved)
    if isinstance(saved.get("run"), dict):
        out["run"] = merged(_plain(RunConfig()), saved["run"])
    stages = saved.get("stages")
    if isinstance(stages, dict):
        out["stages"] = {name: merged(_plain(STAGE_KINDS[table["kind"]]()), table)
                         if isinstance(table, dict) and table.get("kind") in STAGE_KINDS
                         else table for name, table in stages.items()}
    return out


# [run] settings a process may have of its own (display, CPU threads)
_OWN = ("progress", "tensorboard", "wandb", "threads")


def _same_on_every_rank(command: dict) -> None:
    """Under torchrun: an error on every rank, before any stage, where a rank's recipe (with
    --set, less the settings of _OWN), --out or --from differs from rank 0's, naming the
    first setting that differs (ranks that disagree on, say, a stage's steps would otherwise
    wait for one another without end)."""
    if not distributed.current().enabled:
        return
    differs = _first_difference(distributed.broadcast_object(command), command)
    said = distributed.gather_lists([differs])
    rank = next((r for r, d in enumerate(said) if d), None)
    if rank is not None:
        key, first, theirs = said[rank]
        exc = R1kitError(f"rank {rank} runs another command than rank 0: its "
                         f"{key.removeprefix('recipe.')} is {theirs!r}, rank 0's {first!r}",
                         "start every process (on every node) with the same recipe, --set "
                         "settings, --out and --from")
        exc.same_on_every_process = True  # (every rank says it: a machine's first speaks)
        raise exc


def _first_difference(old, new, prefix: str = "") -> tuple | None:
    """(dotted key, old value, new value) of the first value that differs between two
    resolved configs; None where none does."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in dict.fromkeys([*old, *new]):
            found = _first_difference(old.get(key), new.get(key),
                                      f"{prefix}.{key}" if prefix else key)
            if found is not None:
                return found
        return None
    return None if old == new else (prefix, old, new)


def _changed_keys(old, new, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two resolved configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in dict.fromkeys([*old, *new]):
            out += _changed_keys(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if old == new else [prefix]


def _silent(*args, **kw) -> None:
    pass


def _model_path(ref: str, recipe: Recipe, run_dir: Path, kind: str = "causal") -> Path:
    return check_model_dir(run_dir / ref if ref in recipe.stages else ref, kind)


def _prefixed(print_fn, name: str):
    """print_fn with the stage's name before each line that does not begin with a tag."""
    return lambda text: print_fn(text if text.startswith("[") else f"[{name}] {text}")


def _run_stage(name, cfg, recipe, run_dir, stage_dir, device, dtype, log, print_fn) -> dict:
    seed = recipe.run.seed
    said = _prefixed(print_fn, name)
    if isinstance(cfg, PretrainConfig):
        from r1kit.stages.pretrain import run_pretrain

        return run_pretrain(cfg, stage_dir, seed, log=said)
    if isinstance(cfg, GRPOConfig):
        from r1kit.stages.grpo import StageContext, run_grpo

        ctx = StageContext(name=name, stage_dir=stage_dir, run_dir=run_dir, seed=seed,
                           device=device, dtype=dtype, log=log,
                           progress=recipe.run.progress and distributed.current().is_main,
                           print=print_fn)
        reward_models = {kind: _model_path(ref, recipe, run_dir, "reward")
                         for kind, ref in (("helpful", cfg.helpful_model),
                                           ("safety", cfg.safety_model)) if ref}
        return run_grpo(cfg, _model_path(cfg.model, recipe, run_dir), ctx, reward_models)
    if isinstance(cfg, RewardModelConfig):
        from r1kit.stages.reward_model import run_reward_model

        return run_reward_model(cfg, _model_path(cfg.model, recipe, run_dir), stage_dir, seed,
                                device, dtype, log=said, runlog=log, name=name)
    if isinstance(cfg, SFTConfig):
        from r1kit.stages.sft import run_sft

        data = run_dir / cfg.data / "data.jsonl" if cfg.data in recipe.stages else Path(cfg.data)
        return run_sft(cfg, _model_path(cfg.model, recipe, run_dir), data, stage_dir, seed,
                       device, dtype, log=said, runlog=log, name=name)
    if isinstance(cfg, SampleConfig):
        from r1kit.sampling import run_sample

        return run_sample(cfg, _model_path(cfg.model, recipe, run_dir), stage_dir, seed, device,
                          dtype, log=said, judge_path=_model_path(cfg.judge_model, recipe, run_dir)
                          if cfg.judge_model else None)
    if isinstance(cfg, EvalStageConfig):
        from r1kit.stages.evaluate import run_eval_stage

        models = {ref: _model_path(ref, recipe, run_dir) for ref in cfg.models}
        reward_models = {kind: _model_path(ref, recipe, run_dir, "reward")
                         for kind, ref in (("helpful", cfg.helpful_model),
                                           ("safety", cfg.safety_model)) if ref}
        return run_eval_stage(cfg, models, reward_models, stage_dir, name, seed, device, dtype,
                              log, print_fn)
    raise R1kitError(f"stage {name!r}: kind {cfg.kind!r} has no runner")
