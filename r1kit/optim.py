"""AdamW for weights kept in bfloat16 or float16: float32 master copies.

A bf16 weight holds 8 significant bits: a weight of 0.02 moves in steps of 1.2e-4. AdamW moves
each weight by about the learning rate per update, and the paper's 3e-6 is a fortieth of that
step: applied to the bf16 weight directly, nearly every update rounds away (5 updates at 3e-6
change about 3% of a 896 x 896 layer's bf16 weights; float32, all of them). torch's AdamW also
keeps its moments in the weights' dtype.

`MasterAdamW` keeps, for each bf16 / fp16 weight, a float32 copy and float32 moments in its own
state. Each update runs torch's AdamW (the same function, fused on CUDA) on the float32 copies
with the gradients in float32, then rounds the copies into the model's weights. The model,
its gradients, and every forward and backward pass stay in bf16: only the optimizer holds
float32 (12 bytes per trained weight where torch's AdamW holds 4 in bf16). float32 weights
are updated in place, as torch's AdamW does. The copies live in the optimizer's state, keyed by
the model's parameters, so checkpoints save and restore them (a sharded run's, each rank its
shard); an interrupted run resumes from the float32 copies, not from the rounded weights.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch.optim.adamw import adamw as _adamw_update

LOW_PRECISION = (torch.bfloat16, torch.float16)
# the moments and master copies that float32 keeps apart from a low-precision weight
_FLOAT32_STATE = ("master", "exp_avg", "exp_avg_sq")

# [run] master_weights (set for a run by `keeping_master_weights`)
_MASTER_WEIGHTS = True
# weights updated per call of torch's AdamW: the float32 copies of their gradients exist for
# one such call at a time (512 MB), not for the whole model at once
_CHUNK_ELEMENTS = 1 << 27


@contextlib.contextmanager
def keeping_master_weights(keep: bool):
    """Within: optimizers built by `adamw` for bf16 / fp16 weights keep float32 master copies
    (`keep`), or update the low-precision weights directly (torch's AdamW)."""
    global _MASTER_WEIGHTS
    before, _MASTER_WEIGHTS = _MASTER_WEIGHTS, bool(keep)
    try:
        yield
    finally:
        _MASTER_WEIGHTS = before


def adamw(params, fused: bool | None = None, **kwargs) -> torch.optim.AdamW:
    """torch's AdamW, or `MasterAdamW` where some of `params` are bf16 / fp16 and master
    weights are kept (the default)."""
    params = list(params)
    if _MASTER_WEIGHTS and any(p.dtype in LOW_PRECISION for p in params):
        return MasterAdamW(params, fused=fused, **kwargs)
    return torch.optim.AdamW(params, fused=fused, **kwargs)


class MasterAdamW(torch.optim.AdamW):
    """AdamW whose bf16 / fp16 parameters are updated through float32 master copies (see the
    module's docstring). Without amsgrad, capturable and differentiable."""

    def __init__(self, params, **kwargs):
        for name in ("amsgrad", "capturable", "differentiable"):
            if kwargs.get(name):
                raise ValueError(f"MasterAdamW does not support {name}")
        super().__init__(params, **kwargs)
        # torch's fused AdamW takes GradScaler's scale and inf flags in its step; this step
        # does not pass them on, so GradScaler must unscale and skip as for any optimizer
        self._step_supports_amp_scaling = False

    def _new_state(self, p: torch.Tensor, group: dict) -> dict:
        # the step count where torch's AdamW keeps it: on the device for the fused kernel
        on_device = group["fused"] or group["capturable"]
        state = {"step": torch.zeros((), dtype=torch.float32,
                                     device=p.device if on_device else "cpu"),
                 "exp_avg": torch.zeros_like(p, dtype=torch.float32,
                                             memory_format=torch.preserve_format),
                 "exp_avg_sq": torch.zeros_like(p, dtype=torch.float32,
                                                memory_format=torch.preserve_format)}
        if p.dtype in LOW_PRECISION:
            state["master"] = p.detach().to(torch.float32, copy=True)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            chunk, size = [], 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("MasterAdamW does not support sparse gradients")
                if not self.state[p]:
                    self.state[p].update(self._new_state(p, group))
                chunk.append(p)
                size += _local(p).numel()
                if size >= _CHUNK_ELEMENTS:
                    self._update(chunk, group)
                    chunk, size = [], 0
            if chunk:
                self._update(chunk, group)
        return loss

    def _update(self, params: list, group: dict) -> None:
        """torch's AdamW on these weights: on the float32 copies of low-precision ones (then
        rounded into them), in place on float32 ones."""
        states = [self.state[p] for p in params]
        low = [p.dtype in LOW_PRECISION for p in params]
        weights = [s["master"] if is_low else p for p, s, is_low in zip(params, states, low)]
        grads = [p.grad.to(torch.float32) for p in params]
        beta1, beta2 = group["betas"]
        _adamw_update(weights, grads, [s["exp_avg"] for s in states],
                      [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
                      foreach=group["foreach"], fused=group["fused"], amsgrad=False,
                      beta1=beta1, beta2=beta2, lr=group["lr"],
                      weight_decay=group["weight_decay"], eps=group["eps"],
                      maximize=group["maximize"])
        del grads
        for p, s, is_low in zip(params, states, low):
            if is_low:
                p.copy_(s["master"])  # rounded to the nearest bf16 / fp16

    def load_state_dict(self, state_dict: dict) -> None:
        # torch's loading casts every saved tensor to its parameter's dtype: the float32
        # copies and moments are taken out before it and put back after it, moved where
        # their parameter is (the saved tensors themselves where they already are: no copy)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        kept, rest = {}, {}
        for i, s in state_dict.get("state", {}).items():
            kept[i] = {k: v for k, v in s.items() if k in _FLOAT32_STATE and torch.is_tensor(v)}
            rest[i] = {k: v for k, v in s.items() if k not in kept[i]}
        super().load_state_dict({**state_dict, "state": rest})
        params = [p for g in self.param_groups for p in g["params"]]
        stale = 0
        for i, p in zip(saved_ids, params):
            if p not in self.state:
                continue
            state = self.state[p]
            for k, v in kept.get(i, {}).items():
                if k != "master" or p.dtype in LOW_PRECISION:  # float32: updated in place
                    state[k] = v.to(device=p.device, dtype=torch.float32)
            if p.dtype not in LOW_PRECISION:
                continue
            master = state.get("master")
            # a copy that does not round to the weight was not saved with it (a state that
            # torch's AdamW loaded and saved again, keeping an old copy): the weight it is
            if master is None or not torch.equal(_local(master).to(p.dtype), _local(p.detach())):
                stale += master is not None
                state["master"] = p.detach().to(torch.float32, copy=True)
        if stale:
            warnings.warn(f"{stale} float32 master copies in the optimizer's state do not "
                          "round to their weights (saved by another optimizer): they start "
                          "again from the weights", stacklevel=2)


def _local(t: torch.Tensor) -> torch.Tensor:
    """A sharded tensor's own shard (no collective), else the tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


def without_masters(state_dict: dict) -> dict:
    """An optimizer state without MasterAdamW's float32 copies, for torch's AdamW (which
    would keep them, unused, in bf16, and save them again)."""
    return {**state_dict, "state": {i: {k: v for k, v in s.items() if k != "master"}
                                    for i, s in state_dict.get("state", {}).items()}}
