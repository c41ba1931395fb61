"""Run by `test_fsdp.py`: train a tiny fourfold decoder for a few steps, either in one process on the whole batch or
in two processes (torchrun, gloo) with `torch.distributed.fsdp.fully_shard` on every `FourfoldBlock` and the model,
each on half of every batch. Writes the per-step losses and the final full weights to OUT_DIR.

    python fsdp_script.py OUT_DIR                                          (one process)
    python -m torch.distributed.run --standalone --nproc_per_node 2 fsdp_script.py OUT_DIR     (FSDP2)

Each process's loss is its tokens' summed cross-entropy over the global token count, times the world size: FSDP
averages gradients over processes, so the update is the one-process update on the whole batch.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

import fourfold  # noqa: F401
from fourfold.configuration import get_config
from fourfold.modeling import FourfoldDecoderForCausalLM
from fourfold.modeling.layers import FourfoldBlock

STEPS, BATCH, LENGTH, VOCAB = 6, 8, 16, 211


def main(out_dir: str) -> None:
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    torch.manual_seed(0)
    model = FourfoldDecoderForCausalLM(get_config("decoder-tiny", vocab_size=VOCAB, use_cache=False)).train()
    if distributed:
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if isinstance(module, FourfoldBlock):
                fully_shard(module)
        fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    batches = torch.randint(3, VOCAB, (2, BATCH, LENGTH), generator=generator)  # two batches, seen in turn: learnable
    losses = []
    for step in range(STEPS):
        batch = batches[step % 2]
        mine = batch.chunk(world)[rank]  # this process's half of the global batch
        count = torch.tensor(BATCH * (LENGTH - 1))  # predicted tokens in the global batch
        loss = model(input_ids=mine, labels=mine, num_items_in_batch=count).loss * world
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        reported = loss.detach() / world
        if distributed:
            dist.all_reduce(reported)
        losses.append(reported.item())
    state = {
        name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach() for name, p in model.named_parameters()
    }
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        torch.save(state, os.path.join(out_dir, "weights.pt"))
        with open(os.path.join(out_dir, "losses.json"), "w") as file:
            json.dump(losses, file)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
