"""Rejection sampling and data generation: the `sample` stage (R1-SPEC.md §4).

From a checkpoint: sample `samples_per_prompt` responses per training question, keep those
whose answer the task's verifier accepts and that pass R1's readability filters, up to
`keep_per_prompt` distinct responses per question; optionally rewrite them (cold start), mix in
non-reasoning rows, and write `data.jsonl` ({prompt, response, type, answer}) plus
`sample.json` with how many samples each step removed.

Readability filters: each is a function of the chain of thought (the text inside <think>) that
returns the reason for rejecting it, or None. They run in the order configured; a sample is
counted against the first filter that rejects it.

Under torchrun every rank samples, verifies, judges and filters its share of the questions
(each question seeded on its own: r1kit.eval.core); rank 0 gathers the kept rows (no process
holds every sample) and writes them, and every rank gathers the counts.

Cold-start rewrite (`rewrite = true`): the paper rewrites kept R1-Zero samples with an LLM
into the question's language, ending with a summary that states the answer in \\boxed{}. The
tiny world's stand-in is deterministic (`rewrite_tiny`): Chinese operation words become English
ones and the answer part becomes the sentence "The answer is N." (a \\boxed{} spelled out
character by character proved too much for the tiny model to learn). Other tasks have no built-in
rewriter; bring rewritten data as a file to an sft stage.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import torch

from r1kit import distributed
from r1kit.checkpoints import STATE_FILE, write_checkpoint
from r1kit.errors import R1kitError
from r1kit.eval.core import sample_and_verify
from r1kit.models import load_model, load_tokenizer, stop_token_ids
from r1kit.rewards.language import LANGUAGES, chain_of_thought, count_words, detect_language
from r1kit.rewards.rule import format_reward, format_style, untagged
from r1kit.tasks import general, make_task
from r1kit.templates import encode_prompt, prompt_text, response_prefill


def mixed_language(cot: str, language: str = "en", **_) -> str | None:
    """Rejects a chain of thought that has words of a language other than `language`."""
    counts = count_words(cot)
    others = {lang: n for lang, n in counts.items() if lang != language and n}
    if others:
        return f"{sum(others.values())} words not in {language}"
    return None


def long_paragraph(cot: str, max_paragraph_chars: int = 600, **_) -> str | None:
    """Rejects a chain of thought with a paragraph (text between blank lines) over the limit."""
    longest = max((len(p) for p in re.split(r"\n\s*\n", cot)), default=0)
    return f"a {longest}-character paragraph" if longest > max_paragraph_chars else None


# lines of Python as Python writes them (not English lines that begin with "for", "class" or
# "import": "for every n we have:", "class of all integers", "import ant to note")
_CODE_LINE = re.compile(
    r"^\s*(def \w+\s*\(|class \w+\s*[(:]|import [\w.]+(\s+as\s+\w+)?(\s*,\s*[\w.]+)*\s*$"
    r"|from [\w.]+ import |print\(|for \w+(\s*,\s*\w+)* in .+:\s*$)", re.M)


_TILDE_FENCE = re.compile(r"^[ \t]*~~~", re.M)  # Markdown's other fence


def code_in_cot(cot: str, **_) -> str | None:
    """Rejects a chain of thought holding a fenced code block or lines of Python."""
    if "```" in cot or _TILDE_FENCE.search(cot):
        return "a fenced code block"
    if _CODE_LINE.search(cot):
        return "a line of code"
    return None


def repetition(cot: str, max_repeats: int = 3, **_) -> str | None:
    """Rejects a chain of thought that says the same sentence more than `max_repeats` times."""
    # sentences end at . ! ? and a space, at Chinese 。！？ (no space follows them), or a line
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|(?<=[。！？])\s*|\n+", cot)
                 if len(s.strip()) > 3]
    if not sentences:
        return None
    sentence, n = Counter(sentences).most_common(1)[0]
    return f"{sentence!r} {n} times" if n > max_repeats else None


def empty_thought(cot: str, **_) -> str | None:
    """Rejects a chain of thought without a word in it (`<think></think>` and the answer: no
    reasoning to learn from). Not among the default filters."""
    return None if re.search(r"\w", cot) else "an empty chain of thought"


FILTERS = {"mixed_language": mixed_language, "long_paragraph": long_paragraph,
           "code_in_cot": code_in_cot, "repetition": repetition, "empty_thought": empty_thought}


def rejected_by(cot: str, cfg, language: str) -> str | None:
    """The first of a sample stage's filters (cfg.filters, with its settings) that rejects
    this chain of thought, or None."""
    return next((name for name in cfg.filters
                 if FILTERS[name](cot, language=language,
                                  max_paragraph_chars=cfg.max_paragraph_chars,
                                  max_repeats=cfg.max_repeats)), None)


_ZH_OPS = {"加": " plus ", "减": " minus "}


def rewrite_tiny(response: str, answer: str) -> str:
    """The tiny world's cold-start rewrite: an English chain of thought and a summary sentence
    that states the answer (module docstring)."""
    cot = chain_of_thought(response)
    for zh, en in _ZH_OPS.items():
        cot = cot.replace(zh, en)
    cot = " ".join(cot.split())
    return f"<think> {cot} </think> <answer> The answer is {answer}. </answer>"


def general_rows(n: int, seed: int) -> list[dict]:
    """Non-reasoning SFT rows of the tiny world: requests answered well (no chain of thought);
    harmful requests refused, harmless ones helped."""
    rows = []
    pairs = general.helpful_pairs(n - n // 3, seed)
    rows += [{"prompt": p["prompt"], "response": general.wrap(p["chosen"]), "type": "general"}
             for p in pairs]
    for r in general.safety_rows(4 * n, seed):
        if len(rows) >= n:
            break
        harmful = any(h in r["prompt"] for h in general.HARMFUL)
        helps = r["response"].startswith("Sure.")
        if helps != harmful:  # help with harmless requests, refuse harmful ones
            rows.append({"prompt": r["prompt"], "response": general.wrap(r["response"]),
                         "type": "general"})
    return rows


def _judge(cfg, path: Path, device, dtype, examples, verdicts, correct: set[int],
           k: int) -> dict[int, float]:
    """The judge's P(yes) for the samples cfg.judge names that have a final answer (under
    torchrun: this rank's samples)."""
    from r1kit.rewards.judge import DEFAULT_PROMPT, AnswerJudge

    todo = [i for i, (_, v) in enumerate(verdicts) if v["answer"] is not None
            and (cfg.judge == "all" or i not in correct)]
    if not todo:
        return {}
    judge = AnswerJudge(path, device, dtype, cfg.judge_prompt or DEFAULT_PROMPT,
                        cfg.judge_batch_size)
    verdict = judge([prompt_text(examples[i // k].question) for i in todo],
                    [examples[i // k].answer for i in todo],
                    [verdicts[i][1]["answer"] for i in todo])
    return dict(zip(todo, verdict))  # (None: the request did not fit the judge)


def run_sample(cfg, model_path: Path, stage_dir: Path, seed: int, device: torch.device,
               dtype: torch.dtype, log=print, judge_path: Path | None = None) -> dict:
    """Rejection sampling: samples_per_prompt samples of each training question, kept where
    right (the task's rules; with `judge_path`, the judge_model's verdict on the samples of
    cfg.judge: r1kit.rewards.judge), in format and readable (filters), up to keep_per_prompt
    distinct ones per question; data.jsonl for an sft stage. Under torchrun: every rank its
    share of the questions, rank 0 the files (module docstring). With `save_every`, the
    questions go a part of that many at a time, each part's kept rows and counts written as
    checkpoints/step-N (N: the questions done), and a stage run again after an interruption
    goes on after its last part; each question is then seeded on its own, so the rows are
    those of one pass with seeding = "question"."""
    if cfg.rewrite and cfg.task != "arithmetic":
        raise R1kitError("rewrite = true has a built-in rewriter only for the tiny world",
                         "rewrite your samples with a model of your choice and give them to an "
                         "sft stage as a file")
    t0 = time.time()
    main = distributed.current().is_main
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path, device, dtype, tokenizer).eval()
    task = make_task(cfg, seed)
    examples = task.train_examples()
    random.Random(f"sample-{seed}").shuffle(examples)
    if cfg.prompts:
        examples = examples[:cfg.prompts]
    if not examples:
        error = R1kitError("the task has no training questions to sample from")
        error.same_on_every_process = True  # (every rank reads the same file)
        raise error
    prompts = [encode_prompt(e.question, cfg.template, tokenizer, cfg.prefill,
                             system=cfg.system_prompt) for e in examples]
    stop_ids = stop_token_ids(tokenizer, model)
    done = distributed.broadcast_object(parts_done(stage_dir))  # [(first, last, directory)]
    start = done[-1][1] if done else 0
    if start:
        log(f"resuming after question {start} of {len(examples)} ({len(done)} parts in "
            f"{stage_dir / 'checkpoints'})")
    per_question = cfg.seeding == "question" or bool(cfg.save_every or done)
    if per_question and cfg.seeding != "question" and not distributed.current().enabled:
        log("save_every: each question is seeded on its own (as seeding = \"question\"), so "
            "that a part's samples do not depend on where the parts begin")
    size = cfg.save_every or len(examples)
    on_disk = bool(cfg.save_every or done)  # (resumed: the rest kept as a part too)
    policy = [model]  # (emptied while a judge runs: one model in memory at a time)
    del model  # (policy holds the only reference)
    counts, rows, shown = [_read_counts(d) for _, _, d in done], [], []
    for first in range(start, len(examples), size):
        last = min(first + size, len(examples))
        part_rows, part_counts, part_shown = _sample_part(
            cfg, policy, lambda: load_model(model_path, device, dtype, tokenizer).eval(),
            tokenizer, task, examples[first:last], prompts[first:last], first, seed, stop_ids,
            per_question, judge_path, device, dtype)
        counts.append(part_counts)
        if on_disk:  # (the rows read back at the end)
            _write_part(stage_dir, first, last, part_rows, part_counts, part_shown)
        else:
            rows, shown = part_rows, part_shown
    if on_disk:
        # (rank 0's alone: it writes the files, and removes the parts)
        parts = parts_done(stage_dir) if main else []
        rows = [r for _, _, d in parts for r in _read_part(d, "rows.jsonl")]
        shown = [r for _, _, d in parts for r in _read_part(d, "shown.jsonl")][:SHOWN]
    counts = _summed(counts)
    if counts.get("judged") is not None:
        which = "that the rules reject" if cfg.judge == "wrong" else ""
        log(f"sample: the judge decided {counts['judged']} samples {which} with a final "
            f"answer and accepted {counts['judge_accepted']}".replace("  ", " "))
        if counts["judge_too_long"]:
            log(f"sample: {counts['judge_too_long']} requests were longer than the judge's "
                "positions and not judged (rejected): shorten judge_prompt, or a judge with a "
                "longer context")
        else:
            del counts["judge_too_long"]
    if cfg.general_rows:
        extra = general_rows(cfg.general_rows, seed)
        rows += extra if main else []
        counts["general"] = len(extra)
    generated = counts["generated"]
    if not counts["kept"] + counts.get("general", 0):
        why = ", ".join(f"{k.removeprefix('rejected/')} {v}" for k, v in counts.items()
                        if k.startswith("rejected/") and v)
        hint = "raise samples_per_prompt or prompts, or relax the filters"
        wrong, bad_format = counts["rejected/wrong"], counts["rejected/format"]
        if wrong >= generated / 2:
            hint = (("no sample was right" if wrong == generated else "most samples were "
                     "wrong") + ": prompt the model as it was trained (template, prefill"
                    + (", system_prompt: it applies to prompts without a system turn"
                       if cfg.template == "chat" else "") + "), a stronger model, a higher "
                    "temperature, or more samples_per_prompt; `r1kit eval` on the task's file "
                    "shows its accuracy")
        elif bad_format:
            hint = (f"the format check wants format = {style_of(cfg)!r}: set format (answer | "
                    "think) to what the model writes, or " + hint)
        if main:
            with (stage_dir / "rejected_samples.jsonl").open("w") as fh:
                fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in shown)
            if on_disk:  # (parts that kept nothing: no results that new settings would mix
                _remove_parts(stage_dir)  # with, as a stage without parts holds none)
        error = R1kitError(f"sample stage kept no rows out of {generated} samples (rejected: "
                           f"{why or 'none'}); the first {min(generated, SHOWN)} are in "
                           f"{stage_dir / 'rejected_samples.jsonl'}", hint)
        error.same_on_every_process = True  # (every rank has the same counts)
        raise error
    summary = {"questions": len(examples),
               "questions_with_rows": counts.pop("questions_with_rows", 0), **counts,
               "rows": counts["kept"] + counts.get("general", 0), "seconds": time.time() - t0}
    if main:
        random.Random(f"sample-rows-{seed}").shuffle(rows)
        with (stage_dir / "data.jsonl").open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        (stage_dir / "sample.json").write_text(json.dumps(summary, indent=2))
        if on_disk:  # (data.jsonl holds their rows now)
            _remove_parts(stage_dir)
    log("sample: " + ", ".join(f"{k} {v}" for k, v in summary.items() if k != "seconds"))
    return summary


def style_of(cfg) -> str:
    """The format a kept sample must have (r1kit.rewards.rule.format_style)."""
    return format_style(cfg.format, cfg.template, cfg.system_prompt)


def _sample_part(cfg, policy: list, load, tokenizer, task, examples, prompts, first: int,
                 seed: int, stop_ids, per_question: bool, judge_path: Path | None, device,
                 dtype) -> tuple[list, Counter, list]:
    """Questions `first`... of the stage sampled, verified, judged and filtered, each rank its
    share: (rank 0: the kept rows, in question order; every rank's counts added up; rank 0:
    a few samples to show should nothing be kept). `policy` holds the model, or None (then
    `load()` loads it); emptied while a judge runs."""
    if policy[0] is None:
        policy[0] = load()
    k = cfg.samples_per_prompt
    style = style_of(cfg)
    # the questions dealt to this rank (one process: all of them), as sample_and_verify deals
    # them, by their index in the stage
    index = [first + q for q in distributed.dealt(len(examples))]
    mine = [examples[q - first] for q in index]
    # a sample with no final answer (or a hedged one) scores 0
    rollout, texts, verdicts = sample_and_verify(
        policy[0], tokenizer, task, examples, prompts, k=k, temperature=cfg.temperature,
        top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, stop_ids=stop_ids, seed=seed,
        prefill=response_prefill(tokenizer, cfg.template, cfg.prefill),
        max_rows=cfg.generation_rows, overlap=cfg.overlap_rewards,
        per_question=per_question, gather=False, first=first)
    correct = {i for i, (s, _) in enumerate(verdicts) if s > 0}
    counts = Counter({"generated": len(texts), "correct": len(correct)})
    del rollout  # (its tensors: the judge's turn next, one model in memory at a time)
    judged: dict[int, float] = {}  # sample -> the judge's P(yes)
    if judge_path is not None:
        policy[0] = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
        verdict = _judge(cfg, judge_path, device, dtype, mine, verdicts, correct, k)
        judged = {i: v for i, v in verdict.items() if v is not None}
        accepted = {i for i, p in judged.items() if p >= cfg.judge_threshold}
        correct = (correct | accepted) if cfg.judge == "wrong" else accepted
        counts["correct"] = len(correct)  # (by the rules and the judge)
        counts["judged"], counts["judge_accepted"] = len(judged), len(accepted)
        counts["judge_too_long"] = len(verdict) - len(judged)
    rows = []
    for q, ex in enumerate(mine):
        kept: list[str] = []
        for i in range(q * k, (q + 1) * k):
            text = texts[i]
            if i not in correct:
                counts["rejected/wrong"] += 1
                continue
            # (read_untagged: a response without tags is an answer as it is, its whole text)
            if not format_reward(text, style) and not (cfg.read_untagged and untagged(text)):
                counts["rejected/format"] += 1
                continue
            target = cfg.language
            if target == "prompt":
                detected = detect_language(prompt_text(ex.question))
                target = detected if detected in LANGUAGES else "en"
            cot = chain_of_thought(text)
            reason = rejected_by(cot, cfg, target)
            if reason is not None:
                counts[f"rejected/{reason}"] += 1
                continue
            if cfg.rewrite:
                text = rewrite_tiny(text, ex.answer)
            if text in kept or len(kept) >= cfg.keep_per_prompt:
                counts["rejected/duplicate_or_enough"] += 1
                continue
            kept.append(text)
            rows.append((index[q], {"prompt": ex.question, "response": text, "type": "reasoning",
                                    "answer": ex.answer, **({"judge": round(judged[i], 4)}
                                                            if i in judged else {})}))
        counts["questions_with_rows"] += bool(kept)
    counts["kept"] = len(rows)
    # a few samples to show should nothing be kept (as data.jsonl, with why each was rejected)
    shown = [(index[i // k], {"prompt": mine[i // k].question, "response": texts[i],
                              "answer": mine[i // k].answer,
                              "rejected": "wrong" if i not in correct else "format or filters"})
             for i in range(min(len(texts), SHOWN))]
    counts = _summed(distributed.gather_lists([dict(counts)]))  # (every rank's, in rank order)
    # rank 0: every rank's, in question order (a question's own in their order: a stable sort)
    rows = [r for _, r in sorted(distributed.gather_to_main(rows), key=lambda r: r[0])]
    shown = [r for _, r in sorted(distributed.gather_to_main(shown), key=lambda r: r[0])][:SHOWN]
    return rows, counts, shown


def parts_done(stage_dir: Path) -> list[tuple[int, int, Path]]:
    """(first question, last question + 1, directory) of a sample stage's parts written so
    far (checkpoints/step-N), one after another from question 0 (a part after a gap, or
    overlapping one before it, is not used)."""
    found = []
    for d in (Path(stage_dir) / "checkpoints").glob("step-*"):
        if (d / STATE_FILE).is_file() and d.name[5:].isdigit():
            state = torch.load(d / STATE_FILE, weights_only=True)
            if isinstance(state, dict) and "first" in state:
                found.append((state["first"], int(d.name[5:]), d))
    chain = []
    for first, last, d in sorted(found, key=lambda p: p[:2]):
        if first == (chain[-1][1] if chain else 0) and last > first:
            chain.append((first, last, d))
    return chain


def _write_part(stage_dir: Path, first: int, last: int, rows: list, counts: Counter,
                shown: list) -> None:
    """checkpoints/step-`last`: a part's kept rows and shown samples (rank 0's: all of them)
    and its counts."""
    def write(tmp: Path) -> None:
        for name, items in (("rows.jsonl", rows), ("shown.jsonl", shown)):
            with (tmp / name).open("w") as fh:
                fh.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        torch.save({"first": first, "counts": dict(counts)}, tmp / STATE_FILE)
    if distributed.current().is_main:
        write_checkpoint(stage_dir, last, 0, write)
    distributed.wait_for_main()


def _remove_parts(stage_dir: Path) -> None:
    """The parts removed, the last first: a stage killed meanwhile goes on after those left
    (a gap in them would send it back to the gap)."""
    for _, _, directory in reversed(parts_done(stage_dir)):
        shutil.rmtree(directory)
    shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)


def _read_part(directory: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (directory / name).read_text().splitlines()]


def _read_counts(directory: Path) -> Counter:
    return Counter(torch.load(directory / STATE_FILE, weights_only=True)["counts"])


SHOWN = 20  # samples written to rejected_samples.jsonl when a sample stage keeps none


def _summed(parts: list[dict]) -> Counter:
    """Counts of every rank added up, in the order of the one-process counts: generated,
    correct, the judge's, the rejections as they first came, then kept."""
    total: Counter = Counter()
    for part in parts:
        total.update(part)
    kept = total.pop("kept")
    return Counter({**total, "kept": kept})
