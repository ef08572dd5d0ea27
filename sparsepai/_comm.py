"""Small collectives shared by the distributed pruning paths and the ops' group checks: the
device a group communicates on, the check of a group argument, an all-gather of a few integers,
the check that every rank called with the same arguments, and exact digests of tensors (integer
sums of their bit patterns, so equal tensors give equal digests on any thread count)."""

from __future__ import annotations

import hashlib

import torch

_INT_VIEWS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def comm_device(group) -> torch.device:
    """Where this group's collectives take tensors: the current CUDA device for NCCL, else CPU."""
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_group(where: str, group) -> None:
    """A clear error unless ``group`` is a process group of an initialized ``torch.distributed``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(f"{where}: group= needs torch.distributed initialized "
                         "(torch.distributed.init_process_group)")
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"{where}: group must be a torch.distributed ProcessGroup (e.g. "
                        f"torch.distributed.group.WORLD), got {type(group).__name__}")


def all_gather_ints(values, group) -> list[list[int]]:
    """Every rank's list of int64 values (all ranks pass lists of one length), in rank order."""
    import torch.distributed as dist

    t = torch.tensor(list(values), dtype=torch.int64, device=comm_device(group))
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t, group=group)
    return [o.tolist() for o in out]


def text_hash(text: str) -> int:
    """A signed 64-bit hash of ``text``, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little", signed=True)


def stable_repr(value) -> str:
    """A description of an option value that is the same on every rank: plain values by repr,
    containers element-wise, anything else (a predictor object, a callable) by its type only."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(stable_repr(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ",".join(f"{stable_repr(k)}:{stable_repr(v)}"
                               for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))) + "}"
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}"
    return type(value).__name__


def check_same(fields: dict, group, where: str) -> None:
    """Raise the same ``ValueError`` on every rank unless all ranks pass equal ``fields``.

    One all-gather of a 64-bit hash per field, before any other collective, so a rank that was
    called with another method, sparsity or option fails clearly instead of leaving the others
    waiting in a collective that never comes.

    Args:
        fields: ``{name: str or int}``, the same names in the same order on every rank.
        group: the process group.
        where: the public function, for the message (e.g. ``"sparsepai.prune"``).
    """
    names = list(fields)
    mine = [text_hash(f"{n}={fields[n]}") for n in names]
    rows = all_gather_ints([len(names)] + mine, group)
    if any(len(r) != len(rows[0]) or r[0] != rows[0][0] for r in rows):
        raise ValueError(f"{where}: the ranks of the group called it with different arguments")
    for i, name in enumerate(names, start=1):
        differ = [r for r, row in enumerate(rows) if row[i] != rows[0][i]]
        if differ:
            raise ValueError(f"{where}: every rank of the group must pass the same {name}; "
                             f"rank {differ[0]} differs from rank 0 (this rank: "
                             f"{str(fields[name])[:200]})")


def digest(tensors) -> int:
    """An exact 64-bit digest of the values and order of ``tensors`` (bit patterns, wrapped
    integer arithmetic): equal on two ranks exactly when their tensors are bitwise equal,
    except for 2**-64 collisions."""
    total = 0
    for i, t in enumerate(tensors):
        t = t.detach()
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
        bits = t.contiguous().reshape(-1).view(_INT_VIEWS[t.element_size()]).to(torch.int64)
        pos = torch.arange(1, 2 * bits.numel(), 2, dtype=torch.int64, device=bits.device)
        total = (total * 1000003 + int((bits * pos).sum()) + i) & ((1 << 64) - 1)
    return total - (1 << 64) if total >= 1 << 63 else total
