"""AdamW on bf16 weights through float32 master copies (r1kit.optim).

At the paper's learning rate (3e-6) an AdamW update is far below a bf16 weight's rounding step
(1.2e-4 for a weight of 0.02): torch's AdamW applied to bf16 weights loses most updates.
MasterAdamW must update exactly as float32 AdamW would, round that into the bf16 weights, and
save and restore its float32 copies whole.
"""

from __future__ import annotations

import io

import pytest
import torch

from r1kit import distributed, optim
from r1kit.optim import MasterAdamW, keeping_master_weights

LR = 3e-6


def _weights(seed=0, shape=(64, 48)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.02


def _grads(n, shape=(64, 48), seed=1):
    g = torch.Generator().manual_seed(seed)
    drift = torch.randn(shape, generator=g)  # a direction the updates keep, and noise
    # bf16 gradients, as a bf16 model's backward pass gives
    return [(drift + 0.5 * torch.randn(shape, generator=g)).to(torch.bfloat16)
            for _ in range(n)]


def _train(param, opt, grads):
    for grad in grads:
        param.grad = grad.to(param.dtype)
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("fused", [None, True])
def test_bf16_weights_follow_float32_adamw(fused):
    grads = _grads(60)
    start = _weights().to(torch.bfloat16)
    ref = torch.nn.Parameter(start.float())  # float32 AdamW, fed the same (bf16) gradients
    _train(ref, torch.optim.AdamW([ref], lr=LR, weight_decay=0.01, fused=fused), grads)

    low = torch.nn.Parameter(start.clone())
    opt = MasterAdamW([low], lr=LR, weight_decay=0.01, fused=fused)
    _train(low, opt, grads)
    state = opt.state[low]
    assert low.dtype == torch.bfloat16
    assert {state[k].dtype for k in ("master", "exp_avg", "exp_avg_sq")} == {torch.float32}
    torch.testing.assert_close(state["master"], ref.detach(), rtol=0, atol=1e-9)
    assert torch.equal(low.detach(), ref.detach().to(torch.bfloat16))

    # the check has teeth: torch's AdamW on the bf16 weights themselves loses the updates
    plain = torch.nn.Parameter(start.clone())
    _train(plain, torch.optim.AdamW([plain], lr=LR, weight_decay=0.01, fused=fused), grads)
    moved = (ref.detach() - start.float()).abs().mean()
    plain_moved = (plain.detach().float() - start.float()).abs().mean()
    assert moved > 1e-4  # 60 updates of about 3e-6
    # (measured: 4.5% of float32's move; 89% of the weights differ from float32's rounded)
    assert plain_moved < 0.2 * moved
    assert (plain.detach() != ref.detach().to(torch.bfloat16)).float().mean() > 0.5


def test_float32_weights_update_as_torch_adamw():
    """Beside bf16 weights, float32 ones (LoRA adapters on a bf16 model) are updated in place
    by the same function as torch's AdamW: bit for bit the same."""
    grads = _grads(5)
    a = torch.nn.Parameter(_weights(2))
    b = torch.nn.Parameter(a.detach().clone())
    low = torch.nn.Parameter(_weights(3).to(torch.bfloat16))
    opt = MasterAdamW([a, low], lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1)
    for grad in grads:
        a.grad, b.grad, low.grad = grad.float(), grad.float(), grad
        opt.step()
        ref.step()
    assert torch.equal(a.detach(), b.detach())
    assert "master" not in opt.state[a] and "master" in opt.state[low]


def test_a_saved_state_resumes_with_its_float32_copies():
    """Saved after 7 updates and loaded into a new optimizer over the saved (bf16) weights:
    the next updates are the uninterrupted run's, bit for bit (the rounded weights alone would
    lose the float32 copies' low bits)."""
    grads = _grads(14)
    start = _weights().to(torch.bfloat16)
    whole = torch.nn.Parameter(start.clone())
    whole_opt = MasterAdamW([whole], lr=LR)
    _train(whole, whole_opt, grads)

    first = torch.nn.Parameter(start.clone())
    opt = MasterAdamW([first], lr=LR)
    _train(first, opt, grads[:7])
    buf = io.BytesIO()
    torch.save({"weights": first.detach(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    assert saved["optimizer"]["state"][0]["master"].dtype == torch.float32

    again = torch.nn.Parameter(saved["weights"].clone())
    opt2 = MasterAdamW([again], lr=LR)
    opt2.load_state_dict(saved["optimizer"])
    state = opt2.state[again]
    assert {state[k].dtype for k in ("master", "exp_avg", "exp_avg_sq")} == {torch.float32}
    assert not torch.equal(state["master"], again.detach().float())  # more than the weights
    _train(again, opt2, grads[7:])
    assert torch.equal(again.detach(), whole.detach())
    assert torch.equal(opt2.state[again]["master"], whole_opt.state[whole]["master"])


def test_a_plain_adamw_state_loads():
    """A checkpoint of torch's AdamW on bf16 weights (master_weights = false, or r1kit before
    master weights): its moments are taken in float32, the copies start from the weights."""
    grads = _grads(4)
    w = torch.nn.Parameter(_weights().to(torch.bfloat16))
    plain = torch.optim.AdamW([w], lr=LR)
    _train(w, plain, grads[:2])
    opt = MasterAdamW([w], lr=LR)
    opt.load_state_dict(plain.state_dict())
    state = opt.state[w]
    assert torch.equal(state["master"], w.detach().float())
    torch.testing.assert_close(state["exp_avg"], plain.state[w]["exp_avg"].float())
    assert state["exp_avg"].dtype == torch.float32
    _train(w, opt, grads[2:])
    assert state["step"].item() == 4


def test_adamw_takes_master_copies_for_bf16_weights_only():
    bf16 = [torch.nn.Parameter(_weights().to(torch.bfloat16))]
    fp32 = [torch.nn.Parameter(_weights())]
    assert type(distributed.adamw(bf16, lr=LR)) is MasterAdamW
    assert type(distributed.adamw(fp32, lr=LR)) is torch.optim.AdamW
    with keeping_master_weights(False):
        assert type(optim.adamw(bf16, lr=LR)) is torch.optim.AdamW
    assert type(optim.adamw(bf16, lr=LR)) is MasterAdamW  # the setting is put back
    with pytest.raises(ValueError, match="amsgrad"):
        MasterAdamW(bf16, lr=LR, amsgrad=True)


def test_weights_updated_in_chunks_update_as_at_once(monkeypatch):
    """The float32 gradients exist one chunk of weights at a time: the same updates."""
    grads = _grads(3)

    def run():
        ws = [torch.nn.Parameter(_weights(i).to(torch.bfloat16)) for i in range(4)]
        ws.append(torch.nn.Parameter(_weights(9)))  # a float32 weight among them
        opt = MasterAdamW(ws, lr=1e-3)
        for grad in grads:
            for w in ws:
                w.grad = grad.to(w.dtype)
            opt.step()
        return [w.detach() for w in ws] + [opt.state[w]["exp_avg_sq"] for w in ws]

    at_once = run()
    monkeypatch.setattr(optim, "_CHUNK_ELEMENTS", 64 * 48 + 1)  # two weights per chunk
    assert all(torch.equal(a, b) for a, b in zip(at_once, run()))


def test_loaded_copies_are_the_saved_tensors_not_copies():
    """A resumed run holds one optimizer state, not the checkpoint's beside its own."""
    w = torch.nn.Parameter(_weights().to(torch.bfloat16))
    opt = MasterAdamW([w], lr=LR)
    _train(w, opt, _grads(2))
    saved = opt.state_dict()
    saved = {**saved, "state": {i: {k: v.clone() for k, v in s.items()}
                                for i, s in saved["state"].items()}}
    again = MasterAdamW([w], lr=LR)
    again.load_state_dict(saved)
    for key in ("master", "exp_avg", "exp_avg_sq"):
        assert again.state[w][key] is saved["state"][0][key]


def test_a_state_torch_adamw_carried_does_not_bring_back_old_copies():
    """master_weights = true, then false, then true: torch's AdamW (the middle part) would
    keep the first part's float32 copies unused and save them again; loaded back, they would
    undo the middle part's training. distributed.load_optimizer_state hands torch's AdamW no
    copies, and a copy that does not round to its weight starts again from the weight."""
    grads = _grads(9)
    w = torch.nn.Parameter(_weights().to(torch.bfloat16))
    first = MasterAdamW([w], lr=1e-3)
    _train(w, first, grads[:3])

    plain = torch.optim.AdamW([w], lr=1e-3)
    holder = torch.nn.Module()
    holder.w = w
    distributed.load_optimizer_state(holder, plain, first.state_dict())
    assert "master" not in plain.state[w]
    # torch's own loading keeps the old copies (in bf16): such a state, trained on and saved
    carried = torch.optim.AdamW([w], lr=1e-3)
    carried.load_state_dict(first.state_dict())
    _train(w, carried, grads[3:6])
    first_end = first.state[w]["master"].clone()
    assert "master" in carried.state_dict()["state"][0]
    trained = w.detach().clone()

    last = MasterAdamW([w], lr=1e-3)
    with pytest.warns(UserWarning, match="do not round to their weights"):
        last.load_state_dict(carried.state_dict())
    assert torch.equal(last.state[w]["master"], trained.float())
    # (the middle part did move the weights: old copies would have undone that)
    assert not torch.equal(first_end.to(torch.bfloat16), trained)


def test_float32_weights_drop_copies_a_bf16_run_saved():
    w = torch.nn.Parameter(_weights().to(torch.bfloat16))
    opt = MasterAdamW([w], lr=LR)
    _train(w, opt, _grads(2))
    w32 = torch.nn.Parameter(w.detach().float())
    opt32 = MasterAdamW([w32], lr=LR)
    opt32.load_state_dict(opt.state_dict())
    assert "master" not in opt32.state[w32]
    assert opt32.state[w32]["exp_avg"].dtype == torch.float32


def test_linear_schedule_is_transformers_linear_decay():
    """lr_schedule = "linear" with final_lr_ratio 0 is transformers' linear schedule (TRL's
    default) update by update; a floor ratio stops the decay at lr * ratio."""
    from transformers import get_linear_schedule_with_warmup

    from r1kit.stages.pretrain import linear_lr

    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([weight], lr=2e-6)
    schedule = get_linear_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=7)
    theirs = []
    for _ in range(7):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert [linear_lr(u, 7, 2e-6, 0, 0.0) for u in range(7)] == pytest.approx(theirs, rel=1e-12)
    assert [linear_lr(u, 5, 1.0, 2, 0.5) for u in range(5)] == pytest.approx(
        [0.5, 1.0, 1.0, 5 / 6, 4 / 6])
