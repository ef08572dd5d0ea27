"""Sharded keep-masks on disk with ``torch.distributed.checkpoint`` (DCP).

``save_sharded_masks(path, masks)`` writes each rank's shards of ``DTensor`` masks (plain
tensors, e.g. replicated or channel masks, are written once); ``load_sharded_masks(path,
model)`` reads them back resharded to however ``model`` is sharded now, on any number of ranks
(saved from 2 ranks, loaded on 3, or on one process without ``torch.distributed``). Every rank
calls both with the same arguments. ``sp.save_masks``/``sp.load_masks`` stay the single-file
format. DCP writes the checkpoint's ``.metadata`` file last, so an interrupted save is never
read back as a complete one.
"""

from __future__ import annotations

import os

import torch

from sparsepai.distributed.sharded import _dtensor_like

_PREFIX = "sparsepai.masks/"  # keys in the checkpoint: this prefix + the mask's name


def save_sharded_masks(path, masks: dict, *, group=None) -> None:
    """Write keep-masks to the DCP checkpoint directory ``path`` (created if needed).

    Args:
        path: a directory.
        masks: ``{name: bool tensor}``, ``DTensor`` (as ``sp.prune(..., group=)`` returns for
            FSDP2 models) or plain.
        group: the process group the ranks save from (default: the default group, or none).
    """
    import torch.distributed.checkpoint as dcp

    if not isinstance(masks, dict) or not masks:
        raise TypeError("save_sharded_masks: masks must be a non-empty dict {name: bool tensor}")
    for n, m in masks.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise TypeError(f"save_sharded_masks: the mask {n!r} must be a bool tensor")
    os.makedirs(path, exist_ok=True)
    dcp.save({_PREFIX + n: m for n, m in masks.items()}, checkpoint_id=os.fspath(path),
             process_group=group, no_dist=_no_dist())


def _no_dist() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized())


def _saved_shapes(path) -> dict:
    import torch.distributed.checkpoint as dcp

    if not os.path.exists(path):
        raise FileNotFoundError(f"load_sharded_masks: {path} does not exist")
    try:
        meta = dcp.FileSystemReader(os.fspath(path)).read_metadata()
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is the same user error
        raise ValueError(f"load_sharded_masks: {path} is not a readable distributed checkpoint "
                         f"({type(exc).__name__}: {exc})") from None
    shapes = {}
    for key, md in meta.state_dict_metadata.items():
        if key.startswith(_PREFIX) and hasattr(md, "size"):
            shapes[key[len(_PREFIX):]] = (tuple(md.size), md.properties.dtype)
    if not shapes:
        raise ValueError(f"load_sharded_masks: {path} holds no sparsepai masks")
    return shapes


def load_sharded_masks(path, model: torch.nn.Module, *, group=None) -> dict:
    """Read masks written by :func:`save_sharded_masks`, sharded like ``model``'s parameters.

    Args:
        path: the checkpoint directory.
        model: the model the masks belong to, sharded (FSDP2) or not, on the current ranks.
            Masks named like a parameter must have its (global) shape; other names must be
            modules (channel masks).
        group: the process group the ranks load on (default: the default group, or none).

    Returns:
        ``{name: bool mask}``: ``DTensor``s placed like their parameters for sharded
        parameters, plain tensors otherwise.

    Raises:
        FileNotFoundError: no such path.
        ValueError: not a checkpoint of masks, or masks for another model (a name it lacks, or
            another shape).
    """
    import torch.distributed.checkpoint as dcp

    shapes = _saved_shapes(path)
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    target = {}
    for name, (shape, dtype) in shapes.items():
        if dtype != torch.bool:
            raise ValueError(f"load_sharded_masks: {path}: {name!r} is {dtype}, not a bool mask")
        p = params.get(name)
        if p is None and name not in modules:
            raise ValueError(f"load_sharded_masks: {path} has a mask for {name!r}, which the "
                             "model does not have: the masks are for a different model")
        if p is not None and tuple(p.shape) != shape:
            raise ValueError(f"load_sharded_masks: {path}: the mask {name!r} has shape {shape}, "
                             f"the model's parameter {tuple(p.shape)}: the masks are for a "
                             "different model")
        if p is not None and hasattr(p, "to_local"):
            local = torch.zeros(p.to_local().shape, dtype=torch.bool, device=p.device)
            target[_PREFIX + name] = _dtensor_like(local, p)
        else:
            dev = p.device if p is not None else torch.device("cpu")
            target[_PREFIX + name] = torch.zeros(shape, dtype=torch.bool, device=dev)
    dcp.load(target, checkpoint_id=os.fspath(path), process_group=group, no_dist=_no_dist())
    return {k[len(_PREFIX):]: v for k, v in target.items()}
