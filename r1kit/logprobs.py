"""The output layer's log-probabilities: log p(target) at chosen positions, optionally in chunks
of positions recomputed in the backward pass, so that the [tokens, vocab] float32 logits of a
real vocabulary never exist at once. Used by the GRPO training pass and by SFT's loss."""

from __future__ import annotations

import functools
import warnings

import torch
import torch._dynamo

CHUNK_MIN_VOCAB = 32768  # smaller vocabularies: the full logits are small, no chunking
# logprob_chunk_tokens = "auto": positions per chunk of the backward pass. Compiled (`fused`),
# a chunk holds its logits and their gradient in the weights' dtype; uncompiled, also float32
# probabilities, so fewer positions. Fewer chunks launch fewer kernels: on an H200 the
# GPU preset's update (8,192 positions per micro-batch) waited for the host between chunks
# of 256 (bench/RESULTS.md, run E2).
CHUNK_AUTO = 256
CHUNK_AUTO_COMPILED = 512


def chunk_positions(setting, compiled: bool) -> int:
    """The logprob_chunk_tokens setting as a number of positions (0: full logits). `compiled`:
    the chunks' softmax work is to be compiled; where compiling has failed in this process,
    the uncompiled path's size."""
    if setting == "auto":
        failed = compiled and (compiled_version(softmax_stats).failed
                               or compiled_version(logits_grad).failed)
        return CHUNK_AUTO_COMPILED if compiled and not failed else CHUNK_AUTO
    return int(setting)


def chunk_logp(h, targets, weight, bias, temperature: float, with_entropy: bool):
    """log p(target) and the entropy (no gradient) at a few positions (plain autograd)."""
    logits = torch.nn.functional.linear(h, weight, bias).float() / temperature  # [C, V]
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets[:, None]).squeeze(-1) - lse
    if not with_entropy:
        return logp, logp.new_zeros(0)
    with torch.no_grad():
        entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logp, entropy


def scaled_logits(h, weight, bias, temperature: float) -> torch.Tensor:
    """The output layer's logits / temperature: in the weights' dtype at temperature 1 (the
    softmax kernels below read it and compute in float32), else in float32."""
    x = torch.nn.functional.linear(h, weight, bias)
    return x if temperature == 1.0 else x.float().div_(temperature)


class ChunkedHeadLogp(torch.autograd.Function):
    """log p(target) under softmax((h W^T + b) / T) at T positions, and the entropy there (no
    gradient), with the [T, vocab] logits made `chunk` positions at a time, in the forward and
    again in the backward pass: at most one chunk's logits and probabilities exist at once.

    Per chunk, the forward pass is one matrix product and one float32 log-softmax (plus an exp
    and a product for the entropy); the backward pass one product, one float32 softmax and the
    gradient written straight in the weights' dtype, d logp / d logits = (onehot - p) / T. The
    same numbers as autograd through the plain path, up to float rounding
    (tests/test_rollout_packing.py compares log-probs, entropy and gradients).

    `fused` (r1kit's `compile`): softmax_stats and logits_grad through torch.compile instead,
    each one pass over a chunk's logits in the weights' dtype (no float32 [C, V] tensors). The
    forward pass then holds one [C, V] tensor per chunk where the backward pass holds two (the
    logits and their gradient), so it takes 2 * chunk positions at a time: the same memory,
    half the chunks."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, temperature, chunk, with_entropy, fused=False):
        n = h.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=h.device)
        ent = torch.empty(n if with_entropy else 0, dtype=torch.float32, device=h.device)
        ctx.save_for_backward(h, weight, bias, targets)
        ctx.temperature, ctx.chunk, ctx.fused = temperature, chunk, fused
        ctx.mark_non_differentiable(ent)
        i = 0
        stats = compiled_version(softmax_stats) if fused else None
        if stats is not None and not stats.failed:  # one compiled pass per chunk's logits
            step = 2 * chunk
            while i < n:
                out = stats.attempt(torch.nn.functional.linear(h[i:i + step], weight, bias),
                                    targets[i:i + step], temperature, with_entropy)
                if out is None:  # compiling failed just now: the rest uncompiled, below,
                    chunk = max(1, chunk // 2)  # half the positions (float32 [C, V] too)
                    break
                logp[i:i + step] = out[0]
                if with_entropy:
                    ent[i:i + step] = out[1]
                i += step
            else:
                return logp, ent
        for j in range(i, n, chunk):  # (from where a failed compile left off)
            lsm = torch.log_softmax(scaled_logits(h[j:j + chunk], weight, bias, temperature),
                                    dim=-1, dtype=torch.float32)  # [C, V]
            logp[j:j + chunk] = lsm.gather(-1, targets[j:j + chunk, None]).squeeze(-1)
            if with_entropy:  # -sum p log p, p = exp(log p), computed in place
                ent[j:j + chunk] = lsm.exp().mul_(lsm).sum(-1).neg_()
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, _g_ent):
        h, weight, bias, targets = ctx.saved_tensors
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        T, chunk = ctx.temperature, ctx.chunk
        fused = ctx.fused and not compiled_version(logits_grad).failed
        gh = torch.empty_like(h) if want_h else None
        gw = torch.zeros_like(weight) if want_w else None
        gb = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) \
            if want_b and bias is not None else None
        coef = g_logp.float().neg() / T  # d loss / d logits = (p - onehot) * coef
        i, n = 0, h.shape[0]
        while i < n:
            hc, c = h[i:i + chunk], coef[i:i + chunk, None]
            grad = None
            if fused:
                grad = compiled_version(logits_grad).attempt(
                    torch.nn.functional.linear(hc, weight, bias), targets[i:i + chunk], c, T)
                if grad is None:  # compiling failed just now: uncompiled from here, with
                    fused = False  # half the positions (it holds float32 probabilities too)
                    chunk = max(1, chunk // 2)
                    continue
            if grad is None:
                p = torch.softmax(scaled_logits(hc, weight, bias, T), dim=-1,
                                  dtype=torch.float32)
                p[torch.arange(p.shape[0], device=p.device), targets[i:i + chunk]] -= 1.0
                grad = torch.empty(p.shape, dtype=weight.dtype, device=p.device)
                torch.mul(p, c, out=grad)  # [C, V] in the weights' dtype
                del p
            if gh is not None:
                gh[i:i + chunk] = grad @ weight
            if gw is not None:
                gw.addmm_(grad.t(), hc)
            if gb is not None:
                gb += grad.float().sum(0)
            i += chunk
        if gb is not None:
            gb = gb.to(bias.dtype)
        return (gh, gw, gb) + (None,) * (len(ctx.needs_input_grad) - 3)


def softmax_stats(logits, targets, temperature: float, with_entropy: bool):
    """Per row of logits [C, V] (any float dtype): log softmax(logits / T) at `targets`, and
    the entropy (else an empty tensor), computed in float32. ChunkedHeadLogp's forward pass
    when compiled (`fused`): one kernel reads the logits, no float32 [C, V] copy is stored."""
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    lse = torch.logsumexp(x, dim=-1)
    logp = x.gather(-1, targets[:, None]).squeeze(-1) - lse
    if not with_entropy:
        return logp, logp.new_zeros(0)
    return logp, lse - (torch.exp(x - lse[:, None]) * x).sum(-1)


def logits_grad(logits, targets, coef, temperature: float):
    """(softmax(logits / T) - onehot(targets)) * coef [C, 1], in the logits' dtype: the
    gradient of the logits in ChunkedHeadLogp's backward pass when compiled (`fused`)."""
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    hit = torch.arange(x.shape[-1], device=x.device)[None] == targets[:, None]
    return ((torch.softmax(x, dim=-1) - hit.float()) * coef).to(logits.dtype)


@functools.cache
def compiled_version(fn):
    """fn through torch.compile, made once per process. Where compiling fails (no Triton for
    this GPU, no C++ compiler, an unsupported operation), a warning says so and fn runs as it
    is from then on: the same numbers, without the speed."""
    compiled = torch.compile(fn, dynamic=None)
    failed: list[str] = []

    def attempt(*args):
        """The compiled result, or None where compiling fails (now or before)."""
        if not failed:
            try:
                return compiled(*args)
            except torch._dynamo.exc.TorchDynamoException as exc:
                failed.append(compile_failure(exc))
                warnings.warn(f"torch.compile of {fn.__name__} failed ({failed[0]}); it runs "
                              "uncompiled (compile = \"off\" avoids trying)", RuntimeWarning,
                              stacklevel=3)
        return None

    def call(*args):
        out = attempt(*args)
        return fn(*args) if out is None else out

    call.attempt = attempt  # ChunkedHeadLogp: on failure, goes on with its uncompiled chunks
    call.failed = failed  # ... and later calls take the uncompiled path's chunk size
    return call


def vocab_size(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head.weight.shape[0] if head is not None else 0


def body_and_head(model):
    """(the transformer body, the output layer) when the logits are exactly
    output_layer(body(...).last_hidden_state), else None."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, getattr(model, "base_model_prefix", ""), None)
    config = getattr(model, "config", None)
    if not isinstance(head, torch.nn.Linear) or body is None or body is model:
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    if getattr(config, "logits_scaling", 1.0) not in (None, 1, 1.0):  # Granite: logits / s
        return None
    return body, head


def compile_failure(exc: Exception) -> str:
    """A torch.compile error in one line: its type and the first line of its message."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {first}"
