"""Speed does not change results: r1kit's lean forward (r1kit/lean.py) against transformers'.

The fast paths checked here: the lean training pass (right-padded, length-sorted rows) against
transformers' packed forward, and with prompt sharing (each prompt run once for the completions
that continue it) against the lean pass without it; the lean decoder (preallocated cache, fused
projections, grouped-head attention, prefix shared by a group) against transformers' generate
loop; and a whole update (loss, metrics, updated weights) through either path.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_llama
from transformers import (
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

import r1kit.lean as lean_module
import r1kit.stages.grpo as grpo_module
from r1kit.config import GRPOConfig
from r1kit.lean import LeanLM
from r1kit.rollout import generate
from r1kit.stages.grpo import (
    TrainBatch,
    completion_logprobs,
    update_policy,
    wants_prompt_sharing,
)

EOS, PAD = 1, 0


def _qwen2():
    torch.manual_seed(0)  # grouped heads (4 query, 2 kv) and q/k/v biases
    cfg = Qwen2Config(vocab_size=48, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                      eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=True)
    m = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for layer in m.model.layers:  # non-zero biases, so that a dropped bias would show
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                lin.bias.normal_(0, 0.5)
    return m


def _llama():
    return tiny_llama(seed=1, eos=EOS, pad=PAD)


def _qwen3():
    torch.manual_seed(2)  # per-head RMSNorm of queries and keys, grouped heads (6 query, 2 kv)
    cfg = Qwen3Config(vocab_size=44, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
                      num_key_value_heads=2, head_dim=8, intermediate_size=64,
                      max_position_embeddings=128, eos_token_id=EOS, pad_token_id=PAD)
    m = Qwen3ForCausalLM(cfg)
    with torch.no_grad():
        for layer in m.model.layers:  # norm weights other than 1, so that a misplaced one shows
            layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
            layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
    return m


MODELS = {"qwen2": _qwen2, "llama": _llama, "qwen3": _qwen3}

def _stopping_reference(model):
    """Prompts, seeds and transformers' samples (30 new tokens, 4 per prompt) from `model`
    made likelier to stop, so that rows end at many different lengths."""
    with torch.no_grad():
        model.lm_head.weight[EOS] += 0.2
    prompts, _ = _data(model.config.vocab_size, seed=11)
    seeds = [31, 32, 33, 34, 35]  # (rows that stop at many lengths in every model)
    return prompts, seeds, generate(model, prompts, group_size=4, max_new_tokens=30,
                                    temperature=1.0, stop_ids=[EOS], pad_id=PAD, seeds=seeds,
                                    engine="hf")

def _batch(prompts, completions) -> TrainBatch:
    """A training batch of these sequences, advantages spread over [-1, 1]."""
    n, width = len(completions), max(len(c) for c in completions)
    mask = torch.zeros(n, width)
    for i, c in enumerate(completions):
        mask[i, :len(c)] = 1
    return TrainBatch(prompts, completions, mask, torch.linspace(-1, 1, n), width)


def _data(vocab: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(2, vocab, (n,), generator=g).tolist() for n in (3, 7, 5, 4, 6)]
    completions = [torch.randint(2, vocab, (n,), generator=g).tolist() for n in (6, 2, 9, 4, 1)]
    return prompts, completions


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("checkpoint_layers", [False, True])
def test_lean_training_pass_equals_transformers(arch, checkpoint_layers):
    model = MODELS[arch]()
    assert LeanLM.unsupported(model) is None
    prompts, completions = _data(model.config.vocab_size)
    width = max(len(c) for c in completions)
    results = []
    for lean in (None, LeanLM(model)):
        model.zero_grad(set_to_none=True)
        lp, ent = completion_logprobs(model, prompts, completions, 0.7, width, PAD,
                                      with_entropy=True, lean=lean,
                                      checkpoint_layers=checkpoint_layers)
        lp.sum().backward()
        results.append((lp.detach(), ent, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (lp0, ent0, g0), (lp1, ent1, g1) = results
    assert lp0.abs().sum() > 0
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent1, ent0, atol=1e-5, rtol=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("checkpoint_layers", [False, True])
@pytest.mark.parametrize("cuda_arrangement", [False, True])
def test_prompt_sharing_gives_the_same_logprobs_and_gradients(arch, checkpoint_layers,
                                                              cuda_arrangement, monkeypatch):
    """Prompts of different lengths, each continued by completions of different lengths (one of
    a single token), in an interleaved order; each prompt runs once in the shared pass.
    `cuda_arrangement`: the masked attention as on CUDA (a key/value head per query head, the
    kernel choice restricted), run here on the CPU."""
    monkeypatch.setattr(lean_module, "_cuda_masked_attention", lambda x: cuda_arrangement)
    model = MODELS[arch]()
    base_prompts, completions = _data(model.config.vocab_size, seed=5)
    prompts = [base_prompts[i] for i in (0, 1, 0, 2, 1, 0, 3, 3, 2, 4, 4, 4)]
    g = torch.Generator().manual_seed(6)
    completions = [torch.randint(2, model.config.vocab_size, (n,), generator=g).tolist()
                   for n in (5, 3, 8, 1, 6, 2, 4, 7, 3, 9, 1, 4)]
    width = max(len(c) for c in completions) + 2  # wider than any completion
    lean = LeanLM(model)
    results = []
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        lp, ent = completion_logprobs(model, prompts, completions, 0.8, width, PAD,
                                      with_entropy=True, lean=lean,
                                      checkpoint_layers=checkpoint_layers, share_prompts=share)
        (lp * torch.linspace(-1, 1, lp.numel()).view_as(lp)).sum().backward()
        results.append((lp.detach(), ent, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (lp0, ent0, g0), (lp1, ent1, g1) = results
    mask = torch.zeros_like(lp0)
    for i, c in enumerate(completions):
        mask[i, :len(c)] = 1
    assert lp0.abs()[mask.bool()].min() > 0 and (lp0 * (1 - mask)).abs().max() == 0
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent1, ent0, atol=1e-5, rtol=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-4, rtol=1e-4)


def test_prompt_sharing_auto_takes_it_on_the_cpu_where_it_saves_5_percent_of_the_tokens():
    prompts = [[5] * 20] * 8 + [[6] * 20] * 8
    short, long = [[7] * 20] * 16, [[7] * 2000] * 16
    assert wants_prompt_sharing("auto", prompts, short, 16)  # 16 x 40 tokens: 2 x 20 + 16 x 20
    assert not wants_prompt_sharing("auto", prompts, long, 16)  # saves under 1%
    # a 6-token prompt x 8 completions of 64 tokens saves 7.5% (the cpu benchmark); of 112, 4.4%
    few = [[5] * 6] * 8
    assert wants_prompt_sharing("auto", few, [[7] * 64] * 8, 128)
    assert not wants_prompt_sharing("auto", few, [[7] * 112] * 8, 128)
    assert not wants_prompt_sharing("auto", [[5] * 20, [6] * 20], short[:2], 16)  # none repeats
    assert not wants_prompt_sharing("off", prompts, short, 16)
    assert wants_prompt_sharing("on", prompts, long, 16)
    # saves a tenth, but the mask of a micro-batch of 4,000-token completions would be large
    assert not wants_prompt_sharing("auto", [[5] * 600] * 16, [[7] * 4000] * 16, 16)
    # on CUDA "auto" leaves it off (the masked attention loses the flash kernels); "on" holds
    assert not wants_prompt_sharing("auto", prompts, short, 16, "cuda")
    assert wants_prompt_sharing("on", prompts, short, 16, "cuda")


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_lean_decoder_equals_transformers_generate_loop(arch):
    """Greedy decoding with stop tokens: the same tokens, stops and log-probs (at temperature 0
    both engines take the argmax, so any difference in the forward would show up as tokens)."""
    model = MODELS[arch]().eval()
    with torch.no_grad():  # make the stop token likely, so that rows finish at different steps
        model.lm_head.weight[EOS] += 0.15
    prompts, _ = _data(model.config.vocab_size, seed=5)
    kw = dict(group_size=3, max_new_tokens=14, temperature=0.0, stop_ids=[EOS], pad_id=PAD)
    a = generate(model, prompts, engine="hf", **kw)
    b = generate(model, prompts, engine="auto", **kw)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.stopped, b.stopped)
    assert a.stopped.any() and len(set(a.lengths.tolist())) > 1  # rows ended at different steps


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_lean_sampling_equals_transformers_with_seeds(arch):
    """Temperature 1, per-question seeds (each row's random numbers fixed): the same samples
    and sampling log-probs, including rows that stop early, and min_new_tokens honoured."""
    model = MODELS[arch]().eval()
    with torch.no_grad():
        model.lm_head.weight[EOS] += 0.1
    prompts, _ = _data(model.config.vocab_size, seed=7)
    seeds = [11, 12, 13, 14, 15]
    for min_new in (0, 5):
        kw = dict(group_size=4, max_new_tokens=12, temperature=1.0, stop_ids=[EOS], pad_id=PAD,
                  seeds=seeds, min_new_tokens=min_new)
        a = generate(model, prompts, engine="hf", **kw)
        b = generate(model, prompts, engine="auto", **kw)
        assert torch.equal(a.completion_ids, b.completion_ids)
        torch.testing.assert_close(b.logprobs, a.logprobs, atol=1e-5, rtol=1e-5)
        assert int(b.lengths.min()) >= min(min_new + 1, 12) if min_new else True
        assert a.stopped.any()


@pytest.mark.parametrize("prompt_sharing", ["off", "on"])
def test_one_update_is_the_same_through_either_path(prompt_sharing, monkeypatch):
    """Loss, metrics and updated weights of a GRPO update (reference model, two mini-batches,
    micro-batches, token-mean) through the lean path (with and without prompt sharing: each
    prompt here has two completions) and through transformers' path."""
    prompts, completions = _data(48, seed=9)
    prompts, completions = prompts * 2, completions[::-1] * 2
    n = len(completions)
    width = max(len(c) for c in completions)
    mask = torch.zeros(n, width)
    for i, c in enumerate(completions):
        mask[i, :len(c)] = 1
    adv = torch.linspace(-1, 1, n)
    batch = TrainBatch(prompts, completions, mask, adv, width)
    cfg = GRPOConfig(model="x", beta=0.04, lr=1.0, group_size=2, rollout_batch_size=n,
                     num_minibatches=2, micro_batch_size=3, clip_eps_low=0.2,
                     aggregation="token-mean", prompt_sharing=prompt_sharing)
    shared_passes = []
    real_shared = LeanLM.shared_hidden_states

    def counted(self, *a, **kw):
        shared_passes.append(1)
        return real_shared(self, *a, **kw)

    monkeypatch.setattr(LeanLM, "shared_hidden_states", counted)
    outs = []
    for use_lean in (False, True):
        policy = _qwen2()
        ref = copy.deepcopy(policy).eval()
        # plain SGD: the update is linear in the gradient (Adam would magnify float noise in
        # near-zero gradients to a full step)
        opt = torch.optim.SGD(policy.parameters(), lr=cfg.lr)
        views = (LeanLM(policy), LeanLM(ref)) if use_lean else (None, None)
        metrics = update_policy(policy, ref, opt, batch, cfg, PAD,
                                torch.Generator().manual_seed(0), lambda: cfg.lr, *views)
        outs.append((metrics, {k: v.detach().clone() for k, v in policy.state_dict().items()}))
    (m0, w0), (m1, w1) = outs
    # with sharing on, the micro-batches that hold both completions of a prompt share it
    assert (len(shared_passes) > 0) == (prompt_sharing == "on")
    for key in ("loss", "kl", "clip_frac", "entropy", "grad_norm"):
        assert m1[key] == pytest.approx(m0[key], rel=1e-4, abs=1e-6), key
    moved = max((w0[k] - _qwen2().state_dict()[k]).abs().max().item() for k in w0)
    assert moved > 1e-3  # the update did something, so equality below means something
    for k in w0:
        torch.testing.assert_close(w1[k], w0[k], atol=1e-5, rtol=1e-4)


def _policy_and_other_reference():
    """A policy and a reference that differs from it, so that kl is not 0."""
    policy, ref = _qwen2(), _qwen2().eval()
    with torch.no_grad():
        ref.lm_head.weight.mul_(1.5)
    return policy, ref


@pytest.mark.parametrize("aggregation", ["seq-mean-token-mean", "token-mean"])
def test_update_metrics_do_not_depend_on_the_micro_batches(aggregation):
    """micro_batch_size changes memory, not what is logged: the token-mean diagnostics (kl,
    entropy, clip_frac, ratio_mean) are means over the mini-batch's tokens however it is cut
    (they were weighted by sequences under seq-mean-token-mean), and the losses too."""
    prompts, completions = _data(48, seed=9)
    n = len(completions)
    batch = _batch(prompts, completions)
    logged = []
    for micro in (1, 3, n):
        cfg = GRPOConfig(model="x", beta=0.04, lr=1.0, group_size=2, rollout_batch_size=n,
                         num_minibatches=1, micro_batch_size=micro, aggregation=aggregation,
                         ref_refresh_every=0)
        policy, ref = _policy_and_other_reference()
        opt = torch.optim.SGD(policy.parameters(), lr=cfg.lr)
        logged.append(update_policy(policy, ref, opt, batch, cfg, PAD,
                                    torch.Generator().manual_seed(0), lambda: 1.0))
    assert logged[0]["kl"] > 1e-3
    for m in logged[1:]:
        for key in ("kl", "entropy", "clip_frac", "ratio_mean", "loss", "grad_norm"):
            assert m[key] == pytest.approx(logged[0][key], rel=1e-4, abs=1e-7), key


def test_reference_and_old_logprobs_in_larger_no_grad_passes_change_nothing(monkeypatch):
    """logprob_micro_batch_size (rows per no-grad pass of the reference's and the old policy's
    log-probs) changes speed, not the update: loss, metrics and weights agree for passes of 1,
    3 and all rows, with two epochs (old-policy log-probs in use). The
    reference runs once per rollout, not once per micro-batch of every epoch."""
    prompts, completions = _data(48, seed=9)
    n = len(completions)
    batch = _batch(prompts, completions)
    outs = []
    for rows in (1, 3, n):
        cfg = GRPOConfig(model="x", beta=0.04, lr=1.0, group_size=5, rollout_batch_size=n,
                         num_minibatches=1, ppo_epochs=2, micro_batch_size=2, clip_eps_low=0.2,
                         aggregation="token-mean", ref_refresh_every=0,
                         logprob_micro_batch_size=rows)
        policy, ref = _policy_and_other_reference()
        views = (LeanLM(policy), LeanLM(ref))
        passes = {"policy": 0, "ref": 0}
        real = LeanLM.hidden_states

        def counted(self, *a, _views=views, _passes=passes, _real=real, **kw):
            if not torch.is_grad_enabled():
                _passes["policy" if self is _views[0] else "ref"] += 1
            return _real(self, *a, **kw)

        monkeypatch.setattr(LeanLM, "hidden_states", counted)
        opt = torch.optim.SGD(policy.parameters(), lr=cfg.lr)
        metrics = update_policy(policy, ref, opt, batch, cfg, PAD,
                                torch.Generator().manual_seed(0), lambda lr=cfg.lr: lr, *views)
        monkeypatch.setattr(LeanLM, "hidden_states", real)
        # one no-grad pass over the rollout for each model, in passes of `rows`
        assert passes == {"policy": -(-n // rows), "ref": -(-n // rows)}, rows
        outs.append((metrics, {k: v.detach().clone() for k, v in policy.state_dict().items()}))
    (m0, w0) = outs[0]
    assert m0["kl"] > 1e-4 and m0["clip_frac"] >= 0
    moved = max((w0[k] - _qwen2().state_dict()[k]).abs().max().item() for k in w0)
    assert moved > 1e-3
    for m, w in outs[1:]:
        for key in ("loss", "kl", "clip_frac", "ratio_mean", "entropy", "grad_norm"):
            assert m[key] == pytest.approx(m0[key], rel=1e-4, abs=1e-6), key
        for k in w0:
            torch.testing.assert_close(w[k], w0[k], atol=1e-5, rtol=1e-4)


def test_logprob_rows_auto_is_the_micro_batch():
    from r1kit.stages.grpo import logprob_rows

    assert logprob_rows("auto", 32) == 32 and logprob_rows(128, 32) == 128


def test_models_the_lean_path_does_not_cover_are_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=1, n_head=2))
    assert "gpt2" in LeanLM.unsupported(gpt2)
    model = _qwen2()
    model.config.use_sliding_window = True
    assert "sliding" in LeanLM.unsupported(model)
    # such a model still generates, through transformers' forward
    ro = generate(gpt2.eval(), [[3, 4, 5]], group_size=2, max_new_tokens=4, temperature=1.0,
                  stop_ids=[EOS], pad_id=PAD, generator=torch.Generator().manual_seed(0))
    assert ro.completion_ids.shape[0] == 2


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_graph_path_logic_equals_transformers(arch, monkeypatch):
    """The CUDA-graph path's logic (attention over the static cache up to a length bucket with
    a key mask, batch-size buckets, finished rows dropped only every 8 steps and only when a
    smaller bucket fits) run eagerly on CPU: the same samples as transformers' loop."""
    import r1kit.rollout
    from r1kit.rollout import LeanDecoder, _generate_lean

    monkeypatch.setattr(r1kit.rollout, "LENGTH_BUCKET", 8)  # several length buckets
    model = MODELS[arch]().eval()
    prompts, seeds, ref = _stopping_reference(model)
    dec = LeanDecoder(LeanLM(model), cuda_graphs=True, simulate_graphs=True)
    dec_graphs = []
    real_capture = dec._capture
    dec._capture = lambda b, attend: dec_graphs.append((b, attend)) or real_capture(b, attend)
    ids, mask, logps, stopped = _generate_lean(dec, prompts, 4, 30, 0, 1.0, 1.0, [EOS], PAD,
                                               None, torch.device("cpu"), seeds)
    assert stopped.any()
    assert len(set(mask.sum(-1).tolist())) > 3  # many different lengths: several buckets
    assert len({a for _, a in dec_graphs}) > 3 and len({b for b, _ in dec_graphs}) > 1
    assert torch.equal(ids, ref.completion_ids)
    assert torch.equal(stopped, ref.stopped)
    torch.testing.assert_close(logps, ref.logprobs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("graphs", [False, True])
def test_the_cache_grows_as_rows_get_longer(graphs, monkeypatch):
    """The cache and the token buffers start with room for FIRST_WIDTH new tokens and double
    when a row gets there (memory follows the completions, not max_new_tokens): the samples,
    stops and log-probs of transformers' loop, eagerly and on the graph path's logic (whose
    graphs are captured again for the grown buffers)."""
    import r1kit.rollout
    from r1kit.lean import KVCache
    from r1kit.rollout import LeanDecoder, _generate_lean

    monkeypatch.setattr(r1kit.rollout, "FIRST_WIDTH", 3)
    monkeypatch.setattr(r1kit.rollout, "LENGTH_BUCKET", 8)
    sizes, rows = [], []
    real_grow = KVCache.grow
    monkeypatch.setattr(KVCache, "grow", lambda self, n, used, r: sizes.append(n)
                        or rows.append((r, self.k[0].shape[0])) or real_grow(self, n, used, r))
    events = []  # captures and growths, in order: graphs are captured again after a growth
    real_dec_grow, real_capture = LeanDecoder.grow, LeanDecoder._capture

    def grow(self, *a):
        real_dec_grow(self, *a)
        events.append(("grow", len(self.graphs)))

    monkeypatch.setattr(LeanDecoder, "grow", grow)
    monkeypatch.setattr(LeanDecoder, "_capture", lambda self, b, attend: events.append(
        ("capture", b)) or real_capture(self, b, attend))
    model = _qwen2().eval()
    prompts, seeds, ref = _stopping_reference(model)
    dec = LeanDecoder(LeanLM(model), cuda_graphs=graphs, simulate_graphs=graphs)
    ids, mask, logps, stopped = _generate_lean(dec, prompts, 4, 30, 0, 1.0, 1.0, [EOS], PAD,
                                               None, torch.device("cpu"), seeds)
    P = max(len(p) for p in prompts)
    longest = int(mask.sum(-1).max())
    # room for 3, 6, 12, 24, then 30 new tokens, as far as the longest row needed
    assert sizes == [P + w for was, w in ((3, 6), (6, 12), (12, 24), (24, 30)) if was < longest]
    assert len(sizes) >= 2
    assert all(r <= before for r, before in rows) and rows[-1][0] < rows[0][1]  # stopped rows let go
    grown = [i for i, e in enumerate(events) if e[0] == "grow"]
    assert all(events[i][1] == 0 for i in grown)  # every graph of the old buffers dropped
    if graphs:  # and captured anew for the grown ones before the next step
        assert all(events[i + 1][0] == "capture" for i in grown)
    assert stopped.any() and torch.equal(ids, ref.completion_ids)
    assert torch.equal(stopped, ref.stopped)
    torch.testing.assert_close(logps, ref.logprobs, atol=1e-5, rtol=1e-5)


def test_running_out_of_memory_while_sampling_names_the_settings(monkeypatch):
    import r1kit.rollout
    from r1kit.errors import R1kitError

    def no_memory(*a, **kw):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                           "3358208000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(r1kit.rollout, "_decode", no_memory)
    with pytest.raises(R1kitError, match="out of memory sampling 8 rows") as err:
        generate(_qwen2().eval(), [[3, 4, 5], [6, 7]], group_size=4, max_new_tokens=5,
                 temperature=1.0, stop_ids=[EOS], pad_id=PAD)
    assert "generation_rows" in err.value.hint

    def other(*a, **kw):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(r1kit.rollout, "_decode", other)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not renamed
        generate(_qwen2().eval(), [[3, 4, 5]], group_size=2, max_new_tokens=5,
                 temperature=1.0, stop_ids=[EOS], pad_id=PAD)


@pytest.mark.parametrize("arch", ["qwen3"])  # per-head norms: the most of _cached_layer
def test_compiled_decode_layers_give_the_same_samples(arch, monkeypatch):
    """r1kit.lean.COMPILE_DECODE_LAYERS with a compiled model: each decode step's layers
    through torch.compile (aot_eager here: tracing without code generation), on the graph
    path's logic (cache slots and positions advanced by the step itself, rows dropped): the
    samples, stops and log-probs of the uncompiled decoder."""
    import r1kit.rollout
    from r1kit.rollout import LeanDecoder, _generate_lean

    calls = []
    compiled_fn = torch.compile(lean_module._cached_layer, backend="aot_eager", dynamic=None)

    def compiled_version(fn):
        assert fn is lean_module._cached_layer
        return lambda *a: calls.append(1) or compiled_fn(*a)

    monkeypatch.setattr(lean_module, "compiled_version", compiled_version)
    monkeypatch.setattr(r1kit.rollout, "LENGTH_BUCKET", 8)
    model = MODELS[arch]().eval()
    with torch.no_grad():
        model.lm_head.weight[EOS] += 0.2
    prompts, _ = _data(model.config.vocab_size, seed=11)
    outs = []
    for compiled in (False, True):
        monkeypatch.setattr(lean_module, "COMPILE_DECODE_LAYERS", compiled)
        dec = LeanDecoder(LeanLM(model, compiled), cuda_graphs=True, simulate_graphs=True)
        outs.append(_generate_lean(dec, prompts, 4, 30, 0, 1.0, 1.0, [EOS], PAD, None,
                                   torch.device("cpu"), [21, 22, 23, 24, 25]))
    (ids0, mask0, lp0, stop0), (ids1, mask1, lp1, stop1) = outs
    assert len(calls) >= 20 * model.config.num_hidden_layers  # every decode step's layers
    assert stop0.any() and torch.equal(ids1, ids0) and torch.equal(mask1, mask0)
    assert torch.equal(stop1, stop0)
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=1e-5)


def test_a_compile_failing_in_the_backward_pass_names_the_setting(monkeypatch):
    """torch.compile makes a layer's backward pass at the first backward(); where that fails,
    the update stops with an error that names compile = "off", not a bare traceback."""
    import torch._dynamo

    from r1kit.errors import R1kitError

    class BrokenBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise torch._dynamo.exc.TorchDynamoException("lowering failed\ndetails")

    def layer(*args):
        return BrokenBackward.apply(lean_module._causal_layer(*args))

    monkeypatch.setattr(lean_module, "_compiled_causal_layer", lambda: layer)
    prompts, completions = _data(48, seed=4)
    n, width = len(completions), max(len(c) for c in completions)
    mask = torch.zeros(n, width)
    for i, c in enumerate(completions):
        mask[i, :len(c)] = 1
    batch = TrainBatch(prompts, completions, mask, torch.linspace(-1, 1, n), width)
    cfg = GRPOConfig(model="x", beta=0.0, group_size=5, rollout_batch_size=n, num_minibatches=1,
                     micro_batch_size=4, compile="on")
    policy = _qwen2()
    views = grpo_module._lean_views(cfg, policy, None, SimpleNamespace(
        name="t", print=print, device=torch.device("cpu")))
    with pytest.raises(R1kitError, match="lowering failed") as info:
        update_policy(policy, None, torch.optim.SGD(policy.parameters(), lr=0.1), batch, cfg,
                      PAD, torch.Generator().manual_seed(0), lambda: 0.1, *views)
    assert 'compile = "off"' in str(info.value.hint)


def test_swiglu_that_keeps_less_gives_the_same_gradients():
    from r1kit.lean import _SwiGLU  # used on CUDA, where its memory matters

    g = torch.Generator().manual_seed(4)
    gate, up, grad = (torch.randn(5, 7, generator=g, dtype=torch.float64) for _ in range(3))
    results = []
    for fn in (lambda a, b: torch.nn.functional.silu(a) * b, _SwiGLU.apply):
        a, b = gate.clone().requires_grad_(), up.clone().requires_grad_()
        out = fn(a, b)
        out.backward(grad)
        results.append((out.detach(), a.grad, b.grad))
    for x, y in zip(*results):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("merge", [False, True])
def test_lean_decoder_takes_lora_adapted_weights(merge):
    """A peft LoRA model (adapters on every projection, non-zero B, one adapter merged in the
    second case) decodes to the same seeded samples with the lean engine as with peft's
    forward; the training pass keeps transformers' forward for it."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from r1kit.rollout import lean_decoder

    model = _qwen2()
    peft_model = get_peft_model(model, LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.1, bias="none",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"]))
    with torch.no_grad():
        g = torch.Generator().manual_seed(6)
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    if merge:
        peft_model.get_base_model().model.layers[0].self_attn.q_proj.merge()
    base = peft_model.get_base_model().eval()
    assert LeanLM.unsupported(base) is not None  # training pass: transformers' forward
    assert LeanLM.unsupported(base, decoding=True) is None and lean_decoder(base) is not None
    prompts, _ = _data(base.config.vocab_size, seed=7)
    kw = dict(group_size=3, max_new_tokens=12, temperature=1.0, stop_ids=[EOS], pad_id=PAD,
              seeds=[1, 2, 3, 4, 5])
    a = generate(base, prompts, engine="hf", **kw)
    b = generate(base, prompts, engine="auto", **kw)
    assert torch.equal(a.completion_ids, b.completion_ids)
    torch.testing.assert_close(b.logprobs, a.logprobs, atol=1e-5, rtol=1e-5)
    # the adapters matter: the base weights alone sample something else
    with peft_model.disable_adapter():
        c = generate(base, prompts, engine="hf", **kw)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_compiled_decoder_layer_gives_the_same_update(monkeypatch):
    """GRPOConfig.compile: the lean training pass's decoder layer through torch.compile (here
    with the aot_eager backend: dynamo's tracing and autograd without code generation, which
    needs a compiler) gives the loss, metrics and updated weights of the eager pass, with
    activation checkpointing, on two shapes (a recompile). The reference's no-grad passes
    take a compiled function of their own."""
    compiled_fn = torch.compile(lean_module._causal_layer, backend="aot_eager")
    no_grad_fn = torch.compile(lean_module._causal_layer_no_grad, backend="aot_eager")
    calls, no_grad_calls = [], []

    def compiled_layer():
        calls.append(torch.is_grad_enabled())
        return compiled_fn

    def compiled_no_grad():
        no_grad_calls.append(torch.is_grad_enabled())
        return no_grad_fn

    monkeypatch.setattr(lean_module, "_compiled_causal_layer", compiled_layer)
    monkeypatch.setattr(lean_module, "_compiled_causal_layer_no_grad", compiled_no_grad)
    prompts, completions = _data(48, seed=4)
    n = len(completions)
    batch = _batch(prompts, completions)
    outs = []
    for compiled in (False, True):
        cfg = GRPOConfig(model="x", beta=0.04, lr=1.0, group_size=5, rollout_batch_size=n,
                         num_minibatches=1, micro_batch_size=3, clip_eps_low=0.2,
                         activation_checkpointing=True, compile=compiled)
        policy = _qwen2()
        ref = copy.deepcopy(policy).eval()
        opt = torch.optim.SGD(policy.parameters(), lr=cfg.lr)
        views = grpo_module._lean_views(cfg, policy, ref, SimpleNamespace(
            name="t", print=print, device=torch.device("cpu")))
        assert [v.compiled for v in views] == [compiled, compiled]
        metrics = update_policy(policy, ref, opt, batch, cfg, PAD,
                                torch.Generator().manual_seed(0), lambda lr=cfg.lr: lr, *views)
        outs.append((metrics, {k: v.detach().clone() for k, v in policy.state_dict().items()}))
    (m0, w0), (m1, w1) = outs
    # the compiled layers ran: the policy's with gradients, the reference's without (2
    # layers, 2 micro-batches at least)
    assert len(calls) >= 2 * 2 and all(calls)
    assert len(no_grad_calls) >= 2 * 2 and not any(no_grad_calls)
    for key in ("loss", "kl", "entropy", "grad_norm"):
        assert m1[key] == pytest.approx(m0[key], rel=1e-5, abs=1e-7), key
    for k in w0:
        torch.testing.assert_close(w1[k], w0[k], atol=1e-6, rtol=1e-5)


def test_zero_weight_passes_read_a_computed_reference(monkeypatch):
    """Under torchrun a rank with no member in a mini-batch makes zero-weight passes over its
    row 0 (every rank makes as many passes). Their reference log-probs are row 0's own,
    computed before the updates: zeros there would make kl's expm1 overflow for a very
    unlikely token, and inf times a zero weight is NaN."""
    prompts, completions = _data(48, seed=9)
    n = len(completions)
    batch = _batch(prompts, completions)
    batch.first, batch.total = n, 2 * n  # this rank: the second half of the rollout
    cfg = GRPOConfig(model="x", beta=0.04, lr=1.0, group_size=5, rollout_batch_size=2 * n,
                     num_minibatches=2, micro_batch_size=2, aggregation="token-mean",
                     ref_refresh_every=0)
    policy, ref = _policy_and_other_reference()
    calls = []
    real = grpo_module.completion_logprobs

    def recorded(model, prompts, *args, **kwargs):
        out = real(model, prompts, *args, **kwargs)
        if model is ref:
            calls.append(len(prompts))
        return out

    monkeypatch.setattr(grpo_module, "completion_logprobs", recorded)
    metrics = update_policy(policy, ref, torch.optim.SGD(policy.parameters(), lr=cfg.lr),
                            batch, cfg, PAD, torch.Generator().manual_seed(3), lambda: 1.0)
    assert calls[0] == 1  # row 0 first, alone
    assert sum(calls[1:]) == n  # then each row once, as its mini-batch comes
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
