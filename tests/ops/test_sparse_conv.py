"""sparse_conv2d and sparse_linear against their masked-dense references: forward, input,
weight and bias gradients (float64 tight, float32 to rounding), opcheck, compile, empty batch,
fully pruned rows, bad input."""

import os
import subprocess
import sys

import pytest
import torch

from sparsepai._ext import has_op
from sparsepai.ops.sparse_conv import sparse_conv2d, sparse_layout
from sparsepai.ops.sparse_conv_ref import sparse_conv2d_ref, sparse_linear_ref
from sparsepai.ops.sparse_linear import sparse_linear

needs_op = pytest.mark.skipif(not has_op("sparse_conv2d", "cpu"),
                              reason="compiled extension not built")

CONV_CASES = [
    # (N, C, H, W, O, kh, kw, stride, padding, dilation, density, bias)
    (3, 6, 9, 8, 5, 3, 3, 1, 1, 1, 0.2, True),
    (2, 4, 11, 10, 7, 3, 3, 2, 1, 1, 0.3, False),
    (2, 5, 7, 7, 4, 1, 1, 1, 0, 1, 0.5, True),
    (1, 3, 12, 9, 4, 3, 2, (1, 2), (2, 0), (2, 1), 0.4, True),
    (2, 8, 6, 6, 6, 3, 3, 1, 1, 1, 0.05, False),
    (4, 3, 5, 5, 2, 5, 5, 3, 2, 1, 0.6, True),
    # taps that read one phase of the four: a strided 1x1 (a ResNet shortcut), and a 3x3 of
    # stride 2 and dilation 2
    (2, 6, 9, 8, 5, 1, 1, 2, 0, 1, 0.5, True),
    (2, 4, 10, 11, 6, 3, 3, 2, 2, 2, 0.4, False),
]


def conv_case(case, dtype, seed=0):
    n, c, h, w, o, kh, kw, s, p, d, dens, bias = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    mask = torch.rand(o, c, kh, kw, generator=g) < dens
    mask[o // 2] = False  # a fully pruned output channel
    weight = torch.randn(o, c, kh, kw, generator=g, dtype=dtype)
    b = torch.randn(o, generator=g, dtype=dtype) if bias else None
    lay = sparse_layout(mask)
    values = weight.reshape(-1)[lay.index].clone()
    return x, values, lay, b, (o, c, kh, kw), s, p, d


def tol(dtype, terms=1):
    """Tolerances for results that sum ``terms`` products: the bound of float32 rounding grows
    with the length of a sum (n u sum |x_i| for n terms; the weight gradient of a batch-64 layer
    sums 1024), and a result that cancels to near zero keeps the absolute error of its terms."""
    if dtype == torch.float64:
        return dict(atol=1e-12, rtol=1e-12)
    f = max(1.0, terms / 256)
    return dict(atol=1e-5 * f, rtol=1e-5 * f)


def check_grads(fn, ref, leaves, dtype, seed=1, terms=1):
    # the reference in float64 whatever dtype is tested: only the kernels' rounding is measured
    a = [t.detach().clone().requires_grad_(True) for t in leaves]
    b = [t.detach().double().requires_grad_(True) for t in leaves]
    y, r = fn(*a), ref(*b)
    torch.testing.assert_close(y, r.to(dtype), **tol(dtype, terms))
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    y.backward(gy)
    r.backward(gy.double())
    for u, v in zip(a, b):
        torch.testing.assert_close(u.grad, v.grad.to(dtype), **tol(dtype, terms))


# Small planes, where the shape chooses the lanes layout (sample innermost): 4x4 and 8x8
# outputs, a batch that fills and one that does not fill the vector lanes, 1x1 and 3x3 planes,
# batch 1, stride 2 with and without padding, dilation; at batch 64 a tile of the lanes layout is
# one pixel, so the taps that read only padding are left out pixel by pixel (2x2 and 4x4 planes).
SMALL_CASES = [
    (16, 12, 4, 4, 10, 3, 3, 1, 1, 1, 0.3, True),
    (19, 7, 8, 8, 9, 3, 3, 2, 1, 1, 0.3, False),
    (33, 5, 8, 8, 6, 1, 1, 2, 0, 1, 0.5, True),
    (17, 6, 3, 3, 4, 3, 3, 1, 1, 1, 0.4, True),
    (1, 6, 1, 1, 5, 3, 3, 1, 1, 1, 0.5, False),
    (20, 5, 9, 9, 6, 3, 3, 2, 2, 2, 0.4, True),
    (64, 6, 2, 2, 5, 3, 3, 1, 1, 1, 0.4, True),
    (64, 5, 4, 4, 7, 3, 3, 1, 1, 1, 0.3, False),
    (64, 4, 7, 6, 5, 3, 3, 2, 1, 1, 0.4, False),
    # rows of 16+ samples and pixels: the layout copies transpose whole 16 x 16 squares
    (32, 3, 17, 18, 4, 3, 3, 1, 1, 1, 0.4, True),
    (40, 3, 34, 33, 5, 3, 3, 2, 1, 1, 0.3, False),
    # enough channels and kept weights that the gathers run in chunks of source rows (the input
    # channels forward, the output channels for the input gradient), the last chunk shorter
    (16, 76, 8, 8, 45, 3, 3, 1, 1, 1, 0.6, True),
    (16, 36, 12, 12, 20, 3, 3, 2, 1, 1, 0.7, False),
]


@needs_op
@pytest.mark.parametrize("case", CONV_CASES + SMALL_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout", ["auto", "wide", "lanes"])
@pytest.mark.parametrize("cache", ["on", "off"])
def test_conv_matches_masked_dense(case, dtype, layout, cache, monkeypatch):
    if layout != "auto":  # the kernels read the forced layout at every call
        monkeypatch.setenv("SPARSEPAI_SPARSE_CONV_LAYOUT", layout)
    if cache == "off":  # without the cache blocking (chunks, the weight gradient by channel)
        monkeypatch.setenv("SPARSEPAI_SPARSE_CONV_CACHE", "off")
    check_conv_case(case, dtype)


def check_conv_case(case, dtype):
    x, values, lay, b, ws, s, p, d = conv_case(case, dtype)
    leaves = [x, values] + ([b] if b is not None else [])

    def fn(x, v, *bb):
        return sparse_conv2d(x, v, lay, bb[0] if bb else None, ws, s, p, d)

    def ref(x, v, *bb):
        sp = (s, s) if isinstance(s, int) else s
        pp = (p, p) if isinstance(p, int) else p
        dd = (d, d) if isinstance(d, int) else d
        return sparse_conv2d_ref(x, v, *lay[:4], bb[0] if bb else None, ws, sp, pp, dd)

    # the longest sum: the weight gradient's over samples and output pixels, or an output's
    # (input gradient's) over input (output) channels and taps
    y = ref(*leaves).detach()
    terms = max(y.shape[0] * y.shape[2] * y.shape[3], max(ws[0], ws[1]) * ws[2] * ws[3])
    check_grads(fn, ref, leaves, dtype, terms=terms)
    # the reference itself against torch's conv2d with the masked dense weight
    dense = torch.zeros(ws, dtype=dtype).reshape(-1).index_put((lay.index,), values).view(ws)
    torch.testing.assert_close(ref(x, values, *([b] if b is not None else [])),
                               torch.nn.functional.conv2d(x, dense, b, s, p, d), **tol(dtype))


LINEAR_CASES = [((70, 33), 21, 0.3, True), ((2, 5, 16), 40, 0.1, False), ((1, 9), 3, 1.0, True),
                ((130, 64), 96, 0.02, True), ((3, 100, 20), 50, 0.2, False)]


@needs_op
@pytest.mark.parametrize("case", LINEAR_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_matches_masked_dense(case, dtype):
    shape, out_f, dens, bias = case
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g, dtype=dtype)
    mask = torch.rand(out_f, shape[-1], generator=g) < dens
    mask[0] = False
    lay = sparse_layout(mask)
    values = torch.randn(lay.index.numel(), generator=g, dtype=dtype)
    b = torch.randn(out_f, generator=g, dtype=dtype) if bias else None
    leaves = [x, values] + ([b] if bias else [])
    check_grads(lambda x, v, *bb: sparse_linear(x, v, lay, bb[0] if bb else None, shape[-1]),
                lambda x, v, *bb: sparse_linear_ref(x, v, *lay[:4], bb[0] if bb else None,
                                                    shape[-1]),
                leaves, dtype)


@needs_op
def test_opcheck():
    for case in CONV_CASES[:3]:
        x, values, lay, b, ws, s, p, d = conv_case(case, torch.float64)
        s, p, d = [[v, v] if isinstance(v, int) else list(v) for v in (s, p, d)]
        args = (x.requires_grad_(True), values.requires_grad_(True), *lay[:4],
                None if b is None else b.requires_grad_(True), list(ws), s, p, d)
        torch.library.opcheck(torch.ops.sparsepai.sparse_conv2d.default, args)
    mask = torch.rand(7, 9) < 0.4
    lay = sparse_layout(mask)
    args = (torch.randn(5, 9, dtype=torch.float64, requires_grad=True),
            torch.randn(lay.index.numel(), dtype=torch.float64, requires_grad=True), *lay[:4],
            torch.randn(7, dtype=torch.float64, requires_grad=True), 9)
    torch.library.opcheck(torch.ops.sparsepai.sparse_linear.default, args)


@needs_op
def test_compile_fullgraph():
    x, values, lay, b, ws, s, p, d = conv_case(CONV_CASES[0], torch.float32)

    def f(x, v):
        return sparse_conv2d(x, v, lay, b, ws, s, p, d).relu().sum()

    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="aot_eager")(x, values),
                               f(x, values))


@needs_op
def test_empty_batch_and_fully_pruned_layer():
    x, values, lay, b, ws, s, p, d = conv_case(CONV_CASES[0], torch.float64)
    xe = x[:0].clone().requires_grad_(True)
    y = sparse_conv2d(xe, values, lay, b, ws, s, p, d)
    assert y.shape == (0, ws[0], 9, 8)
    y.sum().backward()
    assert xe.grad.shape == xe.shape
    none = sparse_layout(torch.zeros(ws, dtype=torch.bool))
    xx = x.clone().requires_grad_(True)
    y = sparse_conv2d(xx, values[:0], none, b, ws, s, p, d)
    torch.testing.assert_close(y, b.view(1, -1, 1, 1).expand_as(y))
    y.sum().backward()
    assert bool((xx.grad == 0).all())


@needs_op
@pytest.mark.parametrize("layout", ["wide", "lanes"])
@pytest.mark.parametrize("cache", ["on", "off"])
def test_no_input_channels(layout, cache, monkeypatch):
    # a layer with no input channels still has an output: its bias (the kernels' chunks of
    # input channels must not be zero of them)
    monkeypatch.setenv("SPARSEPAI_SPARSE_CONV_LAYOUT", layout)
    if cache == "off":
        monkeypatch.setenv("SPARSEPAI_SPARSE_CONV_CACHE", "off")
    ws = (4, 0, 3, 3)
    lay = sparse_layout(torch.zeros(ws, dtype=torch.bool))
    x = torch.randn(16, 0, 5, 5, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    v = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    y = sparse_conv2d(x, v, lay, b, ws, 1, 1, 1)
    torch.testing.assert_close(y, b.detach().view(1, -1, 1, 1).expand(16, 4, 5, 5))
    y.sum().backward()
    torch.testing.assert_close(b.grad, torch.full((4,), 16.0 * 25, dtype=torch.float64))
    assert v.grad.shape == (0,)


@needs_op
def test_bad_input_is_refused():
    x, values, lay, b, ws, s, p, d = conv_case(CONV_CASES[0], torch.float32)
    op = torch.ops.sparsepai.sparse_conv2d.default
    geo = ([1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="channels"):
        op(x[:, :3], values, *lay[:4], b, list(ws), *geo)
    with pytest.raises(RuntimeError, match="dtypes differ"):
        op(x, values.double(), *lay[:4], b, list(ws), *geo)
    bad_col = lay.col.clone()
    bad_col[0] = 10 ** 6
    with pytest.raises(RuntimeError, match="outside"):
        op(x, values, lay.row_ptr, bad_col, lay.t_ptr, lay.t_idx, b, list(ws), *geo)
    with pytest.raises(RuntimeError, match="row_ptr"):
        op(x, values, lay.row_ptr[:-1], lay.col, lay.t_ptr, lay.t_idx, b, list(ws), *geo)
    with pytest.raises(RuntimeError, match="int32"):
        op(x, values, lay.row_ptr, lay.col.long(), lay.t_ptr, lay.t_idx, b, list(ws), *geo)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        op(x.half(), values.half(), *lay[:4], None, list(ws), *geo)
    with pytest.raises(ValueError, match="bool"):
        sparse_layout(torch.ones(3, 3))
    # the backward's checks of the layout and of its transpose
    bwd = torch.ops.sparsepai.sparse_conv2d_backward.default
    gy = torch.ones_like(op(x, values, *lay[:4], b, list(ws), *geo))
    mask = [True, True, False]
    bwd(gy, x, values, *lay[:4], list(ws), *geo, mask)  # the valid layout passes
    with pytest.raises(RuntimeError, match="outside"):
        bwd(gy, x, values, lay.row_ptr, bad_col, lay.t_ptr, lay.t_idx, list(ws), *geo, mask)
    bad_ptr = lay.row_ptr.clone()
    bad_ptr[1], bad_ptr[2] = bad_ptr[2], bad_ptr[1] - 1
    with pytest.raises(RuntimeError, match="non-decreasing"):
        bwd(gy, x, values, bad_ptr, lay.col, lay.t_ptr, lay.t_idx, list(ws), *geo, mask)
    bad_t = lay.t_idx.clone()
    first, last = int(lay.t_ptr[0]), int(lay.t_ptr[-1]) - 1  # weights of channels 0 and C - 1
    bad_t[first], bad_t[last] = bad_t[last], bad_t[first]
    with pytest.raises(RuntimeError, match="does not point at a kept weight"):
        bwd(gy, x, values, lay.row_ptr, lay.col, lay.t_ptr, bad_t, list(ws), *geo, mask)
    # a position twice in its channel (and another one missing) would count a weight twice
    twice = lay.t_idx.clone()
    twice[first + 1] = twice[first]
    with pytest.raises(RuntimeError, match="is not above"):
        bwd(gy, x, values, lay.row_ptr, lay.col, lay.t_ptr, twice, list(ws), *geo, mask)


@needs_op
def test_rows_out_of_tap_order_are_refused():
    # the kernels read each row's ranges of taps off the layout: a row in the dense weight's
    # column order (input channel, then tap) is refused, not computed wrongly
    x, values, lay, b, ws, s, p, d = conv_case(CONV_CASES[0], torch.float32)
    assert ws[2] * ws[3] > 1
    r = int(torch.argmax(lay.row_ptr[1:] - lay.row_ptr[:-1]))
    lo, hi = int(lay.row_ptr[r]), int(lay.row_ptr[r + 1])
    by_column = lay.col.clone()
    by_column[lo:hi] = lay.col[lo:hi].sort().values
    assert not torch.equal(by_column, lay.col)  # the case has a row of several taps
    geo = ([1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match="ordered by tap, then input channel"):
        torch.ops.sparsepai.sparse_conv2d(x, values, lay.row_ptr, by_column, lay.t_ptr,
                                          lay.t_idx, b, list(ws), *geo)
    twice = lay.col.clone()
    twice[lo + 1] = twice[lo]
    with pytest.raises(RuntimeError, match="ordered by tap"):
        torch.ops.sparsepai.sparse_conv2d(x, values, lay.row_ptr, twice, lay.t_ptr, lay.t_idx,
                                          b, list(ws), *geo)
    # the linear op: strictly increasing features
    lin = sparse_layout(torch.rand(6, 10, generator=torch.Generator().manual_seed(1)) < 0.6)
    col = lin.col.clone()
    col[0], col[1] = lin.col[1], lin.col[0]
    with pytest.raises(RuntimeError, match="strictly increasing"):
        torch.ops.sparsepai.sparse_linear(torch.ones(3, 10), torch.ones(col.numel()),
                                          lin.row_ptr, col, lin.t_ptr, lin.t_idx, None, 10)


def test_layout_order():
    # sparse_layout's order, against the mask itself: every row strictly increasing in (tap,
    # input channel), index the dense position of each column, the transpose increasing per
    # channel and holding every kept weight once
    mask = torch.rand(5, 4, 3, 2, generator=torch.Generator().manual_seed(3)) < 0.5
    lay = sparse_layout(mask)
    kk, per_row = 6, 24
    assert int(lay.row_ptr[-1]) == int(mask.sum())
    for r in range(5):
        cols = lay.col[lay.row_ptr[r]:lay.row_ptr[r + 1]].long()
        keys = [(int(c) % kk, int(c) // kk) for c in cols]
        assert keys == sorted(set(keys))
        assert set(int(c) for c in cols) == set(mask[r].reshape(-1).nonzero().reshape(-1).tolist())
    rows = torch.repeat_interleave(torch.arange(5), lay.row_ptr[1:] - lay.row_ptr[:-1])
    assert torch.equal(lay.index, rows * per_row + lay.col.long())
    assert sorted(lay.t_idx.tolist()) == list(range(int(mask.sum())))
    for ic in range(4):
        pos = lay.t_idx[lay.t_ptr[ic]:lay.t_ptr[ic + 1]].long()
        assert bool((pos[1:] > pos[:-1]).all())
        assert bool((lay.col[pos].long() // kk == ic).all())



@needs_op
@pytest.mark.parametrize("isa", ["avx2", "base"])
def test_lanes_layout_at_lower_isa_levels(isa):
    # the instruction-set level is read once per process: a fresh interpreter per level
    code = ("import torch\n"
            "from tests.ops.test_sparse_conv import SMALL_CASES, check_conv_case\n"
            "for case in SMALL_CASES[:3]:\n"
            "    for dtype in (torch.float64, torch.float32):\n"
            "        check_conv_case(case, dtype)\n")
    env = dict(os.environ, SPARSEPAI_CPU_ISA=isa, SPARSEPAI_SPARSE_CONV_LAYOUT="lanes")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
