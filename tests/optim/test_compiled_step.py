"""``torch.compile(opt.step, fullgraph=True)`` (PyTorch's recipe for compiling an optimizer step)
with MaskedSGD / MaskedAdamW: it traces without a graph break once the step paths are chosen,
does not recompile as the step count grows, and updates to the same bits as the eager step.

The oracle is the same optimizer stepped eagerly on a twin of the parameters with the same
gradients (the C++ kernel is called as an opaque op either way, so the bits must agree)."""

import pytest
import torch

from sparsepai.ops import dispatch
from sparsepai.optim import MaskedAdamW, MaskedSGD
from tests.optim.helpers import dense_state, grads_for, make_masks, make_params

EAGER_STEPS = 8  # past the measuring steps (1 .. 6) of path="auto": the paths are chosen
COMPILED_STEPS = 5
BACKENDS = [b for b in ("cpu", "reference") if dispatch.available(b, "masked_sgd_", "cpu")]

OPTIMIZERS = {
    "sgd": (lambda ps, ms, path: MaskedSGD(ps, ms, lr=0.05, momentum=0.9, weight_decay=1e-2,
                                           nesterov=True, path=path), ("momentum_buffer",)),
    "sgd-nomomentum": (lambda ps, ms, path: MaskedSGD(ps, ms, lr=0.05, path=path), ()),
    "adamw": (lambda ps, ms, path: MaskedAdamW(ps, ms, lr=1e-2, path=path),
              ("exp_avg", "exp_avg_sq")),
    "adamw-amsgrad": (lambda ps, ms, path: MaskedAdamW(ps, ms, lr=1e-2, amsgrad=True, path=path),
                      ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
}


def _twin():
    masks = make_masks(density=0.3)
    params = make_params()
    with torch.no_grad():
        for p, m in zip(params, masks):
            if m is not None:
                p.masked_fill_(~m, 0)
    return params, masks


def _set_grads(step, params, masks):
    for p, g in zip(params, grads_for(step, params, poison=masks)):
        p.grad = g


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("path", ["auto", "dense", "sparse"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compiled_step_matches_eager(name, path, backend):
    make, state_keys = OPTIMIZERS[name]
    with dispatch.use_backend(backend):
        (ps, masks), (qs, _) = _twin(), _twin()
        eager, compiled = make(ps, masks, path), make(qs, masks, path)
        for s in range(EAGER_STEPS):
            for params, opt in ((ps, eager), (qs, compiled)):
                _set_grads(s, params, masks)
                opt.step()
        assert "measuring" not in compiled.paths()
        counters = torch._dynamo.utils.counters
        counters.clear()
        step = torch.compile(compiled.step, fullgraph=True, backend="eager")
        for s in range(EAGER_STEPS, EAGER_STEPS + COMPILED_STEPS):
            _set_grads(s, ps, masks)
            eager.step()
            _set_grads(s, qs, masks)
            step()
        # one trace for all compiled steps: the growing step count is not baked into the graph
        assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    for i, (p, q, m) in enumerate(zip(ps, qs, masks)):
        assert torch.equal(p, q), f"parameter {i}"
        if m is not None:
            assert not q[~m].any(), f"pruned entries of parameter {i} moved"
        for key in state_keys:
            assert torch.equal(dense_state(eager, i, key), dense_state(compiled, i, key)), key
    if name.startswith("adamw"):
        assert [float(compiled.state[q]["step"]) for q in qs] == [EAGER_STEPS + COMPILED_STEPS] * 4


# compiler backend "eager": Dynamo's trace alone; None: PyTorch's recipe as written (Inductor)
@pytest.mark.parametrize("compiler, path", [("eager", "dense"), ("eager", "sparse"),
                                            (None, "sparse")])
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_compiled_step_from_the_first_step(name, path, compiler):
    """With a forced path the very first step (which creates the state) compiles too."""
    make, _ = OPTIMIZERS[name]
    (ps, masks), (qs, _) = _twin(), _twin()
    eager, compiled = make(ps, masks, path), make(qs, masks, path)
    options = {} if compiler is None else {"backend": compiler}
    step = torch.compile(compiled.step, fullgraph=True, **options)
    for s in range(3):
        _set_grads(s, ps, masks)
        eager.step()
        _set_grads(s, qs, masks)
        step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
