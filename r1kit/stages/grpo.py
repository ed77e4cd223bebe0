"""The GRPO stage: R1-Zero's reinforcement learning (R1-SPEC.md §1).

One step, top to bottom (`run_grpo`):
  1. take the next questions of the task (a seeded order; the position is the step number),
  2. sample G completions of each with the rollout engine (temperature `temperature`,
     length cap from `max_new_tokens` and its schedule),
  3. score them: reasoning questions with the rule reward (accuracy from the task's verifier
     + format), general prompts with their reward model + format, and the language reward
     on both when it has a weight (r1kit.rewards.combined, R1-SPEC eq. 8-10),
  4. group-normalise the rewards into advantages,
  5. split the rollout into `num_minibatches` shuffled mini-batches and make one optimizer
     update on each, `ppo_epochs` times over. The first update is on-policy; later ones are
     off-policy and rely on the ratio to the policy that sampled (old-policy log-probs).

Which log-probs are computed, and why:
  - old-policy log-probs: with a single update per rollout the policy that sampled *is* the
    policy being updated, so old = the current log-probs detached (ratio exactly 1, the
    gradient exactly the policy gradient) and no extra pass is needed. With several updates,
    one no-grad pass before the first update gives them for every sequence.
  - reference log-probs only when beta > 0; the reference is reset to the policy every
    `ref_refresh_every` steps (the paper: every 400 updates, 25 rollouts of 16 updates).
  - π is softmax(logits / temperature) both when sampling and when training, so the ratio
    compares like with like.

Where this departs from the paper or chooses what it leaves open: the per-token loss form and
its aggregation (see algos.py); a step is one rollout (the paper's step is one of its 16
updates: the defaults count its step numbers in rollouts); the learning rate schedule,
optimizer settings and the Dr. GRPO normaliser (the step's max_new_tokens) are choices.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch._dynamo

from r1kit import distributed
from r1kit.algos import group_advantages, policy_loss
from r1kit.checkpoints import STATE_FILE, latest_checkpoint, staged_shards, write_checkpoint
from r1kit.config import GRPOConfig, reward_specs, unused_with_reward_function
from r1kit.errors import R1kitError
from r1kit.eval.behaviour import reflective_counts
from r1kit.eval.core import decode_responses, evaluate, evaluate_reward, response_text
from r1kit.lean import compile_wanted, padded_places
from r1kit.logprobs import (
    CHUNK_MIN_VOCAB,
    ChunkedHeadLogp,
    body_and_head,
    chunk_logp,
    chunk_positions,
    compile_failure,
    vocab_size,
)
from r1kit.lora import (
    apply_lora,
    checked_adapter_load,
    gathered_adapters,
    load_adapters,
    save_adapters,
    save_final,
)
from r1kit.models import (
    add_stop_token,
    checkpoint_layers,
    disable_dropout,
    load_model,
    load_tokenizer,
    quiet_loading,
    save_model,
    stop_token_ids,
    trained_positions,
)
from r1kit.packing import pack, packs_safely, to_device
from r1kit.rewards import overlap
from r1kit.rewards.answers import reads_untagged
from r1kit.rewards.combined import (
    GENERAL_TYPES,
    CombinedReward,
    RewardModelScorer,
    data_type,
)
from r1kit.rewards.custom import FunctionReward, Parts, load_function, shadowed_fields
from r1kit.rewards.length import overlong_penalty
from r1kit.rewards.overlap import OverlappedRewards
from r1kit.rewards.rule import UNTAGGED_NOTE, format_style, untagged
from r1kit.rollout import Rollouts, generate, position_limit, question_seed
from r1kit.runlog import RunLog, read_jsonl
from r1kit.stages.pretrain import cosine_lr, linear_lr
from r1kit.tasks import general, make_task
from r1kit.tasks.base import Example
from r1kit.tasks.math import kind_of, read_rows, row_at
from r1kit.templates import check_messages, encode_prompt, end_of_turn_id, response_prefill


@dataclass
class StageContext:
    name: str  # the stage's name in the recipe
    stage_dir: Path  # where the stage writes its checkpoint and metadata
    run_dir: Path
    seed: int
    device: torch.device
    dtype: torch.dtype
    log: RunLog
    progress: bool = True
    print: Callable[[str], None] = print


# ----- the training pass ------------------------------------------------------------------


def completion_logprobs(model, prompts: list[list[int]], completions: list[list[int]],
                        temperature: float, width: int, pad_id: int,
                        with_entropy: bool = False, chunk_tokens: int = 0, lean=None,
                        checkpoint_layers: bool = False, share_prompts: bool = False):
    """Per-token log-probs of each completion given its prompt, under softmax(logits / T).

    Returns logp [N, width] (0 beyond each completion) and, when asked, the policy's entropy
    at those tokens [N, width]. The output layer runs only on the positions that predict
    completion tokens.

    `lean` (an r1kit.lean.LeanLM of `model`): r1kit's forward on right-padded rows (the
    caller sorts sequences by length, so padding is the difference between neighbours);
    otherwise transformers' forward on packed rows (several sequences per row, no padding).
    `share_prompts` (lean path): a prompt that several completions continue runs once, its
    keys and values serve them all, and no token is padding outside attention
    (LeanLM.shared_hidden_states). `chunk_tokens` > 0:
    the output layer runs `chunk_tokens` positions at a time, each chunk recomputed in the
    backward pass, so the [tokens, vocab] float32 logits never exist at once (the same numbers
    up to float rounding; tests/test_rollout_packing.py checks it). Models whose logits are
    more than a linear layer (soft-capping, a logit scale) take the plain path.
    `checkpoint_layers`: recompute each decoder layer in the backward pass (lean path; the
    transformers path uses the model's own gradient checkpointing).
    """
    device = next(model.parameters()).device
    if lean is not None:
        targets = _right_padded(completions, width, 0)[0]
        if share_prompts:
            shared = _shared_layout(prompts, completions, width)
            if shared is not None:
                tensors, src, valid = shared
                where = _head_index(src, targets, valid, device)
                hidden = lean.shared_hidden_states(*(to_device(t, device) for t in tensors),
                                                   checkpoint_layers=checkpoint_layers)
                return _head_logprobs(hidden, where, lean.head, temperature, with_entropy,
                                      chunk_tokens, fused=lean.compiled)
        seqs = [p + c for p, c in zip(prompts, completions)]
        ids = _right_padded(seqs, max(len(s) for s in seqs), pad_id)[0]
        spans = [(i, 0, len(s)) for i, s in enumerate(seqs)]
        rows, cols, valid = _completion_index(spans, prompts, completions, width)
        where = _head_index(rows * ids.shape[1] + cols, targets, valid, device)
        hidden = lean.hidden_states(to_device(ids, device), checkpoint_layers)
        return _head_logprobs(hidden.flatten(0, 1), where, lean.head, temperature,
                              with_entropy, chunk_tokens, fused=lean.compiled)
    seqs = [p + c for p, c in zip(prompts, completions)]
    packed = pack(seqs, capacity=max(len(s) for s in seqs) * 4, pad_id=pad_id,
                  one_per_row=not packs_safely(model))
    ids = to_device(packed.input_ids, device)
    positions = to_device(packed.position_ids, device)
    rows, cols, valid = _completion_index(packed.spans, prompts, completions, width)
    split = body_and_head(model) if chunk_tokens > 0 else None
    # use_cache=False matters: with a cache, transformers ignores the packed position ids and
    # lets every token attend to the sequences before it in the row
    if split is not None:
        body, head = split
        targets = _right_padded(completions, width, 0)[0]
        where = _head_index(rows * ids.shape[1] + cols, targets, valid, device)
        hidden = body(input_ids=ids, position_ids=positions,
                      use_cache=False).last_hidden_state  # [R, L, H]
        return _head_logprobs(hidden.flatten(0, 1), where, head, temperature, with_entropy,
                              chunk_tokens)
    rows, cols, valid = (to_device(t, device) for t in (rows, cols, valid))
    logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits  # [R, L, V]
    logits = logits.float() / temperature
    # token j is predicted at position j-1: log p(ids[:, j]) = logits[:, j-1, ids[:, j]] - lse
    lse = torch.logsumexp(logits[:, :-1], dim=-1)  # [R, L-1]
    tok = logits[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1) - lse  # [R, L-1]
    logp = tok[rows, cols] * valid  # [N, width]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            probs = torch.softmax(logits[:, :-1], dim=-1)
            ent = lse - (probs * logits[:, :-1]).sum(-1)  # [R, L-1]
            entropy = ent[rows, cols] * valid
    return logp, entropy


def _right_padded(seqs: list[list[int]], width: int, fill: int):
    """Token lists as a [len(seqs), width] table filled with `fill` after each, and the mask of
    real tokens."""
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), width), fill, dtype=torch.long)
    valid = torch.arange(width)[None] < lengths[:, None]
    ids[valid] = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    return ids, valid


def _shared_layout(prompts, completions, width):
    """The inputs of LeanLM.shared_hidden_states for these sequences, or None when no prompt
    repeats: ((ids [T], positions [T], prefix index [U, Lp], prefix valid [U, Lp], completion
    index [N, Lc], completion valid [N, Lc], owner [N], padded places [T]), the [N, width]
    place in its [T] hidden states of the position that predicts each completion token, the
    [N, width] mask of completion tokens)."""
    index: dict[tuple, int] = {}
    owner = torch.tensor([index.setdefault(tuple(p), len(index)) for p in prompts])
    U, N = len(index), len(prompts)
    if U == N:
        return None
    unique = [list(k) for k in index]
    p_len = torch.tensor([len(p) for p in unique])
    c_len = torch.tensor([len(c) for c in completions])
    P = int(p_len.sum())
    ids = torch.tensor([t for s in (*unique, *completions) for t in s], dtype=torch.long)

    def places(lengths, first):  # where each sequence's tokens are, right-padded with 0
        L = max(1, int(lengths.max()))
        valid = torch.arange(L)[None] < lengths[:, None]
        at = torch.zeros(valid.shape, dtype=torch.long)
        at[valid] = first + torch.arange(int(lengths.sum()))
        return at, valid

    prefix_index, prefix_valid = places(p_len, 0)
    comp_index, comp_valid = places(c_len, P)
    start = p_len[owner]
    positions = torch.cat([prefix_index.new_tensor([j for n in p_len.tolist() for j in range(n)]),
                           (start[:, None] + torch.arange(comp_index.shape[1])[None])[comp_valid]])
    # completion token t is predicted by the prompt's last token (t = 0) or by token t - 1
    t = torch.arange(width)[None]
    valid = t < c_len[:, None]
    last_prompt_token = prefix_index[owner, start - 1]
    comp_first = P + torch.cat([c_len.new_zeros(1), c_len.cumsum(0)[:-1]])
    src = torch.where(t == 0, last_prompt_token[:, None], comp_first[:, None] + t - 1)
    back = padded_places(prefix_valid, comp_valid)
    return ((ids, positions, prefix_index, prefix_valid, comp_index, comp_valid, owner, back),
            src * valid, valid.float())


def _head_index(src, targets, valid, device):
    """From [N, width] tables (on the CPU): the row in the flattened hidden states of every
    completion token's predicting position, that token, its flat place in the [N, width]
    output, and that shape."""
    sel = valid.bool()
    src, targets = src[sel], targets[sel]
    dst = sel.flatten().nonzero().squeeze(-1)
    return (to_device(src, device), to_device(targets, device), to_device(dst, device),
            tuple(sel.shape))


def _head_logprobs(hidden, where, head, temperature, with_entropy, chunk_tokens,
                   fused=False):
    """The output layer at the positions that predict completion tokens only (`where`, from
    _head_index; hidden [positions, H]); in chunks of `chunk_tokens` positions (made again in
    backward; `fused`: each chunk's softmax work compiled), or (0) all at once."""
    src, targets, dst, shape = where
    h = hidden[src]  # [T, H]
    if chunk_tokens > 0:
        lp, ent = ChunkedHeadLogp.apply(h, head.weight, head.bias, targets, temperature,
                                        chunk_tokens, with_entropy, fused)
    else:
        lp, ent = chunk_logp(h, targets, head.weight, head.bias, temperature, with_entropy)
    size = shape[0] * shape[1]
    logp = torch.zeros(size, device=h.device, dtype=torch.float32).index_put((dst,), lp)
    entropy = None
    if with_entropy:
        entropy = torch.zeros(size, device=h.device, dtype=torch.float32).index_put(
            (dst,), ent).view(shape)
    return logp.view(shape), entropy


def _completion_index(spans, prompts, completions, width):
    """Row and column (in the shifted [R, L-1] layout) of every completion token, [N, width]
    each (0 beyond a completion), and the mask of completion tokens."""
    row, start, _ = (torch.tensor(x, dtype=torch.long) for x in zip(*spans))
    first = start + torch.tensor([len(p) for p in prompts]) - 1  # predicts the first token
    valid = torch.arange(width)[None] < torch.tensor([len(c) for c in completions])[:, None]
    zero = torch.zeros((), dtype=torch.long)
    rows = torch.where(valid, row[:, None], zero)
    cols = torch.where(valid, first[:, None] + torch.arange(width)[None], zero)
    return rows, cols, valid.float()


@dataclass
class TrainBatch:
    """One rollout ready for the updates."""

    prompts: list[list[int]]  # [N] prompt ids per completion
    completions: list[list[int]]  # [N] completion ids (stop token included, no padding)
    mask: torch.Tensor  # [N, T] 1 = completion token
    advantages: torch.Tensor  # [N]
    width: int  # T
    first: int = 0  # under torchrun: the global index of this rank's first completion
    total: int = 0  # under torchrun: the completions of all ranks (0 = just these)
    budget: int = 0  # the rollout's max_new_tokens: seq-mean-token-sum-norm's constant


def make_batch(ro: Rollouts, advantages: torch.Tensor, mask_truncated: bool = False,
               budget: int = 0) -> TrainBatch:
    """`mask_truncated` (DAPO's overlong filtering): the tokens of completions that hit the
    length cap without a stop token count for nothing in the loss; they keep their place in
    their group's advantages and, under a per-sequence aggregation, in the number of
    sequences averaged over (as TRL's mask_truncated_completions)."""
    G = ro.group_size
    lengths = ro.lengths.tolist()
    completions = [row[:n] for row, n in zip(ro.completion_ids.tolist(), lengths)]
    prompts = [ro.prompt_ids[i // G] for i in range(len(completions))]
    mask = ro.completion_mask.float()
    if mask_truncated:
        mask = mask * ro.stopped.float()[:, None]
    return TrainBatch(prompts, completions, mask, advantages, ro.completion_ids.shape[1],
                      budget=budget)


def wants_prompt_sharing(mode: str, prompts: list[list[int]], completions: list[list[int]],
                         micro_batch_size: int, device_type: str = "cpu") -> bool:
    """Whether the training pass runs each prompt once for its completions (GRPOConfig
    .prompt_sharing). "auto": on the CPU only, when that removes at least 5% of the tokens and
    the attention mask of a micro-batch, [rows, completion length, prompt + completion
    length], stays small. With long completions after short prompts the saving is small, and
    the masked attention that sharing needs reads the whole rectangle where causal attention
    reads a triangle. On CUDA the masked attention cannot use the flash kernels the unmasked
    causal pass uses: on an H200 a micro-batch of the gpu preset (19% of its tokens shared)
    took 0.224 s shared against 0.159 s plain (bench/sharing_check.py, bench/RESULTS.md)."""
    if mode != "auto":
        return mode == "on"
    if device_type != "cpu":
        return False
    prompt_tokens = sum(len(p) for p in prompts)
    completion_tokens = sum(len(c) for c in completions)
    unique = sum(len(p) for p in {tuple(p) for p in prompts})
    if prompt_tokens - unique < 0.05 * (prompt_tokens + completion_tokens):
        return False
    longest_c = max(len(c) for c in completions)
    longest_p = max(len(p) for p in prompts)
    return micro_batch_size * longest_c * (longest_p + longest_c) <= 2 ** 26


def logprob_rows(setting, micro_batch_size: int) -> int:
    """Rows per no-grad pass of the reference's and the old policy's log-probs
    (GRPOConfig.logprob_micro_batch_size): auto = micro_batch_size. A no-grad pass holds one
    layer's activations at a time, where the training pass holds the gradients and, with
    activation checkpointing, every layer's input plus one layer's activations and their
    gradients, so larger passes fit where the training pass does (with the chunked output
    layer: without it, a pass holds its rows' whole logits). They launch fewer kernels,
    but on an H200 four micro-batches per pass did not make the GPU preset's step faster
    (bench/RESULTS.md, run G), where one compiled decoder layer then saw two batch sizes and
    compiled for any size. No-grad passes now compile a layer function of their own
    (r1kit.lean), not yet measured on a GPU (bench/gpu.sh LOGPROB_ROWS=128)."""
    return micro_batch_size if setting == "auto" else int(setting)


def _micro_batches(idx: list[int], size: int):
    for i in range(0, len(idx), size):
        yield idx[i:i + size]


def update_policy(policy, ref, opt, batch: TrainBatch, cfg: GRPOConfig, pad_id: int,
                  gen: torch.Generator, lr_at, lean_policy=None, lean_ref=None) -> dict:
    """The mini-batch updates of one rollout. Returns averaged metrics.

    `lean_policy` / `lean_ref`: r1kit.lean.LeanLM views of the two models, or None for
    transformers' forward. Micro-batches of a mini-batch are cut from its sequences sorted by
    length (the loss is a weighted sum over micro-batches, so their composition does not
    change it), which keeps the right-padding of the lean path small; with prompt sharing
    (wants_prompt_sharing), the completions of a prompt stay side by side."""
    device = next(policy.parameters()).device
    n = len(batch.completions)
    n_all = batch.total or n  # under torchrun this rank holds completions first .. first+n-1
    mini = n_all // cfg.num_minibatches
    # chunked output layer only where the full logits are big (a real LM's vocabulary), and
    # not on sharded weights (it calls the output layer directly, past FSDP's hooks)
    sharded = distributed.is_sharded(policy)
    big_vocab = vocab_size(policy) >= CHUNK_MIN_VOCAB
    compiled = lean_policy is not None and lean_policy.compiled
    chunk = chunk_positions(cfg.logprob_chunk_tokens, compiled) if big_vocab and not sharded else 0
    ckpt = cfg.activation_checkpointing
    total_len = [len(p) + len(c) for p, c in zip(batch.prompts, batch.completions)]
    share = lean_policy is not None and wants_prompt_sharing(
        cfg.prompt_sharing, batch.prompts, batch.completions, cfg.micro_batch_size, device.type)
    prompt_of = [tuple(p) for p in batch.prompts] if share else None

    def micro_batches(idx, size=cfg.micro_batch_size):
        if not share:
            return _micro_batches(sorted(idx, key=lambda i: total_len[i]), size)
        # the completions of a prompt side by side (so that they share it), groups ordered by
        # their longest sequence, each group by length
        longest: dict[tuple, int] = {}
        for i in idx:
            longest[prompt_of[i]] = max(longest.get(prompt_of[i], 0), total_len[i])
        return _micro_batches(sorted(idx, key=lambda i: (longest[prompt_of[i]], prompt_of[i],
                                                         total_len[i])), size)

    def no_grad_logprobs(model, lean, rows: list[int], out: torch.Tensor) -> None:
        """out[rows] = the log-probs of those sequences under `model`, in no-grad passes of
        logprob_rows(...) rows (each row's log-probs depend on that row alone: other passes
        change them only by float rounding)."""
        passes: list = list(micro_batches(rows, rows_per_pass)) if rows else []
        if sharded and batch.total:  # every rank makes as many passes (collectives)
            want = int(distributed.all_reduce(torch.tensor(len(passes), device=device), "max"))
            passes += [None] * (want - len(passes))
        with torch.no_grad():
            for mb in passes:
                part = mb or [0]
                logp = completion_logprobs(
                    model, [batch.prompts[i] for i in part], [batch.completions[i] for i in part],
                    cfg.temperature, batch.width, pad_id, chunk_tokens=chunk, lean=lean,
                    share_prompts=share)[0]
                if mb:
                    out[to_device(torch.tensor(mb), device)] = logp

    rows_per_pass = logprob_rows(cfg.logprob_micro_batch_size, cfg.micro_batch_size)
    # the old policy's log-probs, when a rollout feeds more than one update: one pass over the
    # rollout before the first
    old_logp = None
    if cfg.num_minibatches * cfg.ppo_epochs > 1:
        old_logp = torch.zeros((n, batch.width), device=device)
        no_grad_logprobs(policy, lean_policy, list(range(n)), old_logp)
    # the reference's (beta > 0): at the start of each mini-batch of the first epoch, for its
    # sequences (no gradients hold memory yet), and reused by later epochs: the reference does
    # not change during the updates
    ref_all = torch.zeros((n, batch.width), device=device) if ref is not None else None
    ref_done = [False] * n
    if ref_all is not None and batch.total:  # under torchrun, the zero-weight passes below
        no_grad_logprobs(ref, lean_ref, [0], ref_all)  # read row 0 (every rank makes this one)
    mask = batch.mask.to(device)
    adv = batch.advantages.to(device)
    sums: dict[str, float] = {}
    count = 0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(n_all, generator=gen).tolist()
        for m in range(cfg.num_minibatches):
            global_idx = order[m * mini:(m + 1) * mini]
            idx = distributed.local_members(global_idx, batch.first, n)
            lr = lr_at()
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            if ref_all is not None:
                missing = [i for i in idx if not ref_done[i]]
                no_grad_logprobs(ref, lean_ref, missing, ref_all)
                for i in missing:
                    ref_done[i] = True
            total_tokens = distributed.all_reduce(mask[idx].sum()).clamp(min=1)
            parts: dict[str, float] = {}
            micro = [(mb, True) for mb in micro_batches(idx)]
            if batch.total:  # zero-weight passes: every rank makes as many (collectives)
                want = len(micro) if not sharded else int(distributed.all_reduce(
                    torch.tensor(len(micro), device=device), "max"))
                micro += [([0], False)] * (max(1, want) - len(micro))
            for mb, real in micro:
                at = to_device(torch.tensor(mb), device)  # index tensors: no wait per lookup
                ref_logp = ref_all[at] if ref_all is not None else None
                logp, entropy = completion_logprobs(
                    policy, [batch.prompts[i] for i in mb], [batch.completions[i] for i in mb],
                    cfg.temperature, batch.width, pad_id, with_entropy=True,
                    chunk_tokens=chunk, lean=lean_policy, checkpoint_layers=ckpt,
                    share_prompts=share)
                old = old_logp[at] if old_logp is not None else logp.detach()
                loss, metrics = policy_loss(
                    logp, old, adv[at], mask[at], clip_eps_low=cfg.clip_eps_low,
                    clip_eps_high=cfg.clip_eps_high or None, beta=cfg.beta, ref_logp=ref_logp,
                    aggregation=cfg.aggregation, importance_sampling=cfg.importance_sampling,
                    norm_length=batch.budget or None, kl_ratio=cfg.kl_ratio_correction,
                    metrics_as_tensors=True)
                # weight each micro-batch so the sum equals the mini-batch's aggregate; metrics
                # stay on the device until the mini-batch ends (no wait per micro-batch)
                token_share = mask[at].sum() / total_tokens if real else 0.0
                if not real:
                    weight = 0.0
                elif cfg.aggregation == "token-mean":
                    weight = token_share
                else:
                    weight = len(mb) / len(global_idx)
                try:
                    (loss * weight).backward()
                except torch._dynamo.exc.TorchDynamoException as exc:  # compiled lazily
                    raise R1kitError(f"torch.compile failed in the backward pass "
                                     f"({compile_failure(exc)})",
                                     'set compile = "off" for this stage') from exc
                with torch.no_grad():
                    metrics["entropy"] = (entropy * mask[at]).sum() / mask[at].sum().clamp(min=1)
                    metrics["loss"] = loss.detach()
                    for k, v in metrics.items():  # token means over the whole mini-batch,
                        # however it is cut into micro-batches; the losses as aggregated
                        w = token_share if k in TOKEN_MEANS else weight
                        parts[k] = parts.get(k, 0.0) + v * w
            keys = sorted(parts)
            values = torch.stack([parts[k].double() for k in keys])
            if batch.total:  # the global mini-batch's gradient and metrics on every rank
                if not sharded:
                    distributed.sync_grads([p for p in policy.parameters() if p.requires_grad])
                values = distributed.all_reduce(values)
            parts = dict(zip(keys, values.tolist()))
            grad_norm = distributed.full_norm(torch.nn.utils.clip_grad_norm_(
                policy.parameters(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")))
            # a NaN or infinite loss or gradient skips the update instead of poisoning weights
            finite = math.isfinite(parts.get("loss", 0.0)) and bool(torch.isfinite(grad_norm))
            if finite:
                opt.step()
            # gradients are freed at once: the rollout that follows needs that memory
            opt.zero_grad(set_to_none=True)
            parts["skipped_updates"] = 0.0 if finite else 1.0
            parts["grad_norm"] = grad_norm.item()
            parts["lr"] = lr
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
    out = {k: v / count for k, v in sums.items()}
    if ref is None:
        out["kl"] = None  # no reference model when beta = 0
    return out


# ----- the stage ----------------------------------------------------------------------------


def general_examples(cfg: GRPOConfig, seed: int) -> list[Example]:
    """The general prompts of a stage with general_share > 0, each with its data type."""
    if cfg.general_data == "tiny":  # fields: type, and for safety prompts harmful
        rows = general.prompts(4000, seed)
        return [Example(question=r["prompt"], answer="",
                        meta={"type": r["type"], "fields": {k: v for k, v in r.items()
                                                             if k != "prompt"}})
                for r in rows]
    out = []
    for n, row in read_rows(cfg.general_data):
        for name in (cfg.general_prompt_field, "type"):
            if name not in row:
                raise R1kitError(f"{row_at(cfg.general_data, n)}: no field {name!r}",
                                 f"general rows need {cfg.general_prompt_field!r} and 'type' "
                                 f"({' or '.join(GENERAL_TYPES)})")
        if row["type"] not in GENERAL_TYPES:
            raise R1kitError(f"{row_at(cfg.general_data, n)}: type {row['type']!r} is not one of "
                             f"{', '.join(GENERAL_TYPES)}", "helpful rows are scored by "
                             "helpful_model, safety rows (harmlessness) by safety_model")
        prompt = row[cfg.general_prompt_field]
        if isinstance(prompt, list):  # a conversation (template = "chat")
            prompt = check_messages(prompt, f"{row_at(cfg.general_data, n)}: field "
                                            f"{cfg.general_prompt_field!r}")
        elif not isinstance(prompt, str):
            raise R1kitError(f"{row_at(cfg.general_data, n)}: field {cfg.general_prompt_field!r} is "
                             f"{kind_of(prompt)}, not text or chat messages")
        # the row's other fields (its type too), for a reward function of your own
        fields = {k: v for k, v in row.items() if k != "prompt"}  # (as TRL: all but prompt)
        out.append(Example(question=prompt, answer="", meta={"type": row["type"],
                                                             "fields": fields}))
    return out


def make_reward(cfg: GRPOConfig, task, reward_models: dict[str, Path], ctx: StageContext):
    scorers = {kind: RewardModelScorer(reward_models[kind], ctx.device, ctx.dtype, role=kind)
               for kind in GENERAL_TYPES if reward_models.get(kind) is not None}
    for scorer in scorers.values():
        if scorer.said and distributed.current().is_main:
            ctx.print(f"[{ctx.name}] note: {scorer.said}")
    return CombinedReward(
        task, accuracy_weight=cfg.accuracy_weight, format_weight=cfg.format_weight,
        language_weight=cfg.language_weight, language_target=cfg.language_target,
        helpful=scorers.get("helpful"), safety=scorers.get("safety"),
        helpful_weight=cfg.helpful_weight, safety_weight=cfg.safety_weight,
        reward_model_scale=cfg.reward_model_scale,
        format_style=format_style(cfg.format, cfg.template, cfg.system_prompt))


def run_grpo(cfg: GRPOConfig, model_path: Path, ctx: StageContext,
             reward_models: dict[str, Path] | None = None, *, task=None,
             reward_function: Callable | None = None) -> dict:
    """`reward_models`: the checkpoints of the helpful and safety reward models, by type.
    From Python, `task` (an r1kit.tasks.Task) replaces the config's task and
    `reward_function` (called as in r1kit.rewards.custom) the config's rewards."""
    torch.manual_seed(ctx.seed)
    tokenizer = load_tokenizer(model_path)
    policy = load_model(model_path, ctx.device, ctx.dtype, tokenizer)
    policy.config.use_cache = False  # the training pass needs no cache; generation makes its own
    if cfg.template == "chat":  # rollouts stop on the chat template's end of turn: so do
        add_stop_token(policy, end_of_turn_id(tokenizer))  # the stage's checkpoints
    if cfg.disable_dropout:
        disable_dropout(policy)
    lora = None
    if cfg.lora_rank:
        lora, policy = apply_lora(policy, cfg, base=model_path)
    ref = None
    if cfg.beta > 0:
        ref = copy.deepcopy(policy).eval()
        ref.requires_grad_(False)
    world = distributed.current()
    if world.enabled and cfg.distributed == "fsdp":
        for model in (policy, ref):
            if model is not None:
                distributed.shard(model)
    lean_policy, lean_ref = _lean_views(cfg, policy, ref, ctx)
    # the rollout engine also takes LoRA-adapted models (its own check, per rollout); sharded
    # weights decode with transformers' forward
    decode_engine = "hf" if cfg.engine == "hf" or distributed.is_sharded(policy) else "auto"
    compiled = compile_wanted(cfg.compile, ctx.device)  # for sampling (training: _lean_views)
    stop_ids = stop_token_ids(tokenizer, policy)
    pad_id = tokenizer.pad_token_id
    task = task if task is not None else make_task(cfg, ctx.seed)
    if reward_function is None and cfg.reward_function:
        reward_function = [load_function(x) for x in reward_specs(cfg.reward_function)]
    unused = unused_with_reward_function(cfg)
    if unused and world.is_main:
        ctx.print(f"[{ctx.name}] reward_function replaces the rule rewards and reward models: "
                  f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect")
    # (task = "prompts": your functions' rewards added to the reward models', as TRL sums them)
    models = (make_reward(cfg, task, reward_models or {}, ctx)
              if reward_function is None or cfg.task == "prompts" and reward_models else None)
    reward_fn = (FunctionReward(reward_function, cfg.reward_weights or None, tokenizer,
                                base=models) if reward_function is not None else models)
    train = task.train_examples()
    if cfg.task == "prompts" and not cfg.train_file and world.is_main:
        ctx.print(f"[{ctx.name}] task 'prompts' without a train_file: the tiny world's "
                  f"{len(train)} general prompts (set train_file to your own)")
    general_pool = general_examples(cfg, ctx.seed) if cfg.general_share > 0 else []
    if reward_function is not None and world.is_main:
        hidden = shadowed_fields(train + general_pool, cfg)
        if hidden:
            ctx.print(f"[{ctx.name}] the data's field{'s' if len(hidden) > 1 else ''} "
                      f"{', '.join(map(repr, hidden))} cannot reach the reward function under "
                      f"{'their names' if len(hidden) > 1 else 'its name'}, which r1kit's own "
                      "arguments take (answer: the reference answer, answer_field = "
                      f"{getattr(cfg, 'answer_field', 'answer')!r}); rename "
                      f"{'them' if len(hidden) > 1 else 'it'} in the data to pass "
                      f"{'them' if len(hidden) > 1 else 'it'}")
    test = task.test_examples(cfg.eval.split)
    if cfg.eval.limit:
        test = test[:cfg.eval.limit]
    if cfg.eval.every and not test and world.is_main:
        ctx.print(f"[{ctx.name}] no held-out questions (" + (
            "task 'prompts' with a train_file and no test_file" if cfg.task == "prompts" else
            f"task {cfg.task!r} without a test_file") + "): no evaluations during the stage")
    if cfg.save_every and cfg.save_every >= cfg.steps and world.is_main:
        ctx.print(f"[{ctx.name}] save_every = {cfg.save_every} is not below steps = "
                  f"{cfg.steps}: no checkpoint before the final model (an interrupted stage "
                  "starts over)")

    bare = sum(isinstance(e.question, list) and not any(m.get("role") == "system"
                                                        for m in e.question) for e in train)
    if bare and cfg.template == "chat" and cfg.system_prompt == "r1kit" and world.is_main:
        ctx.print(f"[{ctx.name}] {bare} of the {len(train)} training prompts are conversations "
                  "without a system turn: r1kit's R1-Zero instruction (system_prompt = "
                  "\"r1kit\", which asks for <think> and <answer> tags) is their system turn "
                  "(where the chat template has no system role, it leads the user turn); "
                  "system_prompt = \"\" leaves them as they are, as TRL does")

    def encode(question: str) -> list[int]:
        return encode_prompt(question, cfg.template, tokenizer, cfg.prefill,
                             system=cfg.system_prompt)

    stop_set = set(stop_ids)
    overlap_rewards = overlap.wanted(cfg.overlap_rewards, ctx.device)
    if cfg.overlap_rewards == "on" and not overlap.applies(reward_fn,
                                                           train[:1] + general_pool[:1]):
        ctx.print(f"[{ctx.name}] overlap_rewards = on: nothing to score during the rollout (it "
                  "applies to rule rewards whose checks run in worker processes: task = "
                  "\"math\" or \"gsm8k\", not reward models or a reward_function)")

    # (the text in front of the generated tokens: the prefill, or the template's own <think>)
    opening = response_prefill(tokenizer, cfg.template, cfg.prefill)

    def to_text(completion: list[int]) -> str:
        return response_text(tokenizer, completion, stop_set, opening)

    test_prompts = [encode(e.question) for e in test]
    prompt_cache: dict[int, list[int]] = {}
    _check_prompt_lengths(cfg, train, encode, policy, prompt_cache, ctx)  # (every rank alike)
    opt = distributed.adamw([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr,
                            betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)
    total_updates = cfg.steps * cfg.num_minibatches * cfg.ppo_epochs
    updates = [0]
    if cfg.warmup_steps >= total_updates and world.is_main:
        ctx.print(f"[{ctx.name}] warmup_steps = {cfg.warmup_steps} is not below the stage's "
                  f"{total_updates} updates (steps x num_minibatches x ppo_epochs): the "
                  f"learning rate never reaches lr = {cfg.lr:g}")

    def lr_at() -> float:
        u = updates[0]
        updates[0] += 1
        if cfg.lr_schedule == "cosine":
            return cosine_lr(u, total_updates, cfg.lr, max(1, cfg.warmup_steps), cfg.final_lr_ratio)
        if cfg.lr_schedule == "linear":  # (as transformers': the first update at lr)
            return linear_lr(u, total_updates, cfg.lr, cfg.warmup_steps, cfg.final_lr_ratio)
        return cfg.lr * min(1.0, (u + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr

    def run_eval(step: int) -> dict | None:
        # every rank evaluates its share of the questions (with the weights gathered where
        # they are sharded) and gathers all the results; rank 0 logs the record and keeps it
        with distributed.gathered(policy):
            record = _eval(step)
        return record if world.is_main else None

    def _eval(step: int) -> dict:
        t0 = time.time()
        if getattr(task, "scored_by_reward", False):  # prompts without answers: the reward
            return _eval_reward(step, t0)
        res = evaluate(policy, tokenizer, task, test, test_prompts, k=cfg.eval.k,
                       temperature=cfg.eval.temperature, top_p=cfg.eval.top_p,
                       max_new_tokens=cfg.eval.max_new_tokens or cfg.max_new_tokens_at(step),
                       stop_ids=stop_ids, seed=ctx.seed * 7919 + step, prefill=opening,
                       max_rows=cfg.generation_rows, overlap=cfg.overlap_rewards,
                       per_question=per_question_seeds)
        record = {"stage": ctx.name, "step": step, "benchmark": f"{task.name}/{cfg.eval.split}",
                  **res.as_record(), "seconds": time.time() - t0}
        ctx.log.eval(record)
        ctx.print(f"[{ctx.name}] eval step {step}: pass@1 {res.pass_at_1:.3f}  "
                  + (f"cons@{res.k} {res.cons_at_k:.3f}  " if res.cons_at_k is not None else "")
                  + f"mean length {res.mean_tokens:.1f} tokens")
        return record

    def _eval_reward(step: int, t0: float) -> dict:
        res = evaluate_reward(policy, tokenizer, reward_fn, test, test_prompts, k=cfg.eval.k,
                              temperature=cfg.eval.temperature, top_p=cfg.eval.top_p,
                              max_new_tokens=cfg.eval.max_new_tokens or cfg.max_new_tokens_at(step),
                              stop_ids=stop_ids, seed=ctx.seed * 7919 + step, prefill=opening,
                              max_rows=cfg.generation_rows, per_question=per_question_seeds)
        res.pop("samples")
        name = getattr(task, "test_name", task.name)
        record = {"stage": ctx.name, "step": step, "benchmark": f"{name}/{cfg.eval.split}",
                  **res, "seconds": time.time() - t0}
        ctx.log.eval(record)
        shown = [f"reward/{kind}" for kind in GENERAL_TYPES] + sorted(
            k for k in res if k.startswith("reward/custom") and k != "reward/custom_none")
        parts = "  ".join(f"{key[7:]} {res[key]:.3f}" for key in shown if key in res)
        ctx.print(f"[{ctx.name}] eval step {step} ({name}): reward {res['reward']:.3f}  "
                  + (parts + "  " if parts else "") + f"mean length {res['mean_tokens']:.1f} tokens")
        return record

    G = cfg.group_size
    questions_per_step = cfg.rollout_batch_size // G
    if world.is_main:  # (rollout_batch_size counts completions: OpenRLHF's counts prompts)
        step_updates = cfg.num_minibatches * cfg.ppo_epochs
        ctx.print(f"[{ctx.name}] each step: {questions_per_step} questions x {G} completions "
                  f"(rollout_batch_size {cfg.rollout_batch_size}), {step_updates} optimizer "
                  f"update{'s' if step_updates != 1 else ''}")
    if 0 < len(train) < questions_per_step and world.is_main:
        ctx.print(f"[{ctx.name}] the training set has {len(train)} question"
                  f"{'s' if len(train) != 1 else ''}, fewer than the {questions_per_step} a "
                  "step draws (rollout_batch_size / group_size): each step takes some of them "
                  "more than once")
    # under torchrun this rank samples questions q_lo .. q_hi-1 of each step (whole groups)
    q_lo, q_hi = distributed.share(questions_per_step, "questions per step (rollout_batch_size "
                                   "/ group_size)") if world.enabled else (0, questions_per_step)
    per_question_seeds = world.enabled or cfg.rollout_seeding == "question"
    start = 0
    draws = 0  # rounds of questions drawn (one per step without dynamic sampling)
    resume = distributed.broadcast_object(latest_checkpoint(ctx.stage_dir))
    if resume is not None:
        # the same command after an interruption: continue from the last checkpoint, exactly
        # (sampling and shuffling are seeded by the step, so only this state is needed)
        # on the CPU: each part goes to the device as it is loaded, and the whole goes once
        # read (kept on the device, it held a second optimizer state and reference model)
        state = torch.load(resume / STATE_FILE, map_location="cpu", weights_only=True)
        if lora is not None:
            load_adapters(lora, resume, ctx.device)
        else:
            distributed.load_full_state(policy,
                                        load_model(resume, ctx.device, ctx.dtype).state_dict())
        if distributed.sharded_entry(state["optimizer"], distributed.SHARDED_OPTIMIZER):
            distributed.load_sharded_optimizer(policy, opt,
                                               resume / distributed.SHARDED_OPTIMIZER)
        else:
            distributed.load_optimizer_state(policy, opt, state["optimizer"])
        if ref is not None and lora is not None:
            _load_trainable(ref, state["ref"], resume)
        elif ref is not None:
            if distributed.sharded_entry(state["ref"], distributed.SHARDED_REF):
                distributed.load_sharded_model(ref, resume / distributed.SHARDED_REF)
            else:
                distributed.load_full_state(ref, state["ref"])
        start, updates[0], evals = state["step"], state["updates"], list(state["evals"])
        draws = state.get("draws", start)
        ctx.print(f"[{ctx.name}] resuming from {resume} (step {start} of {cfg.steps})")
        # the seeding the run sampled with (torchrun's is always per question), so that a
        # stage resumed on another number of processes draws what it would have drawn
        written = state.get("question_seeds")
        rows_then = state.get("generation_rows")  # (checkpoints that record it)
        del state
        if written and not per_question_seeds:
            per_question_seeds = True
            ctx.print(f"[{ctx.name}] sampling seeded per question, as the run was (under "
                      "torchrun, or rollout_seeding = \"question\")")
        elif written is False and per_question_seeds and world.is_main:
            ctx.print(f"[{ctx.name}] the run sampled with rollout_seeding = \"step\" on one "
                      "process; under torchrun sampling is seeded per question, so from here "
                      "on the samples differ from the one-process run's (the same "
                      "distribution)")
        if rows_then is not None and rows_then != cfg.generation_rows and not per_question_seeds:
            ctx.print(f"[{ctx.name}] generation_rows {cfg.generation_rows} (was {rows_then}): "
                      "rows sampled in chunks of another size draw other random numbers, so "
                      "from here on the samples differ from those the run would have drawn "
                      "(the same distribution; rollout_seeding = \"question\" keeps them)")
    ctx.log.drop(ctx.name, after_step=start if resume is not None else -1)
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)  # also when called outside a pipeline
    samples_file = ctx.stage_dir / "completions.jsonl"
    if world.is_main and samples_file.exists():  # a rerun or a resume logs no step twice
        keep = [r for r in read_jsonl(samples_file) if r.get("step", 0) <= start]
        samples_file.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
    if resume is None:
        evals = [run_eval(0)] if cfg.eval.every and test else []
        evals = [e for e in evals if e is not None]  # rank 0 alone keeps evaluation records
    bar = _progress(cfg.steps, ctx.progress)
    say = ctx.print
    if bar.bar is not None and not bar.bar.disable:  # lines of their own while the bar runs
        ctx.print = bar.write
    t_stage = time.time()
    bar.update_to(start)
    bad_updates = 0
    flat_steps = 0  # steps in a row whose groups all had equal rewards (no learning signal)

    def sample_round(step: int, draw: int, n_general: int) -> _Round:
        """Draw `draw`'s questions (a seeded order of the training set, reshuffled every
        epoch; general prompts in place of n_general of them), sample this rank's share and
        score it."""
        t0 = time.time()
        examples = _questions(train, draw, questions_per_step, ctx.seed)
        examples = examples[:questions_per_step - n_general]
        examples += [(-1 - i, ex) for i, ex in
                     _questions(general_pool, draw, n_general, ctx.seed + 1)]
        examples = examples[q_lo:q_hi]  # this rank's share (all of them on one process)
        prompts = []
        for ex_i, ex in examples:
            if ex_i not in prompt_cache:
                prompt_cache[ex_i] = encode(ex.question)
            prompts.append(prompt_cache[ex_i])
        policy.eval()
        gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed * 1_000_003 + draw)
        seeds = ([question_seed(ctx.seed, draw, j) for j in range(q_lo, q_hi)]
                 if per_question_seeds else None)
        row_examples = [ex for _, ex in examples for _ in range(G)]
        # rule rewards as completions finish, in a background thread (overlap_rewards)
        with OverlappedRewards(reward_fn, to_text, row_examples, enabled=overlap_rewards
                               ) as scoring:
            with distributed.gathered(policy):
                ro = generate(policy, prompts, group_size=G,
                              max_new_tokens=cfg.max_new_tokens_at(step),
                              temperature=cfg.temperature, top_p=cfg.top_p, stop_ids=stop_ids,
                              pad_id=pad_id, generator=gen, max_rows=cfg.generation_rows,
                              seeds=seeds, min_new_tokens=cfg.min_new_tokens,
                              engine=decode_engine, cuda_graphs=cfg.cuda_graphs,
                              logprobs=False, on_finished=scoring.callback,
                              compiled=compiled)
            t_gen = time.time() - t0
            texts = decode_responses(tokenizer, ro.completion_ids, ro.completion_mask,
                                     stop_ids, opening)
            if isinstance(reward_fn, FunctionReward):  # TRL's completion_ids: the sampled ones
                reward_fn.sampled_ids = [row[:n] for row, n in zip(ro.completion_ids.tolist(),
                                                                    ro.lengths.tolist())]
                reward_fn.prompt_ids = [p for p in prompts for _ in range(G)]
            try:
                scored = scoring.results(texts)
            finally:
                if isinstance(reward_fn, FunctionReward):
                    reward_fn.sampled_ids = reward_fn.prompt_ids = None
        if cfg.overlong_buffer:  # DAPO's soft overlong punishment, logged as reward/overlong
            penalty = overlong_penalty(ro.lengths, cfg.max_new_tokens_at(step),
                                       cfg.overlong_buffer).tolist()
            scored = [(s + cfg.overlong_weight * p,
                       Parts({**parts, "overlong": p}, extra=getattr(parts, "extra", None)))
                      for (s, parts), p in zip(scored, penalty)]
        return _Round(examples, ro, texts, scored, t_gen, time.time() - t0 - t_gen)

    for step in range(start, cfg.steps):
        if isinstance(reward_fn, FunctionReward):  # TRL's trainer_state, for your function
            reward_fn.trainer_state.global_step, reward_fn.trainer_state.max_steps = step, cfg.steps
        t0 = time.time()
        # 1-3. questions, rollouts, rewards; with dynamic sampling, more rounds while groups
        #      with varied rewards are short (each process fills its own share)
        n_general = cfg.general_questions() if general_pool and step >= cfg.general_from_step else 0
        rounds, varied = [], []  # varied[r][b]: group b of round r has a signal (dynamic)
        need = q_hi - q_lo
        while not rounds or (cfg.dynamic_sampling and len(rounds) < cfg.max_sampling_rounds):
            rounds.append(sample_round(step, draws, n_general))
            draws += 1
            if not cfg.dynamic_sampling:
                break
            varied.append([_varied(g, cfg.dynamic_sampling_metric) for g in rounds[-1].groups(G)])
            short = torch.tensor(max(0, need - sum(map(sum, varied))), device=ctx.device)
            if not distributed.all_reduce(short, "max").item():  # every rank has its share
                break
        chosen = (_choose_groups(varied, need) if cfg.dynamic_sampling
                  else [(0, b) for b in range(need)])
        ro = _take_groups([r.ro for r in rounds], chosen, pad_id)
        if world.enabled:  # one width for all ranks (Dr. GRPO's normaliser is the widest)
            ro = _pad_rollouts(ro, int(distributed.all_reduce(
                torch.tensor(ro.completion_ids.shape[1], device=ctx.device), "max")), pad_id)
        t_gen, t_rewards = sum(r.t_gen for r in rounds), sum(r.t_rewards for r in rounds)
        first = rounds[0]
        # the metrics below are over all ranks' samples of every round
        scored_all = distributed.gather_lists([s for r in rounds for s in r.scored])
        texts = [t for r in rounds for t in r.texts]
        means = _component_means(scored_all)
        if cfg.log_completions:  # the first sample of the first questions, of all ranks
            rows = [{"step": step + 1, "question": first.examples[i // G][1].question,
                     "answer": first.examples[i // G][1].answer, "completion": first.texts[i],
                     "tokens": int(first.ro.lengths[i]), "stopped": bool(first.ro.stopped[i]),
                     "reward": first.scored[i][0], **first.scored[i][1],
                     **({"extra": first.scored[i][1].extra}  # (log_extra's columns)
                        if getattr(first.scored[i][1], "extra", None) else {}),
                     # the data row's own fields, by which r1kit score gives them to a
                     # reward function again (TRL's solution, verl's data_source)
                     **_logged_fields(first.examples[i // G][1])}
                    for i in range(0, min(len(first.texts), cfg.log_completions * G), G)]
            rows = distributed.gather_lists(rows)[:cfg.log_completions]
            if world.is_main:
                with open(samples_file, "a", encoding="utf-8") as fh:
                    fh.writelines(json.dumps(r, default=str) + "\n" for r in rows)
        failed = means.get("reward/errors", 0.0) + means.get("reward/timeouts", 0.0)
        if cfg.max_reward_failures < 1 and failed > cfg.max_reward_failures:
            raise R1kitError(
                f"[{ctx.name}] step {step + 1}: the reward failed for {failed:.0%} of the samples "
                f"(errors {means.get('reward/errors', 0.0):.0%}, timeouts "
                f"{means.get('reward/timeouts', 0.0):.0%}), over max_reward_failures = "
                f"{cfg.max_reward_failures:g}",
                "a reward that silently scores 0 trains nothing: check the verifier and the "
                "answer format (r1kit score --reward math on a few samples shows why)")
        rewards = torch.tensor([s for r, b in chosen
                                for s, _ in rounds[r].scored[b * G:(b + 1) * G]]).view(-1, G)
        # 4. advantages
        whole = None  # "batch": the std of every trained reward of the step, all ranks'
        if cfg.advantage_scale == "batch" and world.enabled:
            whole = torch.tensor(distributed.gather_lists(rewards.view(-1).tolist()))
        adv = group_advantages(rewards, cfg.advantage_scale, batch_rewards=whole).view(-1)
        # 5. updates
        policy.train()
        t1 = time.time()
        batch = make_batch(ro, adv, cfg.mask_truncated, budget=cfg.max_new_tokens_at(step))
        if world.enabled:
            batch.first, batch.total = q_lo * G, questions_per_step * G
        upd = update_policy(policy, ref, opt, batch, cfg, pad_id,
                            torch.Generator().manual_seed(ctx.seed + step), lr_at,
                            lean_policy, lean_ref)
        t_train = time.time() - t1
        if ref is not None and cfg.ref_refresh_every and (step + 1) % cfg.ref_refresh_every == 0:
            ref.load_state_dict(policy.state_dict())
        seconds = time.time() - t0
        rewards_all = torch.tensor([s for s, _ in scored_all]).view(-1, G)
        lengths = torch.tensor(distributed.gather_lists(
            [n for r in rounds for n in r.ro.lengths.tolist()])).float()
        stopped = torch.tensor(distributed.gather_lists(
            [x for r in rounds for x in r.ro.stopped.tolist()])).float()
        dynamic = {}
        if cfg.dynamic_sampling:  # rounds taken; share of the trained groups with a signal
            trained = distributed.gather_lists([varied[r][b] for r, b in chosen])
            dynamic = {"sampling_rounds": len(rounds),
                       "varied_frac": sum(trained) / len(trained)}
        record = {
            "stage": ctx.name, "step": step + 1,
            "reward": rewards_all.mean().item(),
            **means,
            "accuracy": means.get("reward/accuracy"),
            "general_frac": n_general / questions_per_step,
            **{f"reflect/{w}": v for w, v in _reflective_counts(texts).items()},
            "response_length": lengths.mean().item(),
            "response_length_max": lengths.max().item(),
            "truncated": 1.0 - stopped.mean().item(),
            "zero_var_frac": (rewards_all.std(dim=1) == 0).float().mean().item(),
            **dynamic,
            "kl": upd.pop("kl", None), "clip_frac": upd.pop("clip_frac"),
            "entropy": upd.pop("entropy"), "grad_norm": upd.pop("grad_norm"), "lr": upd.pop("lr"),
            **upd,
            "max_new_tokens": cfg.max_new_tokens_at(step),
            "tokens_per_s": lengths.sum().item() / seconds,
            "step_seconds": seconds, "gen_seconds": t_gen, "train_seconds": t_train,
            "reward_seconds": t_rewards,  # waiting for the rewards after the rollout
        }
        ctx.log.metrics(record)
        bar.update(record)
        flat_steps = flat_steps + 1 if record["zero_var_frac"] == 1.0 else 0
        # rank 0's clock decides for all (every rank must leave the loop at the same step)
        out_of_time = distributed.broadcast_object(
            bool(cfg.max_seconds) and time.time() - t_stage >= cfg.max_seconds)
        ends = out_of_time and step + 1 < cfg.steps  # (max_seconds stops the stage here)
        enough = min(NO_SIGNAL_STEPS, cfg.steps)
        # said once: after `enough` flat steps, or where the stage stops with every step flat
        no_signal = flat_steps == enough or (ends and 0 < flat_steps < enough
                                             and flat_steps == step + 1 - start)
        if no_signal:  # (every rank: a collective)
            counts = torch.tensor(_untagged_reasoning(rounds, G), device=ctx.device)
            bare, reasoned = distributed.all_reduce(counts, "sum").tolist()  # of all ranks
        if no_signal and world.is_main:
            ctx.print(f"[{ctx.name}] no learning signal in the last "
                      f"{flat_steps} step{'s' if flat_steps != 1 else ''}: in every "
                      "group all samples got the same reward (zero_var_frac 1.0), so the "
                      "updates change nothing. Check the rewards on a few samples (r1kit "
                      "score), or raise temperature or group_size"
                      + (f"; {record['truncated']:.0%} of this step's samples were cut at "
                         f"max_new_tokens = {record['max_new_tokens']}, unfinished (raise it)"
                         if record.get("truncated", 0) >= 0.5 else "")
                      + (f"; {bare} of this step's {reasoned} samples of reasoning "
                         f"questions have no <think>, </think> or <answer>: {UNTAGGED_NOTE} "
                         "(read_untagged = true reads them whole, as open-r1)"
                         if reward_function is None and not reads_untagged(task) and bare
                         else ""))
        bad_updates = bad_updates + 1 if upd.get("skipped_updates", 0.0) == 1.0 else 0
        if cfg.max_nonfinite_steps and bad_updates >= cfg.max_nonfinite_steps:
            last = latest_checkpoint(ctx.stage_dir)
            raise R1kitError(
                f"[{ctx.name}] {bad_updates} steps in a row with a NaN or infinite loss or "
                f"gradient (up to step {step + 1}); every update was skipped",
                f"the last good checkpoint is {last}" if last else
                "lower lr, check the data, or set save_every to keep resumable checkpoints")
        done = step + 1
        if cfg.eval.every and test and (done % cfg.eval.every == 0 or done == cfg.steps
                                        or out_of_time):
            record = run_eval(done)
            if record is not None:
                evals.append(record)
        if cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
            save_checkpoint(ctx.stage_dir, done, policy, tokenizer, opt, ref,
                            {"step": done, "updates": updates[0], "evals": evals,
                             "draws": draws, "question_seeds": per_question_seeds,
                             "generation_rows": cfg.generation_rows},
                            cfg.keep_checkpoints, lora=lora)
        if out_of_time and done < cfg.steps:
            ctx.print(f"[{ctx.name}] max_seconds = {cfg.max_seconds:g} reached after {done} "
                      f"step{'s' if done != 1 else ''}")
            break
    bar.close()
    ctx.print = say
    weights = None
    if lora is not None:  # later stages get a plain checkpoint (the adapters merged); the
        # final adapters go beside it
        policy, weights = save_final(lora, policy, cfg, tokenizer, ctx.stage_dir)
    elif distributed.is_sharded(policy):
        weights = distributed.full_state(policy)
    if world.is_main:
        save_model(policy, tokenizer, ctx.stage_dir, state_dict=weights)
    distributed.wait_for_main()
    summary = {"steps": done, "seconds": time.time() - t_stage}
    if evals:
        key = "pass@1" if "pass@1" in evals[0] else "reward"  # (task = "prompts": the reward)
        summary.update({"first_eval": evals[0], "final_eval": evals[-1],
                        f"best_{key}": max(e[key] for e in evals)})
    return summary


def _lean_views(cfg: GRPOConfig, policy, ref, ctx: StageContext):
    """LeanLM views of the policy and the reference, or (None, None) where transformers'
    forward must run (engine = "hf", or a model the lean path does not cover, said once)."""
    from r1kit.lean import LeanLM

    why = "engine = 'hf'" if cfg.engine == "hf" else LeanLM.unsupported(policy)
    if why is not None:
        if cfg.engine != "hf":
            ctx.print(f"[{ctx.name}] the training pass takes transformers' forward for this "
                      f"model ({why})")
        if cfg.compile in (True, "on"):
            ctx.print(f"[{ctx.name}] compile = on applies to r1kit's lean forward only: "
                      f"not compiled ({why})")
        if cfg.activation_checkpointing:
            checkpoint_layers(policy)
        return None, None
    compiled = compile_wanted(cfg.compile, ctx.device)
    return (LeanLM(policy, compiled), LeanLM(ref, compiled) if ref is not None else None)


def _check_prompt_lengths(cfg: GRPOConfig, train: list, encode, policy, cache: dict,
                          ctx: StageContext) -> None:
    """Before any sampling (the first evaluation can take long): the training questions whose
    prompts leave no room for max_new_tokens within the model's positions. An R1kitError where
    the model cannot go past them (a table of learned positions, GPT-2's), a note where it
    was trained on fewer (rotary). Only questions long enough in bytes to come near are
    encoded (a byte-level tokenizer writes at most a token per byte); those are cached."""
    hard = position_limit(policy)
    limit = hard or trained_positions(policy.config)
    longest_new = max(cfg.max_new_tokens_at(s) for s in  # the caps in force in the stage
                      {0, *(s for s, _ in cfg.max_new_tokens_schedule if s < cfg.steps)})
    budget = (limit or 0) - longest_new  # the most prompt tokens that fit
    if not limit or budget < 1:  # (none: the sampler's own check says it at once)
        return
    overhead = len(encode("x"))
    long = []
    for i, ex in enumerate(train):
        text = ex.question if isinstance(ex.question, str) else "".join(
            m["content"] for m in ex.question)
        slack = 16 + (8 * len(ex.question) if isinstance(ex.question, list) else 0)
        if len(text.encode()) + overhead + slack > budget:
            cache[i] = encode(ex.question)
            if len(cache[i]) > budget:
                long.append((i, len(cache[i])))
    if not long:
        return
    i, n = long[0]
    shown = " ".join(str(train[i].question if isinstance(train[i].question, str)
                         else train[i].question[-1]["content"]).split())[:60]
    said = (f"{len(long)} of {len(train)} training questions take more than {budget} prompt "
            f"tokens, which with max_new_tokens = {longest_new} reach past the {limit} "
            f"positions this model {'has' if hard else 'was trained on'} (the first: question "
            f"{i + 1}, {n} tokens: {shown!r})")
    if hard:
        raise R1kitError(f"[{ctx.name}] {said}", "lower max_new_tokens (and its schedule), or "
                         "leave the long questions out of the data")
    if distributed.current().is_main:
        ctx.print(f"[{ctx.name}] note: {said}; samples past them may be poor")


FIELD_CHARS = 2000  # completions.jsonl: the data row's fields up to this size (as JSON)


def _logged_fields(example) -> dict:
    """{"fields": the example's data fields} for a completions.jsonl row, each of at most
    FIELD_CHARS characters as JSON (not bytes: images), so that the file stays small with
    rows that carry whole traces (OpenR1-Math's generations); {} where none is left."""
    kept = {}
    for key, value in (example.meta.get("fields") or {}).items():
        if isinstance(value, (bytes, bytearray)):
            continue
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            continue
        if len(text) <= FIELD_CHARS:
            kept[key] = value
    return {"fields": kept} if kept else {}


def _pad_rollouts(ro: Rollouts, width: int, pad_id: int) -> Rollouts:
    """The rollout widened to `width` columns (padding, mask 0)."""
    extra = width - ro.completion_ids.shape[1]
    if extra <= 0:
        return ro
    pad = torch.nn.functional.pad
    return Rollouts(ro.prompt_ids, pad(ro.completion_ids, (0, extra), value=pad_id),
                    pad(ro.completion_mask, (0, extra), value=0),
                    None if ro.logprobs is None else pad(ro.logprobs, (0, extra), value=0.0),
                    ro.stopped, ro.group_size)


def _reflective_counts(texts: list[str]) -> dict[str, float]:
    """reflective_counts over all ranks' responses."""
    if not distributed.current().enabled:
        return reflective_counts(texts)
    local = {w: round(v * len(texts)) for w, v in reflective_counts(texts).items()}
    parts = distributed.gather_lists([(local, len(texts))])
    n = max(1, sum(k for _, k in parts))
    return {w: sum(c[w] for c, _ in parts) / n for w in local}


@dataclass
class _Round:
    """One rollout of a step: this rank's questions (index, example), its samples, their
    texts and (reward, parts), and its seconds of decoding and of waiting for rewards."""

    examples: list
    ro: Rollouts
    texts: list[str]
    scored: list[tuple[float, dict]]
    t_gen: float
    t_rewards: float

    def groups(self, G: int) -> list[list[tuple[float, dict]]]:
        return [self.scored[b:b + G] for b in range(0, len(self.scored), G)]


def _untagged_reasoning(rounds: list[_Round], G: int) -> tuple[int, int]:
    """(samples without <think>, </think> or <answer>, samples) of a step's reasoning
    questions: those the rule rewards read no answer from (a general prompt's sample is
    scored whole by its reward model)."""
    reasoned = [t for r in rounds for i, t in enumerate(r.texts)
                if data_type(r.examples[i // G][1]) == "reasoning"]
    return sum(map(untagged, reasoned)), len(reasoned)


def _varied(group: list[tuple[float, dict]], metric: str) -> bool:
    """Whether a group has a learning signal for dynamic sampling: its samples' `metric`
    ("accuracy", DAPO's choice, or "reward") differ. Samples without an accuracy (general
    prompts, your own reward function) are judged by their reward."""
    values = [p["accuracy"] if metric == "accuracy" and "accuracy" in p else s for s, p in group]
    return max(values) - min(values) > 1e-6


def _choose_groups(varied: list[list[bool]], need: int) -> list[tuple[int, int]]:
    """Dynamic sampling's choice among the groups of several rounds (`varied[r][b]`: group b
    of round r has a learning signal, `_varied`): the first `need` groups with one, in the
    order they were sampled; short of that, filled with the first ones without. Returned as
    (round, group) in the order sampled."""
    order = [(r, b) for r, flags in enumerate(varied) for b in range(len(flags))]
    take = [rb for rb in order if varied[rb[0]][rb[1]]][:need]
    take += [rb for rb in order if not varied[rb[0]][rb[1]]][:need - len(take)]
    return sorted(take)


def _take_groups(rollouts: list[Rollouts], chosen: list[tuple[int, int]], pad_id: int
                 ) -> Rollouts:
    """The rows of the chosen (round, group)s, as one rollout as wide as its longest
    completion (Dr. GRPO's normaliser), without sampling log-probs."""
    G = rollouts[0].group_size
    if len(rollouts) == 1 and chosen == [(0, b) for b in range(len(rollouts[0].prompt_ids))]:
        return rollouts[0]
    width = max(r.completion_ids.shape[1] for r in rollouts)
    padded = [_pad_rollouts(r, width, pad_id) for r in rollouts]
    rows = [(r, b * G + j) for r, b in chosen for j in range(G)]

    def take(name):
        return torch.stack([getattr(padded[r], name)[i] for r, i in rows])

    mask = take("completion_mask")
    used = int(mask.sum(1).max()) if len(rows) else 0
    return Rollouts([padded[r].prompt_ids[b] for r, b in chosen], take("completion_ids")[:, :used],
                    mask[:, :used], None, take("stopped"), G)


def _questions(train: list, draw: int, n: int, seed: int) -> list[tuple[int, object]]:
    """The `n` questions of round `draw` (the step, without dynamic sampling): positions
    draw*n .. draw*n+n-1 of a per-epoch shuffle."""
    out = []
    for pos in range(draw * n, draw * n + n):
        epoch, i = divmod(pos, len(train))
        order = _epoch_order(len(train), seed, epoch)
        out.append((order[i], train[order[i]]))
    return out


# update metrics that are means over a micro-batch's completion tokens (policy_loss's
# diagnostics and the entropy); the rest (loss, pg_loss) follow the loss's aggregation
TOKEN_MEANS = ("clip_frac", "ratio_mean", "kl", "entropy")


def _component_means(scored: list[tuple[float, dict]]) -> dict[str, float]:
    """Mean of each reward component over the samples it applies to."""
    sums: dict[str, list[float]] = {}
    for _, parts in scored:
        for k, v in parts.items():
            sums.setdefault(k, []).append(v)
    return {f"reward/{k}": sum(v) / len(v) for k, v in sums.items()}


@functools.lru_cache(maxsize=8)
def _epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    order = list(range(size))
    random.Random(f"questions-{seed}-{epoch}").shuffle(order)
    return order


NO_SIGNAL_STEPS = 10  # steps in a row without a group of unequal rewards before a note says so


def save_checkpoint(stage_dir: Path, step: int, policy, tokenizer, opt, ref, state: dict,
                    keep: int, lora=None) -> Path:
    """checkpoints/step-N: the policy as a Hugging Face checkpoint plus trainer_state.pt
    (optimizer, reference model, counters). Written under a temporary name and renamed, so a
    crash mid-write leaves no half checkpoint; only the newest `keep` are kept.

    With LoRA (`lora`: the peft model) the policy is written as a peft adapter directory
    (adapter_config.json, adapter_model.safetensors: loadable with peft on top of the stage's
    input model) and the reference as its adapter tensors alone: every other weight is the
    stage's input model's and never changes.

    Under torchrun every rank calls it (sharded weights are gathered to rank 0, a collective);
    rank 0 alone writes, and the others wait until it has."""
    sharded = distributed.is_sharded(policy)
    weights = adapters = ref_state = None
    if sharded and lora is not None:  # the adapters alone gathered, never the frozen weights
        adapters = gathered_adapters(policy)
        trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
        ref_state = distributed.full_tensors(ref, trainable) if ref is not None else None
    elif sharded:
        weights = distributed.full_state(policy)
    # (sharded weights: each rank writes its shard of the optimizer's state and of the
    # reference model; else rank 0 writes them whole)
    staged = {}
    if sharded and lora is None:
        optim, staged[distributed.SHARDED_OPTIMIZER] = staged_shards(
            stage_dir, step, distributed.SHARDED_OPTIMIZER,
            lambda d: distributed.save_sharded_optimizer(policy, opt, d))
        if ref is not None:
            ref_state, staged[distributed.SHARDED_REF] = staged_shards(
                stage_dir, step, distributed.SHARDED_REF,
                lambda d: distributed.save_sharded_model(ref, d, distributed.SHARDED_REF))
    else:
        optim = distributed.optimizer_state(policy, opt)

    def write(tmp: Path) -> None:
        nonlocal ref_state
        for name, staging in staged.items():
            os.replace(staging, tmp / name)
        if lora is not None:
            save_adapters(lora, tmp, adapters)
            with quiet_loading():
                tokenizer.save_pretrained(tmp)
            if ref is not None and ref_state is None:
                ref_state = _trainable_state(ref, policy)
        else:
            save_model(policy, tokenizer, tmp, state_dict=weights)
        if ref is not None and ref_state is None:
            ref_state = ref.state_dict()
        torch.save({**state, "optimizer": optim, "ref": ref_state}, tmp / STATE_FILE)

    final = stage_dir / "checkpoints" / f"step-{step}"
    if distributed.current().is_main:
        final = write_checkpoint(stage_dir, step, keep, write)
    distributed.wait_for_main()
    return final


def _trainable_state(model, like) -> dict:
    """model's tensors under the names of `like`'s trainable parameters (with LoRA: the
    adapters; `model` may be `like` itself or a copy of it, such as the reference)."""
    names = {n for n, p in like.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in names}


def _load_trainable(model, tensors: dict, where: Path) -> None:
    """Load the tensors _trainable_state saved; every one must fit a tensor of the model."""
    checked_adapter_load(lambda: distributed.load_full_state(model, tensors, strict=False),
                          where)


def _shown(record: dict) -> dict[str, str]:
    """What the progress bar shows of a step's record: the reward, the training samples'
    accuracy where there is one, the reward models' rewards where they scored, the mean
    response length."""
    shown = {"reward": f"{record['reward']:.3f}"}
    if record.get("accuracy") is not None:
        shown["train_acc"] = f"{record['accuracy']:.3f}"
    for kind in GENERAL_TYPES:
        if record.get(f"reward/{kind}") is not None:
            shown[kind] = f"{record[f'reward/{kind}']:.3f}"
    if record.get("accuracy") is None and len(shown) == 1:
        shown["train_acc"] = "-"
    shown["len"] = f"{record['response_length']:.0f}"
    return shown


class _progress:
    """A tqdm bar with the live reward, the training samples' accuracy (`train_acc`, at the
    sampling temperature) and mean response length (silent when tqdm is missing or off)."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            # disable=None: no bar where stderr is not a terminal (a log file gets lines only)
            self.bar = tqdm(total=total, desc="grpo", unit="step", dynamic_ncols=True,
                            disable=None)

    def update_to(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.update(n)

    def update(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(_shown(record), refresh=False)
            self.bar.update(1)

    def write(self, text: str) -> None:
        """A line above the bar (tqdm clears and redraws it)."""
        self.bar.write(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
