"""FSDP2 on one GPU: sharded weights sample and train exactly as plain ones.

    python bench/fsdp_check.py            # CUDA, NCCL, one rank
    DEV=cpu python bench/fsdp_check.py    # CPU, gloo

A random Llama (vocabulary 40,000, so the plain copy takes the chunked output layer and the
sharded one the model's own forward) is copied; the copy is sharded with r1kit.distributed's
FSDP2 wrapping. Both sample with per-question seeds (the sharded one inside `gathered`) and
make one GRPO rollout's updates (2 shuffled mini-batches, micro-batches of 3, token-mean)
through update_policy's multi-process branch; the tokens must be identical and the weights
equal within 1e-4. Several GPUs are checked by tests/test_distributed.py's logic on gloo.
"""
import copy
import os
import time

import torch
import torch.distributed as dist

os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29511", RANK="0", WORLD_SIZE="1")
dev = torch.device(os.environ.get("DEV", "cuda:0"))
if dev.type == "cuda":
    torch.cuda.set_device(dev)
dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
from transformers import LlamaConfig, LlamaForCausalLM

from r1kit import distributed
from r1kit.config import GRPOConfig
from r1kit.rollout import generate
from r1kit.stages.grpo import make_batch, update_policy

torch.manual_seed(0)
mc = LlamaConfig(vocab_size=40000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=512, tie_word_embeddings=False)
plain = LlamaForCausalLM(mc).to(dev)
sharded = copy.deepcopy(plain)
distributed.shard(sharded)
assert distributed.is_sharded(sharded) and not distributed.is_sharded(plain)
prompts = [[1, 5, 9, 13], [2, 7, 3]]
ros = []
for m in (plain, sharded):
    m.eval()
    t0 = time.time()
    with distributed.gathered(m):
        ro = generate(m, prompts, group_size=4, max_new_tokens=64, temperature=1.0,
                      stop_ids=[39999], pad_id=0, seeds=[11, 12])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    print("generate", type(m).__name__, f"{time.time() - t0:.2f}s", tuple(ro.completion_ids.shape))
    ros.append(ro)
assert torch.equal(ros[0].completion_ids, ros[1].completion_ids), "rollouts differ"
cfg = GRPOConfig(model="x", num_minibatches=2, rollout_batch_size=8, group_size=4,
                 micro_batch_size=3, aggregation="token-mean", beta=0.0, lr=1e-3)
adv = torch.randn(8, generator=torch.Generator().manual_seed(1))
out = []
for m in (plain, sharded):
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    batch = make_batch(ros[0], adv)
    batch.total = 8  # the multi-process branch of update_policy (collectives over one rank)
    upd = update_policy(m, None, opt, batch, cfg, 0, torch.Generator().manual_seed(0),
                        lambda: 1e-3)
    print("update", type(m).__name__, {k: round(v, 6) for k, v in upd.items() if v is not None})
    out.append(upd)
full = distributed.full_state(sharded)
ref = plain.state_dict()
assert full.keys() == ref.keys()
err = max((full[k].to(dev) - ref[k]).abs().max().item() for k in ref)
print("max weight difference after the update", err)
assert err < 1e-4 and abs(out[0]["loss"] - out[1]["loss"]) < 1e-5
dist.destroy_process_group()
print("GPU FSDP2 CHECK OK")
