"""Record a Lightning run with gradscope's callback (a small MLP on random data, CPU).

    python scripts/lightning_example.py --out runs/lightning       # the callback records
    gradscope report runs/lightning

The same run without the callback, recorded from outside (the two run directories hold
the same tables):

    gradscope record --out runs/lightning-record -- python scripts/lightning_example.py --no-gradscope

Gradient accumulation over 2 micro-batches and bf16 autocast by default, as a large model's
recipe would have them.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Classifier(L.LightningModule):
    def __init__(self, features: int = 16, hidden: int = 32, classes: int = 4, lr: float = 3e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                 nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def data(samples: int = 64, batch_size: int = 8) -> DataLoader:
    inputs = torch.randn(samples, 16)
    labels = (inputs[:, :4].argmax(dim=1) + (torch.rand(samples) < 0.1).long()) % 4  # 10% label noise
    return DataLoader(TensorDataset(inputs, labels), batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


def build(callbacks: list, epochs: int = 2, accumulate: int = 2,
          precision: str = "bf16-mixed") -> tuple[L.Trainer, Classifier, DataLoader]:
    torch.manual_seed(0)
    model, loader = Classifier(), data()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, accumulate_grad_batches=accumulate,
                        precision=precision, callbacks=callbacks, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    return trainer, model, loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/lightning", help="gradscope run directory")
    parser.add_argument("--no-gradscope", action="store_true", help="train without the callback")
    parser.add_argument("--force", action="store_true", help="replace an existing run directory")
    args = parser.parse_args()
    callbacks = []
    if not args.no_gradscope:
        from gradscope.integrations.lightning import GradscopeCallback

        callbacks.append(GradscopeCallback(args.out, force=args.force))
    trainer, model, loader = build(callbacks)
    trainer.fit(model, loader)
    print(f"{trainer.global_step} optimizer steps; last loss {trainer.callback_metrics['train_loss']:.4f}")


if __name__ == "__main__":
    main()
