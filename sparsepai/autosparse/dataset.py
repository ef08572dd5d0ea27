"""The dataset an IRP run leaves behind, read back lazily.

A finished run's directory holds (safetensors and JSON only, never pickle):

- ``run.json``: the run's arguments and the fingerprint of the model and data it was started on.
- ``initial.safetensors``: ``state/<key>`` the model's whole initial ``state_dict`` (for
  rewinding), ``grad/<name>`` the initial gradient of every prunable weight.
- ``masks/round_NNN.safetensors``: the keep-masks after round NNN (1-based), one per weight.
- ``survival.safetensors``: rounds survived per weight (int32, 0..rounds).
- ``dataset.json``: the description, written last: its presence marks a finished run.
"""

from __future__ import annotations

import json
import os

import torch

from sparsepai import _io

FORMAT = "sparsepai-irp"
VERSION = 1


def round_path(directory: str, r: int) -> str:
    return os.path.join(directory, "masks", f"round_{r:03d}.safetensors")


class IRPDataset:
    """Initial weights, initial gradients and survival scores of one iterative rewind pruning
    run (AutoSparse, https://arxiv.org/abs/2408.14757, Section 3).

    Tensors are read from disk on first access of an attribute, not at ``load``.

    Attributes:
        directory: the run's folder.
        names: the prunable weights, in ``model.named_parameters()`` order.
        rounds: number of pruning rounds.
        params: ``{name: initial weight}``.
        grads: ``{name: initial gradient}`` (mean-loss gradient over the data, see
            ``description["grad_mode"]``).
        survival: ``{name: int32 tensor}``, how many rounds each weight survived (0..rounds).
        masks: ``[ {name: bool mask} for each round ]``, the masks after rounds 1..rounds.
        layer_types: ``{name: module class name}`` (``"Conv2d"``, ``"Linear"``, ...).
        description: the parsed ``dataset.json``.

    Shapes:
        ``params[n].shape == grads[n].shape == survival[n].shape == masks[r][n].shape``.
    """

    def __init__(self, directory: str, description: dict):
        self.directory = directory
        self.description = description
        self.names = list(description["names"])
        self.rounds = int(description["rounds"])
        self.layer_types = dict(description["layer_types"])
        self._cache = {}

    @classmethod
    def load(cls, directory: str) -> "IRPDataset":
        """Open a finished run (lazily: only ``dataset.json`` is read here).

        Raises:
            FileNotFoundError: no run there.
            ValueError: the run has not finished (resume it with the same arguments) or the
                folder is not an IRP dataset of this format version.
        """
        path = os.path.join(directory, "dataset.json")
        if not os.path.exists(path):
            if os.path.exists(os.path.join(directory, "run.json")):
                raise ValueError(f"{directory}: the IRP run has not finished (no dataset.json); "
                                 "run irp again with the same arguments to resume it")
            raise FileNotFoundError(f"{directory}: no IRP dataset here (no dataset.json)")
        with open(path) as f:
            try:
                desc = json.load(f)
            except (json.JSONDecodeError, RecursionError) as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
        if desc.get("format") != FORMAT:
            raise ValueError(f"{path}: not an IRP dataset (format {desc.get('format')!r})")
        if desc.get("version") != VERSION:
            raise ValueError(f"{path}: IRP dataset format version {desc.get('version')}, this "
                             f"sparsepai reads version {VERSION}")
        return cls(directory, desc)

    def _tensors(self, file: str, prefix: str) -> dict:
        key = (file, prefix)
        if key not in self._cache:
            from safetensors import SafetensorError, safe_open

            path = os.path.join(self.directory, file)
            _io._check_exists(path, "IRP dataset")
            out = {}
            try:
                with safe_open(path, "pt") as f:
                    for n in self.names:
                        out[n] = f.get_tensor(prefix + n)
            except (SafetensorError, OSError, RuntimeError) as exc:  # truncated, corrupt
                raise _io._open_error(path, "IRP dataset", exc) from None
            self._cache[key] = out
        return self._cache[key]

    @property
    def params(self) -> dict:
        return self._tensors("initial.safetensors", "state/")

    @property
    def grads(self) -> dict:
        return self._tensors("initial.safetensors", "grad/")

    @property
    def survival(self) -> dict:
        return self._tensors("survival.safetensors", "")

    @property
    def masks(self) -> list:
        return [self._tensors(os.path.relpath(round_path(self.directory, r), self.directory), "")
                for r in range(1, self.rounds + 1)]

    def numel(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.description["shapes"].values())

    def __repr__(self):
        return (f"IRPDataset({self.directory!r}, {len(self.names)} weight tensors, "
                f"{self.numel():,} weights, {self.rounds} rounds)")
