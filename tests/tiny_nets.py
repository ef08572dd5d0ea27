"""Tiny networks and data for the pruning tests (fast, float64 where exactness matters)."""

import torch


def mlp(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).to(dtype)


def convnet(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 6, 3, stride=2), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 3 * 3, 10))


def batches(n, shape=(4,), classes=3, dtype=torch.float64, seed=1, size=8):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn((size,) + shape, generator=g, dtype=dtype),
             torch.randint(0, classes, (size,), generator=g)) for _ in range(n)]


def save_slim_convnet(path: str):
    """:func:`convnet` pruned to half its weights by channels (magnitude), slimmed and saved to
    ``path`` with ``save_slim``; returns the slim model."""
    import sparsepai as sp
    from sparsepai.structured import save_slim

    model = convnet().eval()
    small = sp.slim(model, sp.prune(model, "magnitude", 0.5, structured=True,
                                    example_inputs=torch.randn(2, 1, 8, 8)))
    save_slim(small, path)
    return small
