"""Run under torchrun (2 gloo processes) by test_distributed.py: a bf16 model sharded with FSDP2,
AdamW through float32 master copies (r1kit.optim). The master copies are saved whole (rank 0)
and load back into a new sharded model and optimizer: the next update is the same, bit for bit,
as without the interruption. The same through each rank's shard of the state (a sharded run's
checkpoints), written by every rank and read back resharded."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from r1kit import distributed
from r1kit.optim import MasterAdamW

LR = 3e-6


def build():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    distributed.shard(model)
    return model, distributed.adamw(model.parameters(), lr=LR)


def update(model, opt, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(64, (2, 16), generator=g)  # the same batch on both ranks
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad()


def main() -> int:
    distributed.init(torch.device("cpu"))
    world = distributed.current()
    model, opt = build()
    assert type(opt) is MasterAdamW
    for seed in (1, 2):
        update(model, opt, seed)
    saved = distributed.optimizer_state(model, opt)  # whole, on rank 0: saved to a file
    path = sys.argv[1]
    if world.is_main:
        torch.save(saved, path)
    distributed.wait_for_main()
    saved = torch.load(path, weights_only=True)  # as a resumed run reads it, on every rank
    shards = Path(path).with_name("optimizer-shards")  # (each rank writes its own shard)
    assert distributed.save_sharded_optimizer(model, opt, shards) == {"sharded": "optimizer"}
    weights = {n: p.full_tensor() for n, p in model.named_parameters()}  # on every rank
    update(model, opt, 3)  # the uninterrupted third update
    after = distributed.full_state(model)
    masters = {n: opt.state[p]["master"].full_tensor() for n, p in model.named_parameters()}

    model2, opt2 = build()
    distributed.load_full_state(model2, weights)
    distributed.load_optimizer_state(model2, opt2, saved)
    for n, p in model2.named_parameters():
        state = opt2.state[p]
        assert state["master"].dtype == torch.float32 and state["exp_avg"].dtype == torch.float32
        whole = state["master"].full_tensor()
        assert not torch.equal(whole, p.full_tensor().float()), n  # more than the weights
    update(model2, opt2, 3)
    again = distributed.full_state(model2)
    for n, p in model2.named_parameters():
        assert torch.equal(opt2.state[p]["master"].full_tensor(), masters[n]), n
    model3, opt3 = build()  # (from the shards)
    distributed.load_full_state(model3, weights)
    distributed.load_sharded_optimizer(model3, opt3, shards)
    update(model3, opt3, 3)
    third = distributed.full_state(model3)
    for n, p in model3.named_parameters():
        assert torch.equal(opt3.state[p]["master"].full_tensor(), masters[n]), n
    if world.is_main:
        assert after.keys() == again.keys() == third.keys()
        assert all(torch.equal(after[k], again[k]) for k in after)
        assert all(torch.equal(after[k], third[k]) for k in after)
        assert {v.dtype for v in after.values()} == {torch.bfloat16}
        print("fsdp master weights: ok")
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
