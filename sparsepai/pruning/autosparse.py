"""AutoSparse (https://arxiv.org/abs/2408.14757) as a registered method: a trained predictor
scores every weight from its initial value and gradient (see ``sparsepai/autosparse``)."""

from __future__ import annotations

import dataclasses

from sparsepai.autosparse.predictor import Predictor
from sparsepai.core.options import option
from sparsepai.core.registry import register


@dataclasses.dataclass(frozen=True)
class AutoSparseConfig:
    """Args:
        predictor: a ``sp.autosparse.Predictor`` or the path of a saved one (required).
        grad_batches: batches of ``data`` the initial gradient averages over (None: all of
            ``data``, one pass), computed as IRP records it (train mode, mean loss).
        chunk_size: weights per predictor forward (None: 65536 for mlp, 256 for image
            backbones).
        unseen_layers: ``"error"`` if the model has prunable layers of a module type the
            predictor never saw in training, or ``"predict"`` to score them anyway (warning).
    """

    predictor: object = None
    grad_batches: int | None = option(None, at_least=1)
    chunk_size: int | None = option(None, at_least=1)
    unseen_layers: str = option("error", choices=("error", "predict"))


def resolve_predictor(predictor):
    if predictor is None:
        raise ValueError("method 'autosparse' needs predictor=... (a Predictor or the path of a "
                         "saved one, from sp.autosparse.train_predictor)")
    if isinstance(predictor, Predictor):
        return predictor
    if isinstance(predictor, (str, bytes)) or hasattr(predictor, "__fspath__"):
        return Predictor.load(str(predictor))
    raise TypeError(f"predictor must be a Predictor or a path, got {type(predictor).__name__}")


@register("autosparse", AutoSparseConfig, absolute=False)
def autosparse_saliency(model, names, data, loss_fn, cfg: AutoSparseConfig):
    pred = resolve_predictor(cfg.predictor)
    return pred.score_model(model, data, loss_fn=loss_fn, names=names,
                            grad_batches=cfg.grad_batches, chunk_size=cfg.chunk_size,
                            unseen_layers=cfg.unseen_layers)
