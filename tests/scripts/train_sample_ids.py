"""A map-style Dataset through a shuffled DataLoader, cross-entropy, clip_grad_norm_(..., 0.5).

The Dataset returns each item's index too, so the reference (GS_REFERENCE) holds, per
step, the batch's dataset indices, its reduction="none" losses and the pre-clip norm that
clip_grad_norm_ returns. --declare names them with gradscope.losses / gradscope.indices and
builds a loss whose graph does not hold them; --lookahead iterates through a generator
that fetches one batch ahead (as prefetching wrappers do).
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

parser = argparse.ArgumentParser()
parser.add_argument("--workers", type=int, default=0)
parser.add_argument("--drop-last", action="store_true")
parser.add_argument("--declare", action="store_true")
parser.add_argument("--lookahead", action="store_true")
args = parser.parse_args()

class Points(Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def lookahead(loader):
    it = iter(loader)
    nxt = next(it)
    for batch in it:
        yield nxt
        nxt = batch
    yield nxt


if __name__ == "__main__":
    torch.manual_seed(0)
    data = Points(70)
    loader = DataLoader(data, batch_size=16, shuffle=True, num_workers=args.workers,
                        drop_last=args.drop_last, generator=torch.Generator().manual_seed(1))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reference = []
    for _epoch in range(2):
        for x, y, index in (lookahead(loader) if args.lookahead else loader):
            optimizer.zero_grad()
            out = model(x)
            if args.declare:
                import gradscope

                per_sample = F.cross_entropy(out, y, reduction="none")
                gradscope.losses(per_sample)
                gradscope.indices(index)
                loss = (per_sample * 1.0).mean()
            else:
                loss = F.cross_entropy(out, y)
            with torch.no_grad():
                values = F.cross_entropy(out, y, reduction="none")
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
            reference.append({"index": index.tolist(), "loss": values.tolist(), "preclip": float(norm)})
    if os.environ.get("GS_REFERENCE"):
        with open(os.environ["GS_REFERENCE"], "w") as f:
            json.dump(reference, f)
    print("done", len(reference))
