"""Crash-safe files: every file is written to a temporary name, fsynced, renamed over its final
name and the directory fsynced, so a reader (or a resumed run) sees either the old file or the
complete new one, never a torn one."""

from __future__ import annotations

import json
import os

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str) -> None:
    """Make a rename inside ``path`` durable (POSIX: the directory entry lives in the dir)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: tmp file, fsync, os.replace, fsync dir."""
    tmp = path + TMP_SUFFIX  # a fixed name: a write cut by a crash is overwritten by the retry
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write_json(path: str, obj) -> None:
    # sort_keys and no timestamps: the same run writes the same bytes
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def atomic_save_tensors(path: str, tensors: dict, meta: dict | None = None) -> None:
    """safetensors (never pickle) with ``meta`` as JSON under the metadata key ``sparsepai``."""
    from safetensors.torch import save

    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                metadata={"sparsepai": json.dumps(meta or {}, sort_keys=True)})
    atomic_write_bytes(path, data)


def read_meta(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        return json.loads((f.metadata() or {}).get("sparsepai", "{}"))


def remove_stale_tmp(directory: str) -> None:
    """Delete temporary files left by a write that a crash interrupted."""
    for root, _, files in os.walk(directory):
        for name in files:
            if name.endswith(TMP_SUFFIX):
                os.remove(os.path.join(root, name))
