"""The step path of each masked tensor (sparsepai/optim/paths.py): "auto" measures on the first
steps and commits to the faster layout (a fake clock decides here, so the tests are
deterministic), the forced paths, and the same update bit for bit whichever path runs."""

import pytest
import torch

from sparsepai.optim import MaskedAdamW, MaskedSGD
from sparsepai.optim.paths import ENV, SCHEDULE
from tests.optim.helpers import grads_for, make_masks, make_params

MEASURED = len(SCHEDULE) + 1  # the step that creates the state, then the measuring ones


def _make(cls, ps, masks, **kw):
    if cls == "sgd":
        return MaskedSGD(ps, masks, lr=0.01, momentum=0.9, weight_decay=1e-3, **kw)
    return MaskedAdamW(ps, masks, lr=1e-2, amsgrad=True, **kw)


def _fake_clock(opt, sparse_s, dense_s):
    """A clock under which every timed call lasts sparse_s or dense_s, by the layout measured."""
    now = [0.0]

    def clock():
        now[0] += sparse_s if opt._chooser.compact(None) else dense_s
        return now[0]

    opt._chooser.clock = clock


def _steps(opts_and_params, start, stop, masks):
    for s in range(start, stop):
        gs = grads_for(s, opts_and_params[0][1], poison=masks)
        for opt, ps in opts_and_params:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()


@pytest.mark.parametrize("cls", ["sgd", "adamw"])
@pytest.mark.parametrize("faster", ["sparse", "dense", "tie"])
def test_auto_commits_to_the_faster_path_with_the_same_update(cls, faster):
    masks = make_masks(density=0.05)
    runs = {}
    for path in ("auto", "sparse", "dense"):
        ps = make_params()
        runs[path] = (_make(cls, ps, masks, path=path), ps)
    auto = runs["auto"][0]
    sparse_s, dense_s = {"sparse": (1.0, 2.0), "dense": (2.0, 1.0), "tie": (1.0, 1.0)}[faster]
    _fake_clock(auto, sparse_s, dense_s)
    # tensors 0 and 2 are masked and keep fewer than all: they may take either path
    _steps(list(runs.values()), 0, MEASURED - 1, masks)
    assert auto.paths() == ["measuring", "dense", "measuring", "dense"]
    _steps(list(runs.values()), MEASURED - 1, MEASURED + 3, masks)
    want = "sparse" if faster == "sparse" else "dense"  # a tie takes the dense path
    assert auto.paths() == [want, "dense", want, "dense"]
    assert runs["sparse"][0].paths() == ["sparse", "dense", "sparse", "dense"]
    assert runs["dense"][0].paths() == ["dense"] * 4
    ps = runs["auto"][1]
    key = "momentum_buffer" if cls == "sgd" else "exp_avg"
    for i in (0, 2):  # the state is laid out as the path says
        compact = auto.state[ps[i]][key].dim() == 1
        assert compact == (want == "sparse")
    for path in ("sparse", "dense"):  # the same bits whichever path ran when
        for p, q in zip(ps, runs[path][1]):
            assert torch.equal(p, q)
        for i in range(4):
            assert torch.equal(auto.state_dict()["state"][i][key],
                               runs[path][0].state_dict()["state"][i][key])


def test_measuring_times_each_tensor_in_both_layouts():
    masks = make_masks(density=0.05)
    ps = make_params()
    opt = _make("sgd", ps, masks)
    _steps([(opt, ps)], 0, MEASURED, masks)
    times = opt._chooser.times
    assert set(map(id, times)) == {id(ps[0]), id(ps[2])}
    for dense, sparse in times.values():
        assert len(dense) == len(sparse) == len(SCHEDULE) // 2
        assert all(t > 0 for t in dense + sparse)


def test_new_masks_are_measured_again():
    masks = make_masks(density=0.05)
    ps = make_params()
    opt = _make("adamw", ps, masks)
    _fake_clock(opt, 1.0, 2.0)
    _steps([(opt, ps)], 0, MEASURED, masks)
    assert opt.paths()[0] == "sparse"
    sd = opt.state_dict()
    sd["masks"] = {i: m for i, m in enumerate(make_masks(seed=5, density=0.05))}
    opt.load_state_dict(sd)
    assert opt.paths()[0] == "measuring"


def test_sgd_without_momentum_has_one_path():
    masks = make_masks(density=0.05)
    ps = make_params()
    opt = MaskedSGD(ps, masks, lr=0.1)
    _steps([(opt, ps)], 0, 3, masks)
    assert opt.paths() == ["dense"] * 4 and not opt._chooser.times


def test_path_is_checked_and_env_sets_the_default(monkeypatch):
    with pytest.raises(ValueError, match=r"MaskedSGD: path must be one of 'auto', 'sparse', "
                                         r"'dense', got 'fast'"):
        MaskedSGD(make_params(), make_masks(), lr=0.1, path="fast")
    monkeypatch.setenv(ENV, "sparse")
    opt = MaskedAdamW(make_params(), make_masks(density=0.05))
    assert opt.paths() == ["sparse", "dense", "sparse", "dense"]
    monkeypatch.setenv(ENV, "bogus")
    with pytest.raises(ValueError, match=r"MaskedAdamW: \$SPARSEPAI_OPTIM_PATH must be one of"):
        MaskedAdamW(make_params(), make_masks())
    monkeypatch.setenv(ENV, "dense")
    assert MaskedAdamW(make_params(), make_masks(), path="sparse").paths()[0] == "sparse"


def test_auto_compares_the_fastest_samples_not_stalled_ones():
    """Two stalled dense samples must not hand the tensor to a slower sparse path."""
    from sparsepai.optim.paths import PathChooser

    chooser = PathChooser("auto")
    p = object()
    chooser.end_step()  # the step that creates the state
    dense = iter([1.0, 5.0, 5.0])  # intrinsic 1.0, two samples hit a stall of the machine
    sparse = iter([2.0, 2.0, 2.0])
    for compact in SCHEDULE:
        assert chooser.measuring() and chooser.compact(p) == compact
        chooser.record(p, next(sparse) if compact else next(dense))
        chooser.end_step()
    assert chooser.path_of(p) == "dense"
