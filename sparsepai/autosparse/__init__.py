"""AutoSparse (Learning effective pruning at initialization from iterative pruning,
https://arxiv.org/abs/2408.14757): iterative rewind pruning (IRP) records each weight's initial
value, initial gradient and survival score; a predictor learns survival from the initial
features; new models are pruned at initialization with the predicted scores
(``sp.prune(model, "autosparse", sparsity, data, predictor=...)``).

    irp(model, data, rounds=..., epochs_per_round=..., prune_fraction=..., checkpoint_dir=...)
    IRPDataset.load(checkpoint_dir)
    ccc(a, b), ccc_report(dir_a, dir_b)
    train_predictor(datasets, backbone="mlp", features=("param", "grad"), ...) -> Predictor
    Predictor.save(path), Predictor.load(path), predictor.score_model(model, data)
    plot_learned_function(predictor, path)
"""

from sparsepai.autosparse.ccc import ccc, ccc_report
from sparsepai.autosparse.dataset import IRPDataset
from sparsepai.autosparse.irp import IRPConfig, initial_grads, irp, remaining_schedule
from sparsepai.autosparse.plot import plot_learned_function
from sparsepai.autosparse.features import feature_scales, layer_features, model_features
from sparsepai.autosparse.predictor import Predictor, PredictorConfig
from sparsepai.autosparse.training import train_predictor

__all__ = ["IRPConfig", "IRPDataset", "Predictor", "PredictorConfig", "ccc", "ccc_report",
           "feature_scales", "initial_grads", "irp", "layer_features", "model_features", "plot_learned_function",
           "remaining_schedule", "train_predictor"]
