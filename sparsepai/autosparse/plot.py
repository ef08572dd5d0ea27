"""The learned function of a predictor, as in the analysis of AutoSparse
(https://arxiv.org/abs/2408.14757): predicted survival against the initial (normalised) weight
and gradient. matplotlib is imported only here, only when plotting."""

from __future__ import annotations

import torch

from sparsepai import _io
from sparsepai.autosparse.features import model_features


def _binned(x, y, bins=30):
    edges = torch.quantile(x, torch.linspace(0, 1, bins + 1, dtype=x.dtype))
    idx = torch.bucketize(x, edges[1:-1])
    cx, cy = [], []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            cx.append(float(x[sel].mean()))
            cy.append(float(y[sel].mean()))
    return cx, cy


def plot_learned_function(predictor, path: str, dataset=None, extent: float = 3.0,
                          grid: int = 121) -> str:
    """Write a PNG of the predictor's output over its (normalised) feature space.

    Args:
        predictor: a :class:`Predictor`.
        path: the PNG to write.
        dataset: optionally an :class:`IRPDataset`: its mean normalised survival per bin of
            normalised |w| (and |g|) is drawn beside the prediction.
        extent: features range over ``[-extent, extent]`` (in RMS units).
        grid: points per axis.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats = predictor.features
    unit = f"{predictor.config.normalization} RMS"
    line = torch.linspace(-extent, extent, grid)
    ncols = 2 if len(feats) == 2 else 1
    fig, axes = plt.subplots(1, ncols + 1, figsize=(5.2 * (ncols + 1), 4.2))
    if len(feats) == 2:
        pw, pg = torch.meshgrid(line, line, indexing="ij")
        z = predictor.predict(torch.stack([pw.reshape(-1), pg.reshape(-1)], 1)).view(grid, grid)
        im = axes[0].imshow(z.T.numpy(), origin="lower", extent=[-extent, extent, -extent, extent],
                            aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=axes[0], label="predicted survival (normalised)")
        axes[0].set(xlabel=f"initial weight / {unit}", ylabel=f"initial gradient / {unit}",
                    title="learned function")
    curves = axes[-ncols:] if len(feats) == 2 else axes[-1:]
    data = None
    if dataset is not None:
        xs = [x for _, x in model_features(dataset.params, dataset.grads, dataset.names,
                                           ("param", "grad"), predictor.config.normalization)]
        s = torch.cat([dataset.survival[n].reshape(-1).float() for n in dataset.names])
        data = (torch.cat(xs), (s - s.min()) / max(float(s.max() - s.min()), 1.0))
    pos = torch.linspace(0, extent, grid)
    for ax, f in zip(curves, feats):
        x = torch.zeros(grid, len(feats))
        x[:, feats.index(f)] = pos
        ax.plot(pos, predictor.predict(x), label=f"predicted (other feature 0), +{f}")
        x[:, feats.index(f)] = -pos
        ax.plot(pos, predictor.predict(x), "--", label=f"predicted, -{f}")
        if data is not None:
            col = ("param", "grad").index(f)
            cx, cy = _binned(data[0][:, col].abs(), data[1])
            ax.plot(cx, cy, "k.", label="IRP: mean survival per bin (marginal)")
        ax.set(xlabel=f"|initial {'weight' if f == 'param' else 'gradient'}| / {unit}",
               ylabel="survival (normalised)", xlim=(0, extent))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if len(feats) == 1:
        axes[0].axis("off")
        axes[0].text(0.05, 0.5, f"predictor on feature {feats[0]!r} only\nbackbone "
                     f"{predictor.config.backbone}", transform=axes[0].transAxes)
    fig.suptitle(f"AutoSparse predictor ({predictor.config.backbone}, features {list(feats)})")
    fig.tight_layout()
    _io.save_figure(path, fig, dpi=110)
    plt.close(fig)
    return path
