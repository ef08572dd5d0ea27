"""The registry is the single source: filled by discovering the method modules, each method's
scores are its signed saliency's magnitude (or the saliency itself), and an iterative method's
one-shot scores are its schedule's first round."""

import subprocess
import sys

import torch

import sparsepai as sp
import sparsepai.core.loss
import sparsepai.core.model
from sparsepai.core.registry import REGISTRY, get_method
from tests.tiny_nets import batches, mlp


def test_every_method_module_registers_itself():
    get_method("snip")
    assert set(REGISTRY) == {"random", "magnitude", "snip", "grasp", "synflow", "force", "prospr",
                             "autosparse", "lottery", "magnitude_after_training"}
    assert {n for n, m in REGISTRY.items() if m.schedule is not None} == {
        "synflow", "force", "lottery"}
    assert {n for n, m in REGISTRY.items() if not m.absolute} == {"random", "grasp", "autosparse"}


def test_scores_come_from_the_signed_saliency():
    model, data = mlp(), batches(4)
    names = ["0.weight", "2.weight"]
    for name in ("snip", "grasp", "prospr", "synflow", "force"):
        m = get_method(name)
        cfg = m.config()
        work = sparsepai.core.model.private_copy(model, names)
        with torch.enable_grad():
            sal = m.saliency(work, names, data, sparsepai.core.loss.default_loss(None), cfg)
        got = sp.score(model, name, data)
        for n in names:
            want = sal[n].abs() if m.absolute else sal[n]
            torch.testing.assert_close(got[n], want, rtol=0, atol=0)
        if name == "grasp":  # a signed score: both signs occur
            assert any(bool((sal[n] < 0).any()) for n in names)


def test_importing_sparsepai_stays_cheap():
    code = ("import sys, sparsepai.core.registry; sparsepai.core.registry.get_method('snip'); "
            "print(sorted(m for m in ('transformers', 'timm', 'onnx', 'torch_pruning', "
            "'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
