"""A generative judge of final answers, for rejection sampling (R1-SPEC §4: beyond
rule-checkable data, the paper's rejection sampling has a generative judge compare the
prediction with the ground truth).

`judge_model` is any causal language model checkpoint (an instruction-tuned one; its chat
template frames the request where its tokenizer has one). Each (question, reference answer,
final answer) goes to it in `judge_prompt`, and its verdict is read, without sampling, from
its distribution over the next token: P(yes) / (P(yes) + P(no)), where "yes" is the first
token of `yes`, `Yes`, ` yes` or ` Yes` and "no" likewise (tokens both words start with
count for neither), computed from the two log-sum-exps (no underflow). A verdict of
`judge_threshold` or more accepts the answer. A chat template is asked not to open a
reasoning block (`enable_thinking=False`, which Qwen3's templates read and others ignore):
the verdict must be the next token. A request longer than the judge's positions is not
judged (None: the sample stays rejected).
"""

from __future__ import annotations

from pathlib import Path

import torch

from r1kit.errors import R1kitError

DEFAULT_PROMPT = (
    "Decide whether the final answer of a response to a question agrees with the reference "
    "answer: the same in meaning, whatever its form.\n\n"
    "Question: {question}\n\n"
    "Reference answer: {reference}\n\n"
    "Final answer of the response: {answer}\n\n"
    "Does the final answer agree with the reference answer? Reply with yes or no.")
FIELDS = ("question", "reference", "answer")


def check_prompt(prompt: str) -> str | None:
    """Why `prompt` cannot be a judge_prompt (None: it can): it must name {question},
    {reference} and {answer} and no other field."""
    import string

    try:
        named = {f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None}
    except ValueError as exc:
        return f"it is not a format string ({exc}); write a literal brace as {{{{ or }}}}"
    unknown = sorted(named - set(FIELDS))
    if unknown:
        return f"it names {', '.join('{' + f + '}' for f in unknown)}, which is not a field"
    missing = [f for f in FIELDS if f not in named]
    if missing:
        return f"it leaves out {', '.join('{' + f + '}' for f in missing)}"
    return None


def verdict_ids(tokenizer) -> tuple[list[int], list[int]]:
    """The first tokens of yes / no (each with a capital and with a leading space); a token
    both start with (a lone space of a character-level tokenizer) counts for neither."""
    def firsts(word: str) -> set[int]:
        out = set()
        for form in (word, word.capitalize(), " " + word, " " + word.capitalize()):
            ids = tokenizer(form, add_special_tokens=False)["input_ids"]
            if ids:
                out.add(ids[0])
        return out

    yes, no = firsts("yes"), firsts("no")
    return sorted(yes - no), sorted(no - yes)


class AnswerJudge:
    """The judge model, loaded once; `__call__` gives the verdicts (module docstring)."""

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype,
                 prompt: str = DEFAULT_PROMPT, batch_size: int = 16):
        from r1kit.models import load_model, load_tokenizer

        self.tokenizer = load_tokenizer(path)
        self.tokenizer.padding_side = "left"
        self.yes, self.no = verdict_ids(self.tokenizer)
        if not self.yes or not self.no:
            raise R1kitError(f"judge_model {path}: its tokenizer has no token that starts "
                             f"{'yes' if not self.yes else 'no'} and not the other word",
                             "use an instruction-tuned model with a word-level (BPE) tokenizer")
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.model = load_model(path, device, dtype, self.tokenizer).eval()
        self.model.requires_grad_(False)
        self.prompt, self.batch_size, self.device = prompt, batch_size, device
        from r1kit.models import trained_positions
        from r1kit.rollout import position_limit

        self.positions = position_limit(self.model) or trained_positions(self.model.config)

    def text(self, question: str, reference: str, answer: str) -> str:
        """The judge's input: the request in its chat template (where it has one), else the
        request as plain text followed by "Answer:"."""
        request = self.prompt.format(question=question, reference=reference, answer=answer)
        if self.chat:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": request}], tokenize=False,
                add_generation_prompt=True, enable_thinking=False)
        return request + "\nAnswer:"

    @torch.no_grad()
    def __call__(self, questions: list[str], references: list[str],
                 answers: list[str]) -> list[float | None]:
        """The verdicts, None for a request longer than the judge's positions."""
        ids = [self.tokenizer(self.text(q, r, a), add_special_tokens=not self.chat)["input_ids"]
               for q, r, a in zip(questions, references, answers)]
        fits = [i for i, x in enumerate(ids) if self.positions is None or len(x) <= self.positions]
        out: list[float | None] = [None] * len(ids)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(fits), self.batch_size):
            batch = [ids[i] for i in fits[start:start + self.batch_size]]
            width = max(map(len, batch))
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch],
                                     device=self.device)  # left padding
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch],
                                device=self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row's real positions
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                logits_to_keep=1).logits[:, -1].float()
            verdict = torch.sigmoid(logits[:, self.yes].logsumexp(-1)
                                    - logits[:, self.no].logsumexp(-1))
            for i, v in zip(fits[start:start + self.batch_size], verdict.tolist()):
                out[i] = v
        return out
