"""Record a Hugging Face Trainer run with gradscope's callback: a 2-layer GPT-2 built from a
config (random weights, nothing downloaded) on random tokens, CPU.

    python scripts/hf_example.py --out runs/hf        # the callback records
    gradscope report runs/hf

The same run without the callback, recorded from outside (the two run directories hold
the same tables):

    gradscope record --out runs/hf-record -- python scripts/hf_example.py --no-gradscope
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from torch.utils.data import Dataset

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub

from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments  # noqa: E402


class RandomTokens(Dataset):
    """Sequences of random token ids; the model learns their unigram statistics."""

    def __init__(self, samples: int = 64, length: int = 16, vocab: int = 64) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (samples, length), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def build(output_dir: str, callbacks: list, steps: int = 6, accumulate: int = 2) -> Trainer:
    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=4, gradient_accumulation_steps=accumulate,
        max_steps=steps, learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=2, logging_steps=1,
        report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )
    return Trainer(model=model, args=args, train_dataset=RandomTokens(), callbacks=callbacks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/hf", help="gradscope run directory")
    parser.add_argument("--no-gradscope", action="store_true", help="train without the callback")
    parser.add_argument("--force", action="store_true", help="replace an existing run directory")
    args = parser.parse_args()
    callbacks = []
    if not args.no_gradscope:
        from gradscope.integrations.transformers import GradscopeCallback

        callbacks.append(GradscopeCallback(args.out, force=args.force))
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = build(output_dir, callbacks)
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    print(f"{trainer.state.global_step} optimizer steps; losses " + " ".join(f"{x:.4f}" for x in losses))


if __name__ == "__main__":
    main()
