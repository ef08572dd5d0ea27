"""Tiny models and data for the AutoSparse tests."""

import torch
from torch.utils.data import TensorDataset

from benchmarks.irp_resume_kill import files as folder_bytes

__all__ = ["SyntheticIRP", "folder_bytes", "tiny_conv", "tiny_data", "tiny_model"]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
                               torch.nn.ReLU(), torch.nn.Linear(8, 3))


def tiny_conv(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                               torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 16, 3))


def tiny_data(n=48, seed=1, conv=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 1, 4, 4) if conv else (n, 6), generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return TensorDataset(x, y)


class SyntheticIRP:
    """Duck-typed IRPDataset whose survival is a known function of the normalised weight."""

    def __init__(self, fn, layers=6, seed=0, rounds=5, types=("Linear",), norm="layer"):
        g = torch.Generator().manual_seed(seed)
        self.names = [f"l{i}.weight" for i in range(layers)]
        self.rounds = rounds
        self.layer_types = {n: types[i % len(types)] for i, n in enumerate(self.names)}
        self.params, self.grads, self.survival = {}, {}, {}
        for i, n in enumerate(self.names):
            scale = 0.05 * (i + 1)  # layers of different scales: per-layer normalisation matters
            w = torch.randn(40 + 10 * i, 30, generator=g) * scale
            gr = torch.randn(w.shape, generator=g) * 1e-3 * (i + 1)
            self.params[n], self.grads[n] = w, gr

        def rms(ts):
            return (sum(float(t.pow(2).sum()) for t in ts) / sum(t.numel() for t in ts)) ** 0.5

        for n in self.names:
            w, gr = self.params[n], self.grads[n]
            # survival as a function of the weight normalised per layer or per model
            ws = rms([w]) if norm == "layer" else rms(list(self.params.values()))
            gs = rms([gr]) if norm == "layer" else rms(list(self.grads.values()))
            self.survival[n] = fn(w / ws, gr / gs, rounds).round().clamp(0, rounds).to(
                torch.int32)
