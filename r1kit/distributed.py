"""Several processes (one per GPU, one or more nodes) through torch.distributed.

`torchrun --nproc_per_node N -m r1kit run RECIPE.toml` starts N copies of the command; each
finds RANK, WORLD_SIZE and LOCAL_RANK in its environment and joins one process group (NCCL on
CUDA, each process on cuda:LOCAL_RANK; gloo on CPU). Without those variables nothing here
creates a process group and every helper is the identity: a single process behaves exactly as
it always has.

What the GRPO stage splits and what it shares (r1kit/stages/grpo.py):
  - the questions of a step are divided among the ranks in whole groups (rank r takes the
    r-th contiguous share), so group advantages stay local; each rank samples and scores its
    own completions,
  - every rank computes the same global shuffle of the step's completions and takes its own
    members of each mini-batch, so a mini-batch is exactly the one-process mini-batch,
  - gradients are summed over ranks with per-rank losses normalised by the global mini-batch
    (the global token count for "token-mean", the global number of sequences otherwise), so
    the update is the one-process update up to float rounding,
  - logged metrics are global; rank 0 alone writes logs, checkpoints and the final model.

Evaluation (in a GRPO stage, the eval stage) and the sample stage split their questions too:
each rank samples and verifies the questions dealt to it (`dealt`: every world_size-th one),
seeded per question, and every rank gathers all the results, so each computes the same
records and rank 0 writes them. The reward_model stage splits each batch's rows as the SFT
stage does (`portion`; weights replicated, ddp). The tiny world's pretrain stage runs on rank
0 while the other ranks wait.

The SFT stage (r1kit/stages/sft.py) runs on every rank as well: every rank draws the same
batches and takes its contiguous share of each batch's rows; losses are normalised by the
whole batch's response tokens and gradients summed, as for GRPO.

Two ways to hold the weights (GRPOConfig.distributed):
  - "ddp": every rank holds all the weights; after the backward passes of a mini-batch the
    gradients are summed with one all-reduce per bucket. An explicit all-reduce rather than
    torch's DistributedDataParallel because a rank's share of a shuffled mini-batch varies
    (it can even be empty) and DDP wants the same number of forward/backward passes per rank
    and averages over ranks; the summed gradient with global normalisers is exact.
  - "fsdp": FSDP2 (`fully_shard` on each decoder layer, then the root): parameters, gradients
    and optimizer state sharded across ranks. Ranks pad their micro-batches to the same count
    with zero-weight passes, since every forward and backward is a collective. For sampling,
    the parameters are gathered once (`gathered`) so decoding does not all-gather per token.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from r1kit import optim
from r1kit.errors import R1kitError


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_world = World()
_wait_group = None  # gloo group with a long timeout: ranks waiting for rank 0's own work


def current() -> World:
    return _world


def launched() -> bool:
    """True when started by torchrun (or anything that sets the same variables) with more
    than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun describes; returns the device this rank computes on
    (cuda:LOCAL_RANK on CUDA). Without torchrun: no process group, `device` unchanged."""
    global _world, _wait_group
    if not launched():
        return device
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    if dist.get_world_size() != size:
        raise R1kitError(f"WORLD_SIZE is {size} but the process group has "
                         f"{dist.get_world_size()} ranks")
    _world = World(rank, size, local)
    _wait_group = dist.new_group(backend="gloo", timeout=timedelta(days=7))
    return device


def shutdown(wait: bool = True) -> None:
    """Leave the process group (if this module made one), after the other ranks when `wait`."""
    global _world, _wait_group
    if _world.enabled and dist.is_initialized():
        if wait:
            dist.barrier(group=_wait_group)
        dist.destroy_process_group()
    _world, _wait_group = World(), None


# ----- small collectives (identities on one process) ---------------------------------------


def wait_for_main() -> None:
    """A barrier with a long timeout: the other ranks wait while rank 0 saves or runs a stage
    of its own."""
    if _world.enabled:
        dist.barrier(group=_wait_group)


def broadcast_object(obj):
    """Rank 0's `obj` on every rank."""
    if not _world.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_wait_group)
    return box[0]


def gather_lists(items: list) -> list:
    """Every rank's list, concatenated in rank order, on every rank (small Python data)."""
    if not _world.enabled:
        return items
    out: list = [None] * _world.world_size
    dist.all_gather_object(out, items, group=_wait_group)
    return [x for part in out for x in part]


def gather_to_main(items: list) -> list:
    """Every rank's list, concatenated in rank order, on rank 0; the others get [] (data too
    large to hold on every rank)."""
    if not _world.enabled:
        return items
    out: list | None = [None] * _world.world_size if _world.is_main else None
    dist.gather_object(items, out, dst=0, group=_wait_group)
    return [x for part in out for x in part] if out is not None else []


def all_reduce(x: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place on every rank; returns `x`."""
    if _world.enabled:
        dist.all_reduce(x, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return x


def peer_failed(exc: BaseException) -> bool:
    """Whether `exc` is a collective's failure because another rank of the run stopped
    (gloo: "Connection closed by peer"; NCCL: an aborted communicator), not an error of this
    rank: that rank said why, and this one only has to stop."""
    if not _world.enabled and os.environ.get("WORLD_SIZE", "1") == "1":
        return False
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in (
        "Connection closed by peer", "Connection reset by peer", "Broken pipe",
        "communicator was aborted", "NCCL communicator", "ProcessGroupNCCL"))


def run_on_main(fn):
    """fn() on rank 0 only; its result (or the fact that it failed) on every rank."""
    if not _world.enabled:
        return fn()
    result, error = None, None
    if _world.is_main:
        try:
            result = fn()
        except BaseException as exc:  # tell the waiting ranks, then fail here as usual
            if not isinstance(exc, KeyboardInterrupt):  # (Ctrl-C, SIGTERM: every rank got it)
                try:
                    broadcast_object((None, f"{type(exc).__name__}: {exc}"))
                except Exception:  # noqa: BLE001 - the others are gone: say this rank's error
                    pass
            raise
    result, error = broadcast_object((result, None))
    if error is not None:
        raise RankZeroFailed(f"rank 0 failed: {error}")
    return result


def agree_on_failure(failed: R1kitError | None, when: str) -> None:
    """Under torchrun, after a step every rank takes (checks of the same files, loading the
    same model): raises `failed` where this rank met it, and where only another rank did an
    error naming that rank, so no rank goes on to wait for the ones that stopped. An error
    this machine's first process met too is marked `same_on_every_process`: said once per
    machine (by that process), not once per process. `when`: "before any stage", ..."""
    if _world.enabled:
        import socket

        mine = (socket.gethostname(), os.environ.get("LOCAL_RANK", "0") or "0",
                str(failed) if failed else None)
        said = gather_lists([mine])  # (machine, local rank, error) of each rank
        if failed is None and any(error for _, _, error in said):  # others failed, not this
            rank = next(r for r, (_, _, error) in enumerate(said) if error)
            raise R1kitError(f"rank {rank} stopped {when} (its message is above or in its "
                             "log); this one stops too")
        if failed is not None and mine[1] != "0" and (mine[0], "0", mine[2]) in said:
            failed.same_on_every_process = True  # its machine's first process says it
    if failed is not None:
        raise failed


class RankZeroFailed(R1kitError):
    """A stage that rank 0 alone runs failed there; rank 0 says why. The CLI repeats it only
    on another machine's first process (where rank 0's output is not), and elsewhere says in
    one line that rank 0 stopped."""


# ----- splitting the work ------------------------------------------------------------------


def portion(n: int) -> tuple[int, int]:
    """[start, end) of this rank's contiguous share of `n` items that need not divide evenly
    (shares differ by at most one; a share may be empty)."""
    size, rank = _world.world_size, _world.rank
    return rank * n // size, (rank + 1) * n // size


def dealt(n: int) -> list[int]:
    """The indices of `n` items dealt to this rank as cards are dealt: rank, rank + world_size,
    ... (all of them on one process). Where a set is ordered by difficulty (AIME's problems grow
    harder within an exam), every rank gets easy and hard ones, and long responses do not all
    fall to one rank as with contiguous shares."""
    return list(range(_world.rank, n, _world.world_size))


def share(n: int, what: str = "items") -> tuple[int, int]:
    """[start, end) of this rank's equal contiguous share of `n` items."""
    size = _world.world_size
    if n % size:
        raise R1kitError(f"{n} {what} do not divide among {size} processes",
                         f"use a multiple of {size}")
    per = n // size
    return _world.rank * per, (_world.rank + 1) * per


def local_members(global_idx: list[int], first: int, count: int) -> list[int]:
    """The members of a global mini-batch that this rank holds (its completions are global
    indices first .. first+count-1), as local indices, in the mini-batch's order."""
    return [i - first for i in global_idx if first <= i < first + count]


def sync_grads(params: list[torch.nn.Parameter], bucket_elems: int = 1 << 24) -> None:
    """Sum the gradients over ranks (replicated weights). A parameter with no gradient on
    this rank (no member of the mini-batch reached it) counts as zeros."""
    if not _world.enabled:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    bucket: list[torch.Tensor] = []

    def flush():
        flat = torch.cat([b.reshape(-1) for b in bucket])
        dist.all_reduce(flat)
        offset = 0
        for b in bucket:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()
        bucket.clear()

    for g in grads:
        if bucket and (g.dtype != bucket[0].dtype
                       or sum(b.numel() for b in bucket) >= bucket_elems):
            flush()
        bucket.append(g)
    if bucket:
        flush()


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """torch's AdamW (through float32 master copies for bf16 / fp16 weights: r1kit.optim),
    with its fused CUDA kernel (one launch per parameter group, not a few per tensor) when
    every parameter is a plain CUDA tensor; the same update rule."""
    params = list(params)
    fused = bool(params) and all(p.is_cuda and type(p.data) is torch.Tensor for p in params)
    return optim.adamw(params, fused=fused or None, **kwargs)


# ----- sharded weights (FSDP2) ----------------------------------------------------------------


def is_sharded(model) -> bool:
    """True when `model` (or any submodule) is FSDP2-sharded. Code that calls a model's
    submodules directly instead of through the model's forward (r1kit's chunked output layer,
    a lean forward path) must fall back to the model's own forward then: FSDP gathers the
    parameters in forward hooks that a direct call bypasses."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        return False
    return any(isinstance(m, FSDPModule) for m in model.modules())


# What r1kit calls on FSDP2's modules (shard, gathered): without the last two (older torch)
# FSDP2 would average the gradients over ranks, silently dividing every update by the number
# of ranks.
_FSDP_NEEDS = ("set_reshard_after_forward", "set_gradient_divide_factor",
               "set_force_sum_reduction_for_comms")


def fsdp_missing() -> str | None:
    """Why this torch cannot run distributed = "fsdp" (None: it can)."""
    try:
        from torch.distributed.fsdp import FSDPModule, fully_shard  # noqa: F401
    except ImportError:
        return f"this torch ({torch.__version__}) has no FSDP2 (torch.distributed.fsdp.fully_shard)"
    lacking = [m for m in _FSDP_NEEDS if not hasattr(FSDPModule, m)]
    if lacking:
        return (f"this torch's FSDP2 ({torch.__version__}) lacks {', '.join(lacking)} (r1kit "
                "sums gradients over ranks with them; averaged, each update would be divided "
                "by the number of ranks)")
    return None


def shard(model) -> None:
    """FSDP2 over this process group: each decoder layer, then the root. Gradients are summed
    over ranks (not averaged): the GRPO losses are already normalised by the global batch."""
    missing = fsdp_missing()
    if missing:
        raise R1kitError(f'distributed = "fsdp": {missing}',
                         'use distributed = "ddp", or a newer torch')
    from torch.distributed.fsdp import fully_shard

    layers = _decoder_layers(model)
    if layers is None:
        raise R1kitError(f"distributed = \"fsdp\": no decoder layers found in "
                         f"{type(model).__name__}", 'use distributed = "ddp"')
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    for m in _fsdp_modules(model):
        m.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum
        m.set_gradient_divide_factor(1.0)


def _decoder_layers(model):
    """The model's stack of decoder layers: in its body (base_model_prefix), the list of
    modules of one class that holds the most weights (Llama's and Qwen's `model.layers`,
    GPT-2's and Falcon's `transformer.h`, OPT's `model.decoder.layers`, ...); None if none."""
    body = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if body is None:
        return None
    stacks = [m for m in body.modules() if isinstance(m, torch.nn.ModuleList) and len(m)
              and len({type(layer) for layer in m}) == 1]
    if not stacks:
        return None
    return list(max(stacks, key=lambda m: sum(p.numel() for p in m.parameters())))


def _fsdp_modules(model) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model):
    """Sharded `model`: all parameters gathered on every rank for the duration (one all-gather
    per layer, then decoding runs with no collectives, so ranks may take different numbers of
    forward passes); resharded on exit. Anything else: nothing happens."""
    if not is_sharded(model):
        yield model
        return
    mods = _fsdp_modules(model)
    for m in mods:
        m.set_reshard_after_forward(False, recurse=False)
    for m in mods:
        m.unshard()
    try:
        yield model
    finally:
        for m in mods:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def full_state(model) -> dict:
    """The model's whole state dict as plain CPU tensors: on rank 0 for a sharded model (a
    collective: every rank calls it; the others get {}), else the model's own state dict."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    # tied weights (an output layer sharing the embedding) come back as separate copies under
    # both names: keep the name the model registers, as its own state_dict would be saved
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {k: v for k, v in state.items() if k in names}


def full_tensors(model, names) -> dict:
    """Some of the model's parameters (`names`), whole, as CPU tensors: for a sharded model
    gathered to rank 0 (a collective: every rank calls it, the others get {}), only those,
    not the whole model (LoRA adapters beside frozen weights)."""
    wanted = set(names)
    if not is_sharded(model):
        return {n: p.detach() for n, p in model.named_parameters() if n in wanted}
    out = {}
    for name, param in model.named_parameters():  # the same order on every rank
        if name in wanted:
            whole = param.full_tensor() if hasattr(param, "full_tensor") else param
            if current().is_main:
                out[name] = whole.detach().cpu()
    return out


def load_full_state(model, state: dict, strict: bool = True):
    """Load a whole (unsharded) state dict, sharding it where the model is sharded; `strict`
    False: some of the model's tensors (LoRA adapters). Returns the missing and unexpected
    keys."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        return set_model_state_dict(model, state, options=StateDictOptions(
            full_state_dict=True, strict=strict))
    if strict:
        # a sharded run's state keeps one name of each tied tensor (full_state): the model's
        # other names of that tensor (an output layer sharing the embedding) take its value
        own = model.state_dict(keep_vars=True)
        names_of: dict[int, list[str]] = {}
        for name, tensor in own.items():
            names_of.setdefault(id(tensor), []).append(name)
        state = dict(state)
        for name in own.keys() - state.keys():
            alias = next((a for a in names_of[id(own[name])] if a in state), None)
            if alias is not None:
                state[name] = state[alias]
    return model.load_state_dict(state, strict=strict)


def optimizer_state(model, opt) -> dict:
    if not is_sharded(model):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True,
                                                                         cpu_offload=True))


# a sharded model's checkpoint keeps its optimizer's state, and its reference model's
# weights, in these directories, each rank's shard written by that rank
# (torch.distributed.checkpoint), and in trainer_state.pt a marker where the whole state was:
# no rank ever holds the whole state (12 bytes per weight with float32 master copies)
SHARDED_OPTIMIZER = "optimizer"
SHARDED_REF = "ref"


def sharded_entry(entry, name: str) -> bool:
    """Whether a checkpoint's entry (trainer_state.pt's) is the marker of state `name` kept
    in shards."""
    return isinstance(entry, dict) and entry.get("sharded") == name


def save_sharded_model(model, directory, name: str) -> dict:
    """Every rank writes its shard of the model's weights into `directory` (a collective);
    returns the marker to keep in trainer_state.pt."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    with _checkpoint_errors(directory):
        dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=str(directory))
    return {"sharded": name}


def load_sharded_model(model, directory) -> None:
    """The model's weights from a directory save_sharded_model wrote, resharded for this run
    (sharded or not, under any number of processes)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    state = {"model": get_model_state_dict(model)}
    _read_shards(state, directory)
    set_model_state_dict(model, state["model"])


def save_sharded_optimizer(model, opt, directory) -> dict:
    """Every rank writes its shard of the optimizer's state into `directory` (a collective);
    returns the marker to keep in trainer_state.pt."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    with _checkpoint_errors(directory):
        dcp.save({"optimizer": get_optimizer_state_dict(model, opt)},
                 checkpoint_id=str(directory))
    return {"sharded": SHARDED_OPTIMIZER}


def _kernels(opt) -> list[dict]:
    """The optimizer's kernel choice (fused, foreach) per parameter group: this process's,
    which a loaded checkpoint's must not replace."""
    return [{k: g[k] for k in ("fused", "foreach") if k in g} for g in opt.param_groups]


def _read_shards(state: dict, directory) -> None:
    """Fill `state` (this run's tensors, sharded or not) from the shards in `directory`."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # (one process: what torch says it then assumes)
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        with _checkpoint_errors(directory):
            dcp.load(state, checkpoint_id=str(directory), no_dist=not _world.enabled)


@contextlib.contextmanager
def _checkpoint_errors(directory):
    """torch.distributed.checkpoint's failures (a CheckpointException, which is no Exception)
    as the error that caused them: an OSError as it is (a full disk is said as such), else an
    R1kitError naming the directory."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except CheckpointException as exc:
        failures = [f[0] if isinstance(f, tuple) else f
                    for f in getattr(exc, "failures", {}).values()]
        cause = next((f for f in failures if isinstance(f, BaseException)), None)
        if isinstance(cause, OSError):
            raise cause from exc
        raise R1kitError(f"{directory}: the checkpoint's shards: {cause or exc}",
                         "resume with the settings and the torch the checkpoint was saved "
                         "with") from exc


def load_sharded_optimizer(model, opt, directory) -> None:
    """The optimizer's state from a directory save_sharded_optimizer wrote, resharded for
    this run (sharded or not, under any number of processes). Master copies the checkpoint
    lacks (written without master_weights) are made from the weights, as MasterAdamW does."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    kernels = _kernels(opt)
    target = get_optimizer_state_dict(model, opt)  # (this run's layout, its shards)
    saved = dcp.FileSystemReader(str(directory)).read_metadata().state_dict_metadata
    for name, entry in target["state"].items():
        for key in [k for k in entry if f"optimizer.state.{name}.{k}" not in saved]:
            if key != "master":
                raise R1kitError(f"{directory}: the optimizer's state has no {key!r} for "
                                 f"{name}", "resume with the settings the checkpoint was "
                                 "saved with")
            del entry[key]
    groups = target["param_groups"]
    if f"optimizer.param_groups.{len(groups) - 1}.params" not in saved or \
            f"optimizer.param_groups.{len(groups)}.params" in saved:
        raise R1kitError(f"{directory}: the checkpoint's optimizer has another number of "
                         "parameter groups", "resume with the settings the checkpoint was "
                         "saved with")
    for i, group in enumerate(groups):  # (an option this torch has and the saving one had
        for key in [k for k in group if f"optimizer.param_groups.{i}.{k}" not in saved]:
            del group[key]  # not: left to the optimizer, as its own load_state_dict does)
    state = {"optimizer": target}
    _read_shards(state, directory)
    set_optimizer_state_dict(model, opt, state["optimizer"])
    for group, mine in zip(opt.param_groups, kernels):  # (this process's kernels)
        group.update(mine)


def load_optimizer_state(model, opt, state: dict) -> None:
    # the kernel choice (fused, foreach) is this process's, not the checkpoint's: a checkpoint
    # written on another device, or before AdamW was fused here, keeps the fast kernel
    kernels = _kernels(opt)
    if len(kernels) == len(state.get("param_groups", [])):
        state = {**state, "param_groups": [{**saved, **mine} for saved, mine in zip(
            state["param_groups"], kernels)]}
    if not isinstance(opt, optim.MasterAdamW):  # master_weights = false, or float32 weights
        state = optim.without_masters(state)
    if not is_sharded(model):
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    saved = [p for g in state.get("param_groups", []) for p in g.get("params", [])]
    if any(isinstance(p, int) for p in saved):  # a checkpoint of unsharded weights (ddp)
        # optimizer.state_dict() numbers the parameters in the optimizer's order; sharded,
        # they are named. The same optimizer over the same model has the same order, which
        # is how optimizer.load_state_dict matches them too.
        names = [n for g in get_optimizer_state_dict(model, opt, options=options)["param_groups"]
                 for n in g["params"]]
        if len(names) != len(saved):
            raise R1kitError(f"the checkpoint's optimizer state holds {len(saved)} parameters, "
                             f"this model's optimizer {len(names)}",
                             "resume with the settings the checkpoint was saved with")
        name = dict(zip(saved, names))
        state = {"state": {name[k]: v for k, v in state.get("state", {}).items()},
                 "param_groups": [{**g, "params": [name[p] for p in g["params"]]}
                                  for g in state["param_groups"]]}
    set_optimizer_state_dict(model, opt, state, options=options)


def full_norm(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_'s result as a plain tensor (a DTensor for sharded parameters)."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


class NullLog:
    """What ranks other than 0 log to: nothing."""

    def __getattr__(self, name):
        return lambda *args, **kw: None
