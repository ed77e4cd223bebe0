"""Sampled evaluation of a model on a task's held-out examples.

Under torchrun every rank evaluates the questions dealt to it (distributed.dealt: every
world_size-th one; each rank holds the whole model, or has gathered it), each question's
samples drawn from its own seeded generator, and the results are gathered on every rank in
question order: the same samples, and so the same figures, on any number of processes as in
one process seeding per question (`per_question`)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch

from r1kit import distributed
from r1kit.errors import R1kitError
from r1kit.eval.behaviour import REFLECTIVE_WORDS, reflective_word_counts
from r1kit.rewards.answers import final_answers, reads_untagged
from r1kit.rewards.language import language_reward
from r1kit.rewards.overlap import OverlappedRewards
from r1kit.rewards.overlap import wanted as overlap_wanted
from r1kit.rewards.rule import untagged
from r1kit.rollout import PositionWarning, check_positions, generate, question_seed
from r1kit.tasks.base import Example, Task
from r1kit.templates import prompt_text


def majority_vote(answers: list[str | None], key: Callable[[str], Hashable] = str.strip,
                  equal: Callable[[str, str], bool] | None = None) -> str | None:
    """The most common answer; None answers never win.

    Answers are grouped by `key`, and with `equal` (e.g. mathematical equivalence) groups whose
    first answers are equal are merged, so "1/2", "0.5" and "\\frac{1}{2}" vote together. A tie
    goes to the group whose first member came first, so the result is deterministic; the
    answer returned is that group's first member, stripped."""
    groups: dict[Hashable, list[int]] = {}
    for i, a in enumerate(answers):
        if a is not None:
            groups.setdefault(key(a), []).append(i)
    if not groups:
        return None
    merged: list[list[int]] = []
    for idx in groups.values():  # in order of first appearance
        for m in merged:
            if equal is not None and equal(answers[m[0]], answers[idx[0]]):
                m.extend(idx)
                break
        else:
            merged.append(list(idx))
    best = max(merged, key=lambda idx: (len(idx), -min(idx)))
    return answers[min(best)].strip()


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2021): the chance that at least one of k samples drawn
    without replacement from n, of which c are correct, is correct: 1 - C(n-c, k) / C(n, k),
    computed as a product so that large n does not overflow."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """95% interval of the mean over problems of their accuracies. Where every problem's
    accuracy is 0 or 1 (one sample each, or problems all solved or all missed), the Wilson
    score interval of that proportion: the normal approximation collapses to the point 0 or 1
    when no problem or every problem is solved (0 of 30 AIME problems is not certainty).
    Otherwise the normal approximation, mean +- 1.96 standard errors of the sample standard
    deviation, cut to [0, 1]; the mean itself for one such value."""
    n = len(values)
    if any(not math.isfinite(v) for v in values):
        raise ValueError("mean_ci95: the values must be finite accuracies")
    if n == 0:
        return (0.0, 0.0)
    mean = sum(values) / n
    z = 1.96
    if all(v in (0.0, 1.0) for v in values):
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return (max(0.0, centre - half), min(1.0, centre + half))
    if n == 1:
        return (mean, mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return (max(0.0, mean - half), min(1.0, mean + half))


def pass_ks(k: int) -> list[int]:
    """The k of the reported pass@k: 1, 2, 4, ... up to the samples drawn, and their number."""
    out, kk = [], 1
    while kk <= k:
        out.append(kk)
        kk *= 2
    return out if out[-1] == k else [*out, k]


@dataclass
class EvalResult:
    pass_at_1: float  # mean over problems of the share of the k samples that are right
    # share of problems whose majority answer is right; None for tasks that do not vote
    # (code: programs are not compared as answers)
    cons_at_k: float | None
    k: int
    mean_tokens: float  # mean response length in tokens
    truncated: float  # share of responses that hit the length cap
    n: int  # problems
    by_level: dict[int, float] = field(default_factory=dict)  # pass@1 per difficulty level
    language: float = 0.0  # mean language consistency of the chains of thought (eq. 7)
    length_by_level: dict[int, float] = field(default_factory=dict)  # mean tokens per level
    by_subject: dict[str, float] = field(default_factory=dict)  # pass@1 per subject
    reflect: dict[str, float] = field(default_factory=dict)  # reflective words per response
    pass_at: dict[int, float] = field(default_factory=dict)  # unbiased pass@k, k = 1, 2, 4, ...
    ci95: tuple[float, float] = (0.0, 0.0)  # 95% confidence interval of pass@1
    samples: list[dict] = field(default_factory=list)  # a few responses to look at
    # share of responses without <think>, </think> or <answer>: no answer read (rule.untagged)
    untagged: float = 0.0
    # share of responses that ended (not cut at the length cap) inside a <think> they never
    # closed: no answer read (a model that does not reason in tags, prompted with <think>)
    unclosed: float = 0.0

    def as_record(self) -> dict:
        return {"pass@1": self.pass_at_1, f"cons@{self.k}": self.cons_at_k, "k": self.k,
                "mean_tokens": self.mean_tokens, "truncated": self.truncated, "n": self.n,
                "untagged": self.untagged, "unclosed": self.unclosed,
                "language": self.language,
                "pass@1_ci95": list(self.ci95),
                **{f"pass@{k}": v for k, v in sorted(self.pass_at.items()) if k > 1},
                "length_by_level": {str(k): v for k, v in sorted(self.length_by_level.items())},
                "by_subject": dict(sorted(self.by_subject.items())),
                "reflect": self.reflect,
                "by_level": {str(k): v for k, v in sorted(self.by_level.items())}}


@dataclass
class Sampled:
    """What an evaluation reads of its rollout besides the texts: each response's length in
    tokens and whether it ended with a stop token (False: cut at max_new_tokens)."""

    lengths: torch.Tensor
    stopped: torch.Tensor


class QuestionShare:
    """This process's part of sampling `n` questions: under torchrun the questions dealt to it
    (distributed.dealt), else all of them. The random numbers: one generator per question
    (seeded from `seed` and the question's index, so a question's samples do not depend on
    which process or batch samples it) under torchrun or with `per_question`, else one
    generator seeded `seed` for all. `first`: the index of the first of the `n` questions in
    a longer list sampled a part at a time (each question's seed is its index in that list)."""

    def __init__(self, n: int, seed: int, per_question: bool, device, first: int = 0):
        self.index = distributed.dealt(n)
        if per_question or distributed.current().enabled:
            self.draw = {"seeds": [question_seed(seed, 0, first + i) for i in self.index]}
        else:
            self.draw = {"generator": torch.Generator(device=device).manual_seed(seed)}

    def take(self, items: list) -> list:
        """This rank's questions of `items` (one per question)."""
        return [items[i] for i in self.index]

    def generate(self, model, prompts: list[list[int]], *, max_new_tokens: int, **kwargs):
        """r1kit.rollout.generate over this rank's share of `prompts`, with its random numbers.
        The lengths of all the prompts are checked first, so that every rank stops alike, and
        rank 0 alone warns about them."""
        world = distributed.current()
        try:
            check_positions(model, prompts, max_new_tokens, warn=world.is_main, stacklevel=3)
        except R1kitError as exc:
            exc.same_on_every_process = world.enabled  # (every rank checked all the prompts)
            raise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PositionWarning)  # (said above, for all of them)
            return generate(model, self.take(prompts), max_new_tokens=max_new_tokens,
                            **self.draw, **kwargs)

    def gather(self, texts: list[str], results: list, ro) -> tuple[list[str], list, Sampled]:
        """Every rank's texts and results (one per response, the responses of a question
        together), in question order, with their lengths and stops, on every rank (one
        process: its own)."""
        k = len(texts) // len(self.index) if self.index else 0
        mine = list(zip(texts, results, ro.lengths.tolist(), ro.stopped.tolist()))
        groups = distributed.gather_lists([(q, mine[j * k:(j + 1) * k])
                                           for j, q in enumerate(self.index)])
        rows = [r for _, group in sorted(groups, key=lambda g: g[0]) for r in group]
        return ([r[0] for r in rows], [r[1] for r in rows],
                Sampled(torch.tensor([r[2] for r in rows], dtype=torch.long),
                        torch.tensor([r[3] for r in rows], dtype=torch.bool)))


@torch.no_grad()
def evaluate_reward(model, tokenizer, reward, examples: list[Example], prompts: list[list[int]],
                    *, k: int, temperature: float, top_p: float, max_new_tokens: int,
                    stop_ids: list[int], seed: int, prefill: str = "",
                    max_rows: int = 1024, per_question: bool = False) -> dict:
    """Held-out prompts without answers (task = "prompts"), evaluated by the stage's own
    reward (its `score(responses, examples)`: reward models, reward functions): k responses
    per prompt; the mean reward with a 95% interval over prompts (normal approximation of
    the per-prompt means), each part's mean over the responses it scored (`reward/<part>`,
    as GRPO's metrics), mean length, the share cut at max_new_tokens, a few samples.
    Under torchrun each rank samples and scores its share of the prompts (module docstring):
    a reward that computes across the responses it is given at once sees that share, as in
    training."""
    was_training = model.training
    model.eval()
    part = QuestionShare(len(examples), seed, per_question,
                         next(model.parameters()).device)
    mine = part.take(prompts)
    try:
        ro = part.generate(model, prompts, group_size=k, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, stop_ids=stop_ids,
                           pad_id=tokenizer.pad_token_id, max_rows=max_rows, logprobs=False)
    finally:
        model.train(was_training)
    texts = decode_responses(tokenizer, ro.completion_ids, ro.completion_mask, stop_ids, prefill)
    rows = [examples[part.index[i // k]] for i in range(len(texts))]
    if hasattr(reward, "sampled_ids"):  # a reward function's completion_ids (TRL's)
        reward.sampled_ids = [r[:n] for r, n in zip(ro.completion_ids.tolist(),
                                                    ro.lengths.tolist())]
        reward.prompt_ids = [mine[i // k] for i in range(len(texts))]
    try:
        scored = reward.score(texts, rows) if texts else []  # (a process's share may be empty)
    finally:
        if hasattr(reward, "sampled_ids"):
            reward.sampled_ids = reward.prompt_ids = None
    texts, scored, ro = part.gather(texts, scored, ro)
    per_prompt = [sum(s for s, _ in scored[i * k:(i + 1) * k]) / k
                  for i in range(len(examples))]
    n = len(per_prompt)
    mean = sum(per_prompt) / max(1, n)
    half = (1.96 * math.sqrt(sum((v - mean) ** 2 for v in per_prompt) / (n - 1) / n)
            if n > 1 else 0.0)
    parts: dict[str, list[float]] = {}
    for _, p in scored:
        for name, v in p.items():
            parts.setdefault(name, []).append(float(v))
    return {"reward": mean, "reward_ci95": [mean - half, mean + half], "k": k, "n": n,
            **{f"reward/{name}": sum(v) / len(v) for name, v in parts.items()},
            "mean_tokens": ro.lengths.float().mean().item(),
            "truncated": 1.0 - ro.stopped.float().mean().item(),
            "samples": [{"question": examples[i].question, "response": texts[i * k],
                         "reward": scored[i * k][0]} for i in range(min(3, n))]}


@torch.no_grad()
def evaluate(model, tokenizer, task: Task, examples: list[Example], prompts: list[list[int]], *,
             k: int, temperature: float, top_p: float, max_new_tokens: int, stop_ids: list[int],
             seed: int, prefill: str = "", max_rows: int = 1024,
             answer_key: Callable[[str], Hashable] | None = None,
             answer_equal: Callable[[str, str], bool] | None = None,
             language_target: str = "prompt", overlap: str = "auto",
             per_question: bool = False) -> EvalResult:
    """Sample k responses per example and score them with the task's verifier; `language`
    is the mean eq. 7 share of `language_target` words in their chains of thought.
    cons@k's vote groups answers by `answer_key` and merges groups by `answer_equal`
    (majority_vote); by default the task's own `vote_key` / `vote_equal` (math tasks:
    mathematical equivalence), else the answer's text; no vote (cons_at_k None) for a task
    whose `votes` is False (code).
    `overlap` ("auto" | "on" | "off", as GRPO's overlap_rewards): verify responses as they
    finish, while the rest decode, where the task's checks run in worker processes
    (r1kit.rewards.overlap; the same scores); "auto": on CUDA. `per_question`: each question
    samples from its own seeded generator (always so under torchrun, where each rank samples
    its share of the questions: module docstring).
    The figures come from each question's record (evaluate_questions, summarize), so an
    evaluation seeded per question and run a part of the questions at a time gives the
    same result as one run of them all."""
    records = evaluate_questions(
        model, tokenizer, task, examples, prompts, k=k, temperature=temperature, top_p=top_p,
        max_new_tokens=max_new_tokens, stop_ids=stop_ids, seed=seed, prefill=prefill,
        max_rows=max_rows, answer_key=answer_key, answer_equal=answer_equal,
        language_target=language_target, overlap=overlap, per_question=per_question)
    return summarize(records, k, getattr(task, "votes", True))


@torch.no_grad()
def evaluate_questions(model, tokenizer, task: Task, examples: list[Example],
                       prompts: list[list[int]], *, k: int, temperature: float, top_p: float,
                       max_new_tokens: int, stop_ids: list[int], seed: int, prefill: str = "",
                       max_rows: int = 1024,
                       answer_key: Callable[[str], Hashable] | None = None,
                       answer_equal: Callable[[str, str], bool] | None = None,
                       language_target: str = "prompt", overlap: str = "auto",
                       per_question: bool = False, first: int = 0) -> list[dict]:
    """evaluate's samples and verdicts, as one record per question (JSON, in question order,
    on every rank), which `summarize` turns into an EvalResult: the share of its k responses
    that are right ("correct"), its vote's verdict ("cons", None without a vote), each
    response's length, eq. 7 language reward and reflective words, how many were cut at the
    length cap, had no tags or ended inside an unclosed <think>, the question's level and
    subject, and for the first three questions (`first`, as sample_and_verify's, counts
    them) a sample response. Its arguments: evaluate's."""
    was_training = model.training
    model.eval()
    try:
        ro, texts, verdicts = sample_and_verify(
            model, tokenizer, task, examples, prompts, k=k, temperature=temperature,
            top_p=top_p, max_new_tokens=max_new_tokens, stop_ids=stop_ids, seed=seed,
            prefill=prefill, max_rows=max_rows, overlap=overlap, per_question=per_question,
            gather=False, first=first)
    finally:
        model.train(was_training)
    answer_key = answer_key or getattr(task, "vote_key", None) or str.strip
    answer_equal = answer_equal or getattr(task, "vote_equal", None)
    votes = getattr(task, "votes", True)
    # this rank's own questions (module docstring): each response's language reward, and
    # each question's vote and the verdict on it, gathered with the samples, so that no rank
    # repeats another's work
    share = QuestionShare(len(examples), seed, per_question, next(model.parameters()).device)
    mine = share.take(examples)
    lang = [language_reward(t, language_target, prompt_text(mine[i // k].question))[0]
            for i, t in enumerate(texts)]
    voted = [majority_vote([v["answer"] for _, v in verdicts[j * k:(j + 1) * k]],
                           answer_key, answer_equal) if votes else None
             for j in range(len(mine))]
    found = [(a, ex) for a, ex in zip(voted, mine) if a is not None]
    vote_scores = iter(_verify_all(task, [a for a, _ in found], [ex for _, ex in found]))
    cons_mine = [next(vote_scores) if a is not None else 0.0 for a in voted]
    texts, results, ro = share.gather(
        texts, [(v, lang[i], cons_mine[i // k]) for i, v in enumerate(verdicts)], ro)
    scores = [v[0] for v, _, _ in results]
    lengths = ro.lengths.tolist()
    stopped = ro.stopped.tolist()
    records = []
    for i, ex in enumerate(examples):
        rows = range(i * k, (i + 1) * k)
        group = [texts[j] for j in rows]
        subject = ex.meta.get("subject")
        record = {
            "correct": sum(scores[j] for j in rows) / k,
            "cons": results[i * k][2] if votes else None,
            "level": ex.level, "subject": subject if isinstance(subject, str) else None,
            "lengths": [lengths[j] for j in rows],
            "language": [results[j][1] for j in rows],
            "reflect": reflective_word_counts(group),
            "cut": sum(not stopped[j] for j in rows),
            # (a task that reads them whole, read_untagged, and code tasks, reads an answer)
            "untagged": sum(map(untagged, group)) if not reads_untagged(task) else 0,
            "unclosed": sum(stopped[j] and "<think>" in texts[j] and "</think>" not in texts[j]
                            for j in rows)}
        if first + i < 3:
            record["sample"] = {"question": ex.question, "answer": ex.answer,
                                "response": group[0], "score": scores[i * k]}
        records.append(record)
    return records


def summarize(records: list[dict], k: int, votes: bool = True) -> EvalResult:
    """The EvalResult of questions' records (evaluate_questions'), in question order; `votes`
    False: no cons@k (code)."""
    n = max(1, len(records))
    responses = max(1, k * len(records))
    correct = [r["correct"] for r in records]
    lengths = [x for r in records for x in r["lengths"]]
    per_level: dict[int, list[float]] = {}
    len_level: dict[int, list[float]] = {}
    per_subject: dict[str, list[float]] = {}
    for r in records:
        if r["level"] is not None:
            per_level.setdefault(r["level"], []).append(r["correct"])
            len_level.setdefault(r["level"], []).extend(r["lengths"])
        if r["subject"] is not None:
            per_subject.setdefault(r["subject"], []).append(r["correct"])
    reflect = {w: sum(r["reflect"].get(w, 0) for r in records) for w in REFLECTIVE_WORDS}
    language = [x for r in records for x in r["language"]]
    pass_at = {kk: sum(pass_at_k(k, round(p * k), kk) for p in correct) / n
               for kk in pass_ks(k)}
    return EvalResult(
        pass_at_1=sum(correct) / n,
        cons_at_k=sum(r["cons"] for r in records) / n if votes else None,
        k=k,
        mean_tokens=sum(lengths) / max(1, len(lengths)),
        truncated=sum(r["cut"] for r in records) / responses,
        n=len(records),
        by_level={lv: sum(v) / len(v) for lv, v in per_level.items()},
        samples=[r["sample"] for r in records if "sample" in r],
        language=sum(language) / max(1, len(language)),
        length_by_level={lv: sum(v) / len(v) for lv, v in len_level.items()},
        by_subject={sub: sum(v) / len(v) for sub, v in per_subject.items()},
        reflect={**{w: c / responses for w, c in reflect.items()},
                 "total": sum(reflect.values()) / responses},
        untagged=sum(r["untagged"] for r in records) / responses,
        pass_at=pass_at,
        ci95=mean_ci95(correct),
        unclosed=sum(r["unclosed"] for r in records) / responses)


@torch.no_grad()
def sample_and_verify(model, tokenizer, task: Task, examples: list[Example],
                      prompts: list[list[int]], *, k: int, temperature: float, top_p: float,
                      max_new_tokens: int, stop_ids: list[int], seed: int, prefill: str = "",
                      max_rows: int = 1024, overlap: str = "auto", per_question: bool = False,
                      gather: bool = True, first: int = 0):
    """k samples of each prompt: (their lengths and stops, their texts, and per text the
    task's verdict with {"answer": its final answer or None}); with `overlap` (auto | on |
    off) the verdicts are reached as samples finish, while the rest decode
    (r1kit.rewards.overlap). Under torchrun each rank samples and verifies its share of the
    prompts (distributed.dealt), and every rank returns all of them (module docstring);
    `gather` False: only its own share's. `first`: as QuestionShare's."""
    device = next(model.parameters()).device
    stop = set(stop_ids)
    part = QuestionShare(len(examples), seed, per_question, device, first)
    mine = part.take(examples)
    with OverlappedRewards(_Verdicts(task), lambda ids: response_text(tokenizer, ids, stop, prefill),
                           [mine[i // k] for i in range(len(mine) * k)],
                           enabled=overlap_wanted(overlap, device)) as scoring:
        ro = part.generate(model, prompts, group_size=k, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, stop_ids=stop_ids,
                           pad_id=tokenizer.pad_token_id, max_rows=max_rows, logprobs=False,
                           on_finished=scoring.callback)
        texts = decode_responses(tokenizer, ro.completion_ids, ro.completion_mask, stop_ids,
                                 prefill)
        verdicts = scoring.results(texts)
    if not gather:
        return ro, texts, verdicts
    texts, verdicts, sampled = part.gather(texts, verdicts, ro)
    return sampled, texts, verdicts


class _Verdicts:
    """Scoring one response at a time (its final answer, then the task's verdict on it), as a
    reward that r1kit.rewards.overlap can run while the rollout decodes."""

    def __init__(self, task: Task):
        self.task = task

    def overlappable(self, example: Example) -> bool:
        return getattr(self.task, "checks_in_workers", False)

    def score(self, texts: list[str], examples: list[Example]) -> list[tuple[float, dict]]:
        answers = final_answers(self.task, texts, examples)[0]
        return [(v, {"answer": a})
                for v, a in zip(_verify_all(self.task, answers, examples), answers)]


def _verify_all(task: Task, answers: list[str | None], examples: list[Example]) -> list[float]:
    """The task's verdict on each answer (0 for no answer), in one batch when it can."""
    found = [i for i, a in enumerate(answers) if a is not None]
    batch = getattr(task, "verify_batch", None)
    if batch is not None:
        got = batch([answers[i] for i in found], [examples[i] for i in found]) if found else []
    else:
        got = [task.verify(answers[i], examples[i]) for i in found]
    out = [0.0] * len(answers)
    for i, v in zip(found, got):
        out[i] = float(v)
    return out


def decode_responses(tokenizer, ids: torch.Tensor, mask: torch.Tensor, stop_ids: list[int],
                     prefill: str = "") -> list[str]:
    """Response texts: the prefill plus the generated tokens, without the stop token."""
    stop = set(stop_ids)
    return [response_text(tokenizer, [t for t, keep in zip(row, m) if keep], stop, prefill)
            for row, m in zip(ids.tolist(), mask.tolist())]


def response_text(tokenizer, generated: list[int], stop: set[int], prefill: str = "") -> str:
    """One response's text from its generated token ids (see decode_responses)."""
    return prefill + tokenizer.decode([t for t in generated if t not in stop],
                                      skip_special_tokens=False)
