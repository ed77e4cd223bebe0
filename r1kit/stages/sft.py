"""The sft stage: supervised fine-tuning on prompt/response rows (R1-SPEC.md §4).

Rows come from an earlier `sample` stage (its `data.jsonl`) or from a JSONL/parquet file of
your own. The prompt is rendered with the stage's template (the R1-Zero template, the
tokenizer's chat template, or verbatim with `template = "none"`); the loss covers the response
tokens and the end-of-sequence token only. Sequences are packed; each optimizer step sees
`batch_size` rows, in micro-batches of `micro_batch_size` whose losses are summed over
response tokens and divided by the step's response-token count (so micro-batching changes
memory, not the result). Learning rate: linear warm-up, then cosine from `lr` to
`lr * final_lr_ratio` (the paper: 5e-5 -> 5e-6, 2-3 epochs, batch 128). With `lora_rank > 0`
LoRA adapters alone train (r1kit/lora.py).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from r1kit import distributed
from r1kit.checkpoints import latest_checkpoint, restore_trained, save_trained
from r1kit.config import SFTConfig
from r1kit.errors import R1kitError
from r1kit.logprobs import (
    CHUNK_MIN_VOCAB,
    ChunkedHeadLogp,
    body_and_head,
    chunk_positions,
    vocab_size,
)
from r1kit.lora import (
    apply_lora,
    load_adapters,
    save_final,
)
from r1kit.models import (
    add_stop_token,
    checkpoint_layers,
    load_model,
    load_tokenizer,
    save_model,
    trained_positions,
)
from r1kit.packing import packs_safely, to_device
from r1kit.stages.pretrain import cosine_lr, packed_batch
from r1kit.tasks.math import checked_text, kind_of, read_rows, row_at
from r1kit.templates import (
    THINK,
    assistant_text,
    check_messages,
    encode_prompt,
    end_of_turn_id,
)

TEXT_FIELD = "text"  # TRL's field of plain-text rows (its dataset_text_field's default)


def read_sft_rows(path: Path, cfg: SFTConfig) -> list[tuple[str | list[dict] | None, str]]:
    """(prompt, response) per row. The prompt is text or a conversation of chat messages
    (template = "chat"); the response is text or a conversation's one assistant message
    ([{"role": "assistant", "content": text}], TRL's conversational completion). A row may
    instead hold its whole conversation in one field (`messages`, or the prompt field)
    ending with the assistant's message: the messages before it are the prompt, that last
    message the response (earlier assistant turns are context, not trained on). ShareGPT's
    `conversations` ({"from", "value"} turns) are read as `messages` (_sharegpt). A row with
    none of these but a `text` field (TRL's language-modeling rows) is (None, text): the whole
    text is trained on, without the template."""
    rows = []
    for n, row in read_rows(path):
        row = _sharegpt(row, cfg)
        response_field = cfg.response_field
        if (response_field == "response" and "response" not in row and "completion" in row
                and cfg.prompt_field in row):
            response_field = "completion"  # TRL's prompt-completion rows
        prompt, response = row.get(cfg.prompt_field), row.get(response_field)
        conversation = _conversation(row, cfg)
        if (prompt is None and response is None and conversation is None
                and "messages" not in row and isinstance(row.get(TEXT_FIELD), str)):
            # TRL's language-modeling rows: the whole text trained on, verbatim (no prompt)
            rows.append((None, checked_text(row[TEXT_FIELD], f"{row_at(path, n)}: field "
                                            f"{TEXT_FIELD!r}")))
            continue
        if conversation is not None:  # TRL's "messages": the last assistant turn is trained
            name, turns = conversation
            where = f"{row_at(path, n)}: field {name!r}"
            if not isinstance(turns[-1].get("content"), str):
                raise R1kitError(f"{where}: the last message's content is not text")
            prompt, response = check_messages(turns[:-1], where), turns[-1]["content"]
        elif isinstance(prompt, list):
            prompt = check_messages(prompt, f"{row_at(path, n)}: field {cfg.prompt_field!r}")
        if isinstance(response, list):
            text = assistant_text(response)
            if text is None:
                raise R1kitError(f"{row_at(path, n)}: field {response_field!r} holds a list: a "
                                 "response is text or one assistant message",
                                 '[{"role": "assistant", "content": "..."}]')
            response = text
        for name, value in ((cfg.prompt_field, prompt), (response_field, response)):
            if not isinstance(value, str) and not (name == cfg.prompt_field
                                                    and isinstance(value, list)):
                problem = _conversation_problem(row, cfg)
                if problem is not None:
                    raise R1kitError(f"{row_at(path, n)}: {problem}", "a conversation to train on is "
                                     "a list of chat messages ending with the assistant's "
                                     'message: [{"role": "user", "content": "..."}, {"role": '
                                     '"assistant", "content": "..."}]')
                what = "no field" if name not in row else f"{kind_of(value)}, not text, in field"
                if name not in row and name == response_field and "completion" in row:
                    raise R1kitError(f"{row_at(path, n)}: no field {name!r}", "the rows hold TRL's "
                                     "prompt-completion format: set response_field = "
                                     "\"completion\"")
                raise R1kitError(f"{row_at(path, n)}: {what} {name!r}",
                                 (f"its fields are {', '.join(map(str, row))}; " if name not in
                                  row and row else "") +
                                 f"SFT rows need text in {cfg.prompt_field!r} and "
                                 f"{cfg.response_field!r} (set prompt_field / response_field), "
                                 "or a whole conversation ending with the assistant's message "
                                 "in 'messages'")
        if isinstance(prompt, str):  # (an empty prompt: plain text to learn, with "none")
            prompt = checked_text(prompt, f"{row_at(path, n)}: field {cfg.prompt_field!r}", True)
        rows.append((prompt, response))
    return rows


def _conversation(row: dict, cfg: SFTConfig) -> tuple[str, list] | None:
    """(field, messages) of a row without a response field that holds its whole conversation
    in one field, ending with the assistant's message (TRL's and open-r1's "messages"
    format): the prompt field, else "messages"; None for any other row."""
    if cfg.response_field in row:
        return None
    for name in (cfg.prompt_field, "messages"):  # (ultrachat's rows hold a text prompt too)
        turns = row.get(name)
        if (isinstance(turns, list) and len(turns) > 1 and isinstance(turns[-1], dict)
                and turns[-1].get("role") == "assistant"):
            return name, turns
    return None


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "system": "system"}


def _sharegpt(row: dict, cfg: SFTConfig) -> dict:
    """A row in ShareGPT's layout, `conversations` of {"from": human | gpt | ..., "value": text}
    (and a `system` field, as OpenThoughts and Bespoke-Stratos write it), with the same
    conversation as `messages`; any other row as it is."""
    turns = row.get("conversations")
    if ("messages" in row or cfg.response_field in row or not isinstance(turns, list)
            or not turns or not all(isinstance(t, dict) and "from" in t for t in turns)):
        return row
    messages = [{"role": SHAREGPT_ROLES.get(str(t["from"]).lower(), str(t["from"])),
                 "content": t.get("value")} for t in turns]
    if isinstance(row.get("system"), str) and row["system"].strip() and \
            messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": row["system"]})
    return {**row, "messages": messages}


def _conversation_problem(row: dict, cfg: SFTConfig) -> str | None:
    """What is wrong with a row's `messages` (a row without the prompt and response fields
    that _conversation did not take), None where it has none."""
    if cfg.response_field in row or "messages" not in row or cfg.prompt_field in row:
        return None
    turns = row["messages"]
    if not isinstance(turns, list):
        return f"field 'messages' is {kind_of(turns)}, not a list of chat messages"
    if not turns:
        return "field 'messages' is an empty conversation"
    last = turns[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        role = last.get("role") if isinstance(last, dict) else None
        return ("field 'messages': the conversation ends with " +
                (f"a {role!r} message" if isinstance(role, str) else "no chat message") +
                ", not the assistant's (the response to train on)")
    return "field 'messages' holds the assistant's message alone, without a prompt before it"


def encode_rows(tokenizer, rows: list[tuple[str, str]], template: str, max_length: int,
                log=None, system: bool | str = True, cap: str = "", own_data: bool = True
                ) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + end) per row. The end token is the tokenizer's eos, or with
    template = "chat" the token the chat template writes after an assistant message where it
    has one (r1kit.templates.end_of_turn_id: <|im_end|> for ChatML, also where eos is
    <|endoftext|>, as in Qwen2.5's base models), as TRL's SFT trains the rendered
    conversation. A row longer than max_length keeps its prompt and the start of its
    response (its end is not trained on); a row whose prompt alone takes max_length tokens
    has nothing left to train on and is left out. `log`: told how many rows were cut and
    left out. `system`: the system turn of a chat-template prompt that brings none
    (r1kit.templates.render_prompt). `cap`: what set max_length, for the messages (the
    setting by default; run_sft caps it at the model's trained positions). `own_data`: a
    file of the user's, not a sample stage's data (whose prompts an RL stage asked in its
    template: no note on the template)."""
    raise_it = "raise max_length" if not cap else "use shorter prompts, or a model of more positions"
    cap = cap or f"max_length = {max_length}"
    eos = tokenizer.eos_token_id
    if template == "chat":
        turn = end_of_turn_id(tokenizer)
        eos = turn if turn is not None else eos
    if eos is None:
        raise R1kitError("the model's tokenizer has no end-of-sequence token: SFT ends every "
                         "response with it, so that the model learns to stop",
                         "set eos_token in the model's tokenizer_config.json")
    out, cut, dropped, empty, shortest, plain, blank = [], 0, 0, 0, None, 0, 0
    opened = 0  # responses whose <think> the chat template's assistant turn already opens
    for prompt, response in rows:
        empty += not response.strip()
        plain += prompt is None
        if prompt is None or (template == "none" and not isinstance(prompt, list)):
            # (a list: render_prompt's error; None: a plain-text row, taken verbatim)
            p = tokenizer(prompt or "", add_special_tokens=True)["input_ids"]
        else:
            p = encode_prompt(prompt, template, tokenizer, system=system)
            if template == "chat" and response.lstrip().startswith(THINK):
                # a template that opens the reasoning itself (DeepSeek-R1-Distill's, open-r1's:
                # "<|Assistant|><think>\n"): the response goes on after it, with no second one
                tail = tokenizer.decode(p[-8:])
                if tail.rstrip().endswith(THINK):
                    response = response.lstrip()[len(THINK):]
                    if tail.endswith("\n"):
                        response = response.removeprefix("\n")
                    opened += 1
        # a plain-text row ends with eos, as TRL's language-modeling rows, not with a chat
        # template's end of turn
        end = tokenizer.eos_token_id if prompt is None else eos
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [end]
        if not p:  # nothing before the first token (no bos): it is not predicted, only read
            p, r = r[:1], r[1:]
            if not r:  # an empty text without a bos: nothing to predict
                blank += 1
                continue
        shortest = len(p) if shortest is None else min(shortest, len(p))
        if len(p) >= max_length:
            dropped += 1
            continue
        if len(p) + len(r) > max_length:
            r = r[:max_length - len(p)]
            cut += 1
        out.append((p, r))
    if rows and blank == len(rows):
        raise R1kitError("every row of the SFT data is empty: no prompt, no response",
                         "drop the empty rows")
    if rows and not out:
        hint = raise_it
        if template == "chat" and system and rows[0][0] is not None:  # the system turn may be
            # most of it: say so
            first = rows[0][0]
            with_system = len(encode_prompt(first, template, tokenizer, system=system))
            without = len(encode_prompt(first, template, tokenizer, system=False))
            if without < max_length <= with_system:
                hint = (f"the first prompt takes {with_system} tokens with its system turn, "
                        f"{without} without: set system_prompt = \"\" (no system turn), or "
                        + raise_it)
        if hint == raise_it and template == "r1-zero":  # the template's own text may be it
            hint = (f"with template 'r1-zero' the shortest prompt takes {shortest} tokens, its "
                    "instructions included: template = \"none\" gives the prompts as they "
                    "are; or " + raise_it)
        raise R1kitError(f"every prompt of the SFT data takes {max_length} tokens or more "
                         f"({cap}), which leaves no response to train on", hint)
    if (cut or dropped) and log is not None:
        log(f"{cap}: {cut} of {len(rows)} rows cut (the ends of their "
            f"responses are not trained on), {dropped} left out (their prompts alone reach it)"
            + ("; with template 'r1-zero' each prompt holds its instructions too" if dropped
               and template == "r1-zero" else ""))
    texts = sum(isinstance(p, str) for p, _ in rows)
    if (template == "r1-zero" and texts and own_data and log is not None
            and getattr(tokenizer, "chat_template", None)):
        # (the default template, though the model has its own; not for a sample stage's
        # data, whose prompts the RL stage before it asked in that template)
        log(f"{texts} of {len(rows)} text prompts are trained in r1kit's R1-Zero template "
            "(\"A conversation between User and Assistant. ... User: PROMPT. Assistant:\"), "
            "though the model has a chat template: template = \"chat\" uses that one, "
            "\"none\" trains prompt and response as they are (TRL's prompt-completion rows)")
    if blank and log is not None:
        log(f"{blank} of {len(rows)} rows left out: an empty text without a prompt or a "
            "beginning-of-sequence token holds nothing to predict")
    if plain and template != "none" and log is not None:
        log(f"{plain} of {len(rows)} rows are plain text (field {TEXT_FIELD!r}): trained on "
            f"whole, as they are, without the {template!r} template")
    if empty and log is not None:
        log(f"{empty} of {len(rows)} rows have an empty response: they teach the model to "
            "stop at once after their prompts")
    if opened and log is not None:
        log(f"{opened} of {len(rows)} responses open with {THINK}, which the model's chat "
            f"template already writes at the start of the assistant's turn: they are trained "
            f"from after it (one {THINK}, as the model will see it when it answers)")
    if template == "chat" and (system is True or system == "r1kit") and log is not None:
        given = [(p, r) for p, r in rows if p is not None and not (
            isinstance(p, list) and any(m.get("role") == "system" for m in p))]
        # (R1's distilled traces end in a summary, not <answer> tags: the instruction asks
        # for what the responses do not do)
        untagged = sum("<answer>" not in r for _, r in given)
        if given:  # the default: said, as the model learns to answer under it
            log(f"{len(given)} of {len(rows)} prompts bring no system turn: they are trained "
                "under r1kit's reasoning instruction as one (system_prompt = \"r1kit\"; \"\" "
                "for none, or your own text)" + (
                    f"; it asks for an <answer> tag, which {untagged} of their responses "
                    "do not have: TRL and open-r1 train the conversations as they are "
                    "(system_prompt = \"\")" if untagged else ""))
    return out


def sft_loss(model, ids: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor,
             n_tokens: int, chunk_tokens: int = 0) -> torch.Tensor:
    """Summed -log p of the labelled tokens (labels [R, L] on the CPU, -100 elsewhere; token j
    is predicted at position j-1) divided by n_tokens. `chunk_tokens` > 0, where the logits
    are a plain linear output layer: the output layer runs on the labelled positions only, in
    chunks recomputed in the backward pass (r1kit.logprobs), so the [tokens, vocab] float32
    logits never exist at once; the same loss and gradients up to float rounding."""
    device = ids.device
    split = body_and_head(model) if chunk_tokens > 0 else None
    # use_cache=False matters: with a cache, transformers ignores packed position ids
    if split is None:
        logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits.float()
        labels = labels.to(device)
        return torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
            ignore_index=-100, reduction="sum") / n_tokens
    body, head = split
    rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)  # on the CPU: no device wait
    where = to_device(rows * labels.shape[1] + cols, device)
    targets = to_device(labels[rows, cols + 1], device)
    hidden = body(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
    logp, _ = ChunkedHeadLogp.apply(hidden.flatten(0, 1).index_select(0, where), head.weight,
                                    head.bias, targets, 1.0, chunk_tokens, False)
    return -logp.sum() / n_tokens


def run_sft(cfg: SFTConfig, model_path: Path, data_path: Path, stage_dir: Path, seed: int,
            device: torch.device, dtype: torch.dtype, log=print, runlog=None,
            name: str = "sft") -> dict:
    """`runlog` (r1kit.runlog.RunLog): gets one metrics record per optimizer step (the run's
    metrics.jsonl and TensorBoard). With `save_every`, the stage writes resumable
    checkpoints/step-N and, run again after an interruption, continues from the newest one
    with the same data order and random state, so that it ends with the weights an
    uninterrupted run ends with.

    Under torchrun every rank runs this: all ranks draw the same batches, each takes its
    contiguous share of a batch's rows, and the gradients are summed over ranks (losses are
    normalised by the whole batch's response tokens), so a step is the one-process step up
    to float rounding. `distributed = "fsdp"` shards weights, gradients and optimizer state
    (FSDP2), with zero-weight passes so that every rank makes as many forward passes."""
    world = distributed.current()
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(model_path)
    resume = distributed.broadcast_object(latest_checkpoint(stage_dir))
    # with LoRA a checkpoint holds the adapters alone, loaded onto the input model below
    model = load_model(model_path if cfg.lora_rank else resume or model_path, device, dtype,
                       tokenizer)
    model.config.use_cache = False
    if cfg.template == "chat":  # checkpoints stop on the end of turn SFT teaches (encode_rows)
        add_stop_token(model, end_of_turn_id(tokenizer))
    if cfg.activation_checkpointing:
        checkpoint_layers(model)
    one_per_row = not packs_safely(model)  # (before sharding: a forward pass of its own)
    lora = None
    if cfg.lora_rank:
        lora, model = apply_lora(model, cfg, base=model_path)
    if world.enabled and cfg.distributed == "fsdp":
        distributed.shard(model)
    if lora is not None and resume is not None:
        load_adapters(lora, resume, device)
    sharded = distributed.is_sharded(model)
    # the chunked output layer calls the output layer directly, past FSDP's hooks
    chunk = (chunk_positions(cfg.logprob_chunk_tokens, False)
             if vocab_size(model) >= CHUNK_MIN_VOCAB and not sharded else 0)
    # a row runs up to the positions the model was trained on (past them GPT-2's table of
    # positions has no entry, and a rotary model learns from positions it never saw)
    positions = trained_positions(model.config)
    capped = positions is not None and positions < cfg.max_length
    data = encode_rows(tokenizer, read_sft_rows(data_path, cfg), cfg.template,
                       positions if capped else cfg.max_length,
                       (lambda m: log(f"[{name}] {m}")) if world.rank == 0 else None,
                       system=cfg.system_prompt,
                       own_data=not (Path(data_path).parent / "stage.json").exists(),
                       cap=f"the model's {positions} positions, below max_length = "
                           f"{cfg.max_length}" if capped else "")
    # (fewer rows than batch_size: each step trains on all of them, one epoch)
    steps = max(1, math.ceil(cfg.epochs * len(data) / min(cfg.batch_size, len(data))))
    if cfg.batch_size > len(data) and world.rank == 0:
        rows = f"{len(data)} rows" if len(data) > 1 else "1 row"
        log(f"[{name}] batch_size = {cfg.batch_size} is more than the {rows}: each of the "
            f"{steps} optimizer steps trains on all of them (an epoch each)")
    if cfg.warmup_steps >= steps and world.rank == 0:
        log(f"[{name}] warmup_steps = {cfg.warmup_steps} is not below its {steps} optimizer "
            f"steps: the learning rate never reaches lr = {cfg.lr:g}")
    if cfg.save_every and cfg.save_every >= steps and world.rank == 0:
        log(f"[{name}] save_every = {cfg.save_every} is not below its {steps} optimizer steps: "
            "no checkpoint before the final model (an interrupted stage starts over)")
    opt = distributed.adamw([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas))
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    t0, losses, start = time.time(), [], 0
    if resume is not None:
        state = restore_trained(resume, model, opt)
        start, order, losses = state["step"], list(state["order"]), list(state["losses"])
        if "steps" not in state and cfg.batch_size > len(data):
            # (a checkpoint written before fewer rows than batch_size meant `epochs` steps:
            # the stage ends on the schedule it started with)
            steps = max(1, math.ceil(cfg.epochs * len(data) / cfg.batch_size))
            log(f"[{name}] its checkpoint was written when a stage of fewer rows than "
                f"batch_size took ceil(epochs x rows / batch_size) steps: it ends after {steps}")
        gen.set_state(state["generator"])
        log(f"[{name}] resuming from {resume} (step {start} of {steps})")
    if runlog is not None:
        runlog.drop(name, after_step=start if resume is not None else -1)

    model.train()
    for step in range(start, steps):
        t_step = time.time()
        batch = []
        while len(batch) < min(cfg.batch_size, len(data)):
            if not order:  # one shuffled pass over the data per epoch
                order = torch.randperm(len(data), generator=gen).tolist()
            batch.append(data[order.pop()])
        lr = cosine_lr(step, steps, cfg.lr, cfg.warmup_steps, cfg.final_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        n_tokens = sum(len(r) for _, r in batch)
        # this rank's rows of the batch (all of them on one process)
        lo, hi = distributed.portion(len(batch))
        mine = batch[lo:hi]
        micro = [(mine[i:i + cfg.micro_batch_size], 1.0)
                 for i in range(0, len(mine), cfg.micro_batch_size)]
        if sharded:  # every forward and backward is a collective: as many passes per rank
            want = int(distributed.all_reduce(torch.tensor(len(micro), device=device), "max"))
            micro += [(batch[:1], 0.0)] * (want - len(micro))
        total = torch.zeros((), device=device)
        for rows, weight in micro:
            ids, pos, labels = packed_batch(rows, tokenizer.pad_token_id,
                                            max(len(p) + len(r) for p, r in rows),
                                            one_per_row=one_per_row)
            loss = sft_loss(model, ids.to(device), pos.to(device), labels, n_tokens, chunk)
            (loss * weight).backward()
            total += loss.detach() * weight
        if world.enabled and not sharded:
            distributed.sync_grads([p for p in model.parameters() if p.requires_grad])
        total = distributed.all_reduce(total).item()
        grad_norm = distributed.full_norm(
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
        opt.step()
        losses.append(total)
        if runlog is not None:
            seconds = time.time() - t_step
            runlog.metrics({"stage": name, "step": step + 1, "loss": total, "lr": lr,
                            "grad_norm": grad_norm.item(), "tokens": n_tokens,
                            "tokens_per_s": n_tokens / seconds, "step_seconds": seconds})
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
            save_trained(stage_dir, step + 1, cfg.keep_checkpoints, model, opt, tokenizer,
                         lora, {"step": step + 1, "steps": steps, "order": order,
                                "losses": losses, "generator": gen.get_state()})
        if (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:
            log(f"sft step {step + 1}/{steps} loss {total:.4f} lr {lr:.2e}")
    model.eval()
    if lora is not None:  # later stages get a plain checkpoint (the adapters merged); the
        # final adapters go beside it
        model, weights = save_final(lora, model, cfg, tokenizer, stage_dir)
    else:
        weights = distributed.full_state(model) if sharded else None
    summary = {"rows": len(data), "steps": steps, "first_loss": losses[0],
               "final_loss": sum(losses[-5:]) / len(losses[-5:]), "seconds": time.time() - t0}
    if world.is_main:
        save_model(model, tokenizer, stage_dir, state_dict=weights)
        (stage_dir / "sft.json").write_text(json.dumps(summary, indent=2))
    distributed.wait_for_main()
    return summary
