"""Prompt templates: the R1-Zero template (R1-SPEC.md §2) and chat templates.

The R1-Zero template is a flat string without roles. It says that reasoning and answer go
inside <think> and <answer> tags and nothing about *how* to reason, so that behaviour can
emerge under RL. For models that ship a chat template, `"chat"` puts the same instruction in
the system turn and the question in the user turn, and the response can be prefilled (the
released R1 models force responses to begin with "<think>\\n").

A prompt is text, or a conversation as chat messages (TRL's conversational format: a list of
{"role": "system" | "user" | "assistant", "content": text}), which needs `"chat"`: the
messages go through the chat template as they are, after r1kit's system instruction when
they bring no system turn of their own.
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
ROLES = ("system", "user", "assistant")


def check_messages(value, where: str) -> list[dict]:
    """`value` as a conversation of chat messages, or an R1kitError naming `where`."""
    if not value or not isinstance(value, list):
        raise R1kitError(f"{where}: a conversation must be a non-empty list of messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(
                m.get("content"), str):
            raise R1kitError(f"{where}: message {i + 1} is not {{\"role\": "
                             f"{' | '.join(ROLES)}, \"content\": text}}: {m!r}"[:300])
    if not any(m["role"] == "user" for m in value):
        raise R1kitError(f"{where}: the conversation has no user message")
    if value[-1]["role"] == "system":
        raise R1kitError(f"{where}: the conversation ends with a system message",
                         "end it with the user's message (or an assistant message that the "
                         "response continues)")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def assistant_text(value) -> str | None:
    """The text of a conversational completion, one assistant message
    ([{"role": "assistant", "content": text}], TRL's format), else None."""
    if (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
            and value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str)):
        return value[0]["content"]
    return None


def prompt_text(question) -> str:
    """The text of a prompt for what reads text (language detection, reward models): the
    prompt itself, or a conversation's last user message."""
    if isinstance(question, list):
        return next(m["content"] for m in reversed(question) if m["role"] == "user")
    return question


def with_instruction(question, instruction: str):
    """The prompt with `instruction` appended (to the last user message of a conversation);
    without one, the question as it is."""
    if not instruction:
        return question
    if not isinstance(question, list):
        return question.strip() + instruction
    last = max(i for i, m in enumerate(question) if m["role"] == "user")
    return [dict(m, content=m["content"].strip() + instruction) if i == last else m
            for i, m in enumerate(question)]


def system_text(system: bool | str) -> str | None:
    """The system turn a `system` setting (render_prompt) asks for, or None."""
    if system is True or system == "r1kit":
        return R1_ZERO_SYSTEM
    return system or None


THINK = "<think>"


def template_opening(tokenizer) -> str:
    """The reasoning's opening that the tokenizer's chat template writes at the end of its
    generation prompt ("<think>\\n" for DeepSeek-R1-Distill's and open-r1's templates), or
    "": the template writes none (or there is none)."""
    if not getattr(tokenizer, "chat_template", None):
        return ""
    turns = [{"role": "user", "content": "Hi"}]
    try:
        bare = tokenizer.apply_chat_template(turns, tokenize=False)
        asked = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - a template that cannot render this opens nothing here
        return ""
    if not isinstance(asked, str) or not isinstance(bare, str):
        return ""
    added = asked[len(bare):] if asked.startswith(bare) else asked[-32:]
    at = added.rfind(THINK)
    return added[at:] if at >= 0 and not added[at:].strip().replace(THINK, "", 1) else ""


def response_prefill(tokenizer, template: str, prefill: str = "") -> str:
    """What a response begins with before its generated tokens, as written back in front of
    them (the texts rewards read and samples keep): the prefill; under a chat template that
    opens the reasoning itself, that opening (then the prefill, unless the opening already
    holds it: render_prompt does not add it twice), so that a response reads "<think>\\n..."
    whichever of the two wrote it."""
    opened = template_opening(tokenizer) if template == "chat" else ""
    if opened and prefill.strip() and opened.rstrip().endswith(prefill.strip()):
        return opened
    return opened + prefill


def render_prompt(question, template: str, tokenizer=None, prefill: str = "",
                  system: bool | str = True) -> str:
    """The text the model sees before its response.

    `template="r1-zero"` needs no tokenizer; `"chat"` uses the tokenizer's own chat template.
    `question`: text, or a conversation (chat messages: `"chat"` only).
    `prefill` is appended after the prompt and counted as part of the prompt (not trained on),
    unless the prompt already ends with it (a chat template that opens the reasoning itself, as
    DeepSeek-R1's distilled models' do with `<think>\n`).
    `system` (chat, when the conversation brings no system turn of its own): True or "r1kit",
    r1kit's reasoning instruction (R1_ZERO_SYSTEM) as the system turn; False or "", none (how
    the paper evaluates its released models); other text, that text (a stage's
    `system_prompt`).
    """
    if isinstance(question, list) and template != "chat":
        raise R1kitError(f"a prompt given as chat messages needs template = 'chat', not "
                         f"{template!r}", "set template = \"chat\" (a model with a chat "
                         "template), or give the prompt as text")
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

        turns = question if isinstance(question, list) else [
            {"role": "user", "content": question}]
        lead = system_text(system)
        if lead and not any(m["role"] == "system" for m in turns):
            turns = [{"role": "system", "content": lead}, *turns]
        cont = continues_assistant(turns)
        if cont and prefill:
            raise R1kitError("a conversation that ends with an assistant message is continued "
                             f"by the response, and the prefill {prefill!r} would go after that "
                             "message", "set prefill = \"\" (r1kit eval: --prefill ''), or "
                             "end the conversation with the user's message")
        kw = {"tokenize": False, "add_generation_prompt": not cont,
              "continue_final_message": cont}
        try:
            text = tokenizer.apply_chat_template(turns, **kw)
        except (TemplateError, ValueError) as first_error:
            # templates without a system turn (Gemma's) raise on one: the system text goes
            # before the first user message. (ValueError: transformers cannot continue a final
            # message that the template rewrites.)
            lead = "\n\n".join(m["content"] for m in turns if m["role"] == "system")
            rest = [m for m in turns if m["role"] != "system"]
            first = next(i for i, m in enumerate(rest) if m["role"] == "user")
            if lead:
                rest[first] = {"role": "user", "content": f"{lead}\n\n{rest[first]['content']}"}
            try:
                text = tokenizer.apply_chat_template(rest, **kw)
            except (TemplateError, ValueError) as exc:
                raise R1kitError(f"the model's chat template refuses this prompt: "
                                 f"{first_error}; without the system turn: {exc}",
                                 f"the prompt: {question!r}"[:300]) from exc
    else:
        raise R1kitError(f"unknown template {template!r}", f"valid: {', '.join(TEMPLATES)}")
    if prefill.strip() and text.rstrip().endswith(prefill.strip()):
        return text  # the template opened the reasoning itself (e.g. "<think>\n")
    return text + prefill


def continues_assistant(question) -> bool:
    """Whether a prompt is a conversation that ends with an assistant message, which the
    response continues (rather than starting the assistant's turn)."""
    return (isinstance(question, list) and bool(question) and isinstance(question[-1], dict)
            and question[-1].get("role") == "assistant")


def answered_prompts(questions: list, source) -> str | None:
    """What to say where at least half of a file's prompts are conversations that end with an
    assistant message already holding a finished response (a boxed answer or the end of the
    reasoning): the model would continue after it, shown the answer (open-r1's `messages`
    named as the prompts). An opened reasoning to continue (a prefill) holds neither."""
    answered = [q for q in questions if continues_assistant(q)
                and isinstance(q[-1].get("content"), str)
                and ("\\boxed{" in q[-1]["content"] or "</think>" in q[-1]["content"])]
    if not questions or 2 * len(answered) < len(questions):
        return None
    return (f"{source}: {len(answered)} of {len(questions)} prompts end with an assistant "
            "message that already holds a final answer (\\boxed{…} or </think>): the response "
            "would continue after it, shown the answer")


def end_of_turn_id(tokenizer) -> int | None:
    """The special token that the tokenizer's chat template writes right after an assistant
    message (ChatML's <|im_end|>, Llama 3's <|eot_id|>, Gemma's <end_of_turn>), or None: no
    chat template, or no special token there. A base model's eos is often another token
    (Qwen2.5's <|endoftext|>), so a chat-template response ends with this one, as the template
    writes it, and sampling stops on it."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    marker = "r1kit end-of-turn probe"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(turns, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render this has no answer here
        return None
    at = text.rfind(marker) if isinstance(text, str) else -1
    if at < 0:
        return None
    after = tokenizer(text[at + len(marker):], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {
        i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
        if getattr(t, "special", False)}
    return int(after[0]) if after and after[0] in special else None


def encode_prompt(question, template: str, tokenizer, prefill: str = "",
                  system: bool | str = True) -> list[int]:
    """The prompt's token ids. A chat template writes its own special tokens (BOS included);
    a flat r1-zero prompt or a verbatim one gets whatever the tokenizer adds to plain text
    (e.g. BOS), as in pretraining."""
    text = render_prompt(question, template, tokenizer, prefill, system)
    return tokenizer(text, add_special_tokens=template != "chat")["input_ids"]
