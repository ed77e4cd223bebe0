"""R1's stage-2 reward (R1-SPEC.md §3, eq. 8–10), one sample at a time or a whole rollout.

    reward = reward_reasoning + reward_general + reward_language
    reward_reasoning = accuracy_weight * accuracy + format_weight * format       (rule, eq. 4)
    reward_general   = {helpful|safety}_weight * reward_model + format_weight * format
    reward_language  = language_weight * share of target-language words in <think> (eq. 7)

Each example says its data type in `meta["type"]`: "helpful" or "safety" for general prompts
(each uses its own reward model), anything else is reasoning. With language_weight = 0 and no
general prompts this is exactly R1-Zero's rule reward.

Reward-model scores are raw logits; `reward_model_scale = "sigmoid"` (the default, a choice the
paper leaves open) maps them to (0, 1), the range of the rule rewards they are added to.
Every component is returned in `parts`, only for the samples it applies to.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from r1kit.rewards.answers import final_answers
from r1kit.rewards.language import language_reward
from r1kit.rewards.rule import continued_text, format_reward
from r1kit.tasks.base import Example, Task
from r1kit.templates import prompt_text

GENERAL_TYPES = ("helpful", "safety")


def data_type(example: Example) -> str:
    kind = example.meta.get("type")
    return kind if kind in GENERAL_TYPES else "reasoning"


class RewardModelScorer:
    """A trained reward model (a `reward_model` stage's directory, or a sequence classifier
    of your own), scoring (prompt, response) pairs in batches. Whether it reads only the
    summary comes from the stage's `reward_model.json`, or from `summary_only` when given;
    a model without that file (trained elsewhere, as TRL's RewardTrainer trains them) reads
    what its `role` reads in the paper (helpful: the summary; safety: the whole response),
    through its tokenizer's chat template where it has one, as TRL trains on chat
    messages. `said`: a line that says so, for such a model (None for a stage's)."""

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype,
                 summary_only: bool | None = None, batch_size: int = 64,
                 role: str = "helpful"):
        from r1kit.models import load_reward_model, load_tokenizer

        meta_path = Path(path) / "reward_model.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        own = summary_only if summary_only is not None else meta.get("summary_only")
        self.summary_only = own if own is not None else role == "helpful"
        # the length its stage trained it on, read the same way (the start of a longer text cut)
        self.max_length = meta.get("max_length") if isinstance(meta.get("max_length"), int) \
            else None
        self.tokenizer = load_tokenizer(path)
        self.tokenizer.padding_side = "right"
        self.model = load_reward_model(path, device, dtype, self.tokenizer.pad_token_id).eval()
        self.model.requires_grad_(False)
        self.batch_size = batch_size
        self.chat = not meta and bool(getattr(self.tokenizer, "chat_template", None))
        reads = "the summary after </think>" if self.summary_only else "the whole response"
        how = "through its chat template" if self.chat else "as User: … Assistant: … text"
        self.said = None if meta else (
            f"{path} has no reward_model.json (not a reward_model stage's): as the {role} "
            f"model it reads {reads} of each response, {how}")

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        from r1kit.stages.reward_model import reward_text, score_texts

        texts = [reward_text(p, r, self.summary_only, self.tokenizer if self.chat else None)
                 for p, r in zip(prompts, responses)]
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            out += score_texts(self.model, self.tokenizer, texts[i:i + self.batch_size],
                               self.max_length).tolist()
        return out


class CombinedReward:
    """Scores a rollout's responses by their examples' data types (module docstring)."""

    def __init__(self, task: Task, *, accuracy_weight: float = 1.0, format_weight: float = 1.0,
                 language_weight: float = 0.0, language_target: str = "en",
                 helpful=None, safety=None, helpful_weight: float = 1.0,
                 safety_weight: float = 1.0, reward_model_scale: str = "sigmoid",
                 format_style: str = "answer"):
        self.task = task
        self.format_style = format_style  # r1kit.rewards.rule.format_reward
        self.accuracy_weight = accuracy_weight
        self.format_weight = format_weight
        self.language_weight = language_weight
        self.language_target = language_target
        self.models = {"helpful": helpful, "safety": safety}
        self.weights = {"helpful": helpful_weight, "safety": safety_weight}
        self.scale = reward_model_scale

    def _accuracy(self, responses: list[str], examples: list[Example]
                  ) -> list[tuple[float, str]]:
        """(accuracy, status) per response. A verifier that raises costs that sample (score 0,
        status "error"), never the step; statuses are counted in the parts."""
        answers, statuses = final_answers(self.task, responses, examples)
        found = [i for i, a in enumerate(answers) if a is not None]
        out = [(0.0, st) for st in statuses]
        detailed = getattr(self.task, "verify_detailed", None)
        batch = getattr(self.task, "verify_batch", None)
        sub_a, sub_e = [answers[i] for i in found], [examples[i] for i in found]
        try:
            if detailed is not None:
                scores = detailed(sub_a, sub_e)
            elif batch is not None:
                scores = [(float(v), "ok") for v in batch(sub_a, sub_e)]
            else:
                raise NotImplementedError
        except Exception:  # noqa: BLE001 - fall back to one sample at a time below
            scores = [self._verify_one(a, e) for a, e in zip(sub_a, sub_e)]
        for i, s in zip(found, scores):
            out[i] = s
        return out

    def _verify_one(self, answer: str, example: Example) -> tuple[float, str]:
        try:
            return float(self.task.verify(answer, example)), "ok"
        except Exception:  # noqa: BLE001 - a broken check scores this sample 0, counted
            return 0.0, "error"

    def _model_scores(self, kind: str, responses: list[str], examples: list[Example]) -> list[float]:
        model = self.models[kind]
        if model is None:
            raise ValueError(f"a {kind!r} example needs the {kind} reward model "
                             f"(set {kind}_model in the grpo stage)")
        raw = model([prompt_text(e.question) for e in examples], responses)
        if self.scale == "sigmoid":
            return [1.0 / (1.0 + math.exp(-s)) for s in raw]
        return raw

    def overlappable(self, example: Example) -> bool:
        """Whether a response to `example` is scored while the rollout goes on
        (r1kit.rewards.overlap): rule rewards, where the task's checks run in worker processes
        (math-verify). Checks in this process would only take the interpreter from the
        decoding loop (on the tiny world: a quarter more decoding time than they saved)."""
        return data_type(example) == "reasoning" and getattr(self.task, "checks_in_workers",
                                                              False)

    def score(self, responses: list[str], examples: list[Example]) -> list[tuple[float, dict]]:
        """(reward, parts) per response; `examples[i]` is the question of `responses[i]`."""
        kinds = [data_type(e) for e in examples]
        parts: list[dict[str, float]] = [{} for _ in responses]
        by_kind: dict[str, list[int]] = {}
        for i, kind in enumerate(kinds):
            by_kind.setdefault(kind, []).append(i)
        for kind, idx in by_kind.items():
            sub_r = [responses[i] for i in idx]
            sub_e = [examples[i] for i in idx]
            if kind == "reasoning":
                for i, (v, status) in zip(idx, self._accuracy(sub_r, sub_e)):
                    parts[i]["accuracy"] = v
                    parts[i]["errors"] = float(status == "error")
                    parts[i]["timeouts"] = float(status == "timeout")
                    parts[i]["hedged"] = float(status == "hedged")
            else:
                for i, v in zip(idx, self._model_scores(kind, sub_r, sub_e)):
                    parts[i][kind] = v
        out = []
        for i, (response, example, kind) in enumerate(zip(responses, examples, kinds)):
            p = parts[i]
            p["format"] = format_reward(continued_text(example.question) + response,
                                        self.format_style)
            p["language"] = language_reward(response, self.language_target,
                                            prompt_text(example.question))[0]
            main = (self.accuracy_weight * p["accuracy"] if kind == "reasoning"
                    else self.weights[kind] * p[kind])
            out.append((main + self.format_weight * p["format"]
                        + self.language_weight * p["language"], p))
        return out

    def __call__(self, response: str, example: Example) -> tuple[float, dict]:
        return self.score([response], [example])[0]
