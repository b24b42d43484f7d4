"""A DDP training script as people write it, and its single-process twin.

    torchrun --nproc-per-node 2 train_ddp.py [--accumulate K] [--samples N] [--batch B]
    python train_ddp.py --single [same options]

Both see the same global batches: rank r of W takes the samples DistributedSampler gives
it; --single trains one process on the union of the ranks' batches of each step (the
same samples, DistributedSampler's padding included), with the loss averaged as DDP
averages the ranks' gradients. float64, SGD, 3 optimizer steps.
"""

import argparse

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--single", action="store_true")
parser.add_argument("--world", type=int, default=2)
parser.add_argument("--samples", type=int, default=48)
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--accumulate", type=int, default=1)
parser.add_argument("--steps", type=int, default=3)
args = parser.parse_args()
torch.set_default_dtype(torch.float64)

data = torch.Generator().manual_seed(1)
inputs = torch.randn(args.samples, 6, generator=data)
targets = (inputs @ torch.randn(6, 3, generator=data)).argmax(dim=1)  # learnable: B_simple is defined
dataset = TensorDataset(inputs, targets)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def loaders(world: int) -> list[DataLoader]:
    samplers = [DistributedSampler(dataset, num_replicas=world, rank=r, shuffle=False) for r in range(world)]
    return [DataLoader(dataset, batch_size=args.batch, sampler=s) for s in samplers]


def ddp() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = DistributedDataParallel(make_model())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(dataset, batch_size=args.batch,
                        sampler=DistributedSampler(dataset, shuffle=False, drop_last=False))
    batches = iter(loader)
    for step in range(args.steps):
        optimizer.zero_grad()
        for micro in range(args.accumulate):
            x, y = next(batches)
            if micro < args.accumulate - 1:
                with model.no_sync():
                    (nn.functional.cross_entropy(model(x), y) / args.accumulate).backward()
            else:
                loss = nn.functional.cross_entropy(model(x), y) / args.accumulate
                loss.backward()
        optimizer.step()
        print(f"rank {rank} step {step} loss {loss.item():.10f}")
    dist.destroy_process_group()


def single() -> None:
    """Each micro-batch of a step holds every rank's micro-batch: the same global batch."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    streams = [iter(loader) for loader in loaders(args.world)]
    for step in range(args.steps):
        optimizer.zero_grad()
        for _ in range(args.accumulate):
            parts = [next(stream) for stream in streams]
            x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            loss = nn.functional.cross_entropy(model(x), y, reduction="sum") / (len(x) * args.accumulate)
            loss.backward()
        optimizer.step()
        print(f"single step {step} loss {loss.item():.10f}")


if __name__ == "__main__":
    single() if args.single else ddp()
