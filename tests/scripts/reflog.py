"""Reference values a test script computes about itself, written when GS_REFERENCE is set.

Only plain tensor arithmetic on .grad and .data: no module call, no backward, so the
script behaves the same with or without gradscope watching.
"""

import json
import os
import sys

import torch


class RefLog:
    def __init__(self, named_params):
        self.params = dict(named_params)
        self.initial = {n: p.detach().clone() for n, p in self.params.items()}
        self.steps = []
        self._before = None

    def before_update(self, loss=None, skipped=False):
        """Call right before the weights change (optimizer.step or a hand-written update)."""
        row = {"loss": None if loss is None else float(loss), "skipped": skipped, "params": {}}
        for name, p in self.params.items():
            grad = p.grad
            row["params"][name] = {
                "grad_norm": 0.0 if grad is None else float(grad.norm()),
                "weight_norm": float(p.detach().norm()),
                "init_distance": float((p.detach() - self.initial[name]).norm()),
            }
        self._before = {n: p.detach().clone() for n, p in self.params.items()}
        self.steps.append(row)

    def after_update(self):
        for name, p in self.params.items():
            self.steps[-1]["params"][name]["update_norm"] = float((p.detach() - self._before[name]).norm())

    def dump(self):
        path = os.environ.get("GS_REFERENCE")
        if path:
            with open(path, "w") as handle:
                json.dump({"steps": self.steps, "argv": sys.argv}, handle)


def seeded(seed=0):
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
