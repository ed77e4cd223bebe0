"""r1kit's lean forward pass for Llama-family decoders (Llama, Qwen2, Qwen3, Mistral).

The transformers model stays the owner of the weights: this module reads its submodules and
runs the same arithmetic with fewer, larger operations, which matters for the two passes of
RL training:

- the training pass: right-padded, length-sorted rows with causal attention (no mask tensor,
  so SDPA takes its fused kernel), optional activation checkpointing per layer;
- decoding: a preallocated KV cache (no concatenation per token), attention that reads the
  grouped key/value heads without copying them per query head, and on CUDA the whole decode
  step captured once as a CUDA graph per batch size and replayed.

`LeanLM.unsupported(model)` says why a model cannot take this path (another architecture, a
sliding window, adapters wrapping the linear layers, ...); the caller then uses transformers'
own forward. The numbers are those of transformers' forward up to float rounding
(tests/test_lean.py compares logits, log-probs, losses and gradients).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from r1kit.logprobs import compiled_version

ARCHITECTURES = ("llama", "qwen2", "qwen3", "mistral")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class LeanLM:
    """A fast forward over a Hugging Face Llama-family causal LM's own weights."""

    def __init__(self, model, compiled: bool = False):
        cfg = model.config
        self.model = model
        self.body = model.model
        self.head = model.lm_head
        self.layers = list(self.body.layers)
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.scale = self.head_dim ** -0.5
        self.qk_norm = cfg.model_type == "qwen3"
        # the training pass's decoder layer through torch.compile (GRPOConfig.compile)
        self.compiled = compiled

    @staticmethod
    def unsupported(model, decoding: bool = False) -> str | None:
        """None when the lean path computes exactly what the model's own forward does, else
        the reason it does not. `decoding`: for the rollout engine, which also takes peft LoRA
        layers (it decodes with the adapted weights W + scale * B A, made at each rollout)."""
        cfg = getattr(model, "config", None)
        kind = getattr(cfg, "model_type", None)
        if kind not in ARCHITECTURES:
            return f"model type {kind!r} (lean path: {', '.join(ARCHITECTURES)})"
        own = next(c for c in type(model).__mro__ if not c.__module__.startswith("torch."))
        if not own.__module__.startswith("transformers.models."):  # FSDP's wrapper class aside
            return "model code outside transformers (its forward may differ)"
        body = getattr(model, "model", None)
        if body is None or not hasattr(body, "layers") or not hasattr(body, "rotary_emb"):
            return "unexpected module layout"
        if getattr(cfg, "mlp_bias", False):
            return "MLP biases"
        if getattr(cfg, "hidden_act", "silu") != "silu":
            return f"activation {cfg.hidden_act!r}"
        if getattr(cfg, "use_sliding_window", False) or (
                kind == "mistral" and getattr(cfg, "sliding_window", None)):
            return "sliding-window attention"
        if any(getattr(cfg, name, None) for name in ("attn_logit_softcapping",
                                                      "final_logit_softcapping")):
            return "logit soft-capping"
        if getattr(cfg, "layer_types", None) and any(
                t != "full_attention" for t in cfg.layer_types):
            return "layers other than full attention"
        if type(getattr(model, "lm_head", None)) is not torch.nn.Linear:
            return "the output layer is not a plain linear layer"
        for layer in body.layers:
            att, mlp = layer.self_attn, layer.mlp
            for lin in (att.q_proj, att.k_proj, att.v_proj, att.o_proj,
                        mlp.gate_proj, mlp.up_proj, mlp.down_proj):
                if type(lin) is not torch.nn.Linear and not (decoding and _plain_lora(lin)):
                    return "linear layers wrapped (adapters or sharding)"
        if any(type(p).__name__ == "DTensor" for p in model.parameters()):
            return "sharded parameters"
        return None

    # ----- pieces --------------------------------------------------------------------------

    def _weights(self, layer) -> LayerWeights:
        att, mlp = layer.self_attn, layer.mlp
        return LayerWeights(
            layer.input_layernorm.weight, _eps(layer.input_layernorm),
            att.q_proj.weight, att.k_proj.weight, att.v_proj.weight,
            att.q_proj.bias, att.k_proj.bias, att.v_proj.bias,
            att.q_norm.weight if self.qk_norm else None,
            att.k_norm.weight if self.qk_norm else None,
            _eps(att.q_norm) if self.qk_norm else 0.0,
            att.o_proj.weight, att.o_proj.bias,
            layer.post_attention_layernorm.weight, _eps(layer.post_attention_layernorm),
            mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)

    def _project(self, layer, h, cos, sin):
        return _project(self._weights(layer), h, cos, sin, self.n_heads, self.n_kv,
                        self.head_dim)

    def _finish(self, layer, x, o):
        return _finish(self._weights(layer), x, o)

    def _attend(self, q, k, v, **kw):
        return _attend(q, k, v, self.scale, **kw)

    def _causal_layer(self, layer, x, cos, sin):
        layer_fn = _causal_layer
        if self.compiled:  # no-grad passes (reference, old policy) compiled apart: their
            # batch sizes (logprob_micro_batch_size) leave the training pass's shapes static
            layer_fn = (_compiled_causal_layer() if torch.is_grad_enabled()
                        else _compiled_causal_layer_no_grad())
        return layer_fn(self._weights(layer), x, cos, sin, self.n_heads, self.n_kv,
                        self.head_dim, self.scale)

    # ----- the training pass -----------------------------------------------------------------

    def hidden_states(self, ids: torch.Tensor, checkpoint_layers: bool = False) -> torch.Tensor:
        """Final hidden states [B, L, H] of right-padded rows (each row one sequence from
        position 0; padding only at the end, where causal attention keeps it from every real
        token)."""
        x = self.body.embed_tokens(ids)
        positions = torch.arange(ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
        cos, sin = self.body.rotary_emb(x, positions)
        for layer in self.layers:
            x = self._run_layer(checkpoint_layers, self._causal_layer, layer, x, cos, sin)
        return _rms(self.body.norm, x)

    def _run_layer(self, checkpoint_layers, fn, *args):
        if checkpoint_layers and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def shared_hidden_states(self, ids: torch.Tensor, positions: torch.Tensor,
                             prefix_index: torch.Tensor, prefix_valid: torch.Tensor,
                             comp_index: torch.Tensor, comp_valid: torch.Tensor,
                             owner: torch.Tensor, back: torch.Tensor,
                             checkpoint_layers: bool = False) -> torch.Tensor:
        """Prompts run once, continued by several completions each (the prompt sharing of the
        training pass), without padding. ids, positions [T]: the tokens of U prompts, then of
        N completions, one after another; prefix_index [U, Lp] / comp_index [N, Lc]: where
        each prompt's / completion's tokens are in ids, right-padded (prefix_valid /
        comp_valid: True at real tokens); owner [N]: the prompt of each completion; back [T]:
        the places of the real tokens in the padded rows, prompts' then completions'
        (padded_places, made on the CPU so that the GPU is not waited for).

        The projections and the MLP run on the T tokens as one matrix (no padding). Attention
        gathers them into padded rows: causal within each prompt, and each completion's
        queries read its prompt's keys and values and its own, causally. Returns the final
        hidden states [T, H]. The same numbers as hidden_states on the concatenated rows, up
        to float rounding (tests/test_lean.py)."""
        Lp = prefix_index.shape[1]
        N, Lc = comp_index.shape
        x = self.body.embed_tokens(ids)
        cos, sin = self.body.rotary_emb(x[None], positions[None])
        cos, sin = cos[0], sin[0]  # [T, d]
        # a completion query sees its prompt's real tokens and its own tokens up to itself
        mask = torch.cat([prefix_valid.index_select(0, owner)[:, None, :].expand(N, Lc, Lp),
                          torch.ones((Lc, Lc), dtype=torch.bool, device=ids.device).tril()
                          .expand(N, Lc, Lc)], dim=-1)[:, None]  # [N, 1, Lc, Lp + Lc]
        for layer in self.layers:
            x = self._run_layer(checkpoint_layers, self._shared_layer, layer, x, cos, sin,
                                (prefix_index, comp_index, owner, mask, back))
        return _rms(self.body.norm, x)

    def _shared_layer(self, layer, x, cos, sin, layout):
        prefix_index, comp_index, owner, mask, back = layout
        q, k, v = self._project(layer, _rms(layer.input_layernorm, x), cos, sin)  # [T, ., d]

        def rows(t, index):  # [T, heads, d] → [B, heads, L, d], padding slots copy token 0
            return t.index_select(0, index.flatten()).unflatten(0, index.shape).transpose(1, 2)

        kp, vp = rows(k, prefix_index), rows(v, prefix_index)
        op = self._attend(rows(q, prefix_index), kp, vp, is_causal=True)  # [U, heads, Lp, d]
        keys = torch.cat([kp.index_select(0, owner), rows(k, comp_index)], dim=2)
        values = torch.cat([vp.index_select(0, owner), rows(v, comp_index)], dim=2)
        keys, values, kernels = _masked_attention(x, self.n_heads, keys, values)
        with kernels:
            oc = self._attend(rows(q, comp_index), keys, values, attn_mask=mask)
        o = torch.cat([op.transpose(1, 2).flatten(0, 1), oc.transpose(1, 2).flatten(0, 1)])
        return self._finish(layer, x, o.index_select(0, back).flatten(1))

    # ----- decoding with a preallocated cache ------------------------------------------------

    def new_cache(self, rows: int, length: int) -> KVCache:
        p = self.head.weight
        return KVCache(len(self.layers), rows, self.n_kv, length, self.head_dim, p.dtype, p.device)

    def decode_weights(self) -> DecodeWeights:
        """Fused copies of the projections for decoding (q|k|v and gate|up as one matrix
        each): fewer, larger kernels per token. A snapshot: made anew for each rollout."""
        return DecodeWeights(self)

    def cached_forward(self, ids: torch.Tensor, positions: torch.Tensor, cache: KVCache,
                       start, key_bias: torch.Tensor, attend: int,
                       fused: DecodeWeights) -> torch.Tensor:
        """Run tokens ids [N, q] (positions [N, q]) whose keys go to cache slots
        start .. start+q-1 (`start`: an int, or a 1-element tensor for q = 1 in a CUDA graph);
        attention reads slots 0 .. attend-1 with the additive key_bias [N, 1, q, attend]
        (0 or -inf, in the cache's dtype). Returns the last position's final hidden state
        [N, H].

        One matrix product per layer gives the queries and keys (grouped: the query heads of
        each key/value head, then that key head), the same rows rotated by half (so rotary
        embedding is two elementwise operations) and the values; see DecodeWeights. Each layer
        is _cached_layer (compiled, inside the CUDA graphs, where COMPILE_DECODE_LAYERS and the
        model's `compiled` are set)."""
        N, q = ids.shape
        nh, nkv, d = self.n_heads, self.n_kv, self.head_dim
        rep = nh // nkv
        x = self.body.embed_tokens(ids)
        cos, sin = self.body.rotary_emb(x, positions)
        cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # [N, q, 1, d]
        # the mask per (row, kv head), broadcast over the heads of a group: [N*kv, rep*q, S]
        if q == 1:
            bias = key_bias.expand(N, nkv, 1, attend).reshape(N * nkv, 1, attend)
        else:
            bias = key_bias[:, :, None].expand(N, nkv, rep, q, attend).reshape(
                N * nkv, rep * q, attend)
        compiled = (self.compiled and COMPILE_DECODE_LAYERS and q == 1
                    and isinstance(start, torch.Tensor))
        layer_fn = compiled_version(_cached_layer) if compiled else _cached_layer
        for i, w in enumerate(fused.layers):
            x = layer_fn(w, x, cos, sin, cache.k[i][:N], cache.v[i][:N], start, bias, nh, nkv,
                         d, attend, self.scale)
        return _rms(self.body.norm, x[:, -1])

    def logits(self, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The output layer; `out`: write the logits there."""
        if out is None:
            return self.head(h)
        w, b = self.head.weight, self.head.bias
        return torch.mm(h, w.t(), out=out) if b is None else torch.addmm(b, h, w.t(), out=out)


class LayerWeights(NamedTuple):
    """The tensors (and norm epsilons) of one decoder layer, for the layer functions below:
    plain tensors, so one compiled graph serves every layer."""

    in_norm: torch.Tensor
    in_eps: float
    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    q_norm: torch.Tensor | None  # Qwen3's per-head norms
    k_norm: torch.Tensor | None
    qk_eps: float
    wo: torch.Tensor
    bo: torch.Tensor | None
    post_norm: torch.Tensor
    post_eps: float
    wg: torch.Tensor
    wu: torch.Tensor
    wd: torch.Tensor


def _project(w: LayerWeights, h, cos, sin, nh: int, nkv: int, d: int):
    """h [..., H] → queries [..., heads, d], keys and values [..., kv heads, d], queries
    and keys rotated (cos, sin [..., d]). One matrix product for q|k|v, and queries and
    keys rotated together (without Qwen3's norms)."""
    weight = torch.cat([w.wq, w.wk, w.wv])
    bias = torch.cat([w.bq, w.bk, w.bv]) if w.bq is not None else None
    qkv = F.linear(h, weight, bias).unflatten(-1, (nh + 2 * nkv, d))
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    v = qkv[..., nh + nkv:, :]
    if w.q_norm is not None:
        q = F.rms_norm(qkv[..., :nh, :], (d,), w.q_norm, w.qk_eps)
        k = F.rms_norm(qkv[..., nh:nh + nkv, :], (d,), w.k_norm, w.qk_eps)
        return _rope(q, cos, sin), _rope(k, cos, sin), v
    qk = _rope(qkv[..., :nh + nkv, :], cos, sin)
    return qk[..., :nh, :], qk[..., nh:, :], v


def _finish(w: LayerWeights, x, o):
    """The layer after attention: x [..., H] plus the output projection of o [..., heads*d],
    then the MLP block."""
    x = x + F.linear(o, w.wo, w.bo)
    h = F.rms_norm(x, (x.shape[-1],), w.post_norm, w.post_eps)
    return x + F.linear(_swiglu(F.linear(h, w.wg), F.linear(h, w.wu)), w.wd)


def _attend(q, k, v, scale: float, **kw):
    return F.scaled_dot_product_attention(q, k, v, scale=scale,
                                          enable_gqa=q.shape[1] != k.shape[1], **kw)


def _causal_layer(w: LayerWeights, x, cos, sin, nh: int, nkv: int, d: int, scale: float):
    """One decoder layer on right-padded rows x [B, L, H] with causal attention."""
    B, L, _ = x.shape
    h = F.rms_norm(x, (x.shape[-1],), w.in_norm, w.in_eps)
    q, k, v = (t.transpose(1, 2) for t in _project(w, h, cos, sin, nh, nkv, d))
    o = _attend(q, k, v, scale, is_causal=True)  # [B, heads, L, d]
    return _finish(w, x, o.transpose(1, 2).reshape(B, L, -1))


def compile_wanted(mode, device: torch.device) -> bool:
    """Whether the `compile` setting (auto / on / off, or a bool) compiles on this device:
    auto = on CUDA where Triton (torch.compile's GPU code generator) is installed."""
    if mode in (True, "on"):
        return True
    if mode in (False, "off"):
        return False
    return device.type == "cuda" and importlib.util.find_spec("triton") is not None


@functools.cache
def _compiled_causal_layer():
    """_causal_layer through torch.compile, made once per process (every layer, the policy and
    the reference share it: their weights are arguments, not constants)."""
    return compiled_version(_causal_layer)


def _causal_layer_no_grad(w: LayerWeights, x, cos, sin, nh: int, nkv: int, d: int,
                          scale: float):
    """_causal_layer for no-grad passes: a function of its own, so that torch.compile keeps
    its graphs and the shapes it has seen apart from the training pass's (a second batch size
    seen by one compiled function makes it compile for any batch size)."""
    return _causal_layer(w, x, cos, sin, nh, nkv, d, scale)


@functools.cache
def _compiled_causal_layer_no_grad():
    return compiled_version(_causal_layer_no_grad)


class CachedLayerWeights(NamedTuple):
    """One decoder layer's tensors for decoding (DecodeWeights: fused copies, norms shared)."""

    in_norm: torch.Tensor
    in_eps: float
    qkv: torch.Tensor  # grouped q/k heads | the same rotated by half | v heads
    qkv_bias: torch.Tensor | None
    qk_norm: torch.Tensor | None  # Qwen3's per-head norms, in the same order
    qk_eps: float
    o: torch.Tensor
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor
    post_eps: float
    gate_up: torch.Tensor
    down: torch.Tensor
    down_bias: torch.Tensor | None


def _cached_layer(w: CachedLayerWeights, x, cos, sin, kc, vc, start, bias, nh: int, nkv: int,
                  d: int, attend: int, scale: float):
    """One decoder layer of LeanLM.cached_forward: x [N, q, H] → [N, q, H], its keys and
    values written to kc, vc [N, kv, S, d] at slots start .. start+q-1."""
    N, q, H = x.shape
    rep, A = nh // nkv, nh + nkv  # A: query and key heads
    h = F.rms_norm(x, (H,), w.in_norm, w.in_eps)
    out = F.linear(h, w.qkv, w.qkv_bias).view(N, q, 2 * A + nkv, d)
    qk, qk_rot = out[:, :, :A], out[:, :, A:2 * A]
    if w.qk_norm is not None:  # Qwen3: RMSNorm per head before the rotation
        both = F.rms_norm(out[:, :, :2 * A], (d,), eps=w.qk_eps) * w.qk_norm
        qk, qk_rot = both[:, :, :A], both[:, :, A:]
    r = torch.addcmul(qk * cos, qk_rot, sin).view(N, q, nkv, rep + 1, d)
    k = r[:, :, :, rep].transpose(1, 2)  # [N, kv, q, d]
    v = out[:, :, 2 * A:].transpose(1, 2)
    if isinstance(start, torch.Tensor):
        kc[:, :, start] = k
        vc[:, :, start] = v
    else:
        kc[:, :, start:start + q] = k
        vc[:, :, start:start + q] = v
    keys = kc[:, :, :attend].reshape(N * nkv, attend, d)
    values = vc[:, :, :attend].reshape(N * nkv, attend, d)
    # grouped heads: the rep query heads of a kv head read its keys once, no copies
    if q == 1:
        qg = r[:, 0, :, :rep].reshape(N * nkv, rep, d)
    else:
        qg = r[:, :, :, :rep].permute(0, 2, 3, 1, 4).reshape(N * nkv, rep * q, d)
    scores = torch.baddbmm(bias, qg, keys.transpose(1, 2), alpha=scale)
    # softmax computes in float32 inside and rounds its output once
    o = torch.bmm(torch.softmax(scores, dim=-1), values)  # [N*kv, rep*q, d]
    if q == 1:
        o = o.view(N, nh * d)
    else:
        o = o.view(N, nkv, rep, q, d).permute(0, 3, 1, 2, 4).reshape(N * q, nh * d)
    x = _linear_add(x.view(N * q, H), o, w.o, w.o_bias)
    h = F.rms_norm(x, (H,), w.post_norm, w.post_eps)
    gu = F.linear(h, w.gate_up)
    inner = gu.shape[-1] // 2
    x = _linear_add(x, F.silu(gu[:, :inner]) * gu[:, inner:], w.down, w.down_bias)
    return x.view(N, q, H)


# decoding's layer through torch.compile (inside the CUDA graphs) with compile on; off until
# measured on a GPU: bench/decode.py's r1kit-compiled-layers path sets it
COMPILE_DECODE_LAYERS = False


def padded_places(prefix_valid: torch.Tensor, comp_valid: torch.Tensor) -> torch.Tensor:
    """The places of the real tokens in the padded prompt rows [U, Lp] and completion rows
    [N, Lc], flattened one after the other: token order (LeanLM.shared_hidden_states)."""
    return torch.cat([prefix_valid.flatten().nonzero().squeeze(-1),
                      prefix_valid.numel() + comp_valid.flatten().nonzero().squeeze(-1)])


def _cuda_masked_attention(x: torch.Tensor) -> bool:
    """Whether attention with a mask takes CUDA's arrangement (_masked_attention): on CUDA."""
    return x.is_cuda


def _masked_attention(x: torch.Tensor, n_heads: int, keys: torch.Tensor, values: torch.Tensor):
    """Keys and values for attention with a mask, and the kernels it may use. In CUDA's
    arrangement the key/value heads are spelled out per query head (not every fused kernel
    that takes a mask takes grouped heads, and the unfused fallback would hold the
    [rows, heads, queries, keys] scores) and cuDNN's kernel is left out (with a mask, its
    backward pass in torch 2.11 on H100/H200 gives NaN query gradients for key lengths of
    64 mod 128 when a row's log-sum-exp is very negative; the memory-efficient kernel
    computes the same)."""
    if not _cuda_masked_attention(x):
        return keys, values, contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rep = n_heads // keys.shape[1]
    if rep > 1:
        keys, values = (t.repeat_interleave(rep, dim=1) for t in (keys, values))
    return keys, values, sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION,
                                      SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up, keeping gate and up for the backward pass but not silu(gate) (made
    again there): one [tokens, intermediate] tensor less per layer, the same numbers."""

    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad * up, gate), grad * F.silu(gate)


def _swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    # the memory matters on a GPU; on a CPU the extra silu costs more than the memory saves
    if gate.is_cuda and torch.is_grad_enabled() and (gate.requires_grad or up.requires_grad):
        return _SwiGLU.apply(gate, up)
    return F.silu(gate) * up


def _eps(norm) -> float:
    return getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)


def _rms(module, x: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm / Qwen2RMSNorm's arithmetic (float32 inside) as one fused operation; in
    bf16 it rounds once where transformers rounds before and after the scale."""
    return F.rms_norm(x, (x.shape[-1],), module.weight, _eps(module))


def _linear_add(x: torch.Tensor, inp: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    """x + linear(inp) for 2-D x and inp, as one matrix multiply-add where there is no bias."""
    if bias is None:
        return torch.addmm(x, inp, weight.t())
    return x + F.linear(inp, weight, bias)


def _plain_lora(lin) -> bool:
    """A peft LoRA linear layer whose output is base(x) + sum of scale * B A x over its
    active adapters (no DoRA, no adapter bias): the decoder can use W + scale * B A."""
    base = getattr(lin, "base_layer", None)
    if type(base) is not torch.nn.Linear or not hasattr(lin, "get_delta_weight"):
        return False
    for name in getattr(lin, "active_adapters", []):
        if getattr(lin, "use_dora", {}).get(name, False):
            return False
        if name in lin.lora_B and getattr(lin.lora_B[name], "bias", None) is not None:
            return False
    return True


def effective_linear(lin) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) that the layer applies: its own, or a LoRA layer's base weight plus the
    deltas of its active adapters that are not merged into it already."""
    if type(lin) is torch.nn.Linear:
        return lin.weight, lin.bias
    base = lin.base_layer
    weight = base.weight
    if not getattr(lin, "disable_adapters", False):
        merged = set(getattr(lin, "merged_adapters", []))
        for name in lin.active_adapters:
            if name in lin.lora_A and name not in merged:
                weight = weight + lin.get_delta_weight(name).to(weight.dtype)
    return weight, base.bias


class DecodeWeights:
    """Per layer, copies of the weights at the start of a rollout (a captured CUDA graph reads
    these buffers): gate|up as one matrix, and q|k|v as one matrix whose output rows are

        [grouped q/k heads | the same heads rotated by half | v heads]

    where "grouped" orders the heads as (the rep query heads of kv head 0, key head 0, the
    query heads of kv head 1, key head 1, ...), so each kv head's queries are one strided
    block (no copies for grouped attention), and "rotated by half" are the rows of
    rotate_half(W x) = (R W) x: rotary embedding becomes x * cos + x_rot * sin. For Qwen3's
    per-head RMSNorm the norm weights follow the same order (a rotation permutes a head's
    elements, which leaves its RMS alone)."""

    def __init__(self, lean: LeanLM):
        nh, nkv, d = lean.n_heads, lean.n_kv, lean.head_dim
        rep = nh // nkv

        def grouped(qt, kt):  # [nh*d, ...], [nkv*d, ...] → [(nh+nkv)*d, ...] in group order
            qt = qt.reshape(nkv, rep, d, *qt.shape[1:])
            kt = kt.reshape(nkv, 1, d, *kt.shape[1:])
            return torch.cat([qt, kt], dim=1).reshape((nh + nkv) * d, *qt.shape[3:])

        def rotated(t):  # rotate_half of each head's rows: (-second half, first half)
            t = t.reshape(-1, 2, d // 2, *t.shape[1:])
            return torch.cat([-t[:, 1:], t[:, :1]], dim=1).reshape(-1, *t.shape[3:])

        self.layers: list[CachedLayerWeights] = []
        with torch.no_grad():
            for layer in lean.layers:
                a, m = layer.self_attn, layer.mlp
                (wq, bq), (wk, bk), (wv, bv) = (effective_linear(x)
                                                for x in (a.q_proj, a.k_proj, a.v_proj))
                qk = grouped(wq, wk)
                qkv_bias = None
                if bq is not None:
                    qkb = grouped(bq, bk)
                    qkv_bias = torch.cat([qkb, rotated(qkb), bv])
                qk_norm, qk_eps = None, 1e-6
                if lean.qk_norm:
                    w = grouped(a.q_norm.weight.repeat(nh), a.k_norm.weight.repeat(nkv))
                    w = w.view(nh + nkv, d)
                    # the rotated rows' elements are the head's halves swapped (no sign: the
                    # norm scales elements, the sign stays with the rows)
                    qk_norm, qk_eps = torch.cat([w, w.roll(d // 2, dims=-1)]), _eps(a.q_norm)
                self.layers.append(CachedLayerWeights(
                    layer.input_layernorm.weight, _eps(layer.input_layernorm),
                    torch.cat([qk, rotated(qk), wv]), qkv_bias, qk_norm, qk_eps,
                    *effective_linear(a.o_proj), layer.post_attention_layernorm.weight,
                    _eps(layer.post_attention_layernorm),
                    torch.cat([effective_linear(m.gate_proj)[0], effective_linear(m.up_proj)[0]]),
                    *effective_linear(m.down_proj)))


class KVCache:
    """Keys and values of every layer, preallocated: [rows, kv_heads, length, head_dim]."""

    def __init__(self, layers, rows, heads, length, dim, dtype, device):
        shape = (rows, heads, length, dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]

    def rows(self, first: int, end: int) -> KVCache:
        """Rows first..end-1 as a cache of their own: views, so what is written there is
        written here."""
        part = KVCache.__new__(KVCache)
        part.k = [t[first:end] for t in self.k]
        part.v = [t[first:end] for t in self.v]
        return part

    def keep(self, index: torch.Tensor, length: int) -> None:
        """Move rows `index` (in order, slots 0..length-1) to the front; the rest is left
        as scratch."""
        n = index.numel()
        for t in (*self.k, *self.v):
            t[:n, :, :length] = t[:, :, :length].index_select(0, index)

    def grow(self, length: int, used: int, rows: int) -> None:
        """Room for `length` slots (more than now) in the first `rows` rows (the rest, rows
        no longer in use, let go); their slots 0..used-1 kept."""
        for t in (self.k, self.v):
            for i, old in enumerate(t):
                t[i] = old.new_zeros((rows, old.shape[1], length, old.shape[3]))
                t[i][:, :, :used] = old[:rows, :, :used]

    def repeat_prefix(self, rows: int, repeats: int, length: int) -> None:
        """Rows 0..rows-1 become rows*repeats rows, each repeated `repeats` times in place
        (slots 0..length-1)."""
        for t in (*self.k, *self.v):
            t[:rows * repeats, :, :length] = t[:rows, :, :length].repeat_interleave(repeats, 0)
