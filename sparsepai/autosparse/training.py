"""``train_predictor``: fit the AutoSparse predictor to IRP datasets
(https://arxiv.org/abs/2408.14757, Section 4).

Inputs are the normalised features of ``predictor.py`` (``normalization``); targets are the survival
scores min-max normalised per IRP dataset, ``(s - min) / (max - min)`` over all its weights, so
runs with different round counts share one scale. The held-out split is by whole layers or whole
datasets (models), never by position inside a layer. Loss: mean squared error.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from sparsepai.autosparse.dataset import IRPDataset
from sparsepai.autosparse.features import model_features
from sparsepai.autosparse.predictor import Predictor, PredictorConfig, _threads, build_net


def _as_datasets(datasets) -> list:
    if isinstance(datasets, (str, IRPDataset)):
        datasets = [datasets]
    out = [IRPDataset.load(d) if isinstance(d, str) else d for d in datasets]
    if not out:
        raise ValueError("train_predictor: no datasets")
    return out


def _units(datasets, features, normalization="model"):
    """One unit per (dataset, layer): features, normalised targets, layer type."""
    units = []
    for i, ds in enumerate(datasets):
        surv = ds.survival
        lo = min(int(surv[n].min()) for n in ds.names)
        hi = max(int(surv[n].max()) for n in ds.names)
        span = max(hi - lo, 1)  # all weights equal: every target 0
        grads = ds.grads if "grad" in features else None
        for n, x in model_features(ds.params, grads, ds.names, features, normalization):
            y = (surv[n].reshape(-1).float() - lo) / span
            units.append({"dataset": i, "layer": n, "type": ds.layer_types[n], "x": x, "y": y})
    return units


def split_units(units, n_datasets: int, cfg: PredictorConfig):
    """Indices of the (train, validation) units: whole layers or whole datasets held out."""
    g = torch.Generator().manual_seed(cfg.seed)
    if cfg.holdout == "model":
        if n_datasets < 2:
            raise ValueError("holdout='model' needs two or more IRP datasets")
        if cfg.holdout_datasets is not None:
            held = set(cfg.holdout_datasets)
            if not held or not held < set(range(n_datasets)):
                raise ValueError(f"holdout_datasets must be a non-empty proper subset of "
                                 f"0..{n_datasets - 1}, got {cfg.holdout_datasets}")
        else:
            k = min(n_datasets - 1, max(1, round(cfg.holdout_fraction * n_datasets)))
            held = set(torch.randperm(n_datasets, generator=g)[:k].tolist())
        val = [i for i, u in enumerate(units) if u["dataset"] in held]
    else:
        if len(units) < 2:
            raise ValueError("holdout='layer' needs two or more layers")
        sizes = [len(u["y"]) for u in units]
        target = cfg.holdout_fraction * sum(sizes)
        left = {}  # training layers per layer type: the last of a type is never held out
        for u in units:
            left[u["type"]] = left.get(u["type"], 0) + 1
        val, count = [], 0
        # whole layers in a seeded order, skipping any that would overshoot the target by half
        for i in torch.randperm(len(units), generator=g).tolist():
            if count + sizes[i] <= 1.5 * target and left[units[i]["type"]] > 1:
                val.append(i)
                count += sizes[i]
                left[units[i]["type"]] -= 1
            if count >= target:
                break
        if not val:
            raise ValueError("holdout='layer': no layer can be held out while keeping every "
                             "layer type in training (need two layers of one type)")
    train = [i for i in range(len(units)) if i not in set(val)]
    return train, sorted(val)


def _stack(units, idx, limit, g):
    x = torch.cat([units[i]["x"] for i in idx])
    y = torch.cat([units[i]["y"] for i in idx])
    if limit is not None and len(y) > limit:
        pick = torch.randperm(len(y), generator=g)[:limit]
        x, y = x[pick], y[pick]
    return x, y


@torch.no_grad()
def _recalibrate_norms(net, xt, batch_size, g, device, samples=256):
    """Batch-norm running statistics as the plain average over ``samples`` training rows with
    the final weights: with a few hundred steps, the running averages (momentum 0.1) still lag
    the lifted images' drifting statistics, and eval-mode predictions go far off."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    pick = torch.randperm(len(xt), generator=g)[:samples]
    for i in range(0, len(pick), batch_size):
        b = pick[i:i + batch_size]
        if len(b) > 1:
            net(xt[b].to(device))
    for m in norms:
        m.momentum = 0.1


def train_predictor(datasets, *, backbone: str = "mlp", features=("param", "grad"),
                    device="cpu", progress: bool = True, **options) -> Predictor:
    """Train a survival-score predictor on one or more IRP datasets.

    Args:
        datasets: an :class:`IRPDataset`, a run folder, or a list of them (several models or
            datasets combine into one training set).
        backbone: ``"mlp"``, ``"resnet18"`` or ``"vgg19"`` (the paper's lift-to-image design).
        features: ``("param", "grad")``, ``("param",)`` or ``("grad",)`` (the paper's ablation),
            optionally with the layer-aware ``"rank"`` and ``"fanin"`` (features.py).
        device: where to train.
        progress: a progress bar over epochs.
        **options: the other fields of :class:`PredictorConfig` (epochs, batch_size, lr,
            holdout, holdout_fraction, max_train, max_val, seed, hidden, depth, ...).

    Returns:
        The trained :class:`Predictor`. ``predictor.history`` holds ``train_mse`` and
        ``val_mse`` per epoch, ``val_mse_initial`` (before training), ``val_mse_constant`` (of
        predicting the training targets' mean: the bar to beat), and the split (held-out layers
        or datasets, weight counts).
    """
    cfg = PredictorConfig(backbone=backbone, features=tuple(features), **options)
    dss = _as_datasets(datasets)
    units = _units(dss, cfg.features, cfg.normalization)
    tr, va = split_units(units, len(dss), cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    xt, yt = _stack(units, tr, cfg.max_train, g)
    xv, yv = _stack(units, va, cfg.max_val, g)
    torch.manual_seed(cfg.seed)
    net = build_net(cfg).to(device)
    pred = Predictor(net, cfg, {units[i]["type"] for i in tr})
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def val_mse():
        return float(((pred.predict(xv.to(device)).cpu() - yv) ** 2).mean())

    hist = {"epoch": [], "train_mse": [], "val_mse": [], "val_mse_initial": val_mse(),
            "val_mse_constant": float(((yv - yt.mean()) ** 2).mean()),
            "split": {"holdout": cfg.holdout, "train_weights": len(yt), "val_weights": len(yv),
                      "val_units": [[units[i]["dataset"], units[i]["layer"]] for i in va],
                      "train_units": [[units[i]["dataset"], units[i]["layer"]] for i in tr]}}
    # the mlp's GEMMs are tiny: one thread is faster than synchronising two (see predict)
    with _threads(1 if cfg.backbone == "mlp" and device == "cpu" else None):
        _fit(net, pred, opt, xt, yt, cfg, g, device, hist, val_mse, progress)
    pred.history = hist
    return pred


def _fit(net, pred, opt, xt, yt, cfg, g, device, hist, val_mse, progress):
    bar = tqdm(range(cfg.epochs), desc=f"train {cfg.backbone} predictor", disable=not progress)
    for epoch in bar:
        net.train()
        order = torch.randperm(len(yt), generator=g)
        total = 0.0
        for i in range(0, len(yt), cfg.batch_size):
            b = order[i:i + cfg.batch_size]
            if len(b) < 2 and cfg.backbone != "mlp":
                continue  # batch norm cannot train on a batch of one
            loss = torch.nn.functional.mse_loss(net(xt[b].to(device)), yt[b].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        if cfg.backbone != "mlp":
            _recalibrate_norms(net, xt, cfg.batch_size, g, device)
        hist["epoch"].append(epoch + 1)
        hist["train_mse"].append(total / len(yt))
        hist["val_mse"].append(val_mse())
        bar.set_postfix(train=f"{hist['train_mse'][-1]:.4f}", val=f"{hist['val_mse'][-1]:.4f}")
