"""Shared bits of the clinic scripts: the --healthy flag, the step count, fixed seeds."""

import argparse

import torch


def parse(description: str, steps: int = 40) -> argparse.Namespace:
    """``--healthy`` selects the twin without the planted pathology."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--healthy", action="store_true", help="train the healthy twin")
    parser.add_argument("--steps", type=int, default=steps)
    return parser.parse_args()


def seeded(seed: int = 0) -> torch.Generator:
    """Fixed seeds and one thread: the clinic runs cases side by side on small machines."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
