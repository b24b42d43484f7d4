"""Lightning on 2 CPU processes (gloo): ``strategy="ddp"`` spawns rank 1 as a copy of this
script itself, or torchrun starts both. 8 samples per device, 2 devices, 2 micro-batches
per step: a global batch of 32. ``--cb DIR`` records with gradscope's callback instead."""

import sys

import lightning as L
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

torch.set_default_dtype(torch.float64)
L.seed_everything(0, verbose=False)


class Regressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


if __name__ == "__main__":
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(64, 6, generator=g), torch.randn(64, 1, generator=g)
    callbacks = []
    if "--cb" in sys.argv:
        from gradscope.integrations.lightning import GradscopeCallback

        callbacks = [GradscopeCallback(sys.argv[sys.argv.index("--cb") + 1], force=True)]
    trainer = L.Trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=callbacks, accelerator="cpu",
                        devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(Regressor(), DataLoader(TensorDataset(X, Y), batch_size=8))
