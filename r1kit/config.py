"""Typed configuration: TOML recipes, dotted overrides, validation before any work.

A recipe has a `[run]` table and named stages, run in the order written:

    [run]
    seed = 0

    [stages.base]
    kind = "pretrain"

    [stages.zero]
    kind = "grpo"
    model = "base"        # an earlier stage's name, or a checkpoint directory

Every field's default lives in its dataclass below, and for GRPO the default is the paper's
value (R1-SPEC.md §1). Unknown keys, wrong types and impossible values stop the run with a
message that names the key and says how to fix it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1kit.algos import ADVANTAGE_SCALES, AGGREGATIONS, IMPORTANCE_SAMPLING
from r1kit.errors import R1kitError, hub_note
from r1kit.rewards.language import TARGETS as LANGUAGE_TARGETS
from r1kit.tasks.arithmetic import WorldConfig
from r1kit.tasks.math import data_exists, is_pattern
from r1kit.templates import TEMPLATES


def _check_mode(cfg, key: str, where: str) -> None:
    """An auto / on / off setting."""
    if getattr(cfg, key) not in ("auto", "on", "off"):
        _fail(f"{where}.{key}", f"unknown value {getattr(cfg, key)!r}", "use auto, on or off")


# the reward model objective each reward slot takes
REWARD_OBJECTIVE = {"helpful_model": "pairwise", "safety_model": "pointwise"}


def reads_general_file(cfg) -> bool:
    """Whether a stage reads a general_data file of your own: a grpo stage with
    general_share > 0, an eval stage with a reward model for its general columns."""
    if getattr(cfg, "general_data", "tiny") == "tiny":
        return False
    if isinstance(cfg, GRPOConfig):
        return cfg.general_share > 0
    return isinstance(cfg, EvalStageConfig) and bool(cfg.helpful_model or cfg.safety_model)


def _check_chunk(value, where: str) -> None:
    if value != "auto" and (isinstance(value, str) or value < 0):
        _fail(f"{where}.logprob_chunk_tokens", f"must be auto or a number >= 0, got {value!r}",
              "auto, or positions per chunk of the output layer (0 = full logits)")


def _check_lr(value: float, where: str) -> None:
    """AdamW moves each weight by about lr per step: above 1 that destroys any model (and far
    above, it overflows inside the optimizer)."""
    if value > 1:
        _fail(f"{where}.lr", f"{value:g} is above 1: AdamW would move every weight by about "
              "that much per step", "language models train at 1e-6 to 1e-3")


def _check_format(value: str, where: str) -> None:
    from r1kit.rewards.rule import FORMATS

    if value not in FORMATS:
        _fail(f"{where}.format", f"unknown format {value!r}",
              "auto, answer (<think>…</think><answer>…</answer>) or think (<think>…</think> "
              "then a summary)")


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _check_lora(cfg, where: str) -> None:
    """A stage's LoRA settings (grpo, sft, reward_model)."""
    if cfg.lora_rank < 0 or cfg.lora_alpha <= 0 or not 0 <= cfg.lora_dropout < 1:
        _fail(f"{where}.lora_rank", "lora_rank must be >= 0, lora_alpha > 0 and "
              "lora_dropout in [0, 1)")
    if isinstance(cfg.lora_target_modules, str) and cfg.lora_target_modules != "all-linear":
        _fail(f"{where}.lora_target_modules", f"{cfg.lora_target_modules!r} is not a list "
              "of module names or \"all-linear\"", 'e.g. ["q_proj", "v_proj"]')


def _fail(where: str, message: str, hint: str | None = None):
    raise R1kitError(f"{where}: {message}", hint)


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    dtype: str = "auto"  # "auto" = bfloat16 on cuda, float32 on cpu
    # bf16 / fp16 weights: AdamW updates float32 copies of them and rounds those into the
    # model (r1kit.optim); false: it updates the low-precision weights directly
    master_weights: bool = True
    threads: int = 0  # torch CPU threads; 0 = torch's default
    tensorboard: bool = True  # write TensorBoard events when tensorboard is installed
    wandb: str = ""  # a Weights & Biases project: log there too (pip install wandb)
    progress: bool = True  # a live progress bar
    # load checkpoints that bring their own model code (auto_map in config.json): this runs
    # the Python files in those directories; r1kit's lean path is never used for them
    trust_remote_code: bool = False

    def validate(self, where: str) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            _fail(f"{where}.dtype", f"unknown dtype {self.dtype!r}",
                  "use auto, float32, bfloat16 or float16")
        if self.threads < 0:
            _fail(f"{where}.threads", "must be >= 0")


@dataclass
class PretrainConfig:
    """The tiny world's base model (no paper counterpart: DeepSeek-V3-Base stands here)."""

    kind: str = "pretrain"
    world: WorldConfig = field(default_factory=WorldConfig)
    corpus_docs: int = 40000
    general_docs: int = 8000  # general (non-reasoning) requests and answers in the corpus
    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 512
    steps: int = 1000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    final_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    use_cache: bool = True  # reuse an identical base model from R1KIT_CACHE

    def validate(self, where: str) -> None:
        _check_lr(self.lr, where)
        if self.general_docs < 0:
            _fail(f"{where}.general_docs", f"must be >= 0, got {self.general_docs}")
        for name in ("corpus_docs", "vocab_size", "hidden_size", "num_layers", "num_heads",
                     "steps", "batch_size"):
            if getattr(self, name) < 1:
                _fail(f"{where}.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            _fail(f"{where}.hidden_size", f"{self.hidden_size} is not divisible by num_heads "
                  f"= {self.num_heads}")
        w = self.world
        mix = w.answer_only + w.steps + w.slip + w.check
        if abs(mix - 1) > 1e-6:
            _fail(f"{where}.world", f"answer_only + steps + slip + check must be 1, got {mix:g}")
        for lv in (*w.train_levels, *w.test_levels):
            if not 1 <= lv <= 5:
                _fail(f"{where}.world", f"levels must be 1-5, got {lv}")


def _check_betas(betas: list[float], where: str, example: str) -> None:
    """AdamW's two betas, each in [0, 1)."""
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        _fail(where, f"needs two numbers in [0, 1), got {betas}", f"e.g. {example}")


@dataclass
class EvalConfig:
    """Held-out evaluation during RL: pass@1 over k samples and cons@k (R1-SPEC §5); for
    task = "prompts" (no answers) the mean of the stage's reward over k samples."""

    every: int = 50  # RL steps between evaluations (also before the first and after the last)
    k: int = 16  # samples per problem (the paper: 16 for MATH, 64 for AIME)
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 0  # 0 = the RL stage's current cap
    limit: int = 0  # evaluate only the first N held-out problems; 0 = all
    split: str = "main"


@dataclass
class GRPOConfig:
    """The RL stage. Defaults are R1-Zero's values from the paper (R1-SPEC.md §1)."""

    kind: str = "grpo"
    model: str = ""  # an earlier stage's name or a checkpoint directory
    # arithmetic | gsm8k | math (a JSONL/parquet file of your own) | code (a file of problems
    # with tests, run in the sandbox: r1kit.tasks.code) | choice (multiple-choice questions:
    # r1kit.tasks.choice) | prompts (no answers: reward models or a reward_function score
    # them, r1kit.tasks.prompts)
    task: str = "arithmetic"
    train_file: str = ""  # for task = "math": JSONL or parquet with question/answer fields
    test_file: str = ""
    question_field: str = "question"
    answer_field: str = "answer"
    test_question_field: str = ""  # the test_file's own field names ("" = the same as above)
    test_answer_field: str = ""
    choices_field: str = ""  # task = "choice": the options' field ("" = choices or options)
    # a response without <think>, </think> or <answer>: no final answer (false, R1's rule) or
    # read whole, as open-r1's accuracy reward reads every completion (true)
    read_untagged: bool = False
    template: str = "r1-zero"  # r1-zero (flat string) | chat (the tokenizer's chat template)
    #                            | none (the question verbatim)
    prefill: str = ""  # text the response is forced to begin with, e.g. "<think>\n"
    system_prompt: str = "r1kit"  # chat template, a conversation without a system turn: "r1kit"
    #                                (r1kit's reasoning instruction), "" (none) or your own text
    # task = "code": the request after each question: "r1kit" (r1kit's, for a ```python block,
    # as the shipped code benchmarks ask), "" (none: the questions verbatim) or your own text
    code_instruction: str = "r1kit"
    code_timeout: float = 10.0  # task = "code": wall seconds per program run (CPU: half of it)
    # task = "code": a training row's reward runs its first N input/output or call cases only
    # (rows with hundreds of generated cases cost a process each); 0 = all. Held-out: all
    code_max_cases: int = 0
    # --- the paper's hyperparameters. The paper counts steps as policy updates of 512
    # samples (16 per rollout of 8,192); r1kit counts rollouts: its 10,400 steps are 650
    # rollouts, the reference reset every 400 updates is every 25 rollouts, and the length cap
    # raised at update 8,200 is raised after 512 rollouts (8,192 updates)
    steps: int = 650  # one step = one rollout and the updates made from it
    lr: float = 3e-6
    beta: float = 0.001  # KL coefficient; 0 drops the reference model altogether
    clip_eps_low: float = 10.0  # the paper's deliberately large clip
    clip_eps_high: float = 0.0  # 0 = same as clip_eps_low
    temperature: float = 1.0
    top_p: float = 1.0
    group_size: int = 16
    rollout_batch_size: int = 8192  # completions per rollout (512 questions x 16)
    num_minibatches: int = 16  # policy updates per rollout (the first is on-policy)
    ppo_epochs: int = 1  # passes over the rollout
    max_new_tokens: int = 32768
    min_new_tokens: int = 0  # stop tokens are masked out before this many tokens (benchmarks)
    max_new_tokens_schedule: list[list[int]] = field(default_factory=lambda: [[512, 65536]])
    ref_refresh_every: int = 25  # reset the reference to the policy every N steps; 0 = never
    # --- choices the paper leaves open (R1-SPEC [open])
    aggregation: str = "seq-mean-token-mean"
    advantage_scale: str = "std"
    importance_sampling: str = "token"  # token | sequence (GSPO: one ratio per completion)
    kl_ratio_correction: bool = False  # the k3 term times the ratio (TRL 1.16's default)
    mask_truncated: bool = False  # DAPO: completions cut at the length cap add no loss
    overlong_buffer: int = 0  # DAPO: > 0, a penalty from 0 to -1 over the cap's last N tokens
    overlong_weight: float = 1.0  # the weight of that penalty in the reward
    # DAPO's dynamic sampling: groups whose rewards are all equal (no learning signal) are
    # dropped and more questions sampled, up to max_sampling_rounds rollouts per step, until
    # the step has rollout_batch_size / group_size groups with varied rewards (short of that,
    # it is filled with dropped groups)
    dynamic_sampling: bool = False
    max_sampling_rounds: int = 10
    # what must differ within a group: accuracy (DAPO: groups all right or all wrong go) |
    # reward (the whole reward; samples without an accuracy are always judged by it)
    dynamic_sampling_metric: str = "accuracy"
    accuracy_weight: float = 1.0
    format_weight: float = 1.0  # eq. 4: equal weight
    # what the format reward asks for: answer (<think>…</think><answer>…</answer>, the R1-Zero
    # template's) | think (<think>…</think> then a summary, R1's) | auto (answer where the
    # prompt carries r1kit's instruction, the r1-zero template or chat with system_prompt
    # "r1kit"; else think)
    format: str = "auto"
    # --- eq. 7-10: language consistency and general data scored by reward models
    language_weight: float = 0.0  # eq. 7; 0 = logged only (R1-Zero)
    language_target: str = "en"  # en | zh | prompt (the question's own language)
    general_share: float = 0.0  # share of each rollout's questions that are general prompts
    general_from_step: int = 0  # general prompts only from this step on (the paper: the
    # last 400 of 1,700 updates, the last 25 of ~106 rollouts)
    general_data: str = "tiny"  # tiny (the tiny world's prompts) | a JSONL/parquet file
    general_prompt_field: str = "prompt"  # with a "type" field: helpful | safety
    helpful_model: str = ""  # a reward_model stage (pairwise) or directory
    safety_model: str = ""  # a reward_model stage (pointwise) or directory
    helpful_weight: float = 1.0
    safety_weight: float = 1.0
    reward_model_scale: str = "sigmoid"  # sigmoid (0..1, like the rule rewards) | raw logits
    lr_schedule: str = "constant"  # constant | cosine | linear (TRL's default)
    warmup_steps: int = 0  # optimizer updates (num_minibatches x ppo_epochs per step), as TRL's
    final_lr_ratio: float = 0.1  # cosine and linear decay to lr * final_lr_ratio (TRL's: 0)
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    max_grad_norm: float = 1.0
    micro_batch_size: int = 16  # sequences per forward/backward (memory only: same result)
    # output layer in chunks of positions (vocab >= 32768): auto (logprobs.chunk_positions) |
    # a number; 0 = full logits
    logprob_chunk_tokens: int | str = "auto"
    # rows per no-grad pass of the reference's log-probs (beta > 0) and the old policy's (more
    # than one update per rollout), each computed once per rollout: auto (micro_batch_size) |
    # a number
    logprob_micro_batch_size: int | str = "auto"
    activation_checkpointing: bool = False  # recompute each layer in backward: less memory
    # the training pass runs a prompt once for all the completions of a micro-batch that
    # continue it (lean path): auto (on the CPU, when that removes >= 5% of the pass's tokens;
    # not on CUDA, where its masked attention is slower than the causal flash kernel) | on | off
    prompt_sharing: str = "auto"
    engine: str = "auto"  # auto (r1kit's lean forward where the model allows) | hf (transformers')
    cuda_graphs: bool = True  # on CUDA, the decode step replays a captured graph
    # torch.compile the lean training pass's decoder layer and its output layer's softmax work:
    # auto (on CUDA, where Triton is installed) | on | off (true / false: on / off)
    compile: str | bool = "auto"
    # the rule rewards of a completion are computed in a background thread as soon as it is
    # complete, while the rest of the rollout decodes (the same scores;
    # r1kit/rewards/overlap.py): auto (when the rollout decodes on CUDA and the CPU is free;
    # on a CPU-only machine decoding and checking compete for the same cores) | on | off
    overlap_rewards: str = "auto"
    # "module:function" or "file.py:function": your own reward in place of the rule rewards,
    # or a list of them (TRL's reward_funcs), summed with reward_weights (default 1 each)
    reward_function: str | list[str] = ""
    reward_weights: list[float] = field(default_factory=list)
    log_completions: int = 4  # per step, one sample of each of the first N questions goes to
    # the stage's completions.jsonl (with its reward); 0 = none
    disable_dropout: bool = True  # the on-policy ratio is 1 only without dropout
    lora_rank: int = 0  # > 0: train LoRA adapters (peft) instead of all weights
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    # the modules' names, or "all-linear" (peft's: every linear layer but the output layer)
    lora_target_modules: list[str] | str = field(default_factory=lambda: list(LORA_TARGETS))
    generation_rows: int = 1024  # most sequences sampled at once
    # under torchrun: ddp (every rank holds the weights) | fsdp (FSDP2: weights sharded)
    distributed: str = "ddp"
    # step (one generator per step) | question (one per question: the same samples however the
    # questions are split across processes; always so under torchrun)
    rollout_seeding: str = "step"
    save_every: int = 0  # steps between resumable checkpoints; 0 = only the final model
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 = all
    max_seconds: float = 0.0  # stop after the step that passes this wall time; 0 = no limit
    max_nonfinite_steps: int = 3  # stop after N steps in a row whose updates were NaN/inf
    max_reward_failures: float = 0.5  # stop when a larger share of a step's rewards fail
    eval: EvalConfig = field(default_factory=EvalConfig)
    world: WorldConfig = field(default_factory=WorldConfig)  # for task = "arithmetic"

    def validate(self, where: str) -> None:
        _check_lr(self.lr, where)
        _check_format(self.format, where)
        if not self.model:
            _fail(f"{where}.model", "is required",
                  "set it to an earlier stage's name or to a checkpoint directory")
        _check_task(self, where)
        _check_split(self.task, self.eval.split, f"{where}.eval.split")
        if self.group_size < 2:
            _fail(f"{where}.group_size", f"must be >= 2 (got {self.group_size}): GRPO's "
                  "advantages compare the samples of a group", "set group_size to 2 or more")
        if self.rollout_batch_size % self.group_size:
            _fail(f"{where}.rollout_batch_size",
                  f"{self.rollout_batch_size} completions is not a whole number of groups of "
                  f"group_size = {self.group_size}",
                  f"use a multiple of {self.group_size}, e.g. "
                  f"{max(1, self.rollout_batch_size // self.group_size) * self.group_size}")
        if self.num_minibatches < 1 or self.rollout_batch_size % self.num_minibatches:
            _fail(f"{where}.num_minibatches",
                  f"rollout_batch_size = {self.rollout_batch_size} does not split into "
                  f"{self.num_minibatches} equal mini-batches",
                  "set num_minibatches (policy updates per rollout, default 16) to a divisor "
                  f"of {self.rollout_batch_size}, e.g. 1")
        _check_lora(self, where)
        _check_chunk(self.logprob_chunk_tokens, where)
        rows = self.logprob_micro_batch_size
        if rows != "auto" and (not isinstance(rows, int) or isinstance(rows, bool) or rows < 1):
            _fail(f"{where}.logprob_micro_batch_size", f"must be auto or a number >= 1, got "
                  f"{rows!r}", "auto, or rows per no-grad pass of the reference's log-probs")
        if self.engine not in ("auto", "hf"):
            _fail(f"{where}.engine", f"unknown engine {self.engine!r}", "use auto or hf")
        if isinstance(self.compile, bool):
            self.compile = "on" if self.compile else "off"
        for key in ("prompt_sharing", "overlap_rewards", "compile"):
            _check_mode(self, key, where)
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            _fail(f"{where}.min_new_tokens", f"must be in [0, max_new_tokens], got "
                  f"{self.min_new_tokens}")
        if self.distributed not in ("ddp", "fsdp"):
            _fail(f"{where}.distributed", f"unknown mode {self.distributed!r}", "use ddp or fsdp")
        specs = reward_specs(self.reward_function)
        if any(not isinstance(x, str) or not x for x in specs):
            _fail(f"{where}.reward_function", "must be a \"module:function\" text or a list "
                  "of them")
        if self.reward_weights and len(self.reward_weights) != len(specs):
            _fail(f"{where}.reward_weights", f"{len(self.reward_weights)} weights for "
                  f"{len(specs)} reward functions", "give one weight per function (or none: "
                  "1 each)")
        if self.rollout_seeding not in ("step", "question"):
            _fail(f"{where}.rollout_seeding", f"unknown seeding {self.rollout_seeding!r}",
                  "use step or question")
        for name in ("steps", "ppo_epochs", "max_new_tokens", "micro_batch_size",
                     "generation_rows"):
            if getattr(self, name) < 1:
                _fail(f"{where}.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "beta", "clip_eps_low", "clip_eps_high", "weight_decay", "top_p",
                     "max_seconds", "save_every", "keep_checkpoints", "max_nonfinite_steps",
                     "max_reward_failures", "log_completions"):
            if getattr(self, name) < 0:
                _fail(f"{where}.{name}", f"must be >= 0, got {getattr(self, name)}")
        if self.eval.limit < 0 or self.eval.every < 0:
            _fail(f"{where}.eval", "limit and every must be >= 0 (0: all problems; 0: never)")
        if not 0 < self.top_p <= 1 or not 0 < self.eval.top_p <= 1:
            _fail(f"{where}.top_p", "top_p must be in (0, 1]")
        if self.temperature <= 0:
            _fail(f"{where}.temperature", "must be > 0 for RL sampling")
        if self.aggregation not in AGGREGATIONS:
            trl = TRL_LOSS_TYPES.get(self.aggregation)
            _fail(f"{where}.aggregation", f"unknown aggregation {self.aggregation!r}",
                  f"TRL's loss_type = {self.aggregation!r} is aggregation = {trl!r}" if trl else
                  f"use one of: {', '.join(AGGREGATIONS)} (TRL's loss_type grpo, dapo / bnpo, "
                  "dr_grpo)")
        if self.max_sampling_rounds < 1:
            _fail(f"{where}.max_sampling_rounds", f"must be >= 1, got {self.max_sampling_rounds}")
        if self.dynamic_sampling_metric not in ("accuracy", "reward"):
            _fail(f"{where}.dynamic_sampling_metric",
                  f"unknown metric {self.dynamic_sampling_metric!r}", "use accuracy or reward")
        if self.advantage_scale not in ADVANTAGE_SCALES:
            _fail(f"{where}.advantage_scale", f"unknown scale {self.advantage_scale!r}",
                  f"use one of: {', '.join(ADVANTAGE_SCALES)} (TRL's scale_rewards \"group\" "
                  "or true is std, \"batch\" is batch, \"none\" or false is none)")
        if self.importance_sampling not in IMPORTANCE_SAMPLING:
            _fail(f"{where}.importance_sampling",
                  f"unknown level {self.importance_sampling!r}",
                  f"use one of: {', '.join(IMPORTANCE_SAMPLING)}")
        if self.overlong_buffer < 0 or self.overlong_weight < 0:
            _fail(f"{where}.overlong_buffer", "overlong_buffer and overlong_weight must be >= 0")
        if self.lr_schedule not in ("constant", "cosine", "linear"):
            _fail(f"{where}.lr_schedule", f"unknown schedule {self.lr_schedule!r}",
                  "use constant, cosine or linear")
        for entry in self.max_new_tokens_schedule:
            if len(entry) != 2 or entry[0] < 0 or entry[1] < 1:
                _fail(f"{where}.max_new_tokens_schedule",
                      f"entries are [step, max_new_tokens], got {entry}")
        caps = [self.max_new_tokens] + [cap for _, cap in self.max_new_tokens_schedule]
        if self.overlong_buffer and self.overlong_buffer >= min(caps):
            _fail(f"{where}.overlong_buffer",
                  f"{self.overlong_buffer} tokens is not less than the length cap "
                  f"({min(caps)} tokens, max_new_tokens or its schedule)",
                  "the penalty covers the last overlong_buffer tokens below the cap")
        _check_betas(self.adam_betas, f"{where}.adam_betas", "[0.9, 0.999]")
        if self.eval.k < 1 or self.eval.every < 0:
            _fail(f"{where}.eval", "k must be >= 1 and every >= 0")
        _check_sampling(self.eval.temperature, self.eval.k, f"{where}.eval")
        if self.language_target not in LANGUAGE_TARGETS:
            _fail(f"{where}.language_target", f"unknown target {self.language_target!r}",
                  f"use one of: {', '.join(LANGUAGE_TARGETS)}")
        if not 0 <= self.general_share < 1:
            _fail(f"{where}.general_share", f"must be in [0, 1), got {self.general_share}",
                  "it is the share of each rollout's questions that are general prompts")
        if self.reward_model_scale not in ("sigmoid", "raw"):
            _fail(f"{where}.reward_model_scale", f"unknown scale {self.reward_model_scale!r}",
                  "use sigmoid or raw")
        if self.general_share > 0:
            if self.general_questions() < 1:
                _fail(f"{where}.general_share", f"{self.general_share} of "
                      f"{self.rollout_batch_size // self.group_size} questions per rollout is "
                      "less than one question", "raise general_share or rollout_batch_size")
            if self.general_data == "tiny" and not (self.helpful_model and self.safety_model
                                                    or self.reward_function):
                _fail(f"{where}.helpful_model", "general prompts of the tiny world need both "
                      "helpful_model and safety_model, or a reward_function",
                      "name two reward_model stages, or set reward_function (it gets each "
                      "general row's type)")

    def general_questions(self) -> int:
        """General prompts per rollout (from general_from_step on); one reasoning question
        always stays."""
        n = self.rollout_batch_size // self.group_size
        return min(n - 1, round(self.general_share * n))

    def max_new_tokens_at(self, step: int) -> int:
        """The length cap in force at `step` (0-based rollouts; the paper raises it at update
        8,200, the default schedule after 512 rollouts of 16 updates)."""
        cap = self.max_new_tokens
        for start, value in sorted(self.max_new_tokens_schedule):
            if step >= start:
                cap = value
        return cap


@dataclass
class RewardModelConfig:
    """R1's helpful (pairwise) or safety (pointwise) reward model. Defaults: the paper's batch
    256, lr 6e-6, one epoch."""

    kind: str = "reward_model"
    model: str = ""  # the backbone: an earlier stage's name or a checkpoint directory
    objective: str = "pairwise"  # pairwise (helpful, Bradley-Terry) | pointwise (safety)
    data: str = "tiny"  # tiny (synthetic labels of the tiny world) | file
    train_file: str = ""  # for data = "file": JSONL/parquet rows
    test_file: str = ""
    prompt_field: str = "prompt"  # for data = "file": the rows' prompt (text or chat messages)
    # pointwise rows' response and label (true: safe); TRL's unpaired rows: completion, label
    response_field: str = "response"
    label_field: str = "safe"
    train_rows: int = 4000  # for data = "tiny"
    test_rows: int = 400
    # score only the text after </think>: auto = the paper's choice per model, yes for the
    # helpful (pairwise) one, no for the safety (pointwise) one, which reads the reasoning too
    summary_only: bool | str = "auto"
    epochs: float = 1.0
    batch_size: int = 256  # rows (pairs) per optimizer step
    micro_batch_size: int = 16  # rows per forward/backward (memory only)
    # tokens the model reads of a text (the prompt and response), its start cut so that the
    # response's end stays; 0 = the positions the backbone was trained on. Scoring in a grpo
    # stage cuts the same way (reward_model.json)
    max_length: int = 0
    lr: float = 6e-6
    # linear warm-up over warmup_steps, then cosine decay to lr * final_lr_ratio; the paper
    # gives one learning rate: 1 keeps it constant
    warmup_steps: int = 0
    final_lr_ratio: float = 1.0
    max_grad_norm: float = 1.0
    activation_checkpointing: bool = False  # recompute each layer in backward: less memory
    save_every: int = 0  # optimizer steps between resumable checkpoints; 0 = only the final model
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 = all
    distributed: str = "ddp"  # under torchrun: ddp (replicated weights) | fsdp (FSDP2)
    # LoRA (r1kit/lora.py): lora_rank > 0 trains adapters on lora_target_modules and the
    # scalar head, the backbone's other weights frozen; the stage saves the merged model
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str = field(default_factory=lambda: list(LORA_TARGETS))

    def validate(self, where: str) -> None:
        _check_lr(self.lr, where)
        _check_lora(self, where)
        if self.distributed not in ("ddp", "fsdp"):
            _fail(f"{where}.distributed", f"unknown mode {self.distributed!r}", "use ddp or fsdp")
        for name in ("save_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                _fail(f"{where}.{name}", f"must be >= 0, got {getattr(self, name)}")
        if not self.max_grad_norm > 0:
            _fail(f"{where}.max_grad_norm", f"must be > 0, got {self.max_grad_norm}")
        if self.warmup_steps < 0 or not 0 <= self.final_lr_ratio <= 1:
            _fail(f"{where}.warmup_steps", "warmup_steps must be >= 0 and final_lr_ratio in "
                  f"[0, 1], got {self.warmup_steps} and {self.final_lr_ratio}")
        if not self.model:
            _fail(f"{where}.model", "is required",
                  "set it to an earlier stage's name or to a checkpoint directory")
        if self.max_length < 0:
            _fail(f"{where}.max_length", f"must be >= 0 (0: the model's positions), got "
                  f"{self.max_length}")
        if self.objective not in ("pairwise", "pointwise"):
            _fail(f"{where}.objective", f"unknown objective {self.objective!r}",
                  "use pairwise (helpful) or pointwise (safety)")
        if self.data not in ("tiny", "file"):
            _fail(f"{where}.data", f"unknown data {self.data!r}",
                  "use tiny or file; your own pairs: data = \"file\" with train_file and "
                  "test_file naming them" if self.data.endswith(
                      (".jsonl", ".json", ".parquet", ".gz")) or "/" in self.data
                  else "use tiny or file")
        if self.data == "file" and not (self.train_file and self.test_file):
            _fail(f"{where}.train_file", "data = 'file' needs train_file and test_file")
        for name in ("train_rows", "test_rows", "batch_size", "micro_batch_size"):
            if getattr(self, name) < 1:
                _fail(f"{where}.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0 or self.lr <= 0:
            _fail(f"{where}.epochs", "epochs and lr must be > 0")
        if isinstance(self.summary_only, str) and self.summary_only != "auto":
            _fail(f"{where}.summary_only", f"must be auto, true or false, got "
                  f"{self.summary_only!r}")

    def scores_summary_only(self) -> bool:
        """summary_only resolved: auto = pairwise (helpful) models only (R1-SPEC §3)."""
        if isinstance(self.summary_only, bool):
            return self.summary_only
        return self.objective == "pairwise"


def _check_split(task: str, split: str, where: str) -> None:
    """The held-out splits a task has: the tiny world's main set and one per level."""
    splits = ["main", *(f"level{n}" for n in range(1, 6))] if task == "arithmetic" else ["main"]
    if split not in splits:
        _fail(where, f"task {task!r} has no held-out split {split!r}",
              f"use one of: {', '.join(splits)}")


TASKS = ("arithmetic", "gsm8k", "math", "code", "choice", "prompts")


def _check_task(cfg, where: str) -> None:
    if cfg.task not in TASKS:
        _fail(f"{where}.task", f"unknown task {cfg.task!r}",
              "use arithmetic, gsm8k, math, code, choice or prompts")
    if cfg.task == "arithmetic":  # the built-in tiny world reads no file
        for name in ("train_file", "test_file"):
            if getattr(cfg, name, ""):
                _fail(f"{where}.{name}", "task = 'arithmetic' (the default: the built-in tiny "
                      f"world) does not read {name}", 'set task = "math" to train on your own '
                      'file (or "gsm8k" for GSM8K-format files)')
    if cfg.task == "prompts":  # no reference answers: GRPO on reward models or a function
        if cfg.kind != "grpo":
            _fail(f"{where}.task", f"task = 'prompts' has no answers to check, which "
                  f"{_a(cfg.kind)} stage needs", "use it in grpo stages; sample and evaluate "
                  "on a task with answers (math, gsm8k, code, choice)")
        if not (cfg.reward_function or cfg.helpful_model or cfg.safety_model):
            _fail(f"{where}.task", "task = 'prompts' has no answers to check: its reward "
                  "comes from reward models or a reward function, and this stage has none",
                  "set helpful_model (or safety_model) to a reward_model stage or directory, "
                  "or reward_function to your own")
    if cfg.task in ("math", "code", "choice"):  # (prompts: the tiny world's without a file)
        # an eval stage only evaluates: it needs the held-out file; the others train
        need = "test_file" if cfg.kind == "eval" else "train_file"
        if not getattr(cfg, need):
            _fail(f"{where}.{need}", f"task = {cfg.task!r} in {_a(cfg.kind)} stage needs a "
                  f"{need} (JSONL or parquet)")
    if "\\n" in cfg.prefill:
        _fail(f"{where}.prefill", f"{cfg.prefill!r} holds a backslash and an n, not a newline",
              "write it as a TOML string with its escape, prefill = \"<think>\\n\" (on the "
              "command line: --set 'stages.NAME.prefill=\"<think>\\n\"')")
    if cfg.task == "code":
        if not cfg.code_timeout > 0:
            _fail(f"{where}.code_timeout", f"must be > 0 seconds, got {cfg.code_timeout}")
        if getattr(cfg, "code_max_cases", 0) < 0:
            _fail(f"{where}.code_max_cases", f"must be >= 0 (0: all cases), got "
                  f"{cfg.code_max_cases}")
    else:
        for name in ("code_instruction", "code_timeout", "code_max_cases"):
            if hasattr(cfg, name) and getattr(cfg, name) != getattr(type(cfg), name):
                _fail(f"{where}.{name}", f"is for task = 'code'; this stage's task is "
                      f"{cfg.task!r}", f"leave {name} out, or set task = \"code\"")
    if cfg.task != "choice" and cfg.choices_field:
        _fail(f"{where}.choices_field", f"is for task = 'choice'; this stage's task is "
              f"{cfg.task!r}", "leave choices_field out, or set task = \"choice\"")
    if cfg.template not in TEMPLATES:
        _fail(f"{where}.template", f"unknown template {cfg.template!r}",
              f"use one of: {', '.join(TEMPLATES)}")


@dataclass
class SFTConfig:
    """Supervised fine-tuning on prompt/response rows. Defaults: the paper's (R1-SPEC §4):
    cosine 5e-5 -> 5e-6, batch 128, 2 epochs."""

    kind: str = "sft"
    model: str = ""  # the checkpoint to fine-tune: an earlier stage or a directory
    data: str = ""  # an earlier sample stage's name, or a JSONL/parquet file
    prompt_field: str = "prompt"
    response_field: str = "response"
    template: str = "r1-zero"  # r1-zero | chat | none (the prompt verbatim)
    system_prompt: str = "r1kit"  # chat template, a conversation without a system turn: "r1kit"
    #                                (r1kit's reasoning instruction), "" (none) or your own text
    epochs: float = 2.0
    batch_size: int = 128  # rows per optimizer step
    micro_batch_size: int = 16  # rows per forward/backward (memory only)
    lr: float = 5e-5
    final_lr_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # DeepSeek's AdamW
    max_grad_norm: float = 1.0
    max_length: int = 32768  # tokens per row: a longer response is cut (its end not trained
    # on), a row whose prompt alone reaches it is left out
    # output layer in chunks of positions (vocab >= 32768): auto (logprobs.chunk_positions) |
    # a number; 0 = full logits
    logprob_chunk_tokens: int | str = "auto"
    activation_checkpointing: bool = False  # recompute each layer in backward: less memory
    save_every: int = 0  # optimizer steps between resumable checkpoints; 0 = only the final model
    keep_checkpoints: int = 2  # newest checkpoints kept; 0 = all
    distributed: str = "ddp"  # under torchrun: ddp (replicated weights) | fsdp (FSDP2)
    lora_rank: int = 0  # > 0: train LoRA adapters (peft) instead of all weights (as in grpo)
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str = field(default_factory=lambda: list(LORA_TARGETS))

    def validate(self, where: str) -> None:
        _check_lr(self.lr, where)
        _check_lora(self, where)
        if self.distributed not in ("ddp", "fsdp"):
            _fail(f"{where}.distributed", f"unknown mode {self.distributed!r}", "use ddp or fsdp")
        _check_betas(self.adam_betas, f"{where}.adam_betas", "[0.9, 0.95]")
        for name in ("save_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                _fail(f"{where}.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check_chunk(self.logprob_chunk_tokens, where)
        for name in ("model", "data"):
            if not getattr(self, name):
                _fail(f"{where}.{name}", "is required",
                      "an earlier stage's name, or a path" + (" to a JSONL/parquet file"
                                                              if name == "data" else ""))
        if self.template not in TEMPLATES:
            _fail(f"{where}.template", f"unknown template {self.template!r}",
                  f"use one of: {', '.join(TEMPLATES)}")
        for name in ("batch_size", "micro_batch_size", "max_length"):
            if getattr(self, name) < 1:
                _fail(f"{where}.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0 or self.lr <= 0:
            _fail(f"{where}.epochs", "epochs and lr must be > 0")


@dataclass
class SampleConfig:
    """Rejection sampling / data generation (R1-SPEC §4): sample, verify, filter, write JSONL."""

    kind: str = "sample"
    model: str = ""
    task: str = "arithmetic"  # as in the grpo stage
    train_file: str = ""
    question_field: str = "question"
    answer_field: str = "answer"
    test_question_field: str = ""  # the test_file's own field names ("" = the same as above)
    test_answer_field: str = ""
    choices_field: str = ""  # task = "choice": the options' field ("" = choices or options)
    # a response without <think>, </think> or <answer>: no final answer (false, R1's rule) or
    # read whole, as open-r1's accuracy reward reads every completion (true)
    read_untagged: bool = False
    template: str = "r1-zero"
    prefill: str = ""
    system_prompt: str = "r1kit"  # chat template, a conversation without a system turn: "r1kit"
    #                                (r1kit's reasoning instruction), "" (none) or your own text
    # task = "code": the request after each question: "r1kit" (r1kit's, for a ```python block,
    # as the shipped code benchmarks ask), "" (none: the questions verbatim) or your own text
    code_instruction: str = "r1kit"
    code_timeout: float = 10.0  # task = "code": wall seconds per program run (CPU: half of it)
    prompts: int = 0  # training questions to sample from; 0 = all
    samples_per_prompt: int = 4
    keep_per_prompt: int = 1  # correct, readable samples kept per question (distinct texts)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32768
    generation_rows: int = 1024
    overlap_rewards: str = "auto"  # verify while decoding, as the grpo stage's setting
    # batch (one generator for all the questions) | question (one per question: the same
    # samples however the questions are split across processes; always so under torchrun)
    seeding: str = "batch"
    # questions per resumable part (checkpoints/step-N: the part's kept rows and counts); the
    # questions are then seeded one by one (as seeding = "question"); 0 = all in one pass
    save_every: int = 0
    filters: list[str] = field(default_factory=lambda: ["mixed_language", "long_paragraph",
                                                        "code_in_cot", "repetition"])
    # the format a kept sample must have, as the grpo stage's `format` (auto: <answer> tags
    # where the prompt asks for them, else R1's <think>…</think> summary)
    format: str = "auto"
    language: str = "prompt"  # the chain of thought's language for mixed_language: en | zh | prompt
    max_paragraph_chars: int = 600  # long_paragraph: a paragraph of the chain of thought longer
    max_repeats: int = 3  # repetition: a sentence said more often than this rejects a sample
    # a generative judge (r1kit.rewards.judge): a causal LM (stage or directory) that
    # compares a sample's final answer with the reference where the rules cannot
    judge_model: str = ""
    # which samples it decides: "wrong" (those with a final answer that the rules reject:
    # answers rules cannot check) | "all" (every sample with a final answer; rules unused)
    judge: str = "wrong"
    judge_prompt: str = ""  # the request, with {question} {reference} {answer}; "" = r1kit's
    judge_threshold: float = 0.5  # P(yes) / (P(yes) + P(no)) at which an answer is accepted
    judge_batch_size: int = 16
    rewrite: bool = False  # cold start: rewrite kept samples (tiny world: deterministic)
    general_rows: int = 0  # non-reasoning rows mixed in (tiny world: r1kit.tasks.general)
    world: WorldConfig = field(default_factory=WorldConfig)

    def validate(self, where: str) -> None:
        from r1kit.sampling import FILTERS

        _check_format(self.format, where)
        if not self.model:
            _fail(f"{where}.model", "is required", "an earlier stage's name or a directory")
        _check_task(self, where)
        for name in ("test_question_field", "test_answer_field"):
            if getattr(self, name):  # (the grpo and eval stages' key for their test_file)
                _fail(f"{where}.{name}", "a sample stage reads no test_file, only its "
                      "train_file", "leave it out; question_field / answer_field name the "
                      "train_file's fields")
        for name in ("samples_per_prompt", "keep_per_prompt", "max_new_tokens",
                     "generation_rows", "max_paragraph_chars", "max_repeats"):
            if getattr(self, name) < 1:
                _fail(f"{where}.{name}", f"must be >= 1, got {getattr(self, name)}")
        _check_mode(self, "overlap_rewards", where)
        _check_seeding(self, where)
        if self.prompts < 0 or self.general_rows < 0:
            _fail(f"{where}.prompts", "prompts and general_rows must be >= 0")
        if self.save_every < 0:
            _fail(f"{where}.save_every", f"must be >= 0 (questions per resumable part; 0: "
                  f"none), got {self.save_every}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            _fail(f"{where}.temperature", "temperature must be > 0 and top_p in (0, 1]")
        for name in self.filters:
            if name not in FILTERS:
                _fail(f"{where}.filters", f"unknown filter {name!r}",
                      f"use any of: {', '.join(FILTERS)}")
        if self.language not in LANGUAGE_TARGETS:
            _fail(f"{where}.language", f"unknown language {self.language!r}",
                  f"use one of: {', '.join(LANGUAGE_TARGETS)}")
        if self.judge not in ("wrong", "all"):
            _fail(f"{where}.judge", f"must be wrong or all, got {self.judge!r}",
                  "wrong: the judge decides the samples the rules reject; all: every sample")
        if not 0 < self.judge_threshold < 1:
            _fail(f"{where}.judge_threshold", f"must be in (0, 1), got {self.judge_threshold}")
        if self.judge_batch_size < 1:
            _fail(f"{where}.judge_batch_size", f"must be >= 1, got {self.judge_batch_size}")
        if self.judge_prompt:
            from r1kit.rewards.judge import check_prompt

            why = check_prompt(self.judge_prompt)
            if why:
                _fail(f"{where}.judge_prompt", why, "name {question}, {reference} and {answer}")
        if self.judge_model and self.task == "code":
            _fail(f"{where}.judge_model", "a code task's samples are judged by running their "
                  "tests, not by a judge model", "leave judge_model out")
        if not self.judge_model and (self.judge_prompt or self.judge != "wrong"):
            _fail(f"{where}.judge_model", "judge settings without a judge_model",
                  "set judge_model to a causal LM (a stage or a checkpoint directory)")
        if self.keep_per_prompt > self.samples_per_prompt:
            _fail(f"{where}.keep_per_prompt", f"{self.keep_per_prompt} kept of "
                  f"samples_per_prompt = {self.samples_per_prompt} samples per question",
                  "keep at most as many as are sampled")
        if self.task != "arithmetic":  # the tiny world's built-in helpers
            if self.rewrite:
                _fail(f"{where}.rewrite", "rewrite = true has a built-in rewriter only for the "
                      "tiny world", "rewrite your samples with a model of your choice and give "
                      "them to an sft stage as a file")
            if self.general_rows:
                _fail(f"{where}.general_rows", "general_rows adds the tiny world's general "
                      "requests and answers, not your own", "leave it at 0 and add your "
                      "non-reasoning rows to the SFT data: an sft stage on a file that joins "
                      "this stage's data.jsonl and yours")


@dataclass
class EvalStageConfig:
    """Evaluates checkpoints and writes the stage table (R1-SPEC §5; the paper's Table 3)."""

    kind: str = "eval"
    models: list[str] = field(default_factory=list)  # stages or directories: the table's rows
    task: str = "arithmetic"
    train_file: str = ""
    test_file: str = ""
    question_field: str = "question"
    answer_field: str = "answer"
    test_question_field: str = ""  # the test_file's own field names ("" = the same as above)
    test_answer_field: str = ""
    choices_field: str = ""  # task = "choice": the options' field ("" = choices or options)
    # a response without <think>, </think> or <answer>: no final answer (false, R1's rule) or
    # read whole, as open-r1's accuracy reward reads every completion (true)
    read_untagged: bool = False
    template: str = "r1-zero"
    prefill: str = ""
    system_prompt: str = "r1kit"  # chat template, a conversation without a system turn: "r1kit"
    #                                (r1kit's reasoning instruction), "" (none) or your own text
    # task = "code": the request after each question: "r1kit" (r1kit's, for a ```python block,
    # as the shipped code benchmarks ask), "" (none: the questions verbatim) or your own text
    code_instruction: str = "r1kit"
    code_timeout: float = 10.0  # task = "code": wall seconds per program run (CPU: half of it)
    split: str = "main"
    k: int = 4
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 32768
    limit: int = 0  # first N held-out problems; 0 = all
    generation_rows: int = 1024
    language_target: str = "prompt"
    overlap_rewards: str = "auto"  # verify while decoding, as the grpo stage's setting
    # batch (one generator for all the questions) | question (one per question: the same
    # samples however the questions are split across processes; always so under torchrun)
    seeding: str = "batch"
    # N: a checkpoint after every N problems of each evaluation (the held-out set, each
    # benchmark), resumed after them; the problems are then seeded one by one (as seeding =
    # "question"); 0 = a checkpoint after each model
    save_every: int = 0
    helpful_model: str = ""  # reward models for the general columns (optional)
    safety_model: str = ""
    # the general columns' prompts: tiny (the tiny world's held-out general prompts) | a
    # JSONL/parquet file whose rows have general_prompt_field and "type" (helpful | safety)
    general_data: str = "tiny"
    general_prompt_field: str = "prompt"
    general_prompts: int = 200  # N of them (of each type, from a file); 0 = all of a file
    # shipped benchmarks each model is also evaluated on, a column each (pass@1 over k
    # samples, the stage's prompting): math500, gsm8k, aime2024, aime2025, amc2023,
    # humaneval, mbpp
    benchmarks: list[str] = field(default_factory=list)
    world: WorldConfig = field(default_factory=WorldConfig)

    def validate(self, where: str) -> None:
        from r1kit.eval.benchmarks import BENCHMARKS, bench_name

        for bench in self.benchmarks:
            if not isinstance(bench, str) or bench_name(bench) not in BENCHMARKS:
                _fail(f"{where}.benchmarks", f"unknown benchmark {bench!r}",
                      f"use any of: {', '.join(BENCHMARKS)} (the stage's own task evaluates "
                      "a file of yours: task and test_file)")
        named = [bench_name(b) for b in self.benchmarks]
        if len(set(named)) < len(named):
            _fail(f"{where}.benchmarks", "lists a benchmark more than once")
        if not self.models:
            _fail(f"{where}.models", "is required", "list stage names or checkpoint directories")
        twice = sorted({m for m in self.models if self.models.count(m) > 1})
        if twice:
            _fail(f"{where}.models", f"lists {', '.join(map(repr, twice))} more than once (a "
                  "model is one row of the stage's table)", "list each model once")
        _check_task(self, where)
        _check_split(self.task, self.split, f"{where}.split")
        for name in ("k", "max_new_tokens", "generation_rows"):
            if getattr(self, name) < 1:
                _fail(f"{where}.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.limit < 0:
            _fail(f"{where}.limit", f"must be >= 0 (0: all problems), got {self.limit}")
        if self.save_every < 0:
            _fail(f"{where}.save_every", f"must be >= 0 (0: after each model), got "
                  f"{self.save_every}")
        if self.general_prompts < (1 if self.general_data == "tiny" else 0):
            _fail(f"{where}.general_prompts", f"must be >= 1 with the tiny world's prompts, "
                  f">= 0 (0: all rows) with a general_data file; got {self.general_prompts}")
        if self.language_target not in LANGUAGE_TARGETS:
            _fail(f"{where}.language_target", f"unknown target {self.language_target!r}",
                  f"use one of: {', '.join(LANGUAGE_TARGETS)}")
        _check_mode(self, "overlap_rewards", where)
        _check_seeding(self, where)
        if not 0 < self.top_p <= 1:
            _fail(f"{where}.top_p", f"must be in (0, 1], got {self.top_p}")
        _check_sampling(self.temperature, self.k, where)


def _check_seeding(cfg, where: str) -> None:
    """A sample or eval stage's `seeding`."""
    if cfg.seeding not in ("batch", "question"):
        _fail(f"{where}.seeding", f"unknown seeding {cfg.seeding!r}", "use batch or question")


def _check_sampling(temperature: float, k: int, where: str) -> None:
    """An evaluation's temperature: >= 0 (0: greedy, one sample per problem)."""
    if temperature < 0:
        _fail(f"{where}.temperature", f"must be >= 0 (0: greedy), got {temperature}",
              "a negative temperature samples the least likely tokens")
    if temperature == 0 and k > 1:
        _fail(f"{where}.k", f"temperature 0 (greedy) gives {k} identical samples",
              "set k = 1 with temperature 0, or a temperature above 0 (the paper: 0.6)")


STAGE_KINDS: dict[str, type] = {"pretrain": PretrainConfig, "grpo": GRPOConfig,
                                "reward_model": RewardModelConfig, "sft": SFTConfig,
                                "sample": SampleConfig, "eval": EvalStageConfig}


@dataclass
class Recipe:
    run: RunConfig
    stages: dict[str, Any]  # name -> stage config, in run order
    source: str = ""


# ----- building typed configs from plain dicts ----------------------------------------------


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value, tp, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            _fail(where, f"must be a table, got {value!r}")
        return build(tp, value, where)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        for arg in args[1:]:  # a value of a later type (`str | bool`: a bool) as it is
            if arg in (bool, int, float, str) and type(value) is arg:
                return value
            if typing.get_origin(arg) is list and isinstance(value, list):  # `str | list[str]`
                return _coerce(value, arg, where)
        return _coerce(value, args[0], where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            _fail(where, f"must be a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            _fail(where, f"must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            _fail(where, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, f"must be an integer, got {value!r}",
                  "a sample stage's questions come from train_file; prompts is how many of "
                  "them to sample from (0 = all)" if where.endswith(".prompts")
                  and isinstance(value, str) else
                  "TRL's log_completions = true is log_completions = N here: one sample of "
                  "each of the first N questions of a step goes to completions.jsonl (0: "
                  "none)" if where.endswith(".log_completions") and isinstance(value, bool)
                  else "warmup_steps counts optimizer updates, not a share of them (TRL's "
                  "warmup_ratio): give the ratio x the stage's optimizer steps" if
                  where.endswith(".warmup_steps") and isinstance(value, float)
                  and 0 < value < 1 else None)
        return value
    if tp is str:
        if not isinstance(value, str) and isinstance(value, bool) and \
                where.endswith(".advantage_scale"):  # TRL's scale_rewards takes booleans
            _fail(where, f"must be a string, got {value!r}",
                  f"TRL's scale_rewards = {str(value).lower()} is advantage_scale = "
                  f"\"{'std' if value else 'none'}\"")
        if not isinstance(value, str):
            text = json.dumps(value) if isinstance(value, (int, float, bool)) else None
            _fail(where, f"must be a string, got {value!r}",
                  f"quote it: {where} = \"{text}\" in the recipe, or --set "
                  f"{where}='\"{text}\"'" if text is not None else None)
        return value
    return value


# Settings of TRL, open-r1 and verl under their own names: r1kit's name for each (the first
# of them the stage has), or what to do instead (a phrase), and a note on how they differ.
# TRL's GRPOConfig loss_type values, as r1kit's aggregation
TRL_LOSS_TYPES = {"grpo": "seq-mean-token-mean", "dapo": "token-mean", "bnpo": "token-mean",
                  "dr_grpo": "seq-mean-token-sum-norm"}

# answers that several foreign names share
_REMOTE_RM = (" = \"path/to/reward_func.py:reward_func\" (the file and the function's name): a "
              "function of queries, prompts and labels is called as OpenRLHF calls it")
_WHOLE_PROMPT = ("not needed: a grpo stage keeps each prompt whole (max_new_tokens caps the "
                 "responses)")
_OWN_ENGINE = "not needed: r1kit samples with its own engine (README: Speed)"
_PACKED = ("not needed: training sequences are packed without padding, micro_batch_size "
           "sequences per forward pass")
_NO_OFFLOAD = "not a setting: no CPU offload (FSDP2 shards: distributed = \"fsdp\")"
_TORCHRUN = ("given to torchrun: torchrun --nproc-per-node N --nnodes M -m r1kit run RECIPE "
             "(README: Several GPUs and several nodes)")
_NO_VALUE = "not a setting: GRPO has no value function (gamma and lambda are GAE's)"
_NO_CRITIC = ("not a setting: a grpo stage has no critic (GRPO's advantages come from each "
              "group's rewards)")
_ESTIMATORS = ("not a setting: a grpo stage's advantages are GRPO's, each group's rewards "
               "centred and scaled (OpenRLHF's group_norm, advantage_scale = \"std\"); its "
               "dr_grpo is advantage_scale = \"none\", and its reinforce_baseline is close to "
               "advantage_scale = \"batch\" (the group's mean taken away, then the batch's "
               "std); rloo, reinforce and gae are not r1kit's")
_NO_STD_NORM = ("not needed with GRPO's advantages: OpenRLHF's group_norm always divides by the "
                "group's std, and its no_std_norm turns off the batch whitening of gae, "
                "reinforce and reinforce_baseline; advantage_scale = \"none\" leaves the std "
                "out, as its dr_grpo")
_NO_NORMALIZE = ("not a setting: no running reward normalization (each group's rewards are "
                 "centred and scaled: advantage_scale)")
_NO_CLIP = "not a setting: rewards are not clipped"
_COLOCATED = "not needed: one process holds the policy, the reference and the sampling"
_WANDB = "set under [run]: wandb = \"PROJECT\""
_ATTENTION = ("not needed: r1kit's lean forward runs torch's scaled-dot-product attention over "
              "packed sequences")

FOREIGN_KEYS: dict[str, tuple[str, ...]] = {
    "learning_rate": ("lr",), "num_generations": ("group_size",),
    "max_completion_length": ("max_new_tokens",), "max_response_length": ("max_new_tokens",),
    "max_tokens": ("max_new_tokens",), "num_train_epochs": ("epochs", "steps"),
    "rollout_n": ("group_size",), "n_samples_per_prompt": ("group_size",),
    "max_prompt_length": ("max_length", ("not needed: a grpo stage keeps each prompt whole "
                          "(max_new_tokens caps the responses)")),
    "output_dir": ("given on the command line: r1kit run RECIPE --out DIR",),
    "logging_steps": ("not needed: every step is a row of metrics.jsonl (and TensorBoard)",),
    "report_to": ("set under [run]: tensorboard = true, wandb = \"PROJECT\"",),
    "max_steps": ("steps",), "total_training_steps": ("steps",),
    "top_k": ("not a setting: r1kit samples with top_p alone (no top-k)",),
    "gradient_checkpointing": ("activation_checkpointing",),
    "per_device_train_batch_size": ("micro_batch_size",),
    "gradient_accumulation_steps": (("not needed: r1kit accumulates over a batch's "
                                     "micro-batches by itself (set batch_size or "
                                     "rollout_batch_size, and micro_batch_size; in a grpo "
                                     "stage num_minibatches is the number of optimizer "
                                     "updates per rollout: TRL's steps_per_generation / "
                                     "gradient_accumulation_steps, 1 by TRL's default)"),),
    "steps_per_generation": (("num_minibatches, the optimizer updates per rollout: TRL's "
                              "steps_per_generation / gradient_accumulation_steps (1 by TRL's "
                              "default; r1kit's default is the paper's 16)"),),
    "sync_ref_model": ("ref_refresh_every",), "ref_model_sync_steps": ("ref_refresh_every",),
    "num_generations_eval": ("eval",), "per_device_eval_batch_size": ("eval",),
    "generation_batch_size": ("rollout_batch_size",), "num_iterations": ("ppo_epochs",),
    "epsilon": ("clip_eps_low",), "clip_ratio": ("clip_eps_low",),
    "epsilon_high": ("clip_eps_high",), "clip_ratio_high": ("clip_eps_high",),
    "loss_type": ("aggregation",), "loss_agg_mode": ("aggregation",),
    "scale_rewards": ("advantage_scale",), "kl_coef": ("beta",), "kl_loss_coef": ("beta",),
    "mask_truncated_completions": ("mask_truncated",), "reward_funcs": ("reward_function",),
    "lr_scheduler_type": ("lr_schedule",), "warmup_ratio": ("warmup_steps",),
    "save_steps": ("save_every",), "save_total_limit": ("keep_checkpoints",),
    "eval_steps": ("eval",), "model_name_or_path": ("model", "models"),
    "dataset_name": ("train_file", "data"), "dataset_path": ("train_file", "data"),
    "max_seq_length": ("max_length",), "lora_r": ("lora_rank",), "use_peft": ("lora_rank",),
    "dataset_prompt_column": ("question_field", "prompt_field"),
    "dataset_text_field": (("not a setting: an sft stage trains a row without a prompt, a "
                            "response or messages on its 'text' field whole (TRL's "
                            "language-modeling rows): name your column 'text'"),),
    "adam_beta1": ("adam_betas",), "adam_beta2": ("adam_betas",),
    "optim": ("not a setting: the optimizer is AdamW (torch's)",),
    "resume_from_checkpoint": (("not needed: run the same command again (the same --out) and "
                                "each stage goes on from its newest checkpoint, written every "
                                "save_every steps"),),
    "peft_config": (("lora_rank, with lora_alpha, lora_dropout and lora_target_modules (peft's "
                     "LoraConfig r, lora_alpha, lora_dropout, target_modules)"),),
    "seed": ("a [run] setting",), "bf16": ("set as dtype = \"bfloat16\" under [run]",),
    "use_vllm": ("not needed: r1kit samples with its own engine (README: Speed)",),
    "importance_sampling_level": ("importance_sampling",),
    "num_completions_to_print": ("log_completions",),
    "delta": (("not a setting: the ratio is clipped by clip_eps_low and clip_eps_high alone "
              "(no upper bound for negative advantages, TRL's two-sided delta)"),),
    "top_entropy_quantile": (("not a setting: every token counts in the loss (no masking of "
                             "low-entropy tokens)"),),
    "entropy_coef": (("not a setting: the loss has no entropy bonus (the policy's entropy is "
                     "logged as entropy)"),),
    "min_p": ("not a setting: r1kit samples with temperature and top_p alone",),
    "repetition_penalty": ("not a setting: r1kit samples with temperature and top_p alone",),
    "generation_kwargs": ("not a setting: r1kit samples with temperature and top_p alone",),
    "multi_objective_aggregation": (("not a setting: the reward is the weighted sum of the "
                                    "reward functions, then centred and scaled per group "
                                    "(advantage_scale): TRL's sum_then_normalize"),),
    "ref_model_mixup_alpha": (("not a setting: a reference refresh (ref_refresh_every) copies "
                              "the policy whole, as TRL's ref_model_mixup_alpha = 1"),),
    "use_bias_correction_kl": ("kl_ratio_correction",),
    "off_policy_mask_threshold": ("not a setting: no off-policy sequence masking",),
    "chat_template_kwargs": (("not a setting: prompts go through the tokenizer's chat template "
                             "with its defaults (template = \"chat\")"),),
    "model_init_kwargs": ("set under [run] as dtype and trust_remote_code",),
    "torch_dtype": ("set as dtype under [run] (auto, bfloat16 or float32)",),
    "dtype": ("set as dtype under [run] (auto, bfloat16 or float32)",),
    "chat_template": (("not a setting: template = \"chat\" renders prompts with the "
                      "tokenizer's own chat template (to use another, save it with the "
                      "tokenizer: tokenizer.chat_template = ...; save_pretrained)"),),
    "trust_remote_code": ("a [run] setting",),
    "cast_lm_head_to_fp32": (("not a setting: the output layer multiplies in the weights' "
                              "dtype and its log-softmax runs in float32"),),
    "pad_to_multiple_of": ("not needed: training sequences are packed without padding",),
    "cache_implementation": ("not needed: r1kit samples with its own engine (README: Speed)",),
    "use_transformers_paged": (("not needed: r1kit samples with its own engine (README: "
                               "Speed)"),),
    "ds3_gather_for_generation": (("not needed: r1kit shards with FSDP2 (distributed = "
                                   "\"fsdp\"), not DeepSpeed"),),
    "max_tool_calling_iterations": ("not a setting: rollouts call no tools",),
    # verl's (the last part of its dotted names: actor_rollout_ref.actor.kl_loss_coef)
    "train_batch_size": ("rollout_batch_size",), "n": ("group_size",),
    "ppo_mini_batch_size": (("num_minibatches, the optimizer updates per rollout: verl's "
                             "train_batch_size / ppo_mini_batch_size (both count prompts)"),),
    "ppo_micro_batch_size_per_gpu": ("micro_batch_size",),
    "ppo_micro_batch_size": ("micro_batch_size",),
    "log_prob_micro_batch_size_per_gpu": ("logprob_micro_batch_size",),
    "log_prob_micro_batch_size": ("logprob_micro_batch_size",),
    "use_kl_loss": ("beta",), "clip_ratio_low": ("clip_eps_low",),
    "kl_loss_type": (("not a setting: the KL term is the k3 estimator, verl's low_var_kl "
                      "(without its clamp to [-10, 10])"),),
    "use_kl_in_reward": (("not a setting: the KL term is in the loss (beta), as verl's "
                          "use_kl_loss, never in the reward"),),
    "clip_ratio_c": (("not a setting: the ratio is clipped by clip_eps_low and clip_eps_high "
                      "alone (no dual clip for negative advantages)"),),
    "entropy_coeff": (("not a setting: the loss has no entropy bonus (the policy's entropy is "
                       "logged as entropy)"),),
    "norm_adv_by_std_in_grpo": ("advantage_scale",),
    "adv_estimator": (("not a setting: a grpo stage's advantages are GRPO's (verl's "
                       "adv_estimator = grpo), with no critic"),),
    "total_epochs": ("epochs", "steps"), "save_freq": ("save_every",), "test_freq": ("eval",),
    "val_before_train": ("eval",), "grad_clip": ("max_grad_norm",),
    "clip_grad": ("max_grad_norm",), "betas": ("adam_betas",),
    "lr_warmup_steps": ("warmup_steps",), "lr_warmup_steps_ratio": ("warmup_steps",),
    "warmup_style": ("lr_schedule",), "min_lr_ratio": ("final_lr_ratio",),
    "response_length": ("max_new_tokens",), "prompt_length": ("max_length", _WHOLE_PROMPT),
    "prompt_key": ("question_field", "prompt_field"),
    "train_files": ("train_file", "data"), "val_files": ("test_file",),
    "reward_fn_key": (("not a setting: a verl compute_score gets each row's data_source "
                       "field"),),
    "custom_reward_function": ("reward_function",),
    "enable_gradient_checkpointing": ("activation_checkpointing",),
    "use_remove_padding": ("not needed: training sequences are packed without padding",),
    "use_dynamic_bsz": (_PACKED,), "ppo_max_token_len_per_gpu": (_PACKED,),
    "strategy": ("distributed",),
    "param_offload": (_NO_OFFLOAD,), "optimizer_offload": (_NO_OFFLOAD,),
    "gpu_memory_utilization": (_OWN_ENGINE,),
    "tensor_model_parallel_size": (("not a setting: r1kit samples with its own engine, one "
                                    "model copy per process (README: Speed)"),),
    "n_gpus_per_node": (_TORCHRUN,), "nnodes": (_TORCHRUN,),
    "project_name": ("set under [run]: wandb = \"PROJECT\"",),
    "experiment_name": ("given on the command line: r1kit run RECIPE --out DIR",),
    "logger": ("set under [run]: tensorboard = true, wandb = \"PROJECT\"",),
    "default_local_dir": ("given on the command line: r1kit run RECIPE --out DIR",),
    "resume_mode": (("not needed: the same r1kit run command with the same --out resumes an "
                     "interrupted run"),),
    "gamma": (_NO_VALUE,), "lam": (_NO_VALUE,),
    "truncation": (_WHOLE_PROMPT,), "filter_overlong_prompts": (_WHOLE_PROMPT,),
    "val_batch_size": ("generation_rows",),
    "reward_manager": (("not a setting: a reward_function is called once per completion, as "
                        "verl's naive reward manager calls it"),),
    "do_sample": (("not a setting: RL samples (temperature > 0); in the stage's eval table "
                   "temperature = 0 is greedy"),),
    **{table: (("verl's table: a grpo stage's settings are the flat keys of its own table "
                "(README: Coming from verl names them)"),)
       for table in ("actor_rollout_ref", "algorithm", "trainer", "critic")},
    # OpenRLHF's (train_ppo_ray's flags, and the last part of its newer dotted ones)
    "pretrain": ("model",), "actor_learning_rate": ("lr",),
    "critic_learning_rate": (_NO_CRITIC,), "value_clip": (_NO_CRITIC,), "lambd": (_NO_VALUE,),
    "freezing_actor_steps": (_NO_CRITIC,), "critic_pretrain": (_NO_CRITIC,),
    "prompt_data": ("train_file", "data"), "prompt_dataset": ("train_file", "data"),
    "eval_dataset": ("test_file",), "input_key": ("question_field", "prompt_field"),
    "label_key": ("answer_field",), "apply_chat_template": ("template",),
    "input_template": (("not a setting: template = \"none\" reads each prompt verbatim "
                        "(OpenRLHF without apply_chat_template or input_template): put a "
                        "template's words in the prompts; or R1-Zero's template (template = "
                        "\"r1-zero\", the default) or the tokenizer's chat template "
                        "(\"chat\")"),),
    "prompt_split": (("not a setting: train_file names a local file (one split's JSONL or "
                      "parquet file, or a glob of its shards)"),),
    "max_samples": ("not a setting: cut the data file to the rows you want",),
    "micro_train_batch_size": ("micro_batch_size",),
    "micro_rollout_batch_size": ("logprob_micro_batch_size",),
    "max_epochs": ("ppo_epochs", "epochs"), "num_episodes": ("steps",),
    "generate_max_len": ("max_new_tokens",), "max_len": ("max_new_tokens",),
    "prompt_max_len": ("max_length", _WHOLE_PROMPT),
    "remote_rm_url": ("reward_function",),
    "reward_pretrain": (("helpful_model (and safety_model): reward models score task = "
                         "\"prompts\" stages; a rule reward is a reward_function"),),
    "init_kl_coef": ("beta",),
    "kl_estimator": (("not a setting: the KL term is the k3 estimator (OpenRLHF's "
                      "kl_estimator = k3), in the loss"),),
    "kl_target": ("not a setting: beta is fixed (no adaptive KL controller)",),
    "kl_horizon": ("not a setting: beta is fixed (no adaptive KL controller)",),
    "advantage_estimator": (_ESTIMATORS,), "no_advantage_std_norm": (_NO_STD_NORM,),
    "eps_clip": ("clip_eps_low",),
    "eps_clip_low_high": ("clip_eps_low (and clip_eps_high: the two ends of the clip)",),
    "dual_clip": (("not a setting: the ratio is clipped by clip_eps_low and clip_eps_high "
                   "alone (no dual clip for negative advantages)"),),
    "entropy_loss_coef": (("not a setting: the loss has no entropy bonus (the policy's "
                           "entropy is logged as entropy)"),),
    "aux_loss_coef": ("not a setting: no MoE load-balancing loss",),
    "dynamic_filtering": ("dynamic_sampling",),
    "dynamic_filtering_reward_range": (("not a setting: dynamic_sampling keeps the groups "
                                        "whose accuracy (or reward) differs, OpenRLHF's "
                                        "default range of group means, (0, 1)"),),
    "overlong_buffer_len": ("overlong_buffer",), "overlong_penalty_factor": ("overlong_weight",),
    "stop_properly_penalty_coef": (("not a setting: no penalty for responses cut at the cap "
                                    "(mask_truncated leaves them out of the loss)"),),
    "reward_clip_range": (_NO_CLIP,), "normalize_reward": (_NO_NORMALIZE,),
    "zero_stage": ("distributed",), "adam_offload": (_NO_OFFLOAD,),
    "ref_reward_offload": (_NO_OFFLOAD,),
    "packing_samples": ("not needed: training sequences are packed without padding",),
    "flash_attn": (_ATTENTION,), "attn_implementation": (_ATTENTION,),
    "target_modules": ("lora_target_modules",),
    "load_in_4bit": ("not a setting: no quantized training",),
    "save_path": ("given on the command line: r1kit run RECIPE --out DIR",),
    "ckpt_path": ("given on the command line: r1kit run RECIPE --out DIR",),
    "max_ckpt_num": ("keep_checkpoints",),
    "load_checkpoint": (("not needed: the same r1kit run command with the same --out resumes "
                         "an interrupted run"),),
    "save_hf_ckpt": (("not needed: every stage's final model is a Hugging Face checkpoint "
                      "directory"),),
    "use_wandb": (_WANDB,), "wandb_project": (_WANDB,),
    "use_tensorboard": ("set under [run]: tensorboard = true",),
    **{name: (_TORCHRUN,) for name in (
        "actor_num_nodes", "actor_num_gpus_per_node", "ref_num_nodes", "ref_num_gpus_per_node",
        "reward_num_nodes", "reward_num_gpus_per_node", "critic_num_nodes",
        "critic_num_gpus_per_node")},
    **{name: (_COLOCATED,) for name in ("colocate_all_models", "colocate_actor_ref",
                                        "colocate_critic_reward")},
    "l2": ("weight_decay",), "lr_warmup_ratio": ("warmup_steps",),
    "lr_scheduler": ("lr_schedule",), "max_norm": ("max_grad_norm",),
    "policy_loss_type": ("importance_sampling",),
    "gradient_checkpointing_enable": ("activation_checkpointing",),
    "agent_func_path": ("not a setting: rollouts are single-turn (no agent loop)",),
    "enable_ema": ("not a setting: no EMA of the weights",),
    "param_dtype": ("set as dtype under [run] (auto, bfloat16 or float32)",),
    "use_dynamic_batch": (_PACKED,),
    "wandb_run_name": ("given on the command line: r1kit run RECIPE --out DIR",),
    "prompt_data_probs": ("not a setting: one training file per stage (mix the files first)",),
    "ptx_coef": ("not a setting: no pretraining loss mixed into the RL loss",),
    "use_liger_kernel": (("not needed: the output layer's log-probabilities are computed in "
                          "chunks (logprob_chunk_tokens)"),),
    **{name: (("not a setting: a reward_model stage reads each pair from the fields chosen "
               "and rejected (OpenRLHF's train_rm defaults), its prompt from prompt or from "
               "the start both share (name your columns so)"),)
       for name in ("chosen_key", "rejected_key")},
    "ring_attn_size": ("not a setting: no sequence parallelism (ring attention)",),
    "ring_head_stride": ("not a setting: no sequence parallelism (ring attention)",),
    "enable_vllm_is_correction": (_OWN_ENGINE,), "enable_prefix_caching": (_OWN_ENGINE,),
    "enforce_eager": (_OWN_ENGINE,), "ema_beta": ("not a setting: no EMA of the weights",),
    "local_rank": ("not needed: torchrun gives each process its rank",),
    "wandb_group": (_WANDB,), "wandb_org": (_WANDB,),
    **{name: ("not a setting: each step samples, then trains (no asynchronous rollouts)",)
       for name in ("async_train", "async_queue_size", "partial_rollout")},
    # OpenRLHF's other flat flags: said to be its, never a near spelling of another meaning
    **{name: ("OpenRLHF's name; r1kit has no setting for it",) for name in (
        "actor_init_on_gpu", "best_metric_key", "dataloader_num_workers", "deepcompile",
        "deepspeed_enable_sleep", "disable_ds_ckpt", "disable_fast_tokenizer",
        "ds_tensor_parallel_size", "eval_split", "freeze_visual_encoder", "full_determinism",
        "grad_accum_dtype", "gradient_checkpointing_use_reentrant", "image_key",
        "max_ckpt_mem", "max_images_per_prompt", "overlap_comm", "perf",
        "rollout_max_tokens_per_gpu", "save_value_network", "train_max_tokens_per_gpu",
        "use_ds_universal_ckpt", "use_ms", "value_head_prefix", "zpg")},
    "eval_temperature": ("eval",), "eval_n_samples_per_prompt": ("eval",),
}
# TRL's and open-r1's SFT settings where an sft stage answers them otherwise than a grpo stage
FOREIGN_SFT = {
    "gradient_accumulation_steps": (
        "not needed: batch_size is the rows per optimizer step (TRL's "
        "per_device_train_batch_size x gradient_accumulation_steps x processes) and "
        "micro_batch_size the rows per forward pass (memory only)"),
    "warmup_ratio": ("warmup_steps, a number of optimizer updates: the ratio x the stage's "
                     "steps (epochs x rows / batch_size, or epochs where the rows are fewer "
                     "than batch_size)"),
    "lr_scheduler_type": ("not a setting of sft stages: the learning rate decays by a cosine "
                          "to lr x final_lr_ratio (0.1: open-r1's cosine_with_min_lr with "
                          "min_lr_rate 0.1)"),
    "lr_scheduler_kwargs": ("final_lr_ratio: the cosine's floor, lr x final_lr_ratio (open-r1's "
                            "min_lr_rate)"),
    "packing": ("not needed: an sft stage packs its rows without padding, each row attending "
                "to itself alone; batch_size counts rows, where TRL's packed batches count "
                "sequences of max_length tokens, several rows each"),
    "per_device_train_batch_size": ("micro_batch_size, the rows per forward pass (the "
                                    "optimizer's batch is batch_size rows: TRL's "
                                    "per_device_train_batch_size x gradient_accumulation_steps "
                                    "x processes)"),
    "completion_only_loss": ("not needed: an sft stage trains on the response alone (the "
                             "prompt is context)"),
    "assistant_only_loss": ("not needed: an sft stage trains on a conversation's last "
                            "assistant message alone (earlier assistant turns are context, "
                            "where TRL's assistant_only_loss trains them all)"),
    "eos_token": ("not needed: each response ends with the token the chat template writes "
                  "after an assistant message (else the tokenizer's eos), trained on"),
    "use_liger_kernel": ("not needed: the output layer's log-probabilities are computed in "
                         "chunks (logprob_chunk_tokens)"),
    "dataset_num_proc": "not needed: the rows are tokenized once, in this process",
    # OpenRLHF's train_sft flags
    "input_key": "prompt_field, the prompt's field (OpenRLHF's input_key)",
    "output_key": "response_field, the response's field (OpenRLHF's output_key)",
    "max_epochs": "epochs, the passes over the data",
    "train_file": "data, the stage's rows: a JSONL or parquet file, or an earlier sample stage",
    "train_batch_size": ("batch_size, the rows per optimizer step (OpenRLHF's "
                         "train_batch_size, all processes together)"),
    "micro_train_batch_size": "micro_batch_size, the rows per forward pass of each process",
    "max_len": ("max_length, the tokens per row, prompt and response together (a longer "
                "response is cut)"),
    "pretrain": "model, the checkpoint to fine-tune",
    "prompt_split": ("not a setting: data names a local file (one split's JSONL or parquet "
                     "file, or a glob of its shards)"),
}
FOREIGN_SFT["use_liger"] = FOREIGN_SFT["use_liger_kernel"]  # (open-r1's older name)
FOREIGN_SFT["lr_warmup_ratio"] = FOREIGN_SFT["warmup_ratio"]  # (OpenRLHF's name)
# verl's top-level tables, read in a --set or a stage's key as verl's dotted settings
VERL_TABLES = ("actor_rollout_ref", "algorithm", "data", "trainer", "critic",
               "custom_reward_function", "reward_model")
# OpenRLHF's, of its newer dotted flags (--actor.adam.lr); data and critic are verl's too
OPENRLHF_TABLES = ("actor", "rollout", "algo", "train", "reward", "ds", "ckpt", "vllm", "ref",
                   "logger", "eval")
# OpenRLHF's dotted flags (train_ppo_ray's): only these are answered as OpenRLHF's
# (the optimizer's, for the actor and the critic alike)
_OPENRLHF_OPTIM = ("optim muon.lr muon.momentum muon.ns_steps muon.nesterov adam.lr adam.betas "
                   "adam.eps adam.weight_decay lr_scheduler lr_warmup_ratio min_lr_ratio "
                   "max_norm")
_OPENRLHF_FLAGS = frozenset(f"{table}.{name}" for table, names in {
    "actor": "aux_loss_coef dual_clip entropy_coef eps_clip eps_clip_low_high "
             "freeze_visual_encoder gradient_checkpointing_enable "
             "gradient_checkpointing_reentrant model_name_or_path num_gpus_per_node num_nodes "
             "policy_loss_type",
    "algo": "advantage.estimator advantage.gamma advantage.is_correction_enable "
            "advantage.is_correction_threshold advantage.is_correction_type advantage.lambd "
            "advantage.no_std_norm dynamic_filtering_enable dynamic_filtering_range "
            "kl.estimator kl.horizon kl.init_coef kl.target kl.use_loss",
    "ckpt": "best_metric_key disable_ds load_enable max_mem max_num output_dir path save_hf "
            "save_steps",
    "critic": "freezing_steps model_name_or_path num_gpus_per_node num_nodes "
              "save_value_network value_clip",
    "data": "apply_chat_template dataloader_num_workers disable_fast_tokenizer image_key "
            "input_key input_template label_key max_images_per_prompt max_len max_samples "
            "prompt_dataset prompt_probs prompt_split",
    "ds": "adam_offload attn_implementation deepcompile enable_sleep experts_implementation "
          "grad_accum_dtype lora.alpha lora.dropout lora.rank lora.target_modules overlap_comm "
          "packing_samples param_dtype ring_attn_head_stride ring_attn_size "
          "tensor_parallel_size use_liger_kernel use_universal_ckpt value_head_prefix "
          "zero_stage zpg",
    "eval": "dataset n_samples_per_prompt split steps temperature",
    "logger": "logging_steps tensorboard_dir wandb.group wandb.key wandb.org wandb.project "
              "wandb.run_name",
    "ref": "num_gpus_per_node num_nodes offload",
    "reward": "clip_range model_name_or_path normalize_enable num_gpus_per_node num_nodes "
              "offload overlong_buffer_len overlong_penalty_factor remote_url "
              "stop_properly_penalty_coef",
    "rollout": "batch_size max_new_tokens max_tokens_per_gpu micro_batch_size "
               "n_samples_per_prompt temperature top_p vllm_generate_batch_size",
    "train": "agent_func_path async_enable async_queue_size batch_size colocate_actor_ref "
             "colocate_all colocate_critic_reward dynamic_batch_enable ema_beta enable_ema "
             "full_determinism_enable max_epochs max_tokens_per_gpu micro_batch_size "
             "num_episodes partial_rollout_enable seed",
    "vllm": "enable_prefix_caching enable_sleep enforce_eager gpu_memory_utilization "
            "num_engines sync_backend sync_with_ray tensor_parallel_size",
}.items() for name in (names + " " + _OPENRLHF_OPTIM * (table in ("actor", "critic"))
                       ).split())
# OpenRLHF's data.* settings (verl's data table has others)
_OPENRLHF_DATA = ("input_key", "label_key", "input_template", "apply_chat_template", "max_len",
                  "prompt_dataset", "prompt_probs", "prompt_split", "max_samples")
_FOREIGN_NOTES = {
    "max_steps": (", which counts rollouts: TRL's max_steps counts optimizer updates, "
                  "num_minibatches x ppo_epochs of them per rollout here"),
    "max_completion_length": (" (a grpo stage that sets it keeps that cap; left at the "
                              "paper's 32,768 it is raised to 65,536 at step 512, and "
                              "max_new_tokens_schedule raises it where you say)"),
    "loss_type": (": TRL's grpo is seq-mean-token-mean (r1kit's default), dapo and bnpo "
                  "token-mean (TRL's default), dr_grpo seq-mean-token-sum-norm"),
    "scale_rewards": (": TRL's \"group\" (or true) is std (the default), \"batch\" is "
                      "batch, \"none\" (or false) is none"),
    "sync_ref_model": (": the reference becomes a copy of the policy every N rollouts "
                       "(default 25, the paper's 400 updates; 0 = never, as TRL's default "
                       "sync_ref_model = false). TRL's sync mixes in the policy "
                       "(ref_model_mixup_alpha) every ref_model_sync_steps optimizer updates"),
    "ref_model_sync_steps": (": a copy of the policy every N rollouts (TRL counts optimizer "
                             "updates and mixes by ref_model_mixup_alpha)"),
    "num_generations_eval": (": k in the stage's eval table ([stages.NAME.eval] k = N)"),
    "per_device_eval_batch_size": (": the eval table's settings; evaluations sample "
                                   "generation_rows rows at once"),
    "lr_scheduler_type": (": constant (the paper's), cosine or linear (both to lr x "
                          "final_lr_ratio); TRL's default linear decay to 0 is "
                          "lr_schedule = \"linear\" with final_lr_ratio = 0"),
    "per_device_train_batch_size": ": sequences per forward pass (the optimizer's batch is "
                                   "batch_size, or rollout_batch_size / num_minibatches)",
    "warmup_ratio": ", a number of optimizer updates (in a grpo stage, num_minibatches x "
                    "ppo_epochs per step)", "eval_steps": (": `every` in the stage's eval table "
                                                   "([stages.NAME.eval] every = N)"),
    "dataset_name": (", a local JSONL or parquet file, or a file of a data set in the Hugging "
                     "Face cache: hf://datasets/ORG/NAME/PATH, e.g. "
                     "hf://datasets/openai/gsm8k/main/train-*.parquet"),
    "use_peft": " (> 0 turns LoRA on)",
    "dataset_path": ", a local JSONL or parquet file",
    "adam_beta1": ": [beta1, beta2]", "adam_beta2": ": [beta1, beta2]",
    "reward_funcs": " (one \"module:function\" or a list of them, with reward_weights)",
    "num_train_epochs": " here (a grpo stage counts rollouts; an sft stage counts epochs)",
    "importance_sampling_level": ", with the same values: token or sequence",
    "use_bias_correction_kl": (" (TRL 1.16's default is true: the KL term times the "
                               "importance ratio; r1kit's is false, the paper's k3 alone)"),
    "num_completions_to_print": (": one sample of each of the first N questions of a step, "
                                 "written to the stage's completions.jsonl"),
    "max_prompt_length": ", which caps the whole row (prompt and response)",
    "prompt_length": ", which caps the whole row (prompt and response)",
    "train_batch_size": (", which counts completions: verl's train_batch_size (prompts) x "
                         "rollout.n (OpenRLHF's train_batch_size, the samples per optimizer "
                         "update, is rollout_batch_size / num_minibatches)"),
    "n": " (verl's rollout.n)",
    "ppo_micro_batch_size_per_gpu": ": sequences per forward pass of each process",
    "use_kl_loss": (": > 0 puts the k3 KL term in the loss (verl's use_kl_loss with "
                    "kl_loss_coef, OpenRLHF's with init_kl_coef), 0 leaves it out and loads no "
                    "reference model"),
    "norm_adv_by_std_in_grpo": ": true is std (the default), false is none (Dr. GRPO)",
    "total_epochs": " (a grpo stage counts rollouts; an sft stage counts epochs)",
    "test_freq": ": `every` in the stage's eval table ([stages.NAME.eval] every = N)",
    "val_before_train": (": the stage's eval table evaluates before the first step and every "
                         "`every` steps"),
    "lr_warmup_steps_ratio": (", a number of optimizer updates: the ratio x steps x "
                              "num_minibatches x ppo_epochs"),
    "warmup_style": (": constant or cosine; r1kit's cosine decays to lr x final_lr_ratio "
                     "(0.1; verl's min_lr_ratio is 0)"),
    "val_batch_size": (": the most sequences sampled at once, in the rollouts and the "
                       "evaluations"),
    "ppo_micro_batch_size": (": sequences per forward pass of each process (verl's "
                             "ppo_micro_batch_size counts all processes' together)"),
    "response_length": "",
    "strategy": ": \"ddp\" or \"fsdp\" (FSDP2) under torchrun",
    "custom_reward_function": (" = \"path/to/file.py:compute_score\" (verl's path and name "
                               "in one): a function of data_source, solution_str, ground_truth "
                               "and extra_info is called as verl calls it"),
    "val_files": ", a local JSONL or parquet file",
    "train_files": ", a local JSONL or parquet file",
    "remote_rm_url": _REMOTE_RM,
    "init_kl_coef": (": the k3 KL term's weight in the loss (OpenRLHF's init_kl_coef with "
                     "use_kl_loss; r1kit puts no KL in the reward); 0 loads no reference model"),
    "max_len": (", which caps the responses alone (OpenRLHF's max_len caps prompt and response "
                "together; a grpo stage keeps each prompt whole)"),
    "num_episodes": (", which counts rollouts: OpenRLHF's num_episodes x prompts / "
                     "prompts per rollout (rollout_batch_size / group_size)"),
    "max_epochs": " (passes over each rollout)",
    "micro_rollout_batch_size": ": sequences per forward pass of the log-probs before training",
    "micro_train_batch_size": ": sequences per forward pass of each process",
    "apply_chat_template": (" = \"chat\": the tokenizer's chat template (with system_prompt = "
                            "\"\" for no system turn, as OpenRLHF; r1kit's default adds its "
                            "own); without it OpenRLHF reads each prompt verbatim: template = "
                            "\"none\""),
    "zero_stage": (": \"ddp\" (every process holds the whole model, as ZeRO-0 to 2 do with the "
                   "weights) or \"fsdp\" (FSDP2 shards it, as ZeRO-3), under torchrun"),
    "lr_warmup_ratio": (", a number of optimizer updates: the ratio x steps x num_minibatches x "
                        "ppo_epochs"),
    "policy_loss_type": ": token (OpenRLHF's ppo) or sequence (gspo)",
    "eval_temperature": ": temperature in the stage's eval table ([stages.NAME.eval])",
    "eval_n_samples_per_prompt": ": k in the stage's eval table ([stages.NAME.eval] k = N)",
    "label_key": " (a dotted name reads inside an object field)",
}
# the notes above that speak of a grpo stage's settings (not said in other stage kinds)
_GRPO_NOTES = ("num_episodes", "max_epochs", "max_len", "micro_rollout_batch_size",
               "micro_train_batch_size", "init_kl_coef", "max_steps", "max_completion_length",
               "num_train_epochs", "total_epochs", "train_batch_size", "warmup_ratio",
               "lr_warmup_ratio", "lr_warmup_steps_ratio", "per_device_train_batch_size",
               "max_prompt_length", "prompt_length")
# OpenRLHF's dotted settings whose last part alone would be read otherwise: r1kit's setting
# (a name of a grpo stage) or what to say
_OPENRLHF_PATHS = {
    "rollout.batch_size": ("rollout_batch_size", (", which counts completions: OpenRLHF's "
                           "rollout.batch_size (prompts) x rollout.n_samples_per_prompt")),
    "train.batch_size": ("num_minibatches", (", the optimizer updates per rollout: "
                         "rollout_batch_size / OpenRLHF's train.batch_size (both count "
                         "samples)")),
    "train.micro_batch_size": ("micro_batch_size", (": sequences per forward pass of each "
                               "process")),
    "rollout.micro_batch_size": ("logprob_micro_batch_size", (": sequences per forward pass "
                                 "of the log-probs before training")),
    "actor.model_name_or_path": ("model", ""),
    "algo.kl.estimator": ("", FOREIGN_KEYS["kl_estimator"][0]),
    "algo.dynamic_filtering_range": ("", FOREIGN_KEYS["dynamic_filtering_reward_range"][0]),
    "reward.model_name_or_path": ("", FOREIGN_KEYS["reward_pretrain"][0]),
    "ds.lora.alpha": ("lora_alpha", ""), "ds.lora.dropout": ("lora_dropout", ""),
    "ds.param_dtype": ("", "set as dtype under [run] (auto, bfloat16 or float32)"),
    "train.seed": ("", "seed is a [run] setting"),
    "train.dynamic_batch_enable": ("", FOREIGN_KEYS["packing_samples"][0]),
    "eval.dataset": ("test_file", ", a local JSONL or parquet file"),
    "eval.steps": ("eval", ": `every` in the stage's eval table ([stages.NAME.eval] every = N)"),
    "eval.temperature": ("eval", ": temperature in the stage's eval table"),
    "eval.n_samples_per_prompt": ("eval", ": k in the stage's eval table"),
    "ckpt.path": ("", FOREIGN_KEYS["save_path"][0]),
    "ckpt.output_dir": ("", FOREIGN_KEYS["save_path"][0]),
    "ckpt.save_steps": ("save_every", ""),
    "ckpt.load_enable": ("", FOREIGN_KEYS["load_checkpoint"][0]),
    "ckpt.save_hf": ("", FOREIGN_KEYS["save_hf_ckpt"][0]),
    "logger.tensorboard_dir": ("", ("set under [run]: tensorboard = true (the events go in the "
                               "stage's directory)")),
    "actor.adam.eps": ("", "not a setting: AdamW's eps is torch's default, 1e-8"),
    "algo.kl.init_coef": ("beta", _FOREIGN_NOTES["init_kl_coef"]),
    "algo.kl.use_loss": ("beta", _FOREIGN_NOTES["use_kl_loss"]),
    "algo.advantage.estimator": ("", _ESTIMATORS),
    "algo.advantage.no_std_norm": ("", _NO_STD_NORM),
    "algo.dynamic_filtering_enable": ("dynamic_sampling", ""),
    "reward.clip_range": ("", _NO_CLIP), "reward.normalize_enable": ("", _NO_NORMALIZE),
    "reward.remote_url": ("reward_function", _REMOTE_RM),
    "ref.offload": ("", _NO_OFFLOAD), "reward.offload": ("", _NO_OFFLOAD),
    "ds.lora.rank": ("lora_rank", ""), "ckpt.max_num": ("keep_checkpoints", ""),
    "ds.attn_implementation": ("", _ATTENTION),
    **{f"{who}.{n}": ("", _TORCHRUN) for who in ("actor", "ref", "reward", "critic")
       for n in ("num_nodes", "num_gpus_per_node")},
    **{f"train.{n}": ("", _COLOCATED) for n in ("colocate_all", "colocate_actor_ref",
                                                 "colocate_critic_reward")},
}


def unused_with_reward_function(cfg: GRPOConfig) -> list[str]:
    """The settings of a stage with a reward_function that have no effect (set away from
    their defaults): it replaces the rule rewards and the reward models. (A note, not an
    error: runs that set them before this note existed must still resume.)"""
    if not cfg.reward_function:
        return []
    if cfg.task == "prompts" and (cfg.helpful_model or cfg.safety_model):
        return []  # the reward models' rewards and the functions' are added up
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    return [n for n in ("accuracy_weight", "format_weight", "language_weight", "helpful_model",
                        "safety_model", "helpful_weight", "safety_weight")
            if getattr(cfg, n) != defaults[n]]


def reward_specs(value) -> list:
    """A stage's reward_function setting as a list of "module:function" names ([] for none)."""
    return list(value) if isinstance(value, (list, tuple)) else [value] if value else []


def _a(word: str) -> str:
    said_as_letters = word in ("sft",)  # "an SFT stage"
    return f"{'an' if word[:1] in 'aeiou' or said_as_letters else 'a'} {word}"


def _foreign_hint(key: str, names: list[str], grpo: bool = True) -> str | None:
    """The hint for a TRL / open-r1 / verl / OpenRLHF setting name, where FOREIGN_KEYS knows
    it (in another stage kind than grpo, without the notes that speak of a grpo stage)."""
    # (TRL's vllm_* settings: all as use_vllm)
    for target in FOREIGN_KEYS.get("use_vllm" if key.startswith("vllm_") else key, ()):
        if target in names:
            note = _FOREIGN_NOTES.get(key, "") if grpo or key not in _GRPO_NOTES else ""
            return f"r1kit's name for {key!r} is {target!r}{note}"
        if " " in target:
            return f"{key!r} is {target}"
    return None


def build(cls, data: dict, where: str):
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [key for key in data if key not in names]
    if unknown:  # every unknown key of the table at once, each with its hint
        kind = getattr(cls, "kind", None)
        stage = where.split(".")[1:2] if where.startswith("stages.") else []
        # (a table of another framework's settings; inside a stage not its eval table,
        # r1kit's own in grpo stages, nor OpenRLHF's tables in [run])
        said = [(key in FOREIGN_TABLES and key != "eval" and isinstance(data[key], dict)
                 and data[key] and _tables_hint(key, data[key], stage, cls,
                                                openrlhf=kind is not None))
                or _unknown_hint(key, names, kind, cls) for key in unknown]
        if len(unknown) == 1:
            _fail(f"{where}.{unknown[0]}", "unknown key", said[0])
        _fail(where, f"unknown keys {', '.join(unknown)}",
              "; ".join(f"{key}: {hint}" for key, hint in zip(unknown, said)))
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def _unknown_hint(key: str, names: list[str], kind: str | None, cls) -> str:
    """What to say about an unknown key: r1kit's name for a TRL / open-r1 / verl one, the
    stage kind it belongs to, the closest spelling, or where the settings are listed."""
    close = difflib.get_close_matches(key, names, n=1)
    other = [k for k, c in STAGE_KINDS.items()
             if k != kind and key in {f.name for f in dataclasses.fields(c)}]
    if kind == "sft" and key in FOREIGN_SFT:
        return f"{key!r} is {FOREIGN_SFT[key]}"
    said = _foreign_hint(key, names, grpo=kind in (None, "grpo"))
    if said:
        return said
    if kind is None and "seed" in names:  # [run]: a stage's setting (or TRL's name for one)
        own = next((t for t in (key, *FOREIGN_KEYS.get(key, ()))
                    if any(t in {f.name for f in dataclasses.fields(c)}
                           for c in STAGE_KINDS.values())), None)
        if own is not None:
            return (f"{key!r} is set per stage: stages.NAME.{own}, in the table of the stage "
                    "it applies to")
    if other and kind:
        return (f"{key!r} is a setting of {' and '.join(other)} stages, and this is "
                f"{_a(kind)} stage" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if close:
        return f"did you mean {close[0]!r}?"
    if len(names) > 20:
        return (f"not a setting of {kind or 'this'} {'stages' if kind else 'table'} (the "
                f"README lists them; r1kit/config.py: {cls.__name__})")
    return f"valid keys: {', '.join(names)}"


def parse_value(text: str):
    """A --set value: TOML syntax (numbers, true/false, lists, quoted strings); bare text is a string."""
    value = text.strip()
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if "\n" in value and value.startswith('"'):  # a newline typed in a shell inside a
            try:  # quoted string: the newline it means
                return tomllib.loads(f"v = {value}".replace("\n", "\\n"))["v"]
            except tomllib.TOMLDecodeError:
                pass
        if value[:1] in ("\"", "'", "[", "{") and "at end of document" in str(exc):
            # opened as a TOML string, list or table and never closed; anything else
            # ([THINK], {question}, "a" and b) is bare text, as it always was
            raise R1kitError(f"{value!r} is not a TOML value ({exc})",
                             "close its quotes, brackets or braces, e.g. "
                             "'\"text\"', [1, 2] or {k=8}") from None
        return text.strip(" \t")  # (a newline given in the shell stays, as in "<think>⏎")


def apply_override(data: dict, dotted: str) -> None:
    if "=" not in dotted:
        raise R1kitError(f"--set {dotted!r}: expected section.key=value",
                         "e.g. --set stages.zero.lr=1e-4")
    path, text = dotted.split("=", 1)
    keys = path.strip().split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise R1kitError(f"--set {dotted!r}: {k!r} is not a table")
    try:
        value = parse_value(text)
    except R1kitError as exc:
        raise R1kitError(f"--set {dotted!r}: {exc.args[0]}", exc.hint) from None
    if isinstance(value, dict) and isinstance(node.get(keys[-1]), dict):
        _merge(node[keys[-1]], value)  # an inline table sets its keys; the others stay
    else:
        node[keys[-1]] = value


def _merge(table: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(table.get(key), dict):
            _merge(table[key], value)
        else:
            table[key] = value


# verl's sampling settings of its validation (rollout.val_kwargs.*): the eval table's
_VERL_EVAL = {"n": "k", "temperature": "temperature", "top_p": "top_p",
              "do_sample": "temperature"}


def _leaf_paths(key: str, value) -> list[list[str]]:
    """`key` and the keys down to each setting of a TOML table's nested tables
    (data = {max_prompt_length = 512}: [["data", "max_prompt_length"]])."""
    if not isinstance(value, dict) or not value:
        return [[key]]
    return [[key, *rest] for inner, v in value.items() for rest in _leaf_paths(str(inner), v)]


def _verl_hint(keys: list[str], stages: list[str], cls=None) -> str:
    """The hint for a verl setting given as verl names it (actor_rollout_ref.actor.optim.lr):
    r1kit's setting for it in a grpo stage's table, by its last part where the tables above
    it do not change its meaning (the critic's, the reward's KL controller's, the
    validation's and the reward model's settings are not the policy's)."""
    leaf, dotted, above = keys[-1], ".".join(keys), keys[:-1]
    # (the settings of the stage it was given in: a grpo stage's where none is known)
    grpo = [f.name for f in dataclasses.fields(cls or GRPOConfig)]
    stage = stages[0] if len(stages) == 1 else "NAME"
    where = " (README: Coming from verl)"

    def ours(setting: str, note: str = "") -> str:
        return f"{dotted} is verl's name: r1kit's is stages.{stage}.{setting}{note}{where}"

    def instead(text: str) -> str:
        return f"{dotted} is verl's name: {text}{where}"

    if keys[0] == "critic":
        return instead("a grpo stage has no critic (GRPO's advantages come from each group's "
                       "rewards)")
    if "kl_ctrl" in above or leaf in ("kl_penalty", "use_kl_in_reward"):
        return instead("r1kit puts no KL penalty in the reward; the KL term is in the loss, "
                       f"stages.{stage}.beta (verl's use_kl_loss with kl_loss_coef)")
    if "val_kwargs" in above and "eval" in grpo:
        if leaf in _VERL_EVAL:
            return ours(f"eval.{_VERL_EVAL[leaf]}", " (0: greedy, verl's do_sample = false)"
                        if leaf == "do_sample" else " (verl validates greedily: temperature "
                        "0, k 1)" if leaf == "n" else "")
        return instead(f"the held-out evaluation's settings are the stage's eval table "
                       f"([stages.{stage}.eval]: every, k, temperature, top_p)")
    if keys[0] == "reward_model":
        if leaf == "ground_truth":
            return instead(f"a data field: stages.{stage}.answer_field = "
                           "\"reward_model.ground_truth\" reads it")
        if leaf in ("reward_manager", "launch_reward_fn_async"):
            return instead("not a setting: a reward_function is called once per completion, "
                           "as verl's naive reward manager calls it")
        return instead("r1kit's reward models are helpful_model and safety_model (task = "
                       "\"prompts\")")
    if keys[0] == "custom_reward_function" and "reward_function" in grpo:
        return ours("reward_function", _FOREIGN_NOTES["custom_reward_function"]
                    if leaf in ("path", "name") else "")
    if leaf == "name" and "rollout" in above:
        return instead(_OWN_ENGINE)
    if leaf == "path" and above and above[-1] == "model":
        return ours("model")
    target = leaf if leaf in grpo else next(
        (t for t in FOREIGN_KEYS.get(leaf, ()) if t in grpo), None)
    if target is not None:
        return ours(target, _FOREIGN_NOTES.get(leaf, "") if target != leaf else "")
    said = _foreign_hint(leaf, grpo)
    return (f"{dotted} is verl's name{': ' + said if said else ''} (a stage's settings are "
            "the flat keys of its table; README: Coming from verl)")


def _openrlhf_hint(keys: list[str], stages: list[str], cls=None) -> str | None:
    """The hint for an OpenRLHF setting given as its newer flags name it (actor.adam.lr):
    r1kit's setting for it in the stage kind's table (a grpo stage's where none is known),
    by the whole name where its last part alone means something else, else by that last
    part; None for a name OpenRLHF does not have (its tables' names are common words:
    eval.every is no OpenRLHF setting)."""
    leaf, dotted = keys[-1], ".".join(keys)
    if dotted not in _OPENRLHF_FLAGS:
        return None
    cls = cls or GRPOConfig
    own = [f.name for f in dataclasses.fields(cls)]
    grpo = cls is GRPOConfig  # (the notes speak of a grpo stage's settings)
    stage = stages[0] if len(stages) == 1 else "NAME"
    setting, note = _OPENRLHF_PATHS.get(dotted, (None, None))
    if setting is None and keys[0] == "vllm":
        setting, note = "", _OWN_ENGINE
    if setting is None and ("muon" in keys or leaf == "optim"):
        setting, note = "", "not a setting: the optimizer is AdamW (torch's)"
    if setting is None and keys[:2] == ["logger", "wandb"]:
        setting, note = "", _WANDB
    if setting and (setting.split(".")[0] not in own or not grpo):
        setting = None  # (not this stage kind's: by the last part alone)
    if setting is None:
        setting = leaf if leaf in own else next(
            (t for t in FOREIGN_KEYS.get(leaf, ()) if t in own), None)
        note = _FOREIGN_NOTES.get(leaf, "") if setting not in (None, leaf) and grpo else ""
    said = note or next((t for t in FOREIGN_KEYS.get(leaf, ()) if " " in t), None)
    where = " (README: Coming from OpenRLHF)"
    if setting:
        return f"{dotted} is OpenRLHF's name: r1kit's is stages.{stage}.{setting}{note}{where}"
    if said:
        return f"{dotted} is OpenRLHF's name: {said}{'' if '(README' in said else where}"
    return f"{dotted} is OpenRLHF's name; r1kit has no setting for it{where}"


def _only_kind(stages) -> type | None:
    """The settings class of a recipe's one stage (its `stages` table); None for several."""
    one = next(iter(stages.values())) if isinstance(stages, dict) and len(stages) == 1 else None
    return STAGE_KINDS.get(one.get("kind")) if isinstance(one, dict) else None


def _bare_hint(key: str, stages: dict) -> str | None:
    """The hint for a stage's setting given alone in a --set (--set n_samples_per_prompt=8),
    by r1kit's name or by TRL's, verl's or OpenRLHF's for it: in the recipe's one stage (by
    its kind's settings), else in a grpo stage's."""
    names = [f.name for f in dataclasses.fields(_only_kind(stages) or GRPOConfig)]
    own = key if key in names else next((t for t in FOREIGN_KEYS.get(key, ()) if t in names),
                                        None)
    if own is None:
        return None
    named = "" if own == key else f"r1kit's name for {key!r} is {own!r}; "
    stage = next(iter(stages)) if len(stages) == 1 else "NAME"
    return f"{named}a stage's setting: --set stages.{stage}.{own}=VALUE"


# the top-level tables of verl's and OpenRLHF's settings
FOREIGN_TABLES = tuple(dict.fromkeys(VERL_TABLES + OPENRLHF_TABLES))


def _table_hint(keys: list[str], stages: list[str], cls=None,
                openrlhf: bool = True) -> str | None:
    """The hint for a dotted setting of verl's or OpenRLHF's (keys[0] in FOREIGN_TABLES);
    None for a name of an OpenRLHF table that OpenRLHF does not have (or `openrlhf` off)."""
    if keys[0] == "critic":
        return f"{'.'.join(keys)} is verl's and OpenRLHF's name: {_NO_CRITIC}"
    if (".".join(keys) in _OPENRLHF_PATHS or keys[0] not in VERL_TABLES
            or keys[0] == "data" and keys[-1] in _OPENRLHF_DATA):
        return _openrlhf_hint(keys, stages, cls) if openrlhf else None
    return _verl_hint(keys, stages, cls)


def _tables_hint(key: str, value, stages: list[str], cls=None,
                 openrlhf: bool = True) -> str | None:
    """The hints for every setting of a foreign table given whole (a TOML table, or a
    stage's key holding one), in their order; None where none is known."""
    said = [_table_hint(keys, stages, cls, openrlhf) for keys in _leaf_paths(key, value)]
    return "; ".join(dict.fromkeys(h for h in said if h)) or None


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    p = Path(path)
    if p.is_dir():
        found = sorted(q.name for q in p.glob("*.toml"))[:10]
        raise R1kitError(f"recipe {str(p)!r} is a directory", "give the path of a .toml recipe"
                         + (f" (in it: {', '.join(found)})" if found else ""))
    if not p.is_file():
        raise R1kitError(f"recipe {str(p)!r} not found", "give the path of a .toml recipe")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise R1kitError(f"{p}: not valid TOML: {exc}") from exc
    stages = list(data.get("stages") or {}) if isinstance(data.get("stages"), dict) else []
    paths = [o.split("=", 1)[0].strip().split(".") for o in overrides]
    # a stage added on the command line comes with its kind; any other unknown name is a typo
    added = {k[1] for k in paths if len(k) == 3 and k[0] == "stages" and k[2] == "kind"}
    for o, keys in zip(overrides, paths):
        if keys[0] not in ("run", "stages") and keys[0] not in data:  # e.g. `stage.zero.lr`
            close = difflib.get_close_matches(keys[0], ["run", "stages"], n=1)
            hint = ((keys[0] in FOREIGN_TABLES
                     and _table_hint(keys, stages, _only_kind(data.get("stages"))))
                    or (len(keys) == 1 and isinstance(data.get("stages"), dict)
                        and _bare_hint(keys[0], data["stages"]))
                    or (f"did you mean {close[0]!r}?" if close else
                        "give run.KEY=VALUE or stages.NAME.KEY=VALUE"))
            raise R1kitError(f"--set {o!r}: {keys[0]!r} is not a recipe table (run, stages)",
                             hint)
        if len(keys) > 2 and keys[0] == "stages" and keys[1] not in stages + list(added):
            close = difflib.get_close_matches(keys[1], stages, n=1)
            raise R1kitError(f"--set {o!r}: the recipe has no stage {keys[1]!r}",
                             f"did you mean {close[0]!r}?" if close else
                             f"its stages: {', '.join(stages)}")
    for o in overrides:
        apply_override(data, o)
    return recipe_from_dict(data, source=str(p))


# settings that name checkpoints, data files or a reward function's file: "~/..." in them is
# the home directory, as a shell would read it (a recipe's paths are not seen by a shell)
PATH_SETTINGS = ("model", "helpful_model", "safety_model", "judge_model", "models",
                 "train_file", "test_file", "general_data", "data", "reward_function")


def _expand_home(cfg) -> None:
    def expanded(value):
        if isinstance(value, str) and (value == "~" or value.startswith(("~/", "~\\"))):
            return os.path.expanduser(value)
        if isinstance(value, list):
            return [expanded(v) for v in value]
        return value

    for name in PATH_SETTINGS:
        if hasattr(cfg, name):
            setattr(cfg, name, expanded(getattr(cfg, name)))


def recipe_from_dict(data: dict, source: str = "<recipe>") -> Recipe:
    unknown = set(data) - {"run", "stages"}
    for key in unknown:
        close = difflib.get_close_matches(key, ["run", "stages"], n=1)
        stages = list(data["stages"]) if isinstance(data.get("stages"), dict) else []
        _fail(f"{source}: {key}", "unknown top-level table",
              (key in FOREIGN_TABLES
               and _tables_hint(key, data[key], stages, _only_kind(data.get("stages"))))
              or (f"did you mean {close[0]!r}?" if close else "use [run] and [stages.NAME]"))
    run = build(RunConfig, data.get("run", {}), "run")
    run.validate("run")
    stages_data = data.get("stages") or {}
    if not stages_data:
        _fail(source, "no stages", "add a [stages.NAME] table with a kind")
    stages: dict[str, Any] = {}
    for name, table in stages_data.items():
        where = f"stages.{name}"
        if not isinstance(table, dict):
            _fail(where, "must be a table")
        kind = table.get("kind")
        if kind not in STAGE_KINDS:
            close = difflib.get_close_matches(str(kind), list(STAGE_KINDS), n=1)
            _fail(f"{where}.kind", "is required" if kind is None else
                  f"unknown stage kind {kind!r}", f"did you mean {close[0]!r}?" if close else
                  f"valid kinds: {', '.join(STAGE_KINDS)}")
        cfg = build(STAGE_KINDS[kind], table, where)
        _expand_home(cfg)
        if isinstance(cfg, GRPOConfig) and "max_new_tokens" in table \
                and "max_new_tokens_schedule" not in table:
            # the paper's raise to 65,536 goes with the paper's cap: a cap of your own stays
            cfg.max_new_tokens_schedule = []
        cfg.validate(where)
        stages[name] = cfg
    trains = [name for name, cfg in stages.items() if cfg.kind not in ("eval", "sample")]
    if run.dtype == "float16" and trains:
        _fail("run.dtype", f"float16 weights cannot be trained here (stages {', '.join(trains)}):"
              " the optimizer would work in float16 without loss scaling, and the weights "
              "turn to NaN", "use bfloat16 (GPUs from Ampere on) or float32")
    return Recipe(run=run, stages=stages, source=source)


def _check_data_files(cfg, where: str) -> bool:
    """Read a stage's own data files now, so that a malformed row stops the run before any
    stage has started (the error names file, line and field). Returns whether any of its
    prompts is a conversation (chat messages)."""
    prompts: list[tuple[str, list]] = []  # (file, its prompts)
    if getattr(cfg, "task", None) in ("math", "gsm8k", "code", "choice", "prompts") and (
            getattr(cfg, "train_file", "") or getattr(cfg, "test_file", "")):
        from r1kit.tasks import make_task  # the task's own reader and rules

        task = make_task(cfg, 0)
        for fname, examples in (("train_file", task.train_examples()),
                                ("test_file", task.test_examples())):
            prompts.append((getattr(cfg, fname, "") or fname, [e.question for e in examples]))
    if isinstance(cfg, SFTConfig) and data_exists(cfg.data):
        from r1kit.stages.sft import read_sft_rows  # the stage's own rule: both fields text

        prompts.append((cfg.data, [p for p, _ in read_sft_rows(Path(cfg.data), cfg)]))
    if getattr(cfg, "task", None) == "prompts" and (  # scored by their type's reward model
            not cfg.reward_function or cfg.helpful_model or cfg.safety_model):
        from r1kit.tasks import make_task

        task = make_task(cfg, 0)
        for fname, examples in (("train_file", task.train_examples()),
                                ("test_file", task.test_examples())):
            for kind in sorted({e.meta["type"] for e in examples}):
                if getattr(cfg, f"{kind}_model"):
                    continue
                source = (f"{getattr(cfg, fname)} has" if getattr(cfg, fname) else
                          "the tiny world's general prompts (no train_file) have")
                _fail(f"{where}.{kind}_model", f"{source} prompts of type {kind!r}, "
                      f"which need a {kind} reward model", f"set {kind}_model to a "
                      "reward_model stage or directory" + (", or leave those rows out"
                                                           if getattr(cfg, fname) else ""))
    if reads_general_file(cfg):
        from r1kit.stages.grpo import general_examples  # GRPO's own reader and rules

        general_rows = general_examples(cfg, 0)
        prompts.append((cfg.general_data, [e.question for e in general_rows]))
        # GRPO scores each row with its type's reward model (unless a reward function does)
        needed = (sorted({e.meta["type"] for e in general_rows})
                  if isinstance(cfg, GRPOConfig) and not cfg.reward_function else [])
        for kind in needed:
            if not getattr(cfg, f"{kind}_model"):
                _fail(f"{where}.{kind}_model", f"{cfg.general_data} has rows of type {kind!r}, "
                      f"which need a {kind} reward model", f"set {kind}_model to a "
                      "reward_model stage or directory, or leave those rows out")
    conversational = False
    for path, questions in prompts:
        if any(isinstance(q, list) for q in questions):
            conversational = True
            if getattr(cfg, "template", "chat") != "chat":
                _fail(f"{where}.template", f"{path} gives prompts as chat messages, which "
                      f"need template = 'chat', not {cfg.template!r}",
                      "set template = \"chat\" (a model with a chat template)")
        from r1kit.templates import answered_prompts, continues_assistant

        if getattr(cfg, "prefill", "") and any(continues_assistant(q) for q in questions):
            _fail(f"{where}.prefill", f"{path} has prompts that end with an assistant message, "
                  "which the response continues, and the prefill "
                  f"{cfg.prefill!r} would go after that message",
                  "set prefill = \"\", or end those conversations with the user's message")
        said = answered_prompts(questions, path)
        if said:
            field = "question_field" if hasattr(cfg, "question_field") else "data"
            _fail(f"{where}.{field}", said, "prompts end with the user's message: name the field "
                  "of the question alone (open-r1's data sets: question_field = \"problem\"; "
                  "their `messages` is the worked conversation that SFT trains on)")
    if isinstance(cfg, RewardModelConfig) and cfg.data == "file":
        from r1kit.stages.reward_model import reward_rows_of

        for path in (cfg.train_file, cfg.test_file):
            reward_rows_of(cfg, path)
    return conversational


# fields that name a checkpoint: an earlier stage or a directory
MODEL_FIELDS = ("model", "helpful_model", "safety_model", "judge_model")
CAUSAL_FIELDS = ("model", "models", "judge_model")  # language models (the others: reward)


def _source_dir(recipe: Recipe, ref: str) -> str:
    """The directory a stage's model comes from: `ref` itself, or for an earlier stage the
    directory its chain of `model` settings starts from ("" for a pretrain stage's model)."""
    seen: set[str] = set()
    while ref in recipe.stages and ref not in seen:
        seen.add(ref)
        ref = getattr(recipe.stages[ref], "model", "")
    return ref


def _check_lora_targets(directory: str, targets: list[str], where: str,
                        scalar_head: bool = False) -> None:
    """lora_target_modules the model has, found before any stage (apply_lora finds them again
    as the stage starts, after the earlier stages ran): the architecture of the directory a
    stage's model comes from (`scalar_head`: with a reward model's head in place of the output
    layer), built on the meta device (no weights read). Skipped where that cannot be built
    (a pretrain stage's model: Llama's names; remote code)."""
    if not directory or not Path(directory).is_dir():
        return
    from r1kit.models import adapter_base, is_adapter

    try:
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForSequenceClassification,
        )

        path = adapter_base(directory) if is_adapter(directory) else Path(directory)
        with torch.device("meta"):
            if scalar_head:
                model = AutoModelForSequenceClassification.from_config(
                    AutoConfig.from_pretrained(path, num_labels=1))
            else:
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    except Exception:  # noqa: BLE001 - the stage's own check still runs
        return
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in targets if m not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"})
        _fail(f"{where}.lora_target_modules", f"the model has no module named {missing}",
              f"its linear layers include: {', '.join(linear)} (or \"all-linear\")")


# stage kinds whose directory holds no model checkpoint
NO_CHECKPOINT = (EvalStageConfig, SampleConfig)


def _check_chat_template(recipe: Recipe, where: str, ref: str, known: dict) -> None:
    """template = "chat" needs a tokenizer with a chat template. A stage's checkpoint keeps
    the tokenizer of the model it started from, so follow `model` back to a directory (or to
    a pretrain stage, whose tiny-world tokenizer has none)."""
    ref = _source_dir(recipe, ref)
    if ref not in known:
        if not ref:  # a pretrain stage's model
            known[ref] = False
        else:
            try:
                known[ref] = bool(getattr(_tokenizer(ref, known), "chat_template", None))
            except R1kitError as exc:  # (a broken tokenizer file, or no end-of-sequence token)
                _fail(where, f"the tokenizer of {ref!r} does not load: {exc.args[0]}", exc.hint)
            except Exception as exc:  # noqa: BLE001 - a broken tokenizer file, named
                _fail(where, f"the tokenizer of {ref!r} does not load: "
                      f"{type(exc).__name__}: {exc}"[:400],
                      "check its tokenizer files (tokenizer.json, tokenizer_config.json)")
    if not known[ref]:
        source = repr(ref) if ref else "the tiny world's tokenizer (a pretrain stage)"
        _fail(where, f"'chat' needs a tokenizer with a chat template, and {source} has none",
              "use template = 'r1-zero' for a base model without one, with prompts as text; "
              "chat messages need a chat template: add one to the tokenizer (chat_template in "
              "its tokenizer_config.json), or give the prompts and responses as text")


def _torchrun_world() -> int:
    """The number of processes torchrun started (1 outside it), as r1kit.distributed sees
    them: WORLD_SIZE with RANK set."""
    try:
        size = int(os.environ.get("WORLD_SIZE") or 1)
    except ValueError:
        return 1  # (r1kit.distributed names a malformed value when it starts)
    return size if "RANK" in os.environ else 1


def _tokenizer(ref: str, loaded: dict):
    """load_tokenizer(ref), loaded once per check_inputs (`loaded` keeps it, or its error, under
    ("tokenizer", ref))."""
    key = ("tokenizer", ref)
    if key not in loaded:
        from r1kit.models import load_tokenizer

        try:
            loaded[key] = load_tokenizer(ref)
        except Exception as exc:  # noqa: BLE001 - raised again to each caller
            loaded[key] = exc
    if isinstance(loaded[key], Exception):
        raise loaded[key]
    return loaded[key]


def _check_vocabulary(where: str, ref: str, loaded: dict) -> None:
    """A checkpoint directory whose tokenizer has more tokens than its model embeds (tokens
    added without resize_token_embeddings) fails when its stage loads it, after the stages
    before it have run: found here instead. (A directory without a tokenizer, or whose
    config.json gives no vocab_size, is left to the stage.)"""
    config = Path(ref) / "config.json"
    if not config.is_file() or not any((Path(ref) / f).is_file() for f in (
            "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")):
        return
    try:
        rows = json.loads(config.read_text()).get("vocab_size")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return  # (check_model_dir has said what is wrong with it)
    if not isinstance(rows, int) or isinstance(rows, bool):
        return
    try:
        size = len(_tokenizer(ref, loaded))
    except Exception:  # noqa: BLE001 - a tokenizer that does not load is said where the chat
        return  # template is read, or by its stage
    if size > rows:
        _fail(where, f"the tokenizer of {ref!r} has {size} tokens but its model "
              f"embeds only {rows} (config.json's vocab_size)",
              "after adding tokens, call model.resize_token_embeddings(len(tokenizer)) and "
              "save the model again")


def from_hub_cache(recipe: Recipe) -> list[str]:
    """Every model the recipe names by a Hugging Face Hub id ("Qwen/Qwen2.5-0.5B") that is no
    stage and no path here, set to its directory in the Hugging Face cache where it is there
    (r1kit.models.cached_hub_model), and every data file named hf://datasets/ORG/NAME/PATH to
    that path in the data set's snapshot there (cached_hub_data), so that the stages,
    config.json and each stage's record of its inputs name them; a line for each."""
    from r1kit.models import cached_hub_data, cached_hub_model

    def local(where: str, ref):
        if not isinstance(ref, str) or not ref or ref in recipe.stages or Path(ref).exists():
            return ref
        found = cached_hub_model(ref)
        if found is None:
            return ref  # (check_inputs says what is missing)
        said.append(f"{where}: {ref} from the Hugging Face cache: {found}")
        return str(found)

    said: list[str] = []
    for name, cfg in recipe.stages.items():
        for field_name in MODEL_FIELDS:
            if hasattr(cfg, field_name):
                setattr(cfg, field_name, local(f"stages.{name}.{field_name}",
                                               getattr(cfg, field_name)))
        if isinstance(getattr(cfg, "models", None), list):
            cfg.models = [local(f"stages.{name}.models", m) for m in cfg.models]
        for field_name in DATA_FIELDS:
            value = getattr(cfg, field_name, None)
            try:
                found = cached_hub_data(value) if isinstance(value, str) else None
            except R1kitError as exc:
                _fail(f"stages.{name}.{field_name}", str(exc), exc.hint)
            if found is not None:
                setattr(cfg, field_name, found)
                said.append(f"stages.{name}.{field_name}: {value} from the Hugging Face "
                            f"cache: {found}")
    return said


DATA_FIELDS = ("train_file", "test_file", "data", "general_data")  # (files, or globs)


def check_inputs(recipe: Recipe) -> None:
    """Every model and data file a recipe names exists (run before any work starts)."""
    earlier: list[str] = []
    has_template: dict = {}  # per directory: has a chat template; and its tokenizer (_tokenizer)
    conversational: set[str] = set()  # stages whose prompts include chat messages
    for name, cfg in recipe.stages.items():
        where = f"stages.{name}"
        refs = [(f, getattr(cfg, f, None)) for f in MODEL_FIELDS]
        refs += [("models", m) for m in getattr(cfg, "models", [])]
        for field_name, ref in refs:
            if ref in earlier and isinstance(recipe.stages[ref], NO_CHECKPOINT):
                _fail(f"{where}.{field_name}", f"stage {ref!r} is {_a(recipe.stages[ref].kind)} "
                      "stage and writes no model", "name a stage that trains one, or a "
                      "checkpoint directory")
            wants_reward = field_name not in CAUSAL_FIELDS or isinstance(
                cfg, RewardModelConfig)  # (a reward model's backbone may be either)
            if ref in earlier and field_name not in CAUSAL_FIELDS and not isinstance(
                    recipe.stages[ref], RewardModelConfig):
                _fail(f"{where}.{field_name}", f"stage {ref!r} is {_a(recipe.stages[ref].kind)} "
                      "stage, not a reward_model stage", "name a reward_model stage, or a "
                      "reward model's directory")
            if (ref in earlier and not wants_reward
                    and isinstance(recipe.stages[ref], RewardModelConfig)):
                _fail(f"{where}.{field_name}", f"stage {ref!r} is a reward_model stage: it "
                      "writes a reward model, not a language model to train or sample",
                      "name a stage that trains a language model, or a checkpoint directory")
            if ref in earlier and field_name in ("helpful_model", "safety_model"):
                wanted = REWARD_OBJECTIVE[field_name]
                if recipe.stages[ref].objective != wanted:
                    _fail(f"{where}.{field_name}", f"stage {ref!r} trains a "
                          f"{recipe.stages[ref].objective} reward model; the "
                          f"{field_name.split('_')[0]} reward takes a {wanted} one",
                          f"name a reward_model stage with objective = \"{wanted}\"")
            if not ref or ref in earlier:
                continue
            if ref in recipe.stages:
                _fail(f"{where}.{field_name}", f"stage {ref!r} runs after {name!r}",
                      "a stage can only use the output of an earlier stage")
            if not Path(ref).is_dir():
                _fail(f"{where}.{field_name}", f"{ref!r} is neither an earlier stage nor a "
                      f"directory{hub_note(ref)}; paths are relative to {Path.cwd()}",
                      f"earlier stages: {', '.join(earlier) or 'none'}; or give a "
                      "checkpoint path, e.g. --set " + (
                          f"{where}.{field_name}='[\"/path/to/checkpoint\"]'"
                          if field_name == "models" else
                          f"{where}.{field_name}=/path/to/checkpoint"))
            from r1kit.models import check_model_dir

            # a causal LM checkpoint (config.json), or a reward model for the reward fields
            check_model_dir(ref, "causal" if field_name in CAUSAL_FIELDS else "reward")
            if field_name in CAUSAL_FIELDS:
                _check_vocabulary(f"{where}.{field_name}", ref, has_template)
            if field_name in ("helpful_model", "safety_model"):
                from r1kit.models import reward_objective

                wanted = REWARD_OBJECTIVE[field_name]
                found = reward_objective(ref)
                if found not in (None, wanted):
                    _fail(f"{where}.{field_name}", f"{ref!r} is a {found} reward model; the "
                          f"{field_name.split('_')[0]} reward takes a {wanted} one",
                          f"name a reward model trained with objective = \"{wanted}\"")
        backbone = _source_dir(recipe, cfg.model) if isinstance(cfg, RewardModelConfig) else ""
        if backbone:
            from r1kit.models import check_scalar_head  # the backbone loads with a scalar head

            check_scalar_head(backbone)
        if isinstance(cfg, (GRPOConfig, SFTConfig, RewardModelConfig)) and cfg.lora_rank > 0 \
                and isinstance(
                cfg.lora_target_modules, list):
            _check_lora_targets(_source_dir(recipe, cfg.model), cfg.lora_target_modules, where,
                                scalar_head=isinstance(cfg, RewardModelConfig))
        world = _torchrun_world()
        if isinstance(cfg, GRPOConfig) and world > 1:
            questions = cfg.rollout_batch_size // cfg.group_size  # each process takes a share
            if questions % world:
                _fail(f"{where}.rollout_batch_size", f"{questions} question"
                      f"{' per step' if questions == 1 else 's per step'} (rollout_batch_size "
                      f"/ group_size) {'does' if questions == 1 else 'do'} not divide among "
                      f"{world} processes", f"set rollout_batch_size to a multiple of "
                      f"{world * cfg.group_size} completions ({world} processes x group_size "
                      f"{cfg.group_size}), or run on a number of processes that divides "
                      f"{questions}")
        model = getattr(cfg, "model", None)
        data = getattr(cfg, "data", "")
        if isinstance(cfg, SFTConfig):
            if data in earlier:
                if not isinstance(recipe.stages[data], SampleConfig):
                    _fail(f"{where}.data", f"stage {data!r} is {_a(recipe.stages[data].kind)} "
                          "stage and writes no data set", "name a sample stage or a file")
                if data in conversational and cfg.template != "chat":
                    _fail(f"{where}.template", f"stage {data!r} writes prompts as chat "
                          f"messages (its data has them), which need template = 'chat', not "
                          f"{cfg.template!r}", "set template = \"chat\"")
            elif data in recipe.stages:
                _fail(f"{where}.data", f"stage {data!r} runs after {name!r}",
                      "a stage can only use the output of an earlier stage")
            elif Path(data).is_dir():  # (a data set's directory: which split, said)
                from r1kit.tasks.math import _data_file

                try:
                    _data_file(data)
                except R1kitError as exc:
                    _fail(f"{where}.data", exc.args[0], exc.hint)
            elif not data_exists(data):
                _fail(f"{where}.data", f"{data!r} is neither an earlier sample stage nor a "
                      + ("glob that matches a file" if is_pattern(data) else
                         f"file{hub_note(data, dataset=True)}"))
        files = ["train_file", "test_file"]
        if reads_general_file(cfg):
            files.append("general_data")
        for fname in files:
            value = getattr(cfg, fname, "")
            if value and Path(value).is_dir():
                _fail(f"{where}.{fname}", f"{value!r} is a directory, not a data file",
                      "give one .jsonl or .parquet file, or a glob of one data set's shards "
                      f"(e.g. {value.rstrip('/')}/train-*.parquet)")
            if value and is_pattern(value) and not data_exists(value):
                _fail(f"{where}.{fname}", f"no file matches {value!r}",
                      "a glob names the shards of one data set, e.g. data/train-*.parquet")
            if value and not data_exists(value):
                _fail(f"{where}.{fname}", f"file {value!r} not found"
                      f"{hub_note(value, dataset=True)}")
        if _check_data_files(cfg, where):
            conversational.add(name)
        if getattr(cfg, "reward_function", ""):  # the file and function exist and import,
            from r1kit.rewards.custom import (
                BUILT_IN,
                GRPO_EXTRAS,
                check_signature,
                load_function,
                takes_reference,
            )

            names = [*BUILT_IN, *GRPO_EXTRAS]  # and take the keyword arguments it will pass
            examples = []
            if cfg.task in ("math", "gsm8k", "choice", "prompts"):  # the data rows' fields, read as the stage reads
                from r1kit.tasks import make_task

                examples = make_task(cfg, 0).train_examples()
                for ex in examples:
                    names += [k for k in ex.meta.get("fields", {}) if k not in names]
            if getattr(cfg, "general_share", 0) > 0:  # general rows' fields come too
                from r1kit.stages.grpo import general_examples

                for ex in general_examples(cfg, 0):
                    names += [k for k in ex.meta["fields"] if k not in names]
            for spec in reward_specs(cfg.reward_function):
                fn = load_function(spec)
                check_signature(fn, names, repr(spec))
                wanted = takes_reference(fn)
                if (wanted and cfg.task == "prompts" and examples
                        and not any(ex.meta.get("reference") is not None for ex in examples)):
                    # (the function would get '' as every row's reference)
                    from r1kit.tasks.math import likely_field

                    row = examples[0].meta.get("fields", {})
                    like = likely_field(row, question=False)
                    row = [k for k in row if k != cfg.question_field]
                    _fail(f"{where}.answer_field", f"no row of train_file has a field "
                          f"{cfg.answer_field!r}, and reward_function {spec!r} takes the "
                          f"reference answers ({wanted})",
                          f"set answer_field = \"{like}\"" if like else
                          f"its rows' fields are {', '.join(map(str, row))}, besides the "
                          f"prompt's ({cfg.question_field!r}): name the reference's (a dotted "
                          "name reads inside an object)" if row else
                          f"its rows hold the prompt alone ({cfg.question_field!r}): add each "
                          "row's reference answer to the file, or give a reward function "
                          "that takes none")
        if getattr(cfg, "template", None) == "chat":
            refs = [model] if model else list(getattr(cfg, "models", []))
            for ref in refs:
                _check_chat_template(recipe, f"{where}.template", ref, has_template)
        source = recipe.stages.get(model) if model in earlier else None
        if (getattr(cfg, "task", None) == "arithmetic"
                and isinstance(source, PretrainConfig) and source.world != cfg.world):
            _fail(f"{where}.world", f"differs from stages.{model}.world, the world its base "
                  "model was pretrained on: held-out sets and corpus would not match",
                  f"set the same [stages.{name}.world] values as [stages.{model}.world]")
        earlier.append(name)


def to_dict(obj) -> Any:
    """A plain, TOML/JSON-friendly dict of a config (for the run directory)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
