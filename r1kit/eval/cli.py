"""`r1kit eval`: a checkpoint on shipped benchmarks, the paper's way (R1-SPEC.md §5).

pass@1 is the mean over k samples per problem (temperature 0.6, top-p 0.95 by default) with
a 95% confidence interval over problems; unbiased pass@k for k = 2, 4, ... up to the samples
drawn; cons@k the majority vote, answers grouped by mathematical equivalence for math
benchmarks; mean response tokens; per-level and per-subject pass@1 where the data has them.

Under torchrun (`torchrun --nproc_per_node N -m r1kit eval ...`) every process loads the model
on its own GPU and samples a share of each benchmark's problems, each problem seeded on its own
(r1kit.eval.core); the first process prints the results and writes --out.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch

from r1kit import distributed
from r1kit.errors import R1kitError
from r1kit.eval.benchmarks import (
    BENCHMARKS,
    NAMES,
    bench_name,
    choice_field_of,
    is_code_file,
    is_data_file,
    load_benchmark,
)
from r1kit.eval.core import evaluate, evaluate_questions, pass_ks, summarize
from r1kit.models import (
    adapter_base,
    cached_hub_data,
    check_model_dir,
    is_adapter,
    load_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    stop_token_ids,
    trained_positions,
    trusting_remote_code,
)
from r1kit.rewards.rule import UNTAGGED_NOTE
from r1kit.tasks.choice import ChoiceTask
from r1kit.templates import (
    TEMPLATES,
    answered_prompts,
    encode_prompt,
    response_prefill,
    system_text,
)


def _check(args) -> list[str]:
    # (a file in a data set in the Hugging Face cache: hf://datasets/ORG/NAME/PATH)
    names = list(dict.fromkeys(  # (a benchmark named twice is run once)
        bench_name(cached_hub_data(n.strip()) or n.strip())
        for n in str(args.bench).split(",") if n.strip()))
    if not names:
        raise R1kitError("--bench names no benchmark", f"use any of: {', '.join(NAMES)}")
    for name in names:
        if name not in NAMES and Path(name).is_dir():
            from r1kit.tasks.math import read_rows

            read_rows(name)  # (a directory: said so, with a file or glob of one split)
        if name not in NAMES and not is_data_file(name):
            raise R1kitError(f"--bench: unknown benchmark {name!r}",
                             f"use any of: {', '.join(NAMES)}, or a .jsonl / .json / .parquet file "
                             "(or a glob of its shards) of your own (math, multiple-choice or "
                             "code problems)")
    if args.k < 0 or args.limit < 0 or args.save_every < 0:
        raise R1kitError("--k, --limit and --save-every must be >= 0")
    if args.save_every and not args.out:
        raise R1kitError("--save-every writes the problems evaluated so far to --out's file, "
                         "and there is no --out", "add --out results.json")
    if not 0 <= args.temperature < float("inf") or not 0 < args.top_p <= 1:  # (NaN too)
        raise R1kitError("--temperature must be a finite number >= 0 (0: greedy) and --top-p "
                         "in (0, 1]",
                         "the paper samples at temperature 0.6, top-p 0.95")
    if args.temperature == 0 and args.k > 1:
        raise R1kitError(f"--temperature 0 (greedy) gives {args.k} identical samples",
                         "use --k 1 (the default with --temperature 0)")
    if (args.max_new_tokens is not None and args.max_new_tokens < 1) or args.generation_rows < 1:
        raise R1kitError("--max-new-tokens and --generation-rows must be >= 1")
    if args.template not in ("auto", *TEMPLATES):
        raise R1kitError(f"--template: unknown template {args.template!r}",
                         f"use auto, {', '.join(TEMPLATES)}")
    if args.out and Path(args.out).is_dir():  # found now, not after the evaluation
        raise R1kitError(f"--out {str(args.out)!r} is a directory",
                         "give the path of the JSON file to write, e.g. results.json")
    if args.out:
        _check_writable(Path(args.out))
    return names


def _check_writable(out: Path) -> None:
    """An R1kitError now, before any sampling, where `out` cannot be written."""
    existed = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise R1kitError(f"--out {str(out)!r} cannot be written: {exc.strerror or exc}",
                         "give a path in a directory you can write to") from exc
    if not existed:
        out.unlink(missing_ok=True)


def trained_prompting(path: Path) -> tuple[str, dict] | None:
    """The stage of an r1kit run that wrote the checkpoint at `path` (its final model, one of
    its checkpoints/step-N, or a LoRA stage's final adapter/) and that stage's settings, from the run's config.json; None for
    any other checkpoint."""
    path = Path(path).resolve()  # (`--model .` inside a stage directory)
    stage_dir = (path.parent.parent if path.parent.name == "checkpoints"
                 else path.parent if path.name == "adapter" and is_adapter(path)  # LoRA's final
                 else path)
    try:
        config = json.loads((stage_dir.parent / "config.json").read_text())
        stage = ({**(config.get("dropped_stages") or {}), **config["stages"]})[stage_dir.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(stage, dict) or stage.get("template") not in TEMPLATES:
        return None
    return stage_dir.name, stage


def _stage_cap(settings: dict, path: Path) -> int | None:
    """The length cap a stage's own evaluations of this checkpoint used: its max_new_tokens,
    raised by its max_new_tokens_schedule up to the checkpoint's step (checkpoints/step-N),
    or its last step for its final model; None where the stage has no max_new_tokens."""
    from r1kit.config import GRPOConfig

    cap = settings.get("max_new_tokens")
    if not isinstance(cap, int):
        return None
    step = settings.get("steps")
    if Path(path).resolve().parent.name == "checkpoints":
        try:
            step = int(Path(path).resolve().name.removeprefix("step-"))
        except ValueError:
            pass
    schedule = [x for x in settings.get("max_new_tokens_schedule") or []
                if isinstance(x, (list, tuple)) and len(x) == 2]
    if not isinstance(step, int):
        return cap
    return GRPOConfig(max_new_tokens=cap, max_new_tokens_schedule=schedule).max_new_tokens_at(step)


PAPER_MAX_NEW_TOKENS = 32768


def model_positions(path: Path) -> int | None:
    """A checkpoint's trained positions (max_position_embeddings, GPT-2's n_positions, ...:
    models.trained_positions) where they are below the paper's 32,768 new tokens
    (a pretrain stage's 512): the default length then stops at the model's last position, as
    samples past the positions a model learned are noise; None otherwise."""
    if is_adapter(path):  # a peft adapter: its base model's positions
        path = adapter_base(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    positions = trained_positions(config) if isinstance(config, dict) else None
    return positions if positions is not None and positions < PAPER_MAX_NEW_TOKENS else None


def _stage_world(settings: dict):
    """The tiny world of a stage's settings (its `world` table), for --bench tiny: the
    held-out set that stage was evaluated on, kept out of its training pool; None where the
    stage has no world table."""
    from dataclasses import fields

    from r1kit.config import WorldConfig

    world = settings.get("world")
    if not isinstance(world, dict):
        return None
    known = {f.name for f in fields(WorldConfig)}
    return WorldConfig(**{k: tuple(v) if isinstance(v, list) else v  # (JSON lists: tuples)
                          for k, v in world.items() if k in known})


def run_eval_command(args) -> list[dict]:
    with trusting_remote_code(args.trust_remote_code):
        if not distributed.launched():
            return _run_eval(args)
        # under torchrun: every process its share of the problems; the first one speaks
        quiet = os.environ.get("RANK", "0") != "0"
        try:
            with open(os.devnull, "w") as devnull, \
                    (contextlib.redirect_stdout(devnull) if quiet else contextlib.nullcontext()):
                results = _run_eval(args)
        except BaseException:
            distributed.shutdown(wait=False)  # (the others may never get here)
            raise
        distributed.shutdown()
        return results


def _run_eval(args) -> list[dict]:
    try:
        return _evaluate_all(args, _check(args))
    except R1kitError as exc:
        if not distributed.current().enabled:  # (a problem of the command or its files,
            exc.same_on_every_process = True   # found before the processes joined: every
        raise                                  # one meets it, the first of a machine says it)


def _evaluate_all(args, names: list[str]) -> list[dict]:
    # the choices_field each multiple-choice file of your own is read with (None: not one)
    choice_fields = {n: choice_field_of(n, args.choices_field) for n in names}
    code_files = {n for n in names if choice_fields[n] is None
                  and is_code_file(n, args.answer_field)}
    if not any(is_data_file(n) for n in names):
        unused = [flag for flag, off in (("--question-field", args.question_field != "question"),
                                         ("--answer-field", args.answer_field != "answer"),
                                         ("--choices-field", bool(args.choices_field)),
                                         ("--no-math-instruction",
                                          args.math_instruction is False)) if off]
        if unused:
            print(f"note: {', '.join(unused)} appl{'ies' if len(unused) == 1 else 'y'} to a "
                  "benchmark file of your own (--bench "
                  "FILE); the shipped benchmarks have their own fields and prompts")
    path = check_model_dir(args.model)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    template, prefill, system = args.template, args.prefill, args.system_prompt
    if args.system_text is not None:
        if system is not None:
            raise R1kitError("--system-text and --system-prompt / --no-system-prompt both set "
                             "the system turn", "give one of them")
        system = args.system_text.replace("\\n", "\n") or False
    if prefill is not None:  # as the help writes it: '<think>\n' ends with a newline
        prefill = prefill.replace("\\n", "\n").replace("\\t", "\t")
    instruction = args.math_instruction
    stage_of_model = trained_prompting(Path(path))
    trained = stage_of_model if template == "auto" else None
    positions = None  # the model's positions, where they cap the default length
    if args.max_new_tokens is None:  # as the stage's own evaluations, else the paper's
        own_settings = stage_of_model[1] if stage_of_model is not None else {}
        evals = own_settings.get("eval") if isinstance(own_settings.get("eval"), dict) else {}
        args.max_new_tokens = (evals.get("max_new_tokens")
                               or _stage_cap(own_settings, Path(path)))
        if not args.max_new_tokens:
            positions = model_positions(Path(path))
            args.max_new_tokens = PAPER_MAX_NEW_TOKENS
    if trained is not None:  # prompt as the stage that trained this checkpoint did
        stage, settings = trained
        template = settings["template"]
        prefill = prefill if prefill is not None else settings.get("prefill", "")
        if system is None:  # the stage's system turn (r1kit's instruction unless it set one)
            system = settings.get("system_prompt", "r1kit") if template == "chat" else False
        # (multiple-choice files keep their request for a letter, as the stage's evaluations)
        own = any(is_data_file(n) and choice_fields[n] is None and n not in code_files
                  for n in names)
        instruction = instruction if instruction is not None else not own
        print(f"prompts as stage {stage!r} trained this model: template {template!r}, "
              f"prefill {prefill!r}, max_new_tokens {args.max_new_tokens}"
              + (f", system turn {system_text(system)[:40]!r}"
                 + ("…" if len(system_text(system)) > 40 else "")
                 + " (for questions without a system turn of their own)"
                 if template == "chat" and system_text(system) else "")
              + (", your math files' questions as they are" + (
                  " (as its evaluations)" if isinstance(settings.get("eval"), dict) else "")
                 if own and not instruction else "") + " (--template to choose another)")
    # every benchmark read (and a file of your own checked) before the model loads
    world = _stage_world(stage_of_model[1]) if stage_of_model is not None else None
    if args.choices_field and any(map(is_data_file, names)) and args.choices_field not in \
            choice_fields.values():
        raise R1kitError(f"--choices-field {args.choices_field!r}: no file of --bench has that "
                         "field", "name the field that holds the options, or leave "
                         "--choices-field out (choices and options are read without it)")
    # the request appended (for multiple-choice and code files: on unless turned off)
    asks = {name: (args.math_instruction if choice_fields[name] is not None
                   or name in code_files else instruction) is not False for name in names}
    # code files of your own, for a model a code stage trained: its request and time limit
    code_stage = stage_of_model[1] if stage_of_model is not None \
        and stage_of_model[1].get("task") == "code" else {}
    code_request = code_stage.get("code_instruction", "r1kit") \
        if args.math_instruction is None else "r1kit"
    tasks = {name: load_benchmark(name, args.seed, args.question_field, args.answer_field,
                                  asks[name], world=world, choices_field=args.choices_field,
                                  code_instruction=code_request,
                                  code_timeout=code_stage.get("code_timeout"))
             for name in names}
    read_untagged = args.read_untagged
    if read_untagged is None:  # as the stage that trained the model read its answers
        read_untagged = bool(stage_of_model and stage_of_model[1].get("read_untagged"))
        if read_untagged:
            print(f"reads responses without tags whole, as stage {stage_of_model[0]!r} did "
                  "(read_untagged; --no-read-untagged for R1's rule)")
    for name, task in tasks.items():
        if read_untagged:
            task.read_untagged = True  # r1kit.rewards.answers.reads_untagged
        if isinstance(task, ChoiceTask):
            print(f"{name}: multiple-choice questions ({len(task.test_examples())}); the answer "
                  "is the letter of an option (r1kit.tasks.choice)")
        elif name in code_files:
            print(f"{name}: code problems ({len(task.test_examples())}); the last python block "
                  "of each answer runs against the row's tests in the sandbox "
                  "(r1kit.rewards.code)")
        elif is_data_file(name):
            print(f"{name}: math problems ({len(task.test_examples())}); the answer is checked "
                  "with math-verify (a file whose rows hold options is read as multiple choice)")
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(path)
    if template == "auto":
        template = "chat" if getattr(tokenizer, "chat_template", None) else "r1-zero"
    for name, task in tasks.items():
        said = answered_prompts([e.question for e in task.test_examples()], f"--bench {name}")
        if said:  # (open-r1's messages as the questions: every one shown its answer)
            raise R1kitError(said, "prompts end with the user's message: --question-field "
                             "names the field of the question alone (open-r1's data sets: "
                             "problem)")
        if template == "r1-zero" and any(isinstance(e.question, list)
                                         for e in task.test_examples()):
            raise R1kitError(f"--bench {name}: its prompts are chat messages, which need a chat "
                             "template", "use --template chat with a model that has one"
                             if args.template == "r1-zero" else
                             "this model's tokenizer has no chat template: give the prompts "
                             "as text")
    if template != "chat" and (args.system_text or args.system_prompt):
        print(f"note: --system-text / --system-prompt give chat prompts a system turn; with "
              f"template {template!r} prompts have none")
    if template != "chat":
        system = False  # (and --out says so)
    # under torchrun: joins the group (after every check of the command and its files, which
    # each process meets alike), on cuda:LOCAL_RANK
    device = distributed.init(device)
    model, failed = None, None
    try:
        model = load_model(path, device, dtype, tokenizer).eval()
    except R1kitError as exc:  # (the same files on every process: said once per machine)
        failed = exc
    distributed.agree_on_failure(failed, "loading the model")
    if prefill is None:
        prefill = "<think>\n" if template == "chat" else ""
    stop_ids = stop_token_ids(tokenizer, model)
    settings = {"model": str(path), "template": template, "prefill": prefill,
                "system_prompt": system_text(system or False) or False,
                "temperature": args.temperature, "top_p": args.top_p,
                "max_new_tokens": args.max_new_tokens, "seed": args.seed,
                "limit": args.limit, "read_untagged": read_untagged,
                "seeding": ("question" if distributed.current().enabled or args.save_every
                            else args.seeding),
                "dtype": str(dtype).removeprefix("torch."), "device": device.type}
    if positions is not None:  # each result's max_new_tokens: the length it used
        settings["max_new_tokens_up_to_position"] = positions
    if any(is_data_file(n) for n in names):
        settings.update(question_field=args.question_field, answer_field=args.answer_field)
        if args.choices_field:
            settings["choices_field"] = args.choices_field
    out = Path(args.out) if args.out else None
    main = distributed.current().is_main
    inputs = _inputs(Path(path), names) if out is not None and main else {}
    # benchmarks an interrupted run of this command evaluated, and the problems it evaluated
    # of the next one (rank 0's view decides for all)
    earlier, partial = distributed.broadcast_object(
        _unfinished(out, settings, inputs) if out is not None and main else ({}, None))
    if earlier:
        print(f"resuming {out}: {', '.join(earlier)} evaluated by an interrupted run of this "
              "command with these settings, on the same model and files")
    results = []
    for name in names:
        t0 = time.time()
        task = tasks[name]
        examples = task.test_examples("main")
        if args.limit:
            examples = examples[:args.limit]
        own = is_data_file(name)  # a benchmark of your own: the paper's default k (16 for
        # MATH and Codeforces, 8 for LiveCodeBench, whose rows carry public_test_cases)
        livecodebench = name in code_files and bool(examples) \
            and "public_test_cases" in examples[0].meta.get("row", {})
        k = args.k or (1 if args.temperature == 0 else BENCHMARKS[name].k
                       if name in BENCHMARKS else 8 if livecodebench else 16 if own else 4)
        prompts = [encode_prompt(e.question, template, tokenizer, prefill, system=system or False)
                   for e in examples]
        max_new = args.max_new_tokens
        if positions is not None and prompts:  # the default, up to the model's last position
            max_new = max(1, min(max_new, positions - max(len(p) for p in prompts)))
            print(f"{name}: max_new_tokens {max_new}, up to the model's {positions} positions "
                  "(--max-new-tokens to choose)")
        # the request for \boxed{}: in a shipped math benchmark's questions always; a code
        # file's: the code_instruction setting it was asked with
        request = ({"code_instruction": code_request if asks[name] else ""}
                   if name in code_files else
                   {"math_instruction": asks[name]} if own else
                   {"math_instruction": True} if name in BENCHMARKS
                   and BENCHMARKS[name].kind == "math" else {})
        done = earlier.get(name)
        if done is not None and (done.get("k"), done.get("n"), done.get("max_new_tokens")) == (
                k, len(examples), max_new) and all(done.get(key) == value
                                                   for key, value in request.items()):
            results.append(done)
            continue
        sampling = dict(k=k, temperature=args.temperature, top_p=args.top_p,
                        max_new_tokens=max_new, stop_ids=stop_ids, seed=args.seed,
                        prefill=response_prefill(tokenizer, template, prefill),
                        max_rows=args.generation_rows, overlap=args.overlap_rewards)
        if not args.save_every:
            res = evaluate(model, tokenizer, task, examples, prompts, **sampling,
                           per_question=args.seeding == "question")
        else:  # N problems at a time, each seeded by its index: the same as all at once
            this = {"benchmark": name, "k": k, "n": len(examples), "max_new_tokens": max_new,
                    **request}
            records = []
            if partial is not None and {key: partial.get(key) for key in this} == this \
                    and len(partial["questions"]) < len(examples):
                records = partial["questions"]
                print(f"{name}: resuming after problem {len(records)} of {len(examples)}, "
                      "evaluated by the interrupted run")
            while len(records) < len(examples):
                a = len(records)
                b = min(len(examples), a + args.save_every)
                records = records + evaluate_questions(
                    model, tokenizer, task, examples[a:b], prompts[a:b], **sampling,
                    per_question=True, first=a)
                if main and len(records) < len(examples):
                    _write_results(out, settings, results,
                                   {"inputs": inputs, "unfinished": names[len(results):],
                                    "partial": {**this, "questions": records}})
            res = summarize(records, k, getattr(task, "votes", True))
        record = {"benchmark": name, **res.as_record(), "max_new_tokens": max_new,
                  **request, "samples": res.samples, "seconds": time.time() - t0}
        results.append(record)
        if out is not None and main and len(results) < len(names):
            # (so far: an interrupted command, run again, goes on after it)
            _write_results(out, settings, results,
                           {"inputs": inputs, "unfinished": names[len(results):]})
    print(format_table(results))
    if out is not None and main:
        _write_results(out, settings, results)
        print(f"results: {out}")
    return results


def _write_results(out: Path, settings: dict, results: list[dict],
                   resume: dict | None = None) -> None:
    """--out: the settings and results; while benchmarks remain (`resume`), what a rerun of
    the command needs to go on after the ones done. Written whole, then renamed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps({"settings": settings, "results": results,
                               **({"resume": resume} if resume else {})}, indent=2,
                              ensure_ascii=False))
    os.replace(tmp, out)


def _inputs(model: Path, names: list[str]) -> dict:
    """Fingerprints of the model's files (a peft adapter's and its base model's) and of
    benchmark files of your own (r1kit.pipeline's: sizes, times, sha256 up to 64 MiB)."""
    from r1kit.pipeline import fingerprints
    from r1kit.tasks.math import data_files

    out = fingerprints(model)
    for name in names:
        if is_data_file(name):
            for f in data_files(name):
                out.update(fingerprints(f))
    return out


def _unfinished(out: Path, settings: dict, inputs: dict) -> tuple[dict[str, dict], dict | None]:
    """What an interrupted run of the same command (its settings and its model's and files'
    fingerprints the same) left in --out: its results by benchmark, and with --save-every the
    problems it evaluated of the next benchmark (their records, evaluate_questions'); ({},
    None) if none."""
    try:
        held = json.loads(out.read_text())
    except (OSError, ValueError):
        return {}, None
    resume = held.get("resume") if isinstance(held, dict) else None
    if not isinstance(resume, dict) or held.get("settings") != json.loads(json.dumps(settings)) \
            or resume.get("inputs") != json.loads(json.dumps(inputs)):
        return {}, None
    partial = resume.get("partial")
    if not isinstance(partial, dict) or not isinstance(partial.get("questions"), list):
        partial = None
    return {r["benchmark"]: r for r in held.get("results") or []
            if isinstance(r, dict) and isinstance(r.get("benchmark"), str)}, partial


def format_table(results: list[dict]) -> str:
    """The printed summary: one row per benchmark, then per-level / per-subject pass@1."""
    lines = [("| benchmark | problems | k | pass@1 (95% CI) | pass@k | cons@k | mean tokens "
              "| truncated |"), "|---|---:|---:|---|---|---:|---:|---:|"]
    for r in results:
        k = r["k"]
        lo, hi = r["pass@1_ci95"]
        more = ", ".join(f"@{kk}: {100 * r[f'pass@{kk}']:.1f}%" for kk in pass_ks(k) if kk > 1)
        cons = r.get(f"cons@{k}")
        lines.append(f"| {r['benchmark']} | {r['n']} | {k} | {100 * r['pass@1']:.1f}% "
                     f"({100 * lo:.1f}–{100 * hi:.1f}) | {more or '—'} | "
                     + (f"{100 * cons:.1f}%" if cons is not None else "—")
                     + f" | {r['mean_tokens']:.1f} | {100 * r['truncated']:.1f}% |")
    for r in results:
        if r.get("untagged"):
            lines.append(f"note: {r['benchmark']}: {100 * r['untagged']:.1f}% of the responses "
                         f"have no <think>, </think> or <answer>: {UNTAGGED_NOTE} (prompt the "
                         "model to reason in <think>…</think>: --template, --system-prompt; "
                         "or --read-untagged reads them whole, as open-r1)")
        if r.get("unclosed"):
            lines.append(f"note: {r['benchmark']}: {100 * r['unclosed']:.1f}% of the responses "
                         "ended inside a <think> they never closed (not cut at the length cap): "
                         "no answer is read from them. A model that does not reason in "
                         "<think>…</think> needs a prompt that does not open one for it "
                         "(--prefill '')")
    for r in results:
        for title, key in (("level", "by_level"), ("subject", "by_subject")):
            if r.get(key):
                parts = ", ".join(f"{g}: {100 * v:.1f}%" for g, v in r[key].items())
                lines.append(f"{r['benchmark']} pass@1 by {title}: {parts}")
    return "\n".join(lines)
