"""Prompt templates: the R1-Zero template (R1-SPEC.md §2) and chat templates.

The R1-Zero template is a flat string without roles. It says that reasoning and answer go
inside <think> and <answer> tags and nothing about *how* to reason, so that behaviour can
emerge under RL. For models that ship a chat template, `"chat"` puts the same instruction in
the system turn and the question in the user turn, and the response can be prefilled (the
released R1 models force responses to begin with "<think>\\n").
"""

from __future__ import annotations

from r1kit.errors import R1kitError

R1_ZERO = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the User with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>. User: {prompt}. Assistant:"
)

R1_ZERO_SYSTEM = (
    "The Assistant first thinks about the reasoning process in the mind and then provides the "
    "User with the answer. The reasoning process and answer are enclosed within <think> "
    "</think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here "
    "</think> <answer> answer here </answer>."
)

TEMPLATES = ("r1-zero", "chat", "none")


def render_prompt(question: str, template: str, tokenizer=None, prefill: str = "") -> str:
    """The text the model sees before its response.

    `template="r1-zero"` needs no tokenizer; `"chat"` uses the tokenizer's own chat template.
    `prefill` is appended after the prompt and counted as part of the prompt (not trained on).
    """
    if template == "r1-zero":
        text = R1_ZERO.format(prompt=question)
    elif template == "none":  # the question verbatim (your data already holds the prompt)
        text = question
    elif template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise R1kitError("template = 'chat' needs a tokenizer with a chat template, and "
                             "this model's tokenizer has none",
                             "use template = 'r1-zero' for base models without one")
        from jinja2 import TemplateError

        messages = [
            {"role": "system", "content": R1_ZERO_SYSTEM},
            {"role": "user", "content": question},
        ]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
        except TemplateError:  # templates without a system turn (Gemma's) raise on one
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": f"{R1_ZERO_SYSTEM}\n\n{question}"}],
                tokenize=False, add_generation_prompt=True)
    else:
        raise R1kitError(f"unknown template {template!r}", f"valid: {', '.join(TEMPLATES)}")
    return text + prefill


def encode_prompt(question: str, template: str, tokenizer, prefill: str = "") -> list[int]:
    """The prompt's token ids. A chat template writes its own special tokens (BOS included);
    a flat r1-zero prompt or a verbatim one gets whatever the tokenizer adds to plain text
    (e.g. BOS), as in pretraining."""
    text = render_prompt(question, template, tokenizer, prefill)
    return tokenizer(text, add_special_tokens=template != "chat")["input_ids"]
