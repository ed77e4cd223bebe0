"""Sampled evaluation of a model on a task's held-out examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch

from r1kit.rewards import extract_answer
from r1kit.rewards.language import language_reward
from r1kit.rollout import generate
from r1kit.tasks.base import Example, Task


def majority_vote(answers: list[str | None], key: Callable[[str], Hashable] = str.strip) -> str | None:
    """The most common answer (None answers never win). Answers are grouped by `key`; a tie
    goes to the group whose first member came first, so the result is deterministic."""
    groups: dict[Hashable, list[int]] = {}
    for i, a in enumerate(answers):
        if a is not None:
            groups.setdefault(key(a), []).append(i)
    if not groups:
        return None
    best = max(groups.values(), key=lambda idx: (len(idx), -idx[0]))
    return answers[best[0]]


@dataclass
class EvalResult:
    pass_at_1: float  # mean over problems of the share of the k samples that are right
    cons_at_k: float  # share of problems whose majority answer is right
    k: int
    mean_tokens: float  # mean response length in tokens
    truncated: float  # share of responses that hit the length cap
    n: int  # problems
    by_level: dict[int, float] = field(default_factory=dict)  # pass@1 per difficulty level
    language: float = 0.0  # mean language consistency of the chains of thought (eq. 7)
    samples: list[dict] = field(default_factory=list)  # a few responses to look at

    def as_record(self) -> dict:
        return {"pass@1": self.pass_at_1, f"cons@{self.k}": self.cons_at_k, "k": self.k,
                "mean_tokens": self.mean_tokens, "truncated": self.truncated, "n": self.n,
                "language": self.language,
                "by_level": {str(k): v for k, v in sorted(self.by_level.items())}}


@torch.no_grad()
def evaluate(model, tokenizer, task: Task, examples: list[Example], prompts: list[list[int]], *,
             k: int, temperature: float, top_p: float, max_new_tokens: int, stop_ids: list[int],
             seed: int, prefill: str = "", max_rows: int = 1024,
             answer_key: Callable[[str], Hashable] = str.strip,
             language_target: str = "prompt") -> EvalResult:
    """Sample k responses per example and score them with the task's verifier; `language`
    is the mean eq. 7 share of `language_target` words in their chains of thought."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    was_training = model.training
    model.eval()
    ro = generate(model, prompts, group_size=k, max_new_tokens=max_new_tokens,
                  temperature=temperature, top_p=top_p, stop_ids=stop_ids,
                  pad_id=tokenizer.pad_token_id, generator=gen, max_rows=max_rows)
    model.train(was_training)
    texts = decode_responses(tokenizer, ro.completion_ids, ro.completion_mask, stop_ids, prefill)
    correct, cons, per_level, lang = [], [], {}, []
    samples = []
    for i, ex in enumerate(examples):
        group = texts[i * k:(i + 1) * k]
        answers = [extract_answer(t) for t in group]
        lang += [language_reward(t, language_target, ex.question)[0] for t in group]
        scores = [task.verify(a, ex) if a is not None else 0.0 for a in answers]
        p1 = sum(scores) / k
        correct.append(p1)
        voted = majority_vote(answers, answer_key)
        cons.append(task.verify(voted, ex) if voted is not None else 0.0)
        if ex.level is not None:
            per_level.setdefault(ex.level, []).append(p1)
        if i < 3:
            samples.append({"question": ex.question, "answer": ex.answer, "response": group[0],
                            "score": scores[0]})
    n = max(1, len(examples))
    return EvalResult(
        pass_at_1=sum(correct) / n,
        cons_at_k=sum(cons) / n,
        k=k,
        mean_tokens=ro.lengths.float().mean().item(),
        truncated=1.0 - ro.stopped.float().mean().item(),
        n=len(examples),
        by_level={lv: sum(v) / len(v) for lv, v in per_level.items()},
        samples=samples,
        language=sum(lang) / max(1, len(lang)),
    )


def decode_responses(tokenizer, ids: torch.Tensor, mask: torch.Tensor, stop_ids: list[int],
                     prefill: str = "") -> list[str]:
    """Response texts: the prefill plus the generated tokens, without the stop token."""
    stop = set(stop_ids)
    out = []
    for row, m in zip(ids.tolist(), mask.tolist()):
        toks = [t for t, keep in zip(row, m) if keep and t not in stop]
        out.append(prefill + tokenizer.decode(toks, skip_special_tokens=False))
    return out
