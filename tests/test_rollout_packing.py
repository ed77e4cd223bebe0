"""The rollout engine and the packed training pass agree with plain, unbatched forwards."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from r1kit.packing import first_fit, pack
from r1kit.rollout import MULTINOMIAL_MAX_VOCAB, generate, race_sample, sample_tokens
from r1kit.stages.grpo import completion_logprobs, make_batch

EOS, PAD = 1, 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                      eos_token_id=EOS, pad_token_id=PAD)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # make the stop token likely so that rows finish at different steps
        m.lm_head.weight[EOS] *= 3
        m.lm_head.weight[EOS] += 0.3
    return m


def unbatched_logprobs(model, prompt, completion, temperature=1.0):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion]), use_cache=False).logits[0]
        logp = torch.log_softmax(logits.float() / temperature, -1)
    return torch.stack([logp[len(prompt) - 1 + j, t] for j, t in enumerate(completion)])


@pytest.mark.parametrize("chunk,temperature", [(1, 0.7), (4, 0.7), (1000, 0.7), (4, 1.0)])
def test_chunked_output_layer_gives_the_same_logprobs_entropy_and_gradients(model, chunk,
                                                                            temperature):
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(2, 40, (n,), generator=g).tolist() for n in (3, 7, 5, 4)]
    completions = [torch.randint(2, 40, (n,), generator=g).tolist() for n in (6, 2, 9, 4)]
    mask = torch.zeros(4, 9)
    for i, c in enumerate(completions):
        mask[i, :len(c)] = 1
    results = []
    for chunk_tokens in (0, chunk):  # 0 = the plain path with the full logits
        model.zero_grad(set_to_none=True)
        lp, ent = completion_logprobs(model, prompts, completions, temperature, 9, PAD,
                                      with_entropy=True, chunk_tokens=chunk_tokens)
        ((lp * mask).sum() / mask.sum()).backward()
        results.append((lp.detach(), ent, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (lp0, ent0, g0), (lp1, ent1, g1) = results
    torch.testing.assert_close(lp1, lp0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent1, ent0, atol=1e-5, rtol=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-5, rtol=1e-4)
    model.zero_grad(set_to_none=True)


@pytest.fixture
def aot_compiled(monkeypatch):
    """r1kit's compiled functions through torch.compile's aot_eager backend (dynamo's tracing
    and autograd, no code generation, which would need a compiler); counts their calls."""
    import r1kit.logprobs
    import r1kit.rollout

    calls: list[str] = []

    def compiled_version(fn):
        compiled = torch.compile(fn, backend="aot_eager", dynamic=None)

        def call(*a):
            calls.append(fn.__name__)
            return compiled(*a)
        call.failed = []
        call.attempt = call
        return call

    for module in (r1kit.logprobs, r1kit.rollout):
        monkeypatch.setattr(module, "compiled_version", compiled_version)
    return calls


@pytest.mark.parametrize("temperature,bias", [(1.0, False), (0.7, True)])
def test_compiled_output_layer_gives_the_same_logprobs_entropy_and_gradients(
        aot_compiled, temperature, bias):
    """ChunkedHeadLogp's `fused` path (r1kit's `compile`: each chunk's softmax work compiled,
    in the weights' dtype) against its eager path: log-probs, entropy and the gradients of the
    hidden states, weights and bias, over several chunks and a shorter last one. The compiled
    forward pass takes twice the chunk's positions at a time (one [C, V] tensor where the
    backward pass holds two): 23 positions in chunks of 8 are 2 forward calls, 3 backward."""
    from r1kit.logprobs import ChunkedHeadLogp

    g = torch.Generator().manual_seed(5)
    h0 = torch.randn(23, 16, generator=g)
    w0 = torch.randn(50, 16, generator=g) * 0.5
    b0 = torch.randn(50, generator=g) if bias else None
    targets = torch.randint(0, 50, (23,), generator=g)
    upstream = torch.randn(23, generator=g)
    results = []
    for fused in (False, True):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        b = b0.clone().requires_grad_() if bias else None
        lp, ent = ChunkedHeadLogp.apply(h, w, b, targets, temperature, 8, True, fused)
        (lp * upstream).sum().backward()
        results.append([lp.detach(), ent, h.grad, w.grad] + ([b.grad] if bias else []))
    assert aot_compiled.count("softmax_stats") == 2 and aot_compiled.count("logits_grad") == 3
    for x, y in zip(*results):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)
    assert results[0][2].abs().max() > 1e-3  # gradients that mean something


def test_compiled_race_sampling_draws_the_same_tokens(aot_compiled):
    """race_sample's compiled arithmetic (race_winners) picks the tokens of the eager race from
    the same draws, banned tokens never."""
    logits = torch.randn(64, 300, generator=torch.Generator().manual_seed(1)).bfloat16()
    banned = torch.tensor([3, 7])
    eager = race_sample(logits, 0.8, torch.Generator().manual_seed(2), banned)
    compiled = race_sample(logits, 0.8, torch.Generator().manual_seed(2), banned, compiled=True)
    assert aot_compiled == ["race_winners"]
    assert torch.equal(compiled, eager) and not torch.isin(eager, banned).any()


def test_a_compile_that_fails_warns_once_and_runs_uncompiled(monkeypatch):
    """compile = auto / on where torch.compile cannot work (no Triton for the GPU, no C++
    compiler): a warning, then the function's own numbers, not a crash."""
    import torch._dynamo

    import r1kit.logprobs
    from r1kit.logprobs import ChunkedHeadLogp

    def broken_compile(fn, **kw):
        def run(*a):
            raise torch._dynamo.exc.TorchDynamoException("no compiler here\nmore lines")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    r1kit.logprobs.compiled_version.cache_clear()
    try:
        stats = r1kit.logprobs.compiled_version(r1kit.logprobs.softmax_stats)
        logits, targets = torch.randn(3, 9), torch.tensor([1, 4, 8])
        with pytest.warns(RuntimeWarning, match="softmax_stats failed.*no compiler here"):
            first = stats(logits, targets, 1.0, True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once
            again = stats(logits, targets, 1.0, True)
        # the chunked output layer then takes its uncompiled path, in chunks of its size (the
        # compiled forward pass would take twice as many positions per chunk)
        assert stats.failed
        chunks = []
        real_scaled = r1kit.logprobs.scaled_logits
        monkeypatch.setattr(r1kit.logprobs, "scaled_logits",
                            lambda h, *a: chunks.append(h.shape[0]) or real_scaled(h, *a))
        h0, w0 = torch.randn(5, 4), torch.randn(9, 4)
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        with pytest.warns(RuntimeWarning, match="logits_grad failed"):
            lp, _ = ChunkedHeadLogp.apply(h, w, None, torch.arange(5), 1.0, 2, False, True)
            lp.sum().backward()
        assert chunks[:3] == [2, 2, 1]  # the forward pass: chunks of 2, uncompiled
        hr, wr = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        want = torch.log_softmax(hr @ wr.t(), -1)[torch.arange(5), torch.arange(5)]
        want.sum().backward()
        torch.testing.assert_close(lp, want.detach())
        torch.testing.assert_close(h.grad, hr.grad)
        torch.testing.assert_close(w.grad, wr.grad)
    finally:
        r1kit.logprobs.compiled_version.cache_clear()
    want = r1kit.logprobs.softmax_stats(logits, targets, 1.0, True)
    for x in (first, again):
        torch.testing.assert_close(x[0], want[0])
        torch.testing.assert_close(x[1], want[1])


def test_a_compile_failing_inside_the_output_layer_goes_on_with_smaller_chunks(monkeypatch):
    """Where compiling fails in the middle of ChunkedHeadLogp's first fused call, the call goes
    on uncompiled from there with half the chunk (the uncompiled path holds float32 [C, V]
    probabilities beside the logits: about twice the bytes per position), and gives the
    eager path's numbers; the failing chunk is not computed uncompiled at the compiled size."""
    import torch._dynamo

    import r1kit.logprobs
    from r1kit.logprobs import ChunkedHeadLogp

    def broken_compile(fn, **kw):
        def run(*a):
            raise torch._dynamo.exc.TorchDynamoException("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    chunks = []
    real_scaled = r1kit.logprobs.scaled_logits
    monkeypatch.setattr(r1kit.logprobs, "scaled_logits",
                        lambda h, *a: chunks.append(h.shape[0]) or real_scaled(h, *a))
    r1kit.logprobs.compiled_version.cache_clear()
    g = torch.Generator().manual_seed(3)
    h0, w0 = torch.randn(11, 4, generator=g), torch.randn(9, 4, generator=g)
    targets = torch.randint(0, 9, (11,), generator=g)
    try:
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        with pytest.warns(RuntimeWarning, match="softmax_stats failed"):
            lp, _ = ChunkedHeadLogp.apply(h, w, None, targets, 1.0, 4, False, True)
        assert chunks == [2] * 5 + [1]  # forward: compiled would take 8; uncompiled 4 // 2
        chunks.clear()
        with pytest.warns(RuntimeWarning, match="logits_grad failed"):
            lp.sum().backward()
        assert chunks == [2] * 5 + [1]  # backward: compiled 4; uncompiled 4 // 2
    finally:
        r1kit.logprobs.compiled_version.cache_clear()
    hr, wr = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    want = torch.log_softmax(hr @ wr.t(), -1)[torch.arange(11), targets]
    want.sum().backward()
    torch.testing.assert_close(lp, want.detach())
    torch.testing.assert_close(h.grad, hr.grad)
    torch.testing.assert_close(w.grad, wr.grad)


def test_an_optimizer_checkpoint_keeps_this_processs_kernel_choice():
    """A checkpoint's AdamW state written with another kernel choice (fused on a GPU, or
    foreach) loads into this process's optimizer without its kernel flags: the moments and
    steps are the checkpoint's, the kernel stays this process's."""
    from r1kit import distributed

    model = torch.nn.Linear(3, 2)
    saved = torch.optim.AdamW(model.parameters(), lr=0.1, foreach=True)
    model(torch.randn(4, 3)).sum().backward()
    saved.step()
    state = saved.state_dict()
    opt = distributed.adamw(model.parameters(), lr=0.1)
    distributed.load_optimizer_state(model, opt, state)
    assert opt.param_groups[0]["foreach"] is None and opt.param_groups[0]["fused"] is None
    assert state["param_groups"][0]["foreach"] is True  # the checkpoint itself is left alone
    for p in model.parameters():
        torch.testing.assert_close(opt.state[p]["exp_avg"], saved.state[p]["exp_avg"])


@pytest.mark.parametrize("engine", ["auto", "hf"])
def test_no_new_tokens_gives_empty_completions(model, engine):
    ro = generate(model, [[5, 6, 7], [8]], group_size=2, max_new_tokens=0, temperature=1.0,
                  stop_ids=[EOS], pad_id=PAD, engine=engine)
    assert ro.completion_ids.shape == (4, 0) and ro.lengths.tolist() == [0, 0, 0, 0]
    ro = generate(model, [], group_size=2, max_new_tokens=4, temperature=1.0,  # no prompts
                  stop_ids=[EOS], pad_id=PAD, engine=engine)
    assert ro.completion_ids.shape == (0, 0) and ro.stopped.shape == (0,)
    assert ro.logprobs.shape == (0, 0) and ro.lengths.tolist() == []


def test_first_fit_respects_capacity():
    lengths = [5, 9, 3, 7, 2, 8, 1]
    bins = first_fit(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(7))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert first_fit([12, 3], 10)[0] == [0]  # too long for the capacity: a bin of its own


def test_packed_logprobs_equal_unbatched(model):
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, 40, (n,), generator=g).tolist() for n in (3, 7, 5, 4, 6)]
    completions = [torch.randint(2, 40, (n,), generator=g).tolist() for n in (6, 2, 9, 4, 5)]
    width = 9
    lp, ent = completion_logprobs(model, prompts, completions, 0.7, width, PAD, with_entropy=True)
    packed = pack([p + c for p, c in zip(prompts, completions)], 64, PAD)
    assert packed.input_ids.shape[0] == 1  # all five sequences share one row
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ref = unbatched_logprobs(model, p, c, 0.7)
        torch.testing.assert_close(lp[i, :len(c)], ref, atol=1e-5, rtol=1e-5)
        assert torch.all(lp[i, len(c):] == 0) and torch.all(ent[i, len(c):] == 0)
        assert torch.all(ent[i, :len(c)] > 0)


def test_rollout_logprobs_match_teacher_forcing(model):
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(2, 40, (n,), generator=g).tolist() for n in (4, 9, 6)]
    ro = generate(model, prompts, group_size=3, max_new_tokens=12, temperature=1.0,
                  stop_ids=[EOS], pad_id=PAD, generator=torch.Generator().manual_seed(3))
    assert ro.completion_ids.shape[0] == 9
    lengths = ro.lengths.tolist()
    assert len(set(lengths)) > 1  # some rows stopped early, some ran to the cap
    for i in range(9):
        n = lengths[i]
        row = ro.completion_ids[i, :n].tolist()
        if ro.stopped[i]:
            assert row[-1] == EOS and EOS not in row[:-1]
        else:
            assert n == 12 and EOS not in row
        assert torch.all(ro.completion_mask[i, n:] == 0) and torch.all(ro.completion_ids[i, n:] == PAD)
        ref = unbatched_logprobs(model, prompts[i // 3], row)
        torch.testing.assert_close(ro.logprobs[i, :n], ref, atol=1e-4, rtol=1e-4)
    batch = make_batch(ro, torch.zeros(9))
    lp, _ = completion_logprobs(model, batch.prompts, batch.completions, 1.0, batch.width, PAD)
    torch.testing.assert_close(lp, ro.logprobs, atol=1e-4, rtol=1e-4)


def test_generation_is_seeded_and_chunking_does_not_change_it(model):
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    kw = dict(group_size=2, max_new_tokens=8, temperature=1.0, stop_ids=[EOS], pad_id=PAD)
    a = generate(model, prompts, generator=torch.Generator().manual_seed(7), **kw)
    b = generate(model, prompts, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a.completion_ids, b.completion_ids)
    c = generate(model, prompts, generator=torch.Generator().manual_seed(7), max_rows=2, **kw)
    assert c.completion_ids.shape[0] == 6 and c.group_size == 2


def test_long_prompts_are_prefilled_in_chunks_with_the_same_samples(model, monkeypatch):
    import r1kit.rollout as rollout

    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(2, 40, (n,), generator=g).tolist() for n in (4, 11, 7, 9, 2)]
    kw = dict(group_size=3, max_new_tokens=10, temperature=1.0, stop_ids=[EOS], pad_id=PAD,
              seeds=[11, 12, 13, 14, 15])
    whole = generate(model, prompts, **kw)
    assert rollout.prefill_rows(5, 11, 4) == 5  # (these prompts fit one pass)
    monkeypatch.setattr(rollout, "PREFILL_TOKENS", 24)  # two prompts of 11 slots per pass
    assert rollout.prefill_rows(5, 11, 4) == 2
    parts = generate(model, prompts, **kw)
    monkeypatch.setattr(rollout, "PREFILL_SCORES", 1)  # one prompt per pass
    assert rollout.prefill_rows(5, 11, 4) == 1
    ones = generate(model, prompts, **kw)
    assert len(set(whole.lengths.tolist())) > 1
    for ro in (parts, ones):
        assert torch.equal(ro.completion_ids, whole.completion_ids)
        assert torch.equal(ro.lengths, whole.lengths)
        torch.testing.assert_close(ro.logprobs, whole.logprobs, atol=1e-5, rtol=1e-5)


def test_sampling_top_p_and_greedy():
    logits = torch.log(torch.tensor([[0.85, 0.10, 0.05]])).repeat(200, 1)
    gen = torch.Generator().manual_seed(0)
    tok, lp = sample_tokens(logits, 1.0, 0.8, gen)
    assert torch.all(tok == 0)  # the first token alone covers top_p = 0.8
    torch.testing.assert_close(lp, torch.full((200,), torch.log(torch.tensor(0.85)).item()))
    tok, _ = sample_tokens(logits, 1.0, 0.9, gen)
    assert set(tok.tolist()) == {0, 1}  # 0.85 < 0.9: the second token joins the nucleus
    tok, _ = sample_tokens(logits, 1.0, 1.0, gen)
    assert set(tok.tolist()) == {0, 1, 2}
    tok, _ = sample_tokens(logits, 0.0, 1.0, gen)
    assert torch.all(tok == 0)


@pytest.mark.parametrize("dtype,temperature", [(torch.float32, 1.0), (torch.bfloat16, 0.6)])
def test_race_sampling_draws_from_the_softmax_and_never_a_banned_token(dtype, temperature):
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 3.0, 0.5]], dtype=dtype).expand(20000, -1)
    banned = torch.tensor([4])
    gen = torch.Generator().manual_seed(0)
    tokens = race_sample(logits, temperature, gen, banned)
    freq = torch.bincount(tokens, minlength=6).float() / tokens.numel()
    want = torch.softmax(logits[0].float().index_fill(0, banned, float("-inf")) / temperature, 0)
    assert freq[4] == 0
    torch.testing.assert_close(freq, want, atol=0.015, rtol=0)


@pytest.mark.parametrize("vocab", [7, MULTINOMIAL_MAX_VOCAB])
@pytest.mark.parametrize("top_p,with_logprobs", [(1.0, False), (1.0, True), (0.95, True)])
def test_cpu_sampling_draws_from_the_softmax_and_never_a_banned_token(top_p, with_logprobs,
                                                                       vocab):
    # torch.multinomial (7 entries) or one uniform number per row inverted through the
    # cumulative distribution (the large vocabulary: entries past the seventh are impossible)
    logits = torch.full((1, vocab), float("-inf"))
    logits[0, :7] = torch.tensor([2.0, 1.0, 0.0, -1.0, 3.0, 0.5, -30.0])
    logits = logits.expand(10000, -1)
    banned = torch.tensor([4])
    gen = torch.Generator().manual_seed(0)
    tokens, lp = sample_tokens(logits, 0.7, top_p, gen, banned=banned,
                               with_logprobs=with_logprobs)
    want = torch.softmax(logits[0].index_fill(0, banned, float("-inf")) / 0.7, 0)
    if vocab > 7 and top_p == 1.0:  # the path taken: inverting at torch.rand's numbers
        u = torch.rand(10000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        cdf = want.double().cumsum(0)
        assert torch.equal(tokens, torch.searchsorted(cdf, u * cdf[-1], right=True))
    if top_p < 1.0:  # the nucleus: the fewest top tokens that cover top_p
        ranked, order = want.sort(descending=True)
        want = want * 0
        keep = order[:int((ranked.cumsum(0) < top_p).sum()) + 1]
        want[keep] = ranked[:keep.numel()] / ranked[:keep.numel()].sum()
    freq = torch.bincount(tokens, minlength=vocab).float() / tokens.numel()
    assert freq[4] == 0 and (freq[want == 0] == 0).all()
    torch.testing.assert_close(freq, want, atol=0.02, rtol=0)
    if with_logprobs:
        full = torch.log_softmax(logits[0].index_fill(0, banned, float("-inf")) / 0.7, 0)
        torch.testing.assert_close(lp, full[tokens])
    else:
        assert lp is None
    # the same generator state gives the same tokens
    again, _ = sample_tokens(logits, 0.7, top_p, torch.Generator().manual_seed(0),
                             banned=banned, with_logprobs=with_logprobs)
    assert torch.equal(tokens, again)


def test_inverse_cdf_sampling_reaches_tokens_far_below_float32_resolution():
    """A token of probability 1e-9 after most of the mass: a float32 running sum would not
    move past it (its slot would have no width, so it could never be drawn, and its share
    would go to a neighbour); the float64 sum gives each such token its own slot."""
    from r1kit.rollout import _inverse_cdf

    weights = torch.cat([torch.tensor([1.0 - 1e-6]), torch.full((1000,), 1e-9)])[None]
    js = [1, 2, 500, 1000]
    u = torch.tensor([(1.0 - 1e-6 + (j - 0.5) * 1e-9) / (1.0 - 1e-6 + 1e-6) for j in js],
                     dtype=torch.float64)  # the middle of token j's slot
    rows = weights.expand(len(js), -1)
    assert _inverse_cdf(rows, u).tolist() == js
    cdf32 = rows.cumsum(-1)  # what a float32 sum would draw there: other tokens
    assert torch.searchsorted(cdf32, (u.float() * cdf32[:, -1])[:, None],
                              right=True).squeeze(-1).tolist() != js
    assert _inverse_cdf(weights, torch.tensor([0.5], dtype=torch.float64)).item() == 0
    # a real vocabulary's size (sums within blocks of 1,024, over the blocks in float64):
    # tokens of probability ~1e-10 in the blocks after the one that holds the mass
    weights = torch.cat([torch.tensor([1.0 - 1e-6]), torch.full((10239,), 1e-6 / 10239)])
    cdf = weights.double().cumsum(0)
    js = [1024, 1500, 5000, 10239]
    u = torch.stack([(cdf[j - 1] + weights[j].double() / 2) / cdf[-1] for j in js])
    assert _inverse_cdf(weights.expand(len(js), -1), u).tolist() == js
    # bfloat16 weights are summed in float32 (bfloat16 sums would leave half of 8,192 equal
    # weights no slot); NaN weights (NaN logits) give an index in range, no crash
    u = torch.rand(4000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    even = _inverse_cdf(torch.full((4000, 8192), 1 / 8192, dtype=torch.bfloat16), u)
    assert torch.equal(even, (u * 8192).long())
    for vocab in (100, 8192):
        nan = _inverse_cdf(torch.full((2, vocab), float("nan")), u[:2])
        assert ((0 <= nan) & (nan < vocab)).all()


def test_models_that_let_packed_sequences_mix_get_one_sequence_per_row():
    """OPT lets a packed sequence attend to the ones before it in its row; the check finds
    that, and the training pass's log-probs then equal each sequence run alone."""
    from transformers import OPTConfig, OPTForCausalLM

    from r1kit.packing import packs_safely
    from r1kit.stages.grpo import completion_logprobs

    torch.manual_seed(0)
    opt = OPTForCausalLM(OPTConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                                   ffn_dim=64, num_attention_heads=4, word_embed_proj_dim=32,
                                   max_position_embeddings=64, dropout=0.0)).eval()
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64)).eval()
    assert not packs_safely(opt) and packs_safely(llama)
    prompts, completions = [[3, 4], [5], [6, 7, 8]], [[9, 10, 11], [12, 13], [14]]
    lp, _ = completion_logprobs(opt, prompts, completions, 1.0, 3, PAD)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        logits = opt(input_ids=torch.tensor([p + c]), use_cache=False).logits[0].float()
        alone = torch.log_softmax(logits, -1)[len(p) - 1:-1].gather(
            -1, torch.tensor(c)[:, None]).squeeze(-1)
        torch.testing.assert_close(lp[i, :len(c)], alone, atol=1e-5, rtol=1e-5)


def test_disable_dropout_makes_training_mode_deterministic():
    from transformers import GPT2Config, GPT2LMHeadModel

    from r1kit.models import disable_dropout

    torch.manual_seed(0)
    models = [GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=4,
                                         n_positions=64, resid_pdrop=0.3, embd_pdrop=0.3,
                                         attn_pdrop=0.3)),
              LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=4, intermediate_size=64,
                                           attention_dropout=0.5))]
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    for model in models:
        model.train()
        assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout is on
        disable_dropout(model)
        assert torch.equal(model(ids).logits, model(ids).logits)
        assert torch.equal(model(ids).logits, model.eval()(ids).logits)


def test_chunked_output_layer_is_left_out_where_the_logits_are_rescaled():
    """Granite divides the output layer's logits by logits_scaling: the chunked path (which
    applies the output layer itself) must not be taken, so chunked equals full logits."""
    from transformers import GraniteConfig, GraniteForCausalLM

    from r1kit.stages.grpo import completion_logprobs

    torch.manual_seed(0)
    model = GraniteForCausalLM(GraniteConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, logits_scaling=8.0)).eval()
    prompts, completions = [[3, 4], [5]], [[9, 10, 11], [12, 13]]
    full, _ = completion_logprobs(model, prompts, completions, 1.0, 3, PAD, chunk_tokens=0)
    chunked, _ = completion_logprobs(model, prompts, completions, 1.0, 3, PAD, chunk_tokens=2)
    torch.testing.assert_close(chunked, full)


def test_generation_past_a_models_learned_positions_is_an_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    from r1kit.errors import R1kitError

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=1, n_head=4,
                                      n_positions=16, eos_token_id=EOS)).eval()
    kw = dict(group_size=2, temperature=1.0, stop_ids=[EOS], pad_id=PAD)
    ro = generate(gpt2, [[5, 6, 7, 8]], max_new_tokens=12, **kw)  # 16 positions: fits
    assert ro.completion_ids.shape[0] == 2
    with pytest.raises(R1kitError, match="reach position 17, past the 16 positions"):
        generate(gpt2, [[5, 6, 7, 8]], max_new_tokens=13, **kw)


def test_generation_past_a_rotary_models_trained_positions_warns_once(monkeypatch):
    # rotary models have no hard limit, but past max_position_embeddings their samples may be
    # poor: a warning (once per process and length), the rollout goes on
    import r1kit.rollout as rollout

    monkeypatch.setattr(rollout, "_WARNED_POSITIONS", set())
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=4, intermediate_size=64,
                                         max_position_embeddings=16)).eval()
    kw = dict(group_size=2, temperature=1.0, stop_ids=[EOS], pad_id=PAD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(llama, [[5, 6, 7, 8]], max_new_tokens=12, **kw)  # 16 positions: no warning
    with pytest.warns(UserWarning, match="can reach position 20, past the model's "
                                         "16 trained positions"):
        ro = generate(llama, [[5, 6, 7, 8]], max_new_tokens=16, min_new_tokens=16, **kw)
    assert ro.completion_ids.shape == (2, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(llama, [[5, 6, 7, 8]], max_new_tokens=16, **kw)  # said once


@pytest.mark.parametrize("checkpointing", [False, True])
def test_sft_loss_in_chunks_equals_the_full_logits(model, checkpointing):
    """SFT's loss through the chunked output layer (on labelled positions only) equals
    cross-entropy over the full logits, loss and gradients, on packed rows; also with
    transformers' gradient checkpointing on."""
    from r1kit.models import checkpoint_layers
    from r1kit.stages.pretrain import packed_batch
    from r1kit.stages.sft import sft_loss

    g = torch.Generator().manual_seed(5)
    rows = [(torch.randint(2, 40, (p,), generator=g).tolist(),
             torch.randint(2, 40, (r,), generator=g).tolist()) for p, r in ((3, 5), (6, 2), (2, 7))]
    ids, pos, labels = packed_batch(rows, PAD, capacity=12)
    n_tokens = sum(len(r) for _, r in rows)
    results = []
    for chunk in (0, 4):
        model.zero_grad(set_to_none=True)
        if checkpointing:
            checkpoint_layers(model)
            model.train()
        try:
            loss = sft_loss(model, ids, pos, labels, n_tokens, chunk)
            loss.backward()
        finally:
            getattr(model, "activation_checkpointing_disable",
                    model.gradient_checkpointing_disable)()
            model.eval()
        results.append((loss.item(), {k: p.grad.clone() for k, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = results
    assert l1 == pytest.approx(l0, rel=1e-5) and l0 > 0
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=1e-4)
    model.zero_grad(set_to_none=True)
