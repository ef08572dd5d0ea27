"""The training loop's config refuses settings that would train nothing."""

import pytest

from sparsepai.experiments.train import TrainConfig


@pytest.mark.parametrize("field,value", [("epochs", 0), ("epochs", -1), ("epochs", 2.5),
                                         ("batch_size", 0), ("optimizer", "adam"),
                                         ("lr", 0.0)])
def test_bad_settings(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig: {field} must"):
        TrainConfig(**{field: value})


def test_train_one_epoch_masked():
    import torch

    from sparsepai.experiments.train import train
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
    assert len(res["train_seconds"]) == 2 and 0 < res["train_seconds"][0] < res["train_seconds"][1]


def test_train_epochs_in_lockstep_equals_train():
    """Two models advanced epoch by epoch, alternately, end as each trained alone."""
    import copy

    import torch

    from sparsepai.experiments.train import train, train_epochs
    from tests.tiny_nets import batches

    data = [(x.float(), y) for x, y in batches(4)]
    ds = torch.utils.data.TensorDataset(torch.cat([x for x, _ in data]),
                                        torch.cat([y for _, y in data]))
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05)
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(4, w), torch.nn.ReLU(), torch.nn.Linear(w, 3))
            for w in (8, 5)]
    alone = [copy.deepcopy(n) for n in nets]
    gens = [train_epochs(n, None, ds, ds, cfg) for n in nets]
    steps = [[next(g) for g in gens] for _ in range(cfg.epochs)]
    for s in steps:  # 32 samples, batches of 8: 4 steps whose times add up to the epoch's
        for i, e in enumerate(s):
            assert len(e["step_seconds"]) == 4 and min(e["step_seconds"]) > 0
        assert sum(s[0]["step_seconds"]) == pytest.approx(s[0]["train_seconds"] - (
            s[0]["epoch"] and steps[s[0]["epoch"] - 1][0]["train_seconds"]))
    for i, ref in enumerate(alone):
        want = train(ref, None, ds, ds, cfg, progress=False)
        assert [s[i]["train_loss"] for s in steps] == want["train_loss"]
        assert [s[i]["test_acc"] for s in steps] == want["test_acc_curve"]
        for a, b in zip(nets[i].parameters(), ref.parameters()):
            assert torch.equal(a, b)


def _net():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(),
                               torch.nn.Linear(6, 3)).double()


def test_train_pass_skips_and_reports_against_a_plain_sgd_loop():
    import copy

    import torch

    from sparsepai.core.train import train_pass

    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(5, 4, generator=g, dtype=torch.float64),
             torch.randint(0, 3, (5,), generator=g)) for _ in range(4)]
    model = _net()
    ref = copy.deepcopy(model)
    f = torch.nn.functional.cross_entropy
    seen, states = [], []

    def before(i):
        seen.append(i)
        states.append(copy.deepcopy(model[0].weight.detach()))

    stats = train_pass(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), data,
                       f, "test", skip=1, before_batch=before)
    # oracle: torch.optim.SGD by hand over the batches after the skipped one
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for x, y in data[1:]:
        opt.zero_grad()
        loss = f(ref(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert seen == [0, 1, 2, 3] and stats.batches == 4 and stats.samples == 15
    assert abs(stats.mean_loss - sum(losses) / 3) < 1e-12
    assert torch.equal(states[0], states[1])  # the skipped batch did not step
    assert not torch.equal(states[1], states[2])


def test_train_pass_errors_name_the_caller():
    import pytest
    import torch

    from sparsepai.core.train import train_pass

    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    f = torch.nn.functional.cross_entropy
    with pytest.raises(ValueError, match="my loop: data yielded no batches"):
        train_pass(model, opt, [], f, "my loop")
    bad = [(torch.full((2, 4), float("nan"), dtype=torch.float64), torch.tensor([0, 1]))]
    with pytest.raises(FloatingPointError, match="my loop: the loss is nan"):
        train_pass(model, opt, bad, f, "my loop")


def test_setup_seconds_cover_sparsify_measurements():
    """With sparse kernels, the first epoch's setup time includes sp.sparsify's timing of every
    layer it measured (each a median of repeated calls, so their sum is a lower bound)."""
    import torch

    from sparsepai._ext import has_op
    from sparsepai.experiments.train import train_epochs

    if not has_op("sparse_conv2d", "cpu"):
        pytest.skip("compiled extension not built")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.Flatten(),
                                torch.nn.Linear(16 * 8 * 8, 3))
    ds = torch.utils.data.TensorDataset(torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,)))
    masks = {n: torch.rand(p.shape) < 0.1 for n, p in model.named_parameters()
             if n.endswith("weight")}
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, sparse_kernels=True)
    epochs = list(train_epochs(model, masks, ds, ds, cfg))
    measured = sum(e.dense_ms + e.sparse_ms for e in model.sparsepai_sparsify_report
                   if e.dense_ms is not None) / 1e3
    assert measured > 0
    assert epochs[0]["setup_seconds"] >= measured
    assert epochs[1]["setup_seconds"] == epochs[0]["setup_seconds"]
    flat = torch.utils.data.TensorDataset(torch.randn(16, 3 * 8 * 8), torch.randint(0, 3, (16,)))
    dense = list(train_epochs(torch.nn.Linear(3 * 8 * 8, 3), None, flat, flat,
                              TrainConfig(epochs=1, batch_size=8, lr=0.05)))
    assert 0 <= dense[0]["setup_seconds"] < epochs[0]["setup_seconds"]
