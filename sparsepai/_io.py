"""Every file sparsepai writes goes through here: safetensors (never pickle) with JSON metadata,
or JSON, written crash-safe and read back with errors that name the file.

Writes go to a temporary file in the same folder, are fsynced, renamed over the final name and
the folder fsynced, so a reader (or a resumed run) sees the old file or the complete new one,
never a torn one. Every write makes its own temporary file, ``.<name>.<16 hex digits>.tmp``
(created exclusively, so processes writing one path at once never touch each other's), and
removes it if the write fails; a name we did not create is never deleted. Files are created
with mode ``0o666`` less the umask (``0644`` by default), like any file a program writes;
safetensors' own ``save_file`` makes them ``0600``.
"""

from __future__ import annotations

import json
import os
import re
import secrets

TMP_SUFFIX = ".tmp"
# the names of our temporary files, and only ours: ".<name>.<16 hex digits>.tmp"
_TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")
# the one safetensors metadata key we use; its value is a JSON object
META_KEY = "sparsepai"


def fsync_dir(path: str) -> None:
    """Make a rename inside the folder ``path`` durable (POSIX: the entry lives in the folder)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_tmp_name(name: str) -> bool:
    """Whether the file name ``name`` is one of our temporary files (``.<name>.<hex>.tmp``)."""
    return bool(_TMP_NAME.match(name))


def _open_tmp(path: str) -> tuple[int, str]:
    """A new, exclusively created temporary file beside ``path``: ``(fd, its path)``.

    Like ``tempfile.mkstemp(dir=folder, prefix=".<name>.", suffix=".tmp")``, but created with
    mode ``0o666`` less the umask (the kernel applies it, as for ``open(path, "w")``), where
    ``mkstemp`` makes ``0o600``; the final file keeps the temporary's mode."""
    folder, base = os.path.split(os.path.abspath(path))
    base = base[:200]  # room for the prefix and suffix within a 255-byte name
    for _ in range(100):
        tmp = os.path.join(folder, f".{base}.{secrets.token_hex(8)}{TMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:  # someone else's name: never touched, draw another
            continue
    raise FileExistsError(f"{path}: could not create a temporary file in {folder}")


def check_file_target(path: str) -> None:
    """Refuse a ``path`` that is a folder, before anything is serialised or written."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder, not a file")


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file, fsync, rename, fsync the folder.

    Args:
        path: the final file; missing folders are created.
        data: the whole content.

    Raises:
        IsADirectoryError: ``path`` is a folder (nothing written). OSError: the write failed;
            the temporary file is removed and ``path`` is as it was.
    """
    check_file_target(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _open_tmp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def atomic_write_json(path: str, obj) -> None:
    """``obj`` as indented JSON, atomically; sorted keys, so the same object gives the same
    bytes."""
    check_file_target(path)
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def save_tensors(path: str, tensors: dict, meta: dict | None = None) -> None:
    """Write ``{name: tensor}`` as safetensors with ``meta`` as JSON, atomically.

    Args:
        path: the file to write.
        tensors: tensors on any device (copied to the CPU, made contiguous).
        meta: a JSON-serialisable dict, stored under the metadata key ``"sparsepai"``.
    """
    from safetensors.torch import save

    check_file_target(path)
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                metadata={META_KEY: json.dumps(meta or {}, sort_keys=True)})
    atomic_write_bytes(path, data)


def save_figure(path: str, fig, dpi: int = 120) -> None:
    """A matplotlib figure to ``path`` atomically, in the format its extension names (png if
    none)."""
    import io

    check_file_target(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=os.path.splitext(path)[1][1:] or "png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def _open_error(path: str, what: str, exc: Exception) -> ValueError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ValueError(f"{path}: not a readable {what} file (corrupt or truncated, or not "
                      f"safetensors: {reason})")


def _check_exists(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such {what} file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not a {what} file")
    try:  # a file we may not read is that, not "corrupt or not safetensors"
        with open(path, "rb"):
            pass
    except PermissionError:
        raise PermissionError(f"{path}: permission denied: cannot read this {what} "
                              "file") from None


def _parse_meta(path: str, raw: dict | None) -> dict:
    text = (raw or {}).get(META_KEY, "{}")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: its {META_KEY!r} metadata is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{path}: its {META_KEY!r} metadata is nested too deeply to be "
                         "ours") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its {META_KEY!r} metadata is a {type(meta).__name__}, "
                         "not a JSON object")
    return meta


def read_tensors(path: str, what: str = "safetensors") -> tuple[dict, dict]:
    """Read a file written by :func:`save_tensors`.

    Args:
        path: the file.
        what: what the file should be, for error messages (e.g. ``"mask"``).

    Returns:
        ``(tensors, meta)``: ``{name: CPU tensor}`` and the metadata dict (``{}`` if none).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, or a truncated, corrupt or non-safetensors file, or metadata that
            is not a JSON object; the message names ``path`` and the problem.
    """
    from safetensors import SafetensorError, safe_open

    _check_exists(path, what)
    try:
        with safe_open(path, "pt") as f:
            raw = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise _open_error(path, what, exc) from None
    return tensors, _parse_meta(path, raw)


def read_meta(path: str, what: str = "safetensors") -> dict:
    """The metadata dict of a file written by :func:`save_tensors`, without reading tensors;
    same errors as :func:`read_tensors`."""
    from safetensors import SafetensorError, safe_open

    _check_exists(path, what)
    try:
        with safe_open(path, "pt") as f:
            raw = f.metadata()
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise _open_error(path, what, exc) from None
    return _parse_meta(path, raw)


def check_writable(path: str, *, folder: bool = False) -> None:
    """Check, before any work, that ``path`` can be written, creating nothing that stays.

    Args:
        path: a file to be written (its folder may not exist yet), or with ``folder=True`` a
            folder to be created or written into.

    Raises:
        ValueError: naming ``path`` and why it cannot be written (a file where a folder is
            needed or the other way round, or a folder that refuses new files).
    """
    target = os.path.abspath(path)
    if folder and os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"{path}: exists and is not a folder")
    if not folder and os.path.isdir(target):
        raise ValueError(f"{path}: is a folder, not a file")
    probe = target if folder else os.path.dirname(target)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ValueError(f"{path}: cannot be written, {probe} is a file, not a folder")
    # try it: os.access says yes to root and knows nothing of read-only mounts
    try:
        fd, tmp = _open_tmp(os.path.join(probe, "sparsepai-probe"))
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ValueError(f"{path}: cannot be written ({exc.strerror} in {probe})") from None


def remove_stale_tmp(directory: str) -> None:
    """Delete temporary files left in ``directory`` (and its subfolders) by a write that a crash
    interrupted: only names of our pattern (:func:`is_tmp_name`), never a user's ``*.tmp``."""
    for root, _, files in os.walk(directory):
        for name in files:
            if is_tmp_name(name):
                os.remove(os.path.join(root, name))
