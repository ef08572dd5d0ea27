"""The training loop's config refuses settings that would train nothing."""

import pytest

from sparsepai.recipes.train import TrainConfig


@pytest.mark.parametrize("field,value", [("epochs", 0), ("epochs", -1), ("epochs", 2.5),
                                         ("batch_size", 0), ("optimizer", "adam"),
                                         ("lr", 0.0)])
def test_bad_settings(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig: {field} must"):
        TrainConfig(**{field: value})


def test_train_one_epoch_masked():
    import torch

    from sparsepai.recipes.train import train
    from tests.tiny_nets import batches

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    data = [(x.float(), y) for x, y in batches(4)]
    xs = torch.cat([x for x, _ in data])
    ys = torch.cat([y for _, y in data])
    ds = torch.utils.data.TensorDataset(xs, ys)
    keep = torch.rand(8, 4) < 0.5
    res = train(model, {"0.weight": keep}, ds, ds, TrainConfig(epochs=2, batch_size=8),
                progress=False)
    assert len(res["train_loss"]) == 2 and 0 <= res["test_acc"] <= 1
    assert bool((model[0].weight[~keep] == 0).all())
