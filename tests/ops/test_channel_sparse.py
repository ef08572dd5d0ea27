"""channel_sparse_conv2d against its reference: forward, backward, opcheck, compile, bad input,
and the Triton kernels under the interpreter. Every test runs on the grid of tests/ops/grid.py
(each available backend forced)."""

import pytest
import torch

from sparsepai._ext import has_op
from sparsepai.ops.channel_sparse import channel_sparse_conv2d, channel_sparse_conv2d_ref

OPS = ("channel_sparse_conv2d",)
needs_op = pytest.mark.skipif(not has_op("channel_sparse_conv2d", "cpu"),
                              reason="compiled extension not built")

CASES = [
    # (N, C, H, W, in_idx, out_idx, out_channels, k, stride, padding, dilation, bias)
    (2, 6, 7, 7, [0, 2, 5], [1, 3], 5, 3, 1, 1, 1, True),
    (1, 4, 8, 6, [3, 1], [0, 1, 2, 3], 4, 3, 2, 1, 1, False),  # identity out_idx
    (2, 5, 9, 9, [0, 1, 2, 3, 4], [4, 0], 6, 1, 2, 0, 1, True),  # identity in_idx, 1x1
    (1, 3, 10, 10, [2, 2, 0], [2], 3, 3, 1, 2, 2, True),  # repeated input channel, dilation
]


def make(case, device, dtype=torch.float32, seed=0):
    n, c, h, w, ii, oi, oc, k, s, p, d, bias = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype).to(device)
    wt = torch.randn(len(oi), len(ii), k, k, generator=g, dtype=dtype).to(device)
    b = torch.randn(len(oi), generator=g, dtype=dtype).to(device) if bias else None
    return x, wt, b, torch.tensor(ii), torch.tensor(oi), oc, s, p, d


def _idx_on(device, *idx):
    return [i.to(device) if device != "cpu" else i for i in idx]


@needs_op
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_backward_match_reference(device, case, dtype):
    x, w, b, ii, oi, oc, s, p, d = make(case, device, dtype)
    ii, oi = _idx_on(device, ii, oi)
    leaves = [t.clone().requires_grad_(True) for t in (x, w) + ((b,) if b is not None else ())]
    ref_leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    bb = leaves[2] if b is not None else None
    rb = ref_leaves[2] if b is not None else None
    y = channel_sparse_conv2d(leaves[0], leaves[1], bb, ii, oi, oc, s, p, d)
    r = channel_sparse_conv2d_ref(ref_leaves[0], ref_leaves[1], rb, ii, oi, oc, s, p, d)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(y, r, **tol)
    keep = torch.zeros(oc, dtype=torch.bool)
    keep[oi.cpu()] = True
    assert bool((y[:, ~keep.to(y.device)] == 0).all())
    gy = torch.randn_like(y)
    y.backward(gy)
    r.backward(gy)
    for a, e in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, e.grad, **tol)


@needs_op
def test_opcheck():
    for case in CASES:
        x, w, b, ii, oi, oc, s, p, d = make(case, "cpu")
        args = (x.requires_grad_(True), w.requires_grad_(True),
                b.requires_grad_(True) if b is not None else None, ii, oi, oc, [s, s], [p, p],
                [d, d])
        torch.library.opcheck(torch.ops.sparsepai.channel_sparse_conv2d.default, args)


@needs_op
def test_compile_fullgraph():
    x, w, b, ii, oi, oc, s, p, d = make(CASES[0], "cpu")

    def f(x, w, b):
        return channel_sparse_conv2d(x, w, b, ii, oi, oc, s, p, d).relu().sum()

    eager = f(x, w, b)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(x, w, b)
    torch.testing.assert_close(compiled, eager)


@needs_op
def test_empty_batch_and_no_outputs():
    x, w, b, ii, oi, oc, s, p, d = make(CASES[0], "cpu")
    y = channel_sparse_conv2d(x[:0], w, b, ii, oi, oc, s, p, d)
    assert y.shape[0] == 0 and y.shape[1] == oc


@needs_op
@pytest.mark.parametrize("bad, match", [
    (dict(oi=torch.tensor([1, 1])), "duplicate"),
    (dict(oi=torch.tensor([1, 7])), "outside"),
    (dict(ii=torch.tensor([0, 2, 9])), "outside"),
    (dict(ii=torch.tensor([0, 2])), "in_idx"),
    (dict(ii=torch.tensor([0., 2., 5.])), "int64"),
])
def test_bad_input(bad, match):
    x, w, b, ii, oi, oc, s, p, d = make(CASES[0], "cpu")
    ii, oi = bad.get("ii", ii), bad.get("oi", oi)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.sparsepai.channel_sparse_conv2d.default(x, w, b, ii, oi, oc, [s, s], [p, p],
                                                          [d, d])


@pytest.mark.parametrize("case", CASES)
def test_triton_kernels_match_reference(case):
    from sparsepai.ops._triton import has_triton

    if not has_triton():
        pytest.skip("triton not installed")
    from sparsepai.ops import channel_sparse_triton as tk

    # on a GPU the kernels need CUDA tensors; without one they run under TRITON_INTERPRET=1
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x, w, b, ii, oi, oc, s, p, d = make(case, dev)
    ii, oi = _idx_on(dev, ii, oi)
    geo = ((s, s), (p, p), (d, d))
    y = tk.conv_forward(x, w, b, ii, oi, oc, *geo)
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    br = b.clone().requires_grad_(True) if b is not None else None
    r = channel_sparse_conv2d_ref(xr, wr, br, ii, oi, oc, s, p, d)
    torch.testing.assert_close(y, r, atol=1e-4, rtol=1e-4)
    gy = torch.randn_like(r)
    r.backward(gy)
    gx, gw, gb = tk.conv_backward(gy, x, w, ii, oi, *geo, (True, True, b is not None))
    torch.testing.assert_close(gx, xr.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gw, wr.grad, atol=1e-4, rtol=1e-4)
    if b is not None:
        torch.testing.assert_close(gb, br.grad, atol=1e-4, rtol=1e-4)
