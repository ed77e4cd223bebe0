"""The eval stage: checkpoints side by side, the paper's Table 3 for a pipeline.

For each checkpoint in `models` (earlier stages or directories):
- reasoning: pass@1 over k samples and cons@k on the task's held-out problems (T 0.6,
  top-p 0.95 by default), mean response length, and the language consistency of the chains of
  thought (eq. 7, mean over all responses);
- each shipped benchmark in `benchmarks` (MATH-500, AIME, HumanEval, ...): pass@1 over k
  samples, its questions prompted with the stage's template (R1-SPEC §5: the paper's
  Table 3 rows across benchmarks);
- general, when reward models are given: one response per held-out general prompt of the tiny
  world (or per row of the general_data file), the helpful model's mean score (sigmoid of its
  logit, 0..1) over the helpful prompts, and safety accuracy: the share of responses to the
  safety prompts that the safety model judges safe (logit > 0).

Writes one eval.jsonl record per checkpoint, and `stage_table.md` / `stage_table.png` in the
stage directory.

Under torchrun every rank loads each checkpoint whole and samples, verifies and scores its share
of the questions and general prompts (each seeded on its own: r1kit.eval.core); every rank
gathers all the results, and rank 0 writes the records and the table.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch

from r1kit import distributed
from r1kit.checkpoints import STATE_FILE, latest_checkpoint, write_checkpoint
from r1kit.config import EvalStageConfig
from r1kit.errors import R1kitError
from r1kit.eval.benchmarks import bench_name, load_benchmark
from r1kit.eval.cli import PAPER_MAX_NEW_TOKENS, model_positions, trained_prompting
from r1kit.eval.core import (
    QuestionShare,
    decode_responses,
    evaluate,
    evaluate_questions,
    summarize,
)
from r1kit.models import load_model, load_tokenizer, shown_model, stop_token_ids
from r1kit.rewards.combined import RewardModelScorer
from r1kit.rewards.rule import UNTAGGED_NOTE
from r1kit.tasks import general, make_task
from r1kit.templates import encode_prompt, prompt_text, response_prefill

HELD_OUT_GENERAL_SEED = general.HELD_OUT_SEED  # general prompts for evaluation

COLUMNS = [("pass@1", "reasoning pass@1"), ("cons@k", "cons@k"),
           ("language", "language consistency"), ("helpful", "helpful RM score"),
           ("safety", "safety accuracy"), ("mean_tokens", "mean length (tokens)")]


def _encode(tokenizer, cfg, question: str) -> list[int]:
    return encode_prompt(question, cfg.template, tokenizer, cfg.prefill,
                         system=cfg.system_prompt)


def general_rows(cfg, kinds=("helpful", "safety")) -> list[dict]:
    """The general prompts the helpful and safety columns are measured on: general_prompts
    of the tiny world's held-out ones, or the first general_prompts rows of each type in
    `kinds` of the general_data file (0: all of them)."""
    if cfg.general_data == "tiny":
        return general.prompts(cfg.general_prompts, HELD_OUT_GENERAL_SEED)
    from r1kit.stages.grpo import general_examples  # GRPO's reader and its checks

    taken: dict[str, int] = {}
    out = []
    for e in general_examples(cfg, 0):
        kind = e.meta["type"]
        if kind in kinds and (not cfg.general_prompts or taken.get(kind, 0) < cfg.general_prompts):
            taken[kind] = taken.get(kind, 0) + 1
            out.append({"prompt": e.question, "type": kind})
    return out


def general_scores(model, tokenizer, cfg, scorers: dict, stop_ids, seed: int) -> dict:
    """One response per general prompt, scored by the reward models (under torchrun each rank
    samples and scores its share of the prompts)."""
    rows = general_rows(cfg, tuple(scorers))
    if not rows:
        return {"general_samples": []}
    part = QuestionShare(len(rows), seed, cfg.seeding == "question",
                         next(model.parameters()).device)
    mine = part.take(rows)
    with torch.no_grad():
        ro = part.generate(model, [_encode(tokenizer, cfg, r["prompt"]) for r in rows],
                           group_size=1, max_new_tokens=cfg.max_new_tokens,
                           temperature=cfg.temperature, top_p=cfg.top_p, stop_ids=stop_ids,
                           pad_id=tokenizer.pad_token_id, max_rows=cfg.generation_rows,
                           logprobs=False)
    texts = decode_responses(tokenizer, ro.completion_ids, ro.completion_mask, stop_ids,
                             response_prefill(tokenizer, cfg.template, cfg.prefill))
    raw: list = [None] * len(mine)  # each response's score by its prompt's type's model
    for kind, scorer in scorers.items():
        idx = [i for i, r in enumerate(mine) if r["type"] == kind]
        if idx:
            for i, v in zip(idx, scorer([prompt_text(mine[i]["prompt"]) for i in idx],
                                        [texts[i] for i in idx])):
                raw[i] = v
    texts, raw, _ = part.gather(texts, raw, ro)
    out = {}
    for kind in scorers:
        scores = [v for r, v in zip(rows, raw) if r["type"] == kind]
        if not scores:
            continue
        if kind == "helpful":
            out["helpful"] = sum(1 / (1 + math.exp(-s)) for s in scores) / len(scores)
        else:
            out["safety"] = sum(s > 0 for s in scores) / len(scores)
    out["general_samples"] = [{"prompt": rows[i]["prompt"], "response": texts[i]}
                              for i in range(min(4, len(rows)))]
    return out


def run_eval_stage(cfg: EvalStageConfig, models: dict[str, Path], reward_models: dict[str, Path],
                   stage_dir: Path, name: str, seed: int, device, dtype, log, print_fn=print) -> dict:
    task = make_task(cfg, seed)
    test = task.test_examples(cfg.split)
    if cfg.limit:
        test = test[:cfg.limit]
    if not test:
        error = R1kitError(f"[{name}] the held-out set of task {cfg.task!r} is empty",
                           "give the eval stage a test_file with rows")
        error.same_on_every_process = True  # (every rank reads the same file)
        raise error
    benches = {}
    for bench in map(bench_name, cfg.benchmarks):
        benches[bench] = load_benchmark(bench, seed)
        if cfg.read_untagged:  # as the stage's own task reads its responses
            benches[bench].read_untagged = True
    scorers = {kind: RewardModelScorer(path, device, dtype, role=kind)
               for kind, path in reward_models.items()}
    for scorer in scorers.values():
        if scorer.said:
            print_fn(f"[{name}] note: {scorer.said}")
    for ref, path in models.items():  # every row is prompted with this stage's settings
        trained = trained_prompting(Path(path))
        if trained is None:
            continue
        stage, settings = trained
        theirs = (settings.get("template"), settings.get("prefill", ""))
        if theirs != (cfg.template, cfg.prefill):
            print_fn(f"[{name}] note: {ref} was trained with template {theirs[0]!r}, prefill "
                     f"{theirs[1]!r} (stage {stage!r}); this stage prompts every model with "
                     f"template {cfg.template!r}, prefill {cfg.prefill!r} (r1kit eval --model "
                     f"{path} prompts it as its stage did)")
    # the models an interrupted run of the stage evaluated (checkpoints/step-N: the table's
    # first rows), kept with their eval.jsonl records; the others' records dropped; with
    # save_every, the next model's evaluations' problems evaluated so far (`current`)
    table, current, step = distributed.broadcast_object(_evaluated(stage_dir, list(models)))
    if table:
        print_fn(f"[{name}] resuming after {', '.join(r['model'] for r in table)} (evaluated "
                 "by the interrupted run: checkpoints/)")
    log.drop(name, keep=lambda r: r.get("model") in {row["model"] for row in table})
    steps = [step]

    def save(held: dict | None) -> None:  # (rank 0 writes the checkpoint)
        steps[0] += 1
        if distributed.current().is_main:
            write_checkpoint(stage_dir, steps[0], 1, lambda tmp: _write_evaluated(tmp, table,
                                                                                 held))

    for ref, path in list(models.items())[len(table):]:
        t0 = time.time()
        tokenizer = load_tokenizer(path)
        model = load_model(path, device, dtype, tokenizer).eval()
        stop_ids = stop_token_ids(tokenizer, model)
        positions = model_positions(Path(path))
        held = current if current is not None and current.get("model") == ref else {
            "model": ref, "parts": {}}
        if held["parts"]:
            print_fn(f"[{name}] {ref}: resuming its evaluations after the problems the "
                     "interrupted run evaluated")
        parts = (held, save) if cfg.save_every else None
        res, max_new = _evaluate_on(model, tokenizer, cfg, task, test, stop_ids, seed,
                                    positions, parts, "task",
                                    language_target=cfg.language_target)
        if max_new != cfg.max_new_tokens:
            print_fn(f"[{name}] {ref}: max_new_tokens {max_new}, up to the model's "
                     f"{positions} positions (set max_new_tokens to choose)")
        row = {"model": ref, **res.as_record(), "cons@k": res.cons_at_k}
        for bench, bench_task in benches.items():
            row[bench] = _benchmark(model, tokenizer, cfg, bench_task, stop_ids, seed, positions,
                                    log, name, ref, print_fn, parts)
        if scorers:
            extra = general_scores(model, tokenizer, cfg, scorers, stop_ids, seed)
            row["general_samples"] = extra.pop("general_samples")
            row.update(extra)
        row["seconds"] = time.time() - t0
        log.eval({"stage": name, "step": 0, "benchmark": f"{task.name}/{cfg.split}",
                  **{k: v for k, v in row.items() if k != "general_samples"}})
        print_fn(f"[{name}] {shown_model(ref)}: " + "  ".join(  # (cons@k with its k, as the table)
            f"{label.replace('@k', f'@{cfg.k}')} {row[key]:.3f}"
            for key, label in COLUMNS if row.get(key) is not None)
            + "".join(f"  {bench} pass@1 {row[bench]['pass@1']:.3f}" for bench in benches))
        if res.untagged:  # as r1kit eval says it
            print_fn(f"[{name}] note: {ref}: {100 * res.untagged:.1f}% of the responses have no "
                     f"<think>, </think> or <answer>: {UNTAGGED_NOTE} (read_untagged = true "
                     "in this stage reads them whole, as open-r1)")
        table.append(row)
        del model
        if len(table) < len(models):
            save(None)
    if distributed.current().is_main:
        write_table(table, stage_dir, k=cfg.k, benchmarks=list(benches))
        (stage_dir / "eval.json").write_text(json.dumps(table, indent=2))
        shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)  # (eval.json holds them)
    return {"rows": [{k: v for k, v in r.items() if k not in ("general_samples", "by_level")}
                     for r in table]}


def _write_evaluated(directory: Path, table: list[dict], current: dict | None = None) -> None:
    """A checkpoint of the eval stage: the rows of the models evaluated so far, and with
    save_every the next model's evaluations' question records so far (`current`)."""
    (directory / "table.json").write_text(json.dumps(table, ensure_ascii=False))
    if current is not None:
        (directory / "current.json").write_text(json.dumps(current, ensure_ascii=False))
    torch.save({"models": [row["model"] for row in table]}, directory / STATE_FILE)


def _evaluated(stage_dir: Path, refs: list[str]) -> tuple[list[dict], dict | None, int]:
    """The rows of the stage's newest checkpoint, where its models are the first of `refs`,
    the next model's records it holds, and its step (else none: the stage starts over)."""
    newest = latest_checkpoint(stage_dir)
    if newest is None:
        return [], None, 0
    rows = json.loads((newest / "table.json").read_text())
    if [r["model"] for r in rows] != refs[:len(rows)]:
        return [], None, 0
    current = newest / "current.json"
    return (rows, json.loads(current.read_text()) if current.is_file() else None,
            int(newest.name.removeprefix("step-")))


def _evaluate_on(model, tokenizer, cfg, task, test, stop_ids, seed, positions, parts=None,
                 key: str = "", **options):
    """A model's evaluation on `test` with the stage's sampling settings: (EvalResult, the
    max_new_tokens it used: the stage's, or under the default (the paper's) up to the model's
    last position, as r1kit eval's default). `parts` (with save_every): (the model's records
    so far, by evaluation, and a function that checkpoints them): `save_every` problems at a
    time, each seeded on its own, the records of this evaluation (`key`) saved after each
    part; those an interrupted run saved are not evaluated again."""
    prompts = [_encode(tokenizer, cfg, e.question) for e in test]
    max_new = cfg.max_new_tokens
    if max_new == PAPER_MAX_NEW_TOKENS and positions is not None:
        max_new = max(1, min(max_new, positions - max(len(p) for p in prompts)))
    sampling = dict(k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
                    max_new_tokens=max_new, stop_ids=stop_ids, seed=seed,
                    prefill=response_prefill(tokenizer, cfg.template, cfg.prefill),
                    max_rows=cfg.generation_rows, overlap=cfg.overlap_rewards, **options)
    if parts is None:
        return evaluate(model, tokenizer, task, test, prompts, **sampling,
                        per_question=cfg.seeding == "question"), max_new
    held, save = parts
    records = held["parts"].get(key, [])
    while len(records) < len(test):
        a, b = len(records), min(len(test), len(records) + cfg.save_every)
        records = records + evaluate_questions(model, tokenizer, task, test[a:b], prompts[a:b],
                                               **sampling, per_question=True, first=a)
        held["parts"][key] = records
        save(held)
    return summarize(records, cfg.k, getattr(task, "votes", True)), max_new


def _benchmark(model, tokenizer, cfg, task, stop_ids, seed, positions, log, name, ref,
               print_fn, parts=None) -> dict:
    """One model on one shipped benchmark (the stage's `benchmarks`): pass@1 over the
    stage's k samples, its questions (the benchmark's own, with its request for a boxed
    answer or a python block) prompted with the stage's template; logged to eval.jsonl under
    the benchmark's name. Returns pass@1, its 95% interval, n and k."""
    test = task.test_examples()
    if cfg.limit:
        test = test[:cfg.limit]
    t0 = time.time()
    res, max_new = _evaluate_on(model, tokenizer, cfg, task, test, stop_ids, seed, positions,
                                parts, task.name)
    log.eval({"stage": name, "step": 0, "benchmark": task.name, "model": ref,
              **res.as_record(), "max_new_tokens": max_new, "seconds": time.time() - t0})
    if res.untagged:
        print_fn(f"[{name}] note: {ref} on {task.name}: {100 * res.untagged:.1f}% of the "
                 f"responses have no <think>, </think> or <answer>: {UNTAGGED_NOTE}")
    return {"pass@1": res.pass_at_1, "pass@1_ci95": list(res.ci95), "n": res.n, "k": res.k,
            "mean_tokens": res.mean_tokens}


def write_table(rows: list[dict], stage_dir: Path, k: int, benchmarks=()) -> None:
    cols = [(key, label.replace("@k", f"@{k}")) for key, label in COLUMNS
            if any(r.get(key) is not None for r in rows)]
    # each benchmark's pass@1 after the task's columns, before the general ones
    at = next((i for i, (key, _) in enumerate(cols) if key in ("helpful", "safety",
                                                                "mean_tokens")), len(cols))
    cols[at:at] = [(bench, f"{bench} pass@1") for bench in benchmarks]
    lines = ["| stage | " + " | ".join(label for _, label in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for r in rows:
        cells = []
        for key, _ in cols:
            v = r.get(key)
            if isinstance(v, dict):  # a benchmark's results
                v = v["pass@1"]
            if v is None:
                cells.append("—")
            elif key == "mean_tokens":
                cells.append(f"{v:.1f}")
            elif key == "helpful":  # a mean score in (0, 1), not a rate
                cells.append(f"{v:.3f}")
            else:
                cells.append(f"{100 * v:.1f}%")
        lines.append(f"| {shown_model(r['model'])} | " + " | ".join(cells) + " |")
    (stage_dir / "stage_table.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    shown = [(key, label) for key, label in cols if key != "mean_tokens"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 3.6))
    width = 0.8 / max(1, len(shown))
    for j, (key, label) in enumerate(shown):
        xs = [i + (j - (len(shown) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [100 * ((r[key]["pass@1"] if isinstance(r.get(key), dict) else r.get(key))
                           or 0.0) for r in rows], width,
               label=label + (" ×100" if key == "helpful" else ""))
    ax.set_xticks(range(len(rows)), [shown_model(r["model"]) for r in rows])
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    # beside the bars, not over them
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title("stage table")
    fig.tight_layout()
    fig.savefig(stage_dir / "stage_table.png", dpi=120)
    plt.close(fig)
