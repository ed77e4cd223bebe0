"""The reward_model stage: R1's helpful and safety reward models (R1-SPEC.md §3).

Both are the policy's architecture with a scalar head (`AutoModelForSequenceClassification`,
one label) on top of a causal-LM checkpoint:

- helpful, `objective = "pairwise"`: Bradley–Terry on `{prompt, chosen, rejected}` rows,
  loss = -log sigmoid(r(chosen) - r(rejected)); it scores only the summary (the text after
  </think>), as the paper's helpful model does;
- safety, `objective = "pointwise"`: binary cross-entropy on `{prompt, response, safe}` rows;
  it scores the whole response, reasoning included.

Held-out metric: pairwise accuracy (chosen scored above rejected) or safety accuracy (the sign
of the score matches the label). Data: the tiny world's synthetic labels (r1kit.tasks.general)
or JSONL/parquet files with those fields.

Under torchrun every rank holds the whole model and draws the same batches; each takes its
contiguous share of a batch's rows, with the loss weighted by the whole batch's row count, and
the gradients are summed over ranks (as the sft stage's `ddp`), so each optimizer step is the
one-process step up to float rounding. The held-out rows are split the same way; rank 0 writes
the model.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

from r1kit import distributed
from r1kit.checkpoints import latest_checkpoint, restore_trained, save_trained
from r1kit.config import RewardModelConfig
from r1kit.errors import R1kitError
from r1kit.lora import apply_lora, load_adapters, save_final
from r1kit.models import (
    checkpoint_layers,
    load_reward_model,
    load_tokenizer,
    save_model,
    trained_positions,
)
from r1kit.stages.pretrain import cosine_lr
from r1kit.tasks import general
from r1kit.tasks.math import kind_of, likely_field, read_rows, row_at
from r1kit.templates import check_messages, prompt_text

FIELDS = {"pairwise": ("prompt", "chosen", "rejected"), "pointwise": ("prompt", "response", "safe")}
RESPONSES = {"pairwise": ("chosen", "rejected"), "pointwise": ("response",)}


TAGS = ("<think>", "</think>", "<answer>", "</answer>")
IMPLIED = "_prompt_implied"  # a row's key: its prompt is the start of its chosen and rejected
WRITTEN = "_written"  # such a row's key: its chosen and rejected texts as written, read so


def reward_text(prompt: str, response: str, summary_only: bool, chat=None) -> str:
    """What the reward model reads: the flat R1-Zero turn format, with the response cut to its
    summary (after </think>) for the helpful model. The format tags are dropped, so that a
    model trained on plain responses reads tagged ones the same way (the format has its own
    reward). `chat`: a tokenizer whose chat template writes the two turns instead (a reward
    model trained elsewhere, on chat messages)."""
    if summary_only and "</think>" in response:
        response = response.rsplit("</think>", 1)[1]
    for tag in TAGS:
        response = response.replace(tag, " ")
    if chat is not None:
        return chat.apply_chat_template([{"role": "user", "content": prompt},
                                         {"role": "assistant", "content": response.strip()}],
                                        tokenize=False)
    return f"User: {prompt}. Assistant: {' '.join(response.split())}"


def _rows(cfg: RewardModelConfig, seed: int) -> tuple[list[dict], list[dict]]:
    if cfg.data == "tiny":
        make = general.helpful_pairs if cfg.objective == "pairwise" else general.safety_rows
        return general.split(make(cfg.train_rows + cfg.test_rows, seed), cfg.test_rows)
    return reward_rows_of(cfg, cfg.train_file), reward_rows_of(cfg, cfg.test_file)


def reward_rows_of(cfg: RewardModelConfig, path) -> list[dict]:
    """read_reward_rows of a stage's file, with the stage's field names."""
    return read_reward_rows(path, cfg.objective, cfg.prompt_field, cfg.response_field,
                            cfg.label_field)


def read_reward_rows(path, objective: str, prompt_field: str = "prompt",
                     response_field: str = "response", label_field: str = "safe") -> list[dict]:
    """The rows of a reward-model data file, checked: every field of the objective present,
    texts as text, `safe` true or false (or 1 or 0: a string such as "false" is an error, not
    a true value). TRL's conversational rows are read as text (_reward_row); the prompt is
    read from `prompt_field`, and a pointwise row's response and label from `response_field`
    and `label_field` (TRL's unpaired rows: completion and label)."""
    out = []
    for n, row in read_rows(path):
        where = row_at(path, n)
        if objective == "pointwise":
            for field, own, setting, like in (
                    (response_field, "response", "response_field", "completion"),
                    (label_field, "safe", "label_field", "label")):
                if field not in row:
                    raise R1kitError(f"{where}: no field {field!r}", (
                        f"set {setting} = \"{like}\"" if like in row and field != like
                        else "pointwise rows need a prompt, a response and a label "
                        f"(prompt_field, response_field, label_field: {prompt_field}, "
                        f"{response_field}, {label_field})"))
                row = {**{k: v for k, v in row.items() if k not in (own, field)},
                       own: row[field]}
        out.append(_reward_row(_prompt_named(row, prompt_field), objective, where,
                               prompt_field, label_field))
    return out


def _prompt_named(row: dict, prompt_field: str) -> dict:
    """`row` with its prompt (field `prompt_field`, where it has one) under the name
    `prompt`, and no other `prompt`."""
    if prompt_field == "prompt":
        return row
    out = {k: v for k, v in row.items() if k not in ("prompt", prompt_field)}
    if prompt_field in row:
        out["prompt"] = row[prompt_field]
    return out


def _reward_row(row: dict, objective: str, where: str, prompt_field: str = "prompt",
                label_field: str = "safe") -> dict:
    """A row with its prompt and responses as text. As TRL's preference data, a response may
    be chat messages ending with the assistant's ([{"role": "assistant", "content": ...}]) and
    the prompt a conversation; the model reads the prompt's last user message and the last
    assistant message, as it reads a chat prompt in a grpo stage (templates.prompt_text).
    Without a `prompt` field, responses that are whole conversations carry it (TRL's
    implicit prompt): the messages before their last one, the same for chosen and rejected;
    chosen and rejected given as text carry it as the words they start with alike."""
    out, implied = dict(row), []
    for field in RESPONSES[objective]:
        if field not in row:
            raise R1kitError(f"{where}: no field {field!r}",
                             f"{objective} rows need {', '.join(FIELDS[objective])}")
        context, out[field] = _response(row[field], f"{where}: field {field!r}")
        implied.append(context)
    like = likely_field(row, question=True)  # (orca_dpo_pairs' question, ...)
    like = like if isinstance(row.get(like), (str, list)) else None
    if "prompt" in row:
        value = row["prompt"]
        if isinstance(value, list):
            out["prompt"] = prompt_text(check_messages(value, f"{where}: field "
                                                             f"{prompt_field!r}"))
        elif not isinstance(value, str):
            raise R1kitError(f"{where}: field {prompt_field!r} is {kind_of(value)}, not text "
                             "or chat messages")
    elif like is not None and implied[0] is None:  # (not a start the responses share)
        raise R1kitError(f"{where}: no field {prompt_field!r} (the prompt), and this row has "
                         f"{like!r}", f"set prompt_field = \"{like}\"")
    elif objective == "pairwise" and all(isinstance(row[f], str) for f in RESPONSES[objective]) \
            and _shared_start(row["chosen"], row["rejected"]):
        # TRL's implicit prompt in text (Anthropic HH's rows): the start both texts share
        start = _shared_start(row["chosen"], row["rejected"])
        out["prompt"], out[IMPLIED] = start.strip(), True
        out[WRITTEN] = {field: row[field] for field in RESPONSES[objective]}
        for field in RESPONSES[objective]:
            out[field] = row[field][len(start):].strip()
    elif implied[0] is None:
        raise R1kitError(f"{where}: no field {prompt_field!r}",
                         f"{objective} rows need {', '.join(FIELDS[objective])} (or, as TRL's "
                         "implicit prompt, responses that are whole conversations, user "
                         "message first, or texts that begin with the same prompt)")
    elif any(context != implied[0] for context in implied):
        raise R1kitError(f"{where}: 'chosen' and 'rejected' continue different conversations",
                         "give the prompt as its own field, or the same messages before each "
                         "response's last one")
    else:
        out["prompt"] = prompt_text(implied[0])
    if objective == "pointwise":
        value = row.get("safe")
        if "safe" not in row:
            raise R1kitError(f"{where}: no field 'safe'",
                             f"{objective} rows need {', '.join(FIELDS[objective])}")
        if not (isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1))):
            raise R1kitError(f"{where}: field {label_field!r} is {value!r}",
                             "use true or false (or 1 or 0)")
    return out


def _shared_start(a: str, b: str) -> str:
    """The longest start of two texts that both go on after it with words of their own: it
    ends at whitespace (no word split) and leaves each text a word ("" where none)."""
    n = len(os.path.commonprefix([a, b]))
    while n > 0:
        if a[n - 1].isspace() or ((n == len(a) or a[n].isspace())
                                  and (n == len(b) or b[n].isspace())):
            if a[n:].strip() and b[n:].strip():
                return a[:n] if a[:n].strip() else ""
        n -= 1
    return ""


def _response(value, where: str) -> tuple[list[dict] | None, str]:
    """(the conversation before the response, or None; the response's text) of a response
    given as text or as chat messages whose last one is the assistant's."""
    if isinstance(value, str):
        return None, value
    if not isinstance(value, list):
        raise R1kitError(f"{where} is {kind_of(value)}, not text or chat messages")
    if not value or not all(isinstance(m, dict) for m in value) \
            or value[-1].get("role") != "assistant" or not isinstance(value[-1].get("content"), str):
        raise R1kitError(f"{where}: chat messages must end with the assistant's response",
                         '[{"role": "assistant", "content": "..."}], after the conversation '
                         "if the row has no prompt field")
    context = value[:-1]
    if context:
        return check_messages(context, where), value[-1]["content"]
    return None, value[-1]["content"]


def score_texts(model, tokenizer, texts: list[str], max_length: int | None = None
                ) -> torch.Tensor:
    """Scalar scores [N] of texts (right-padded batch); with `max_length`, a longer text is
    read from its end (its start cut: the response's end, which the head reads, stays)."""
    device = next(model.parameters()).device
    tokenizer.truncation_side = "left"
    enc = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False,
                    truncation=max_length is not None, max_length=max_length)
    out = model(input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device), use_cache=False)
    return out.logits.squeeze(-1).float()


def _texts(row: dict, cfg) -> list[str]:
    """What the model reads of a row: chosen and rejected, or the response; a row of two
    whole dialogues in text (Anthropic HH's) as they are written."""
    if row.get(WRITTEN):
        return [row[WRITTEN][field] for field in RESPONSES[cfg.objective]]
    summary = cfg.scores_summary_only()
    return [reward_text(row["prompt"], row[field], summary) for field in RESPONSES[cfg.objective]]


def _loss_and_correct(model, tokenizer, batch: list[dict], cfg, max_length: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    texts = [_texts(r, cfg) for r in batch]
    if cfg.objective == "pairwise":
        chosen = score_texts(model, tokenizer, [t[0] for t in texts], max_length)
        rejected = score_texts(model, tokenizer, [t[1] for t in texts], max_length)
        margin = chosen - rejected
        return -torch.nn.functional.logsigmoid(margin).mean(), (margin > 0).float()
    scores = score_texts(model, tokenizer, [t[0] for t in texts], max_length)
    labels = torch.tensor([float(bool(r["safe"])) for r in batch], device=scores.device)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)
    return loss, ((scores > 0).float() == labels).float()


def _shown(text: str, most: int = 80) -> str:
    return repr(text if len(text) <= most else "..." + text[-most:])


def epoch_order(rows: int, draws: int, gen: torch.Generator) -> list[int]:
    """`draws` row indices, epoch after epoch of shuffled rows: each row once per epoch (the
    paper trains its reward models for one epoch; draws with replacement would see only
    about 63% of the rows in one)."""
    order: list[int] = []
    while len(order) < draws:
        order += torch.randperm(rows, generator=gen).tolist()
    return order[:draws]


def data_notes(cfg: RewardModelConfig, train: list[dict], test: list[dict]) -> list[str]:
    """What makes the data teach or measure less than it seems: pairs whose two sides read the
    same (the helpful model reads only the summary, so responses that differ only in their
    reasoning are one text: no gradient, and a held-out one never counts as right), and
    held-out rows that are also training rows."""
    notes = []
    if cfg.objective == "pairwise":
        summary = cfg.scores_summary_only()
        for rows, which in ((train, "training"), (test, "held-out")):
            same = sum(chosen == rejected for chosen, rejected in (_texts(r, cfg) for r in rows))
            if same:
                notes.append(
                    f"note: {same} of {len(rows)} {which} pairs read the same for chosen and "
                    "rejected" + (" (the model reads only the summary after </think>; "
                                  "summary_only = false reads the reasoning too)" if summary
                                  else "") + ": they teach nothing"
                    + (", and count as wrong in the accuracy" if which == "held-out" else ""))
    implied = [r for r in train + test if r.get(IMPLIED)]
    if implied:
        notes.append(f"note: {len(implied)} of {len(train) + len(test)} rows have no prompt "
                     "field: their prompt is the text chosen and rejected begin with (TRL's "
                     f"implicit prompt), the first {_shown(implied[0]['prompt'])}")
    key = ("prompt", "chosen", "rejected") if cfg.objective == "pairwise" \
        else ("prompt", "response", "safe")
    seen = {tuple(str(r[k]) for k in key) for r in train}
    both = sum(tuple(str(r[k]) for k in key) in seen for r in test)
    if both:
        same_file = cfg.data != "tiny" and Path(cfg.train_file).resolve() == Path(
            cfg.test_file).resolve()
        notes.append(f"note: {both} of {len(test)} held-out rows are also training rows"
                     + (" (train_file and test_file are one file)" if same_file else "")
                     + ": the held-out accuracy is not measured on unseen data")
    return notes


def run_reward_model(cfg: RewardModelConfig, model_path: Path, stage_dir: Path, seed: int,
                     device: torch.device, dtype: torch.dtype, log=print, runlog=None,
                     name: str = "reward_model") -> dict:
    """`runlog` (r1kit.runlog.RunLog): gets one metrics record per optimizer step. With
    `save_every`, the stage writes resumable checkpoints/step-N (weights, or the adapters and
    the scalar head with LoRA; the optimizer's state; the random state) and, run again after
    an interruption, continues from the newest one to the weights an uninterrupted run ends
    with (the row order is drawn from the seed). `distributed = "fsdp"` shards weights,
    gradients and optimizer state (FSDP2), with zero-weight passes so that every rank makes
    as many forward passes; the held-out rows are scored with the weights gathered."""
    world = distributed.current()
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(model_path)
    tokenizer.padding_side = "right"
    resume = distributed.broadcast_object(latest_checkpoint(stage_dir))
    # with LoRA a checkpoint holds the adapters and the scalar head alone, loaded below onto
    # the input model (whose new head is drawn from the seed as in the interrupted run)
    model = load_reward_model(model_path if cfg.lora_rank else resume or model_path, device,
                              dtype, tokenizer.pad_token_id)
    train, test = _rows(cfg, seed)
    for note in data_notes(cfg, train, test):
        log(note)
    positions = trained_positions(model.config)
    max_length = min(filter(None, (cfg.max_length, positions)), default=None)
    longer = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) > max_length
                 for row in train + test for text in _texts(row, cfg)) if max_length else 0
    if longer:
        log(f"note: {longer} of {len(train + test) * len(RESPONSES[cfg.objective])} texts are "
            f"longer than {max_length} tokens (max_length"
            + (" 0: the model's positions" if not cfg.max_length else "")
            + "): the model reads their ends, their starts cut")
    # (fewer rows than batch_size: each step trains on all of them, one epoch, as sft's)
    size = min(cfg.batch_size, len(train))
    steps = max(1, math.ceil(cfg.epochs * len(train) / size))
    if cfg.batch_size > len(train):
        rows = f"{len(train)} rows" if len(train) > 1 else "1 row"
        log(f"batch_size = {cfg.batch_size} is more than the {rows}: each of the {steps} "
            "optimizer steps trains on all of them (an epoch each)")
    if cfg.save_every and cfg.save_every >= steps:
        log(f"save_every = {cfg.save_every} is not below its {steps} optimizer steps: no "
            "checkpoint before the final model (an interrupted stage starts over)")
    if cfg.activation_checkpointing:
        checkpoint_layers(model)
    lora = None
    if cfg.lora_rank:  # adapters and the scalar head train; the backbone's weights are frozen
        lora, model = apply_lora(model, cfg, base=model_path, task_type="SEQ_CLS")
    if world.enabled and cfg.distributed == "fsdp":
        distributed.shard(model)
    if lora is not None and resume is not None:
        load_adapters(lora, resume, device)
    sharded = distributed.is_sharded(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = distributed.adamw(params, lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    t0, start = time.time(), 0
    if resume is not None:
        state = restore_trained(resume, model, opt)
        start = state["step"]
        if "batch" not in state and size < cfg.batch_size:
            # (a checkpoint written when a stage of fewer rows than batch_size drew batch_size
            # rows a step: it ends on the schedule it started with)
            size, steps = cfg.batch_size, state["steps"]
            log(f"its checkpoint was written when a stage of fewer rows than batch_size drew "
                f"batch_size rows a step: it goes on so, and ends after {steps}")
        log(f"resuming from {resume} (step {start} of {steps})")
    order = epoch_order(len(train), steps * size, gen)
    if runlog is not None:
        runlog.drop(name, after_step=start if resume is not None else -1)
    micro = cfg.micro_batch_size
    model.train()
    for step in range(start, steps):
        t_step = time.time()
        batch = [train[i] for i in order[step * size:(step + 1) * size]]
        lo, hi = distributed.portion(len(batch))  # this rank's rows (one process: all)
        parts = [(batch[i:min(i + micro, hi)], 1.0) for i in range(lo, hi, micro)]
        if sharded:  # every forward and backward is a collective: as many passes per rank
            want = int(distributed.all_reduce(torch.tensor(len(parts), device=device), "max"))
            parts += [(batch[:1], 0.0)] * (want - len(parts))
        lr = cosine_lr(step, steps, cfg.lr, cfg.warmup_steps, cfg.final_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        right = torch.zeros((), device=device)
        for part, weight in parts:  # the batch's mean loss, a part at a time
            loss, correct = _loss_and_correct(model, tokenizer, part, cfg, max_length)
            (loss * (weight * len(part) / len(batch))).backward()
            total += loss.detach() * (weight * len(part) / len(batch))
            right += correct.sum() * weight
        if world.enabled and not sharded:
            distributed.sync_grads(params)
        total = distributed.all_reduce(total).item()
        accuracy = distributed.all_reduce(right).item() / len(batch)
        grad_norm = distributed.full_norm(
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        opt.step()
        if runlog is not None:
            seconds = time.time() - t_step
            runlog.metrics({"stage": name, "step": step + 1, "loss": total,
                            "accuracy": accuracy, "lr": lr, "grad_norm": grad_norm.item(),
                            "rows": len(batch), "step_seconds": seconds})
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
            save_trained(stage_dir, step + 1, cfg.keep_checkpoints, model, opt, tokenizer,
                         lora, {"step": step + 1, "steps": steps, "batch": size})
        if (step + 1) % max(1, steps // 5) == 0:
            log(f"reward model step {step + 1}/{steps} loss {total:.4f} lr {lr:.2e}")
    model.eval()
    lo, hi = distributed.portion(len(test))
    # (sharded: the weights gathered, so that ranks may score different numbers of parts)
    with torch.no_grad(), distributed.gathered(model):
        mine = [c for i in range(lo, hi, micro)
                for c in _loss_and_correct(model, tokenizer, test[i:min(i + micro, hi)], cfg,
                                           max_length)[1].tolist()]
    correct = distributed.gather_lists(mine)
    accuracy = sum(correct) / len(correct)
    metric = "pairwise_accuracy" if cfg.objective == "pairwise" else "safety_accuracy"
    log(f"reward model held-out {metric}: {accuracy:.3f} ({len(test)} rows)")
    if lora is not None:  # the adapters in adapter/, the merged model as the stage's model
        model, weights = save_final(lora, model, cfg, tokenizer, stage_dir)
    else:
        weights = distributed.full_state(model) if sharded else None
    if world.is_main:
        save_model(model, tokenizer, stage_dir, state_dict=weights)
        # how the GRPO stage must read this model (r1kit.rewards.combined.RewardModelScorer)
        (stage_dir / "reward_model.json").write_text(json.dumps(
            {"objective": cfg.objective, "summary_only": cfg.scores_summary_only(),
             "max_length": max_length}))
    distributed.wait_for_main()
    return {metric: accuracy, "train_rows": len(train), "test_rows": len(test), "steps": steps,
            "seconds": time.time() - t0}
