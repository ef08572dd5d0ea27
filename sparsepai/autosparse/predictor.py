"""The AutoSparse predictor (https://arxiv.org/abs/2408.14757, Section 4): a network mapping each
weight's initial features to its predicted survival score, and its file format.

Features: sparsepai/autosparse/features.py.

Backbones: ``"mlp"`` (``depth`` hidden layers of ``hidden`` units, ReLU), or the paper's
lift-to-image design ``"resnet18"`` / ``"vgg19"``: an MLP lifts each weight's features to a
3 x image_size x image_size image, fed to a small-input ResNet-18 / VGG-19 (batch norm) with a
one-unit head. Inference is batched: ``chunk_size`` weights per forward, never one per weight.

File: safetensors (the network's ``state_dict``) with JSON metadata under the key ``sparsepai``:
``kind``, ``format_version``, the config, the layer types seen in training and the training
history. Never pickle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings

import torch
from torch import nn

from sparsepai import _io
from sparsepai.autosparse.features import (
    DEFAULT_FEATURES,
    FEATURES,
    NORMALIZATIONS,
    model_features,
)
from sparsepai.autosparse.irp import initial_grads
from sparsepai.core.loss import default_loss
from sparsepai.core.prunable import prunable_names
from sparsepai.experiments.models import get_model

BACKBONES = ("mlp", "resnet18", "vgg19")
KIND = "autosparse-predictor"
FORMAT_VERSION = 1
UNSEEN = ("error", "predict")


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
    """Args:
        backbone: ``"mlp"``, ``"resnet18"`` or ``"vgg19"``.
        features: a non-empty ordered subset of ``("param", "grad", "rank", "fanin")`` (see
            ``sparsepai/autosparse/features.py``); default ``("param", "grad")``.
        normalization: ``"model"`` or ``"layer"`` (see the module docstring).
        hidden, depth: the MLP backbone's width and number of hidden layers.
        lift_hidden, image_size: the lifting MLP's width and the image side (32 or 64 in the
            paper) of the image backbones.
        epochs, batch_size, lr, weight_decay: training (Adam, MSE).
        holdout: ``"layer"`` (whole layers held out) or ``"model"`` (whole IRP datasets held
            out; needs two or more datasets).
        holdout_fraction: share of weights (layer holdout) or datasets (model holdout) held out.
        holdout_datasets: with ``holdout="model"``, the indices of the datasets to hold out
            (None: a seeded random choice of ``holdout_fraction`` of them).
        max_train, max_val: random subsample sizes (weights) of the two splits (None: all).
        seed: the split, the subsamples, the initialisation and the batch order.
    """

    backbone: str = "mlp"
    features: tuple = DEFAULT_FEATURES
    normalization: str = "model"
    hidden: int = 16
    depth: int = 2
    lift_hidden: int = 64
    image_size: int = 32
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    holdout: str = "layer"
    holdout_fraction: float = 0.2
    holdout_datasets: tuple | None = None
    max_train: int | None = 200_000
    max_val: int | None = 100_000
    seed: int = 0

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"predictor backbone must be one of {BACKBONES}, got "
                             f"{self.backbone!r}")
        feats = tuple(self.features)
        if not feats or any(f not in FEATURES for f in feats) or len(set(feats)) != len(feats):
            raise ValueError(f"predictor features must be a non-empty subset of {FEATURES}, got "
                             f"{self.features!r}")
        object.__setattr__(self, "features", feats)
        if self.holdout_datasets is not None:
            object.__setattr__(self, "holdout_datasets", tuple(self.holdout_datasets))
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got "
                             f"{self.normalization!r}")
        if self.holdout not in ("layer", "model"):
            raise ValueError(f"holdout must be 'layer' or 'model', got {self.holdout!r}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")


class MLPNet(nn.Module):
    """``(N, in_dim) -> (N,)``: ``depth`` hidden ReLU layers of ``hidden`` units."""

    def __init__(self, in_dim: int, hidden: int, depth: int):
        super().__init__()
        layers, d = [], in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).squeeze(1)

    @torch.inference_mode()
    def predict_into(self, x: torch.Tensor, out: torch.Tensor, chunk: int) -> None:
        """Inference without autograd or per-chunk allocations: ``addmm`` into reused buffers
        and in-place ReLU (the same arithmetic as ``forward``), ``chunk`` rows at a time."""
        lins = [m for m in self.net if isinstance(m, nn.Linear)]
        ws = [m.weight.detach().t() for m in lins]
        bs = [m.bias.detach() for m in lins]
        bufs = [torch.empty(min(chunk, len(x)), w.shape[1], device=x.device, dtype=w.dtype)
                for w in ws]
        for i in range(0, len(x), chunk):
            h = x[i:i + chunk]
            n = len(h)
            for j, (w, b) in enumerate(zip(ws, bs)):
                o = bufs[j][:n]
                torch.addmm(b, h, w, out=o)
                if j < len(ws) - 1:
                    o.relu_()
                h = o
            out[i:i + n] = h[:, 0]


class LiftNet(nn.Module):
    """The paper's design: ``(N, in_dim)`` lifted by an MLP to ``(N, 3, S, S)`` images, then a
    small-input ResNet-18 or VGG-19 with a one-unit head, ``-> (N,)``."""

    def __init__(self, in_dim: int, lift_hidden: int, image_size: int, backbone: str):
        super().__init__()
        self.image_size = image_size
        self.lift = nn.Sequential(nn.Linear(in_dim, lift_hidden), nn.ReLU(),
                                  nn.Linear(lift_hidden, 3 * image_size * image_size))
        self.backbone = get_model(backbone, num_classes=1, in_channels=3, image_size=image_size)

    def forward(self, x):
        img = self.lift(x).view(-1, 3, self.image_size, self.image_size)
        return self.backbone(img).squeeze(1)


def build_net(cfg: PredictorConfig) -> nn.Module:
    if cfg.backbone == "mlp":
        return MLPNet(len(cfg.features), cfg.hidden, cfg.depth)
    return LiftNet(len(cfg.features), cfg.lift_hidden, cfg.image_size, cfg.backbone)


@contextlib.contextmanager
def _threads(n: int | None):
    """Run with ``n`` intra-op threads, restoring the previous count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _layer_types(model, names) -> dict:
    modules = dict(model.named_modules())
    return {n: type(modules[n.rpartition(".")[0]]).__name__ for n in names}


class Predictor:
    """A trained AutoSparse survival-score predictor (https://arxiv.org/abs/2408.14757).

    Attributes:
        net: the ``torch.nn.Module`` (``(N, len(features)) -> (N,)``).
        config: its :class:`PredictorConfig`.
        seen_layer_types: module classes (``"Conv2d"``, ``"Linear"``...) of the training layers.
        history: training curves and the split (see ``train_predictor``).
    """

    def __init__(self, net: nn.Module, config: PredictorConfig, seen_layer_types=(),
                 history: dict | None = None):
        self.net = net
        self.config = config
        self.seen_layer_types = tuple(sorted(set(seen_layer_types)))
        self.history = dict(history or {})

    @property
    def features(self) -> tuple:
        return self.config.features

    def default_chunk(self) -> int:
        return 1 << 16 if self.config.backbone == "mlp" else 256

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, chunk_size: int | None = None,
                threads: int | None = None) -> torch.Tensor:
        """Predicted (min-max normalised) survival scores, ``chunk_size`` rows per forward.

        ``threads``: intra-op threads of the mlp path (default 1: its GEMMs are tiny, K = 2 and
        N = 16, and thread synchronisation costs more than it saves; measured on the 2-core CI
        machine, see benchmarks/results/autosparse). Image backbones use torch's setting unless
        ``threads`` is given.

        Shapes:
            ``x``: ``(N, len(features))``; returns ``(N,)`` float32 on ``x``'s device.
        """
        if x.dim() != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"predict: expected (N, {len(self.features)}) features, got "
                             f"{tuple(x.shape)}")
        chunk = chunk_size or self.default_chunk()
        dev = next(self.net.parameters()).device
        was = self.net.training
        self.net.eval()
        out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
        if isinstance(self.net, MLPNet) and x.device == dev:
            with _threads(threads or (1 if x.device.type == "cpu" else None)):
                self.net.predict_into(x.float(), out, chunk)
            self.net.train(was)
            return out
        with _threads(threads):
            for i in range(0, x.shape[0], chunk):
                out[i:i + chunk] = self.net(x[i:i + chunk].to(dev, torch.float32)).float().to(
                    x.device)
        self.net.train(was)
        return out

    def score(self, params: dict, grads: dict | None, names=None, *,
              chunk_size: int | None = None) -> dict:
        """Predicted scores of the given weights, one layer at a time.

        Args:
            params: ``{name: initial weight}``.
            grads: ``{name: initial gradient}`` (needed with the ``"grad"`` feature).
            names: which (default all of ``params``; with ``normalization="model"`` they share
                one scale per feature).

        Returns:
            ``{name: scores shaped like the weight}``.
        """
        names = list(params) if names is None else list(names)
        out = {}
        for n, feats in model_features(params, grads, names, self.features,
                                       self.config.normalization):
            out[n] = self.predict(feats, chunk_size).view(params[n].shape)
        return out

    def check_layer_types(self, types: dict, unseen_layers: str = "error") -> None:
        """Raise (or warn, with ``unseen_layers="predict"``) if a layer's module type was not
        among the training layers. The fallback scores such layers with the same normalised
        features as the others; whether that transfers is not tested."""
        if unseen_layers not in UNSEEN:
            raise ValueError(f"unseen_layers must be one of {UNSEEN}, got {unseen_layers!r}")
        bad = {n: t for n, t in types.items() if t not in self.seen_layer_types}
        if not bad:
            return
        msg = (f"the predictor was trained on layers of types {list(self.seen_layer_types)}; "
               f"the model has {len(bad)} weight tensors of other types "
               f"({', '.join(f'{n}: {t}' for n, t in list(bad.items())[:4])})")
        if unseen_layers == "error":
            raise ValueError(msg + "; pass unseen_layers='predict' to score them anyway with the "
                             "same normalised features")
        warnings.warn(msg + "; scoring them anyway (unseen_layers='predict')", RuntimeWarning,
                      stacklevel=3)

    def score_model(self, model: nn.Module, data=None, *, loss_fn=None, names=None,
                    grad_batches: int | None = None, chunk_size: int | None = None,
                    unseen_layers: str = "error") -> dict:
        """Scores of ``model``'s prunable weights at initialization (higher = keep).

        The initial gradients are computed as IRP records them (``initial_grads``: mean loss
        over ``data``, train mode, on a private copy; ``grad_batches`` batches, None = all).

        Returns:
            ``{name: scores}`` shaped like the weights, for ``sp.topk_mask``.
        """
        names = list(names) if names is not None else prunable_names(model)
        self.check_layer_types(_layer_types(model, names), unseen_layers)
        params = dict(model.named_parameters())
        grads = None
        if "grad" in self.features:
            if data is None:
                raise ValueError("this predictor uses the 'grad' feature: it needs data")
            with torch.enable_grad():
                grads = initial_grads(model, names, data, default_loss(loss_fn), grad_batches)[0]
        return self.score({n: params[n] for n in names}, grads, names, chunk_size=chunk_size)

    def to(self, device) -> "Predictor":
        self.net.to(device)
        return self

    def save(self, path: str) -> None:
        """Write safetensors + JSON metadata atomically (never pickle)."""
        meta = {"kind": KIND, "format_version": FORMAT_VERSION,
                "config": dataclasses.asdict(self.config),
                "seen_layer_types": list(self.seen_layer_types), "history": self.history}
        _io.save_tensors(path, dict(self.net.state_dict()), meta)

    @classmethod
    def load(cls, path: str, device="cpu") -> "Predictor":
        """Read a predictor written by :meth:`save`.

        Raises:
            FileNotFoundError: no file.
            ValueError: the file is corrupt (non-finite weights too), truncated, not a
                predictor, from another format version, or its tensors do not fit its config.
        """
        # a corrupt or truncated file is a ValueError ('corrupt or truncated'), a missing one a
        # FileNotFoundError, both naming the path
        state, meta = _io.read_tensors(path, "predictor")
        bad = [k for k, t in state.items()
               if t.is_floating_point() and not bool(t.isfinite().all())]
        if bad:  # a corrupt file: every score would be NaN
            raise ValueError(f"{path}: corrupt predictor file: tensors {bad[:3]} hold NaN or "
                             "infinite values")
        if meta.get("kind") != KIND:
            raise ValueError(f"{path}: not a sparsepai AutoSparse predictor file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: predictor format version {meta.get('format_version')}, "
                             f"this sparsepai reads version {FORMAT_VERSION}")
        try:
            cfg = PredictorConfig(**meta["config"])
            net = build_net(cfg)
            net.load_state_dict(state, strict=True)
        except (TypeError, ValueError, RuntimeError, KeyError) as e:
            raise ValueError(f"{path}: the predictor's tensors do not fit its config: "
                             f"{str(e)[:300]}") from None
        net.eval()
        return cls(net.to(device), cfg, meta.get("seen_layer_types", ()), meta.get("history"))

    def __repr__(self):
        return (f"Predictor(backbone={self.config.backbone!r}, features={self.features}, "
                f"normalization={self.config.normalization!r}, "
                f"trained on {list(self.seen_layer_types)})")
