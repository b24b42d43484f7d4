"""Dataset indices from the DataLoader's sampler, in-process: a validation pass under
no_grad between steps, an iterable-style dataset, a token-level loss, a persistent loader."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, Subset, TensorDataset, random_split

from gradscope.record.recorder import Recorder
from gradscope.store.reader import open_run


def _train(tmp_path, loader, val_loader=None, epochs=2, tokens=False):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    with Recorder(model, optimizer, run_dir=tmp_path / "run"):
        for _ in range(epochs):
            for x, y, index in loader:
                optimizer.zero_grad()
                out = model(x)
                if tokens:  # two "tokens" per sample: one loss value per token
                    loss = F.cross_entropy(torch.cat([out, out]), torch.cat([y, y]))
                else:
                    loss = F.cross_entropy(out, y)
                loss.backward()
                optimizer.step()
                seen.append(index.tolist())
                if val_loader is not None:
                    with torch.no_grad():
                        for vx, _, _ in val_loader:
                            model(vx)
    run = open_run(tmp_path / "run")
    samples = run.table("samples").sort_values(["step", "sample"])
    return run, [block["index"].tolist() for _, block in samples.groupby("step")], seen


def _data(n=20):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    return TensorDataset(x, y, torch.arange(n))


def test_validation_under_no_grad_does_not_disturb_matching(tmp_path):
    loader = DataLoader(_data(), batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(2))
    val = DataLoader(_data(8), batch_size=4)
    run, recorded, seen = _train(tmp_path, loader, val)
    assert recorded == seen
    assert run.meta["sample_index"] == {"sampler": len(seen)}


def test_persistent_workers_keep_matching_across_epochs(tmp_path):
    loader = DataLoader(_data(), batch_size=6, shuffle=True, num_workers=1, persistent_workers=True,
                        generator=torch.Generator().manual_seed(3))
    _, recorded, seen = _train(tmp_path, loader, epochs=3)
    assert recorded == seen


class _Stream(IterableDataset):
    def __iter__(self):
        data = _data()
        return iter(data[i] for i in range(len(data)))


def test_iterable_dataset_has_no_sampler_indices(tmp_path):
    run, recorded, _ = _train(tmp_path, DataLoader(_Stream(), batch_size=5), epochs=1)
    assert all(i == -1 for step in recorded for i in step)
    assert run.meta["sample_index"] == {"unknown: iterable-style dataset (no sampler indices)": 4}


def test_token_level_loss_is_not_a_per_sample_loss(tmp_path):
    run, _, seen = _train(tmp_path, DataLoader(_data(), batch_size=5), epochs=1, tokens=True)
    assert run.table("samples")["loss"].isna().all()
    assert run.meta["sample_loss"] == {
        "unknown: not one value per sample of the backward (e.g. one per token)": len(seen)}


def test_random_split_and_nested_subsets_give_the_original_dataset_index(tmp_path):
    # the dataset's third tensor is its own index: what each batch yields is the truth
    train, _ = random_split(_data(30), [20, 10], generator=torch.Generator().manual_seed(4))
    nested = Subset(train, list(range(5, 20)))
    loader = DataLoader(nested, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(5))
    _, recorded, seen = _train(tmp_path, loader)
    assert recorded == seen and seen[0] != sorted(seen[0])
