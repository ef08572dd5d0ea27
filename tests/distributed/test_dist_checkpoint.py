"""Sharded masks on disk (torch.distributed.checkpoint): saved from 2 FSDP2 ranks, loaded on 3
ranks resharded, and on one process without torch.distributed; bad input."""

import functools

import pytest
import torch
import torch.distributed as dist

import sparsepai as sp
from sparsepai.distributed import load_sharded_masks, save_sharded_masks
from tests.dist_helpers import fsdp_linears, run_ranks


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 5),
                               torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()


def _sharded(world):
    return fsdp_linears(_net(), world)


def _want():
    return sp.prune(_net(), "magnitude", 0.5)


def _save(path, rank):
    masks = sp.prune(_sharded(2), "magnitude", 0.5, group=dist.group.WORLD)
    save_sharded_masks(path, masks)


def _load(path, rank):
    from torch.distributed.tensor import DTensor

    model = _sharded(3)
    got = load_sharded_masks(path, model)
    params = dict(model.named_parameters())
    want = _want()
    assert got.keys() == want.keys()
    for n, w in want.items():
        assert isinstance(got[n], DTensor) and got[n].placements == params[n].placements
        assert got[n].to_local().shape == params[n].to_local().shape
        assert torch.equal(got[n].full_tensor(), w), n


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_save_on_two_ranks_load_on_three_and_on_one(tmp_path):
    path = str(tmp_path / "masks")
    assert run_ranks(functools.partial(_save, path), 2) == {0: "ok", 1: "ok"}
    assert run_ranks(functools.partial(_load, path), 3) == {0: "ok", 1: "ok", 2: "ok"}
    got = load_sharded_masks(path, _net())  # one process, no process group
    want = _want()
    assert all(torch.equal(got[n], want[n]) for n in want)


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sharded_masks(tmp_path / "missing", _net())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a readable distributed checkpoint"):
        load_sharded_masks(tmp_path / "empty", _net())
    with pytest.raises(TypeError, match="bool tensor"):
        save_sharded_masks(tmp_path / "x", {"0.weight": torch.ones(7, 6)})
    path = tmp_path / "other"
    save_sharded_masks(path, {"0.weight": torch.ones(7, 6, dtype=torch.bool)})
    other = torch.nn.Sequential(torch.nn.Linear(6, 8))
    with pytest.raises(ValueError, match="different model"):
        load_sharded_masks(path, other)
    with pytest.raises(ValueError, match="does not have"):
        load_sharded_masks(path, torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(6, 7)))
