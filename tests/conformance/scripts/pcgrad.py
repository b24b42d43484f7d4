"""Idiom 8: manual PCGrad: one backward per task on a retained graph, projected, then one step."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


class TwoTask(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(6, 12)
        self.reg_head = nn.Linear(12, 1)
        self.cls_head = nn.Linear(12, 3)

    def forward(self, x):
        h = torch.tanh(self.trunk(x))
        return self.reg_head(h), self.cls_head(h)


def task_losses(outputs, y_reg, y_cls):
    return F.mse_loss(outputs[0], y_reg), F.cross_entropy(outputs[1], y_cls)


def flat_grads(params):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def task_loss_of(model, j, x, y_reg, y_cls, task):
    """The task's loss on the batch output, the model run on each sample alone."""
    reg = ref.spliced(lambda v: model(v)[0], ref.split(x), j)
    cls = ref.spliced(lambda v: model(v)[1], ref.split(x), j)
    return task_losses((reg, cls), y_reg, y_cls)[task]


torch.manual_seed(16)
torch.set_default_dtype(torch.float64)
model = TwoTask()
params = list(model.parameters())
optimizer = torch.optim.SGD(params, lr=0.1)
log = ref.Reference(per_sample_scale=8.0)  # both tasks: mean losses over 8 samples

for step in range(4):
    x, y_reg, y_cls = torch.randn(8, 6), torch.randn(8, 1), torch.randint(0, 3, (8,))
    losses = task_losses(model(x), y_reg, y_cls)
    grads = []
    for task, loss in enumerate(losses):
        optimizer.zero_grad()
        loss.backward(retain_graph=task == 0)
        log.backward(loss.item(), model, task_loss_of, x, y_reg, y_cls, task)
        grads.append(flat_grads(params))
    g_reg, g_cls = grads
    dot = torch.dot(g_reg, g_cls)
    if dot < 0:  # project each task's gradient off the other's
        g_reg, g_cls = g_reg - dot / g_cls.dot(g_cls) * g_cls, g_cls - dot / g_reg.dot(g_reg) * g_reg
    combined = g_reg + g_cls
    offset = 0
    for p in params:
        p.grad = combined[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    optimizer.step()
    log.step()
    print(f"step {step} losses {losses[0].item()!r} {losses[1].item()!r} conflict {bool(dot < 0)}")
log.dump()
