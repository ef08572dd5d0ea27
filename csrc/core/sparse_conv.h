// Unstructured-sparse 2-d convolution and linear layers on the CPU: forward, input gradient and
// weight gradient at the kept positions only. Torch-free; the extension's wrappers are
// csrc/cpu/sparse_conv.cpp, the oracle sparsepai/ops/sparse_conv_ref.py; the geometry and the
// layout copies of the buffers are in sparse_conv_layout.h, the drivers of the inner loops
// (instruction-set dispatch, scratch buffers, the cache rules, the parallel gathers and dot
// products) in sparse_conv_run.h; this file prepares the kept weights and runs the passes.
//
// Weights: CSR by output channel. row_ptr[O + 1] (int64), col[nnz] (int32, the flat index
// ic * KH * KW + kh * KW + kw of the dense weight; for a linear layer the input feature),
// values[nnz]. Each row is ordered by tap t = kh * KW + kw, then by input channel (strictly
// increasing (t, ic); sparse_layout builds it so, the wrappers check it): the kernels of the
// lanes layout read the ranges of taps straight off the rows, and the weight gradient comes out
// in the layout's order. The input gradient walks the transpose (CSC by input channel):
// t_ptr[C + 1] (int64) and t_idx[nnz] (int32, positions in the CSR arrays, increasing within a
// channel, so by output channel, then tap), built once with the layout.
//
// The wide layout. The input is copied once per call into a zero-padded buffer split by stride
// phase: row (ic, a, b) of the buffer holds, for every sample n one after the other, the plane
// xp[n, ic, sh * R + a, sw * C + b] (R < Hq, C < Wq) of the padded input xp. Output position
// (n, oh, ow) is q = n * Hq * Wq + oh * Wq + ow, and the weight (oc, ic, kh, kw) reads row
// (ic, kh * dh % sh, kw * dw % sw) at q + (kh * dh / sh) * Wq + kw * dw / sw. So one kept weight
// is one contiguous run of length N * Hq * Wq with one offset, for any stride, padding and
// dilation: the same two inner loops (sparse_conv_blocks.inc) do the forward pass (rows = output
// channels), the input gradient (rows = input channel and phase, reading the output gradient at
// negative offsets) and the weight gradient (dot products). Positions q that are not outputs
// (columns >= OW, rows >= OH) are computed and dropped; the output gradient is zero there, which
// keeps them out of both gradients. The cost is (Hq * Wq) / (OH * OW) - 1 extra work (6% for a
// 32x32 plane, 125% for a 4x4 plane with padding 1), no branches and no clipping in the loops.
//
// The lanes layout (SpConvGeom::lanes; sp_conv_prefer_lanes picks it for small planes, 16x16
// outputs of stride 1 and larger planes with enough kept weights) puts the sample innermost
// instead, q = (R * Wq + C) * N + n: the vector lanes run over the batch, a tap offset is N
// times the wide one, and the kernels compute only runs of q that matter: one per output row
// (ow * N long) for the forward pass and the weight gradient, one per input row of each phase
// for the input gradient. No extra work beyond rounding each run up to kSpTile, at the price of
// transposing layout copies (in registers: transpose_blocks.inc). Its tiles are small (one
// pixel of a batch of 64), so a tile can also leave out the taps that read only padding there
// (or, for the input gradient, only positions that are not outputs): the rows are ordered by
// tap (sp_tap_rows finds the ranges; every call sorts the input gradient's rows by input channel
// and tap), and a tile sums the ranges of taps that reach it (sp_tile_taps, SpPick). A 4x4 plane
// with padding 1 spends 31% of its work on such taps, a 2x2 plane 56%. The weight gradient sums
// each tap over the tiles it reaches only.
//
// The cache. A gather tile reads windows of every source row its rows keep a weight in: with 64
// or more input channels they outgrow the L1 cache, and loads from the L2 cache halve the rate
// of the FMAs. So the forward pass and the input gradient cut each row's kept weights into
// chunks of source rows (input channels forward, output channels for the input gradient) whose
// windows fit the L1 cache, and a tile sums chunk after chunk over a block of its rows
// (sp_src_chunk, SpPick::groups), where the chunks hold enough kept weights to pay for storing
// and reloading the accumulators. The weight gradient of dense enough layers goes by input
// channel (sp_run_dot_cols): the kept weights of one (row, channel) pair share their loads of
// the output gradient, and every row reads the channel's windows from the L1 cache.
// The linear layers (sparse_linear.h) use the same inner loops over blocks of tokens.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "sparse_conv_layout.h"
#include "sparse_conv_run.h"

namespace sparsepai {
namespace core {

// Per tap t = kh * KW + kw of the kernel: its phase and its q offset (SpConvGeom::tap_phase,
// tap_offset), and in_buf, where it reads the input buffer relative to its input channel's first
// row (phase * q + offset), so that the per-weight loops do no division.
struct SpTaps {
  std::vector<int64_t> phase, offset, in_buf;
  explicit SpTaps(const SpConvGeom& g) {
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t k = 0; k < g.kw; ++k) {
        phase.push_back(g.tap_phase(i, k));
        offset.push_back(g.tap_offset(i, k));
        in_buf.push_back(phase.back() * g.q + offset.back());
      }
  }
};

// Per column c = ic * kk + t of the weight (kk taps per input channel): its tap t and where it
// reads the input buffer (ic * phases * q + SpTaps::in_buf[t]). The preparation's per-weight
// loops read these tables (C * KH * KW entries, which stay in the L1 or L2 cache) instead of
// splitting every kept weight's column into input channel and tap (a division per weight, 20-40
// cycles, measured 15% of the forward pass of a 10% dense 512-channel 4x4 layer).
struct SpCols {
  std::vector<int32_t> tap;
  std::vector<int64_t> base;
  explicit SpCols(const SpConvGeom& g) {
    const int64_t kk = g.kh * g.kw;
    const SpTaps taps(g);
    tap.resize(size_t(g.c * kk));
    base.resize(size_t(g.c * kk));
    for (int64_t ic = 0; ic < g.c; ++ic)
      for (int64_t t = 0; t < kk; ++t) {
        tap[size_t(ic * kk + t)] = int32_t(t);
        base[size_t(ic * kk + t)] = ic * g.phases * g.q + taps.in_buf[size_t(t)];
      }
  }
};

// Rows in the layout's order (sparse_layout: each row by tap, then input channel): ptr[oc * kk +
// t] is the first of channel oc's kept weights of tap t (ptr[O * kk] = nnz), base their offsets
// into the input buffer. One pass in CSR order: no sort, and the values stay where they are,
// for the forward pass without chunks and for the weight gradient of the lanes layout (on a 2x2
// plane, sorting every call took a quarter of the time of forward plus backward).
template <class Par>
void sp_tap_rows(const SpConvGeom& g, const int64_t* row_ptr, const int32_t* col, int64_t* ptr,
                 int64_t* base, const Par& par) {
  const int64_t kk = g.kh * g.kw;
  const SpCols cols(g);
  const int32_t* tap_of = cols.tap.data();
  const int64_t* base_of = cols.base.data();
  sp_for(par, g.o, row_ptr[g.o], [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t t = 0;
      for (int64_t j = row_ptr[r]; j < row_ptr[r + 1]; ++j) {
        const int32_t c = col[j];
        for (const int64_t tap = tap_of[c]; t <= tap;) ptr[r * kk + t++] = j;
        base[j] = base_of[c];
      }
      while (t < kk) ptr[r * kk + t++] = row_ptr[r + 1];
    }
  });
  ptr[g.o * kk] = row_ptr[g.o];
}

// The kept weights of every output channel sorted by chunk of ch input channels (groups =
// ceil(C / ch) chunks), then by tap if by_tap (the lanes layout, whose tiles pick taps), for the
// forward pass with chunks: ptr[oc * slots + s] is the first of channel oc's kept weights of
// slot s = k * kk + t (chunk k, tap t; s = k without by_tap), slots = groups * kk (groups),
// ptr[O * slots] = nnz; base their offsets into the input buffer, w their values. A stable
// counting sort, so any order of the rows gives the same result.
template <class T, class Par>
void sp_sort_out(const SpConvGeom& g, const int64_t* row_ptr, const int32_t* col,
                 const T* values, int64_t ch, bool by_tap, int64_t* ptr, int64_t* base, T* w,
                 const Par& par) {
  const int64_t kk = g.kh * g.kw, ns = by_tap ? kk : 1;
  const int64_t groups = sp_chunks(g.c, ch), slots = groups * ns;
  const SpCols cols(g);
  std::vector<int32_t> slot_of(size_t(g.c * kk));  // per column, as SpCols
  for (int64_t c = 0; c < g.c * kk; ++c)
    slot_of[size_t(c)] = int32_t(c / kk / ch * ns + (by_tap ? c % kk : 0));
  sp_for(par, g.o, row_ptr[g.o], [&](int64_t b, int64_t e) {
    std::vector<int64_t> next(static_cast<size_t>(slots));
    for (int64_t r = b; r < e; ++r) {
      std::fill(next.begin(), next.end(), 0);
      for (int64_t j = row_ptr[r]; j < row_ptr[r + 1]; ++j) ++next[size_t(slot_of[size_t(col[j])])];
      int64_t k = row_ptr[r];
      for (int64_t t = 0; t < slots; ++t) {
        ptr[r * slots + t] = k;
        const int64_t c = next[size_t(t)];
        next[size_t(t)] = k;
        k += c;
      }
      for (int64_t j = row_ptr[r]; j < row_ptr[r + 1]; ++j) {
        const int64_t to = next[size_t(slot_of[size_t(col[j])])]++;
        base[to] = cols.base[size_t(col[j])];
        w[to] = values[j];
      }
    }
  });
  ptr[g.o * slots] = row_ptr[g.o];
}

// Kept-weight offsets into the input buffer in CSR order (the wide layout, where no tap is left
// out and the rows need no sorting).
template <class Par>
void sp_conv_bases(const SpConvGeom& g, int64_t nnz, const int32_t* col, int64_t* base,
                   const Par& par) {
  const SpCols cols(g);
  const int64_t* base_of = cols.base.data();
  sp_for(par, nnz, nnz, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) base[j] = base_of[col[j]];
  });
}

// The weight gradient's ranges of taps (SpPick::rng) and each one's segments of q, for rows
// sorted by tap in the lanes layout: the tiles of runs where the tap reads input pixels
// (sp_tile_taps), adjacent taps with the same tiles merged.
inline void sp_dot_taps(const SpConvGeom& g, const SpSegs& runs, SpSegs& ranges,
                        std::vector<SpSegs>& rsegs) {
  const int64_t kk = g.kh * g.kw;
  ranges.clear();
  rsegs.clear();
  std::vector<SpSegs> per(static_cast<size_t>(kk));
  std::vector<char> vh, vw;
  for (size_t s = 0; s + 1 < runs.size(); s += 2)
    for (int64_t q = runs[s]; q < runs[s + 1]; q += kSpTile) {
      sp_tile_taps(g, SpTapKind::kOut, q, q + kSpTile, vh, vw);
      for (int64_t i = 0; i < g.kh; ++i)
        for (int64_t k = 0; k < g.kw; ++k)
          if (vh[size_t(i)] && vw[size_t(k)])
            sp_push_run(per[size_t(i * g.kw + k)], q, q + kSpTile);
    }
  for (int64_t t = 0; t < kk; ++t) {
    if (!rsegs.empty() && rsegs.back() == per[size_t(t)]) {
      ranges.back() = t + 1;
    } else {
      ranges.insert(ranges.end(), {t, t + 1});
      rsegs.push_back(per[size_t(t)]);
    }
  }
}

// y (N, O, OH, OW) = the sparse convolution of x (N, C, H, W), plus bias (or nullptr).
template <class T, class Par>
void sparse_conv2d_forward(const SpConvGeom& g, const T* x, const int64_t* row_ptr,
                           const int32_t* col, const T* values, const T* bias, T* y,
                           SpWorkspace& ws, const Par& par) {
  const int64_t nnz = row_ptr[g.o], kk = g.kh * g.kw;
  T* in = ws.get<T>(SpWorkspace::kIn, g.in_elems());
  T* out = ws.get<T>(SpWorkspace::kOut, g.o * g.qr);
  int64_t* base = ws.get<int64_t>(SpWorkspace::kBase, nnz);
  sp_pack_input(g, x, in, par);
  // the lanes layout picks ranges of taps per tile (the rows are by tap: sp_tap_rows); the wide
  // one sums each row whole; with chunks of input channels (sp_src_chunk) both sort the rows by
  // chunk (and tap)
  const SpTaps taps(g);
  const std::vector<SpRowRuns> parts{SpRowRuns{0, g.o, sp_out_runs(g), SpTapKind::kOut}};
  double frac, nrng;
  sp_tap_use(g.lanes ? &g : nullptr, parts, frac, nrng);
  const double kept = double(nnz) / double(std::max<int64_t>(1, g.o * g.c)) * frac;
  const int64_t ch = !g.cache_blocks ? std::max<int64_t>(g.c, 1)
                                     : sp_src_chunk(g.c, sp_window<T>(taps.in_buf), kept, nrng);
  const int64_t groups = sp_chunks(g.c, ch);
  const T* w = values;
  const int64_t* ptr = row_ptr;
  const int64_t stride = groups * (g.lanes ? kk : 1);
  if (groups > 1) {
    int64_t* sorted = ws.get<int64_t>(SpWorkspace::kPtr, g.o * stride + 1);
    T* sw = ws.get<T>(SpWorkspace::kW, nnz);
    sp_sort_out<T>(g, row_ptr, col, values, ch, g.lanes, sorted, base, sw, par);
    ptr = sorted, w = sw;
  } else if (g.lanes) {
    int64_t* taps_at = ws.get<int64_t>(SpWorkspace::kPtr, g.o * kk + 1);
    sp_tap_rows(g, row_ptr, col, taps_at, base, par);
    ptr = taps_at;
  } else {
    sp_conv_bases(g, nnz, col, base, par);
  }
  sp_run_gather(out, g.qr, parts, g.lanes ? &g : nullptr, ptr, stride, groups, base, w, in,
                sp_ahead(g.c * g.phases, g.q, 0), par);
  if (g.lanes) {
    // row by row straight out, or whole planes through tmp (sp_rows_direct); the bias per
    // plane, so one plane per transpose when there is one
    const bool direct = sp_rows_direct(g.ow, 1);
    const int64_t ohw = g.oh * g.ow, group = direct || bias ? 1 : sp_plane_group(ohw);
    par.for_range(g.o, [&](int64_t b, int64_t e) {
      std::vector<T> tmp(direct ? 0 : size_t(std::max<int64_t>(1, group * ohw * g.n)));
      for (int64_t o0 = b; o0 < e; o0 += group) {
        const int64_t o1 = std::min(e, o0 + group);
        const T* add = bias ? bias + o0 : nullptr;
        if (direct) {
          for (int64_t r = 0; r < g.oh; ++r)
            sp_transpose_block(out + o0 * g.qr + r * g.wq * g.px, g.px,
                               y + (o0 * g.oh + r) * g.ow, g.o * ohw, g.ow, g.n, add);
          continue;
        }
        for (int64_t oc = o0; oc < o1; ++oc)
          for (int64_t r = 0; r < g.oh; ++r)
            std::memcpy(tmp.data() + ((oc - o0) * g.oh + r) * g.ow * g.n,
                        out + oc * g.qr + r * g.wq * g.px, size_t(g.ow * g.n) * sizeof(T));
        sp_transpose_block(tmp.data(), g.n, y + o0 * ohw, g.o * ohw, (o1 - o0) * ohw, g.n, add);
      }
    });
    return;
  }
  par.for_range(g.n * g.o, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / g.o, oc = t % g.o;
      const T* s = out + oc * g.qr + n * g.plane;
      T* d = y + t * g.oh * g.ow;
      const T add = bias ? bias[oc] : T(0);
      for (int64_t r = 0; r < g.oh; ++r)
        for (int64_t c = 0; c < g.ow; ++c) d[r * g.ow + c] = s[r * g.wq + c] + add;
    }
  });
}

// gx (N, C, H, W) and/or gw (nnz, in CSR order) of the sparse convolution for the output
// gradient gy (N, O, OH, OW); either output may be nullptr.
template <class T, class Par>
void sparse_conv2d_backward(const SpConvGeom& g, const T* x, const T* gy, const int64_t* row_ptr,
                            const int32_t* col, const T* values, const int64_t* t_ptr,
                            const int32_t* t_idx, T* gx, T* gw, SpWorkspace& ws,
                            const Par& par) {
  const int64_t nnz = row_ptr[g.o], kk = g.kh * g.kw;
  const int64_t gs = g.e + g.qr;
  T* gbuf = ws.get<T>(SpWorkspace::kGrad, g.o * gs + kSpTile);
  sp_pack_grad(g, gy, gbuf, par);
  if (gw != nullptr) {
    T* in = ws.get<T>(SpWorkspace::kIn, g.in_elems());
    int64_t* base = ws.get<int64_t>(SpWorkspace::kBase, nnz);
    sp_pack_input(g, x, in, par);
    const SpSegs runs = sp_out_runs(g);
    const SpTaps taps(g);
    double frac, nrng;
    sp_tap_use(g.lanes ? &g : nullptr, {SpRowRuns{0, g.o, runs, SpTapKind::kOut}}, frac, nrng);
    const double d = double(nnz) / double(std::max<int64_t>(1, g.o * g.c * kk));
    const double pair = d > 0 ? double(kk) * d / (1.0 - std::pow(1.0 - d, double(kk))) : 0.0;
    // the channel path splits the input channels among the threads: enough of them for all
    const bool by_channel = sp_dot_by_channel(pair, frac) && g.c >= 2 * par.max_threads();
    if (g.cache_blocks && by_channel) {
      // the row of every kept weight, to group each channel's weights by row
      int64_t* row_of = ws.get<int64_t>(SpWorkspace::kRowOf, nnz);
      sp_rows_of(g.o, row_ptr, row_of, par);
      sp_conv_bases(g, nnz, col, base, par);
      sp_run_dot_cols(gw, g.c, t_ptr, t_idx, row_of, base, gbuf + g.e, gs, in, runs,
                      sp_cols_block<T>(taps.in_buf), par);
    } else {
      // as in the forward pass: ranges of taps in the lanes layout, whole rows otherwise
      const int64_t* ptr = row_ptr;
      int64_t stride = 1;
      SpSegs ranges{0, 1};
      std::vector<SpSegs> rsegs{runs};
      if (g.lanes) {
        int64_t* taps_at = ws.get<int64_t>(SpWorkspace::kPtr, g.o * kk + 1);
        sp_tap_rows(g, row_ptr, col, taps_at, base, par);
        sp_dot_taps(g, runs, ranges, rsegs);
        ptr = taps_at, stride = kk;
      } else {
        sp_conv_bases(g, nnz, col, base, par);
      }
      sp_run_dot(gw, nnz, g.o, ptr, stride, ranges, rsegs,
                 base, gbuf + g.e, gs, in, runs, sp_q_block<T>(g.c * g.phases, g.qr), par);
    }
  }
  if (gx == nullptr) return;
  // rows (phase, ic): the kept weights of input channel ic whose tap has that phase (by chunk of
  // output channels, then by tap in the lanes layout), reading the output gradient of their
  // output channel at minus the tap offset; phase-major, so that in the lanes layout each phase
  // computes only its own input pixels
  const int64_t rows = g.c * g.phases;
  // slots per row: chunks of output channels (sp_src_chunk), each one slot per tap in the
  // lanes layout (its tiles pick taps), one in the wide layout (the transpose's order, as there
  // is nothing to pick)
  const SpTaps taps(g);
  std::vector<int64_t> neg(taps.offset.size());
  for (size_t i = 0; i < neg.size(); ++i) neg[i] = -taps.offset[i];
  std::vector<SpRowRuns> parts;
  if (g.lanes) {
    for (int64_t a = 0; a < g.sh; ++a)
      for (int64_t b = 0; b < g.sw; ++b) {
        const int64_t p = a * g.sw + b;
        parts.push_back(SpRowRuns{p * g.c, (p + 1) * g.c, sp_in_runs(g, a, b), SpTapKind::kIn});
      }
  } else {
    parts.push_back(SpRowRuns{0, rows, sp_in_runs(g, 0, 0), SpTapKind::kAll});
  }
  double frac, nrng;
  sp_tap_use(g.lanes ? &g : nullptr, parts, frac, nrng);
  const double kept = double(nnz) / double(std::max<int64_t>(1, rows * g.o)) * frac;
  const int64_t ch = !g.cache_blocks ? std::max<int64_t>(g.o, 1)
                                     : sp_src_chunk(g.o, sp_window<T>(neg), kept, nrng);
  const int64_t groups = sp_chunks(g.o, ch);
  const int64_t ns = g.lanes ? kk : 1, stride = ns * groups, slots = rows * stride;
  int64_t* ptr = ws.get<int64_t>(SpWorkspace::kPtr, slots + 1);
  int64_t* base = ws.get<int64_t>(SpWorkspace::kBase, nnz);
  T* w = ws.get<T>(SpWorkspace::kW, nnz);
  // The slot of column c = ic * kk + tap in chunk 0: (phase * C + ic) * stride + tap (lanes) or
  // + 0 (wide, where within a chunk the rows keep the CSR's order); chunk k adds k * ns.
  // Also its tap's offset into the output gradient, negated.
  std::vector<int64_t> slot_of(size_t(g.c * kk)), off_of(size_t(g.c * kk));
  for (int64_t ic = 0; ic < g.c; ++ic)
    for (int64_t t = 0; t < kk; ++t) {
      slot_of[size_t(ic * kk + t)] =
          (taps.phase[size_t(t)] * g.c + ic) * stride + (g.lanes ? t : 0);
      off_of[size_t(ic * kk + t)] = -taps.offset[size_t(t)];
    }
  // Walk the CSR rows (sequential reads of col and values) rather than the transpose (a random
  // read of col, values and the row of every kept weight, which measured 18% of forward plus
  // backward on a 2x2 plane). Each share of the output channels counts its weights per slot;
  // within a slot the shares' weights follow each other in share order, so every slot holds its
  // weights by output channel, whatever the scheduling.
  const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(par.max_threads(), g.o));
  std::vector<int64_t> rb(size_t(shares + 1), g.o);  // share s: rows [rb[s], rb[s + 1])
  for (int64_t sh = 0, r = 0; sh < shares; ++sh) {
    while (r < g.o && row_ptr[r] * shares < nnz * sh) ++r;
    rb[size_t(sh)] = r;
  }
  std::vector<int64_t> at(size_t(shares * slots), 0);  // per share and slot: count, then cursor
  auto walk = [&](bool place) {
    sp_for(par, shares, nnz, [&](int64_t b, int64_t e) {
      for (int64_t sh = b; sh < e; ++sh) {
        int64_t* cur = at.data() + sh * slots;
        for (int64_t r = rb[size_t(sh)]; r < rb[size_t(sh + 1)]; ++r) {
          const int64_t k = (r / ch) * ns, rbase = r * gs + g.e;
          for (int64_t j = row_ptr[r]; j < row_ptr[r + 1]; ++j) {
            const int32_t c = col[j];
            const int64_t sl = slot_of[size_t(c)] + k;
            if (!place) {
              ++cur[sl];
              continue;
            }
            const int64_t to = cur[sl]++;
            base[to] = rbase + off_of[size_t(c)];
            w[to] = values[j];
          }
        }
      }
    });
  };
  walk(false);
  for (int64_t sl = 0, k = 0; sl < slots; ++sl) {
    ptr[sl] = k;
    for (int64_t sh = 0; sh < shares; ++sh) {
      const int64_t n = at[size_t(sh * slots + sl)];
      at[size_t(sh * slots + sl)] = k;
      k += n;
    }
  }
  ptr[slots] = nnz;
  walk(true);
  T* gin = ws.get<T>(SpWorkspace::kOut, rows * g.qr);
  sp_run_gather(gin, g.qr, parts, g.lanes ? &g : nullptr, ptr, stride, groups, base, w, gbuf,
                sp_ahead(g.o, gs, g.e), par);
  if (g.lanes) {
    std::vector<int64_t> yo, xo;
    sp_lanes_offsets(g, g.c * g.qr, yo, xo);  // phase-major rows: a phase is c rows apart
    const int64_t hw = g.h * g.w, sample = g.c * hw;
    const bool direct = sp_rows_direct(g.w, g.sw);
    const int64_t group = direct ? 1 : sp_plane_group(hw);
    par.for_range(g.c, [&](int64_t b, int64_t e) {
      // pixel-major to (samples x pixels): row by row straight out, or (narrow rows, strides:
      // a stride puts the pixels of a row in sw phase rows) each pixel's run of samples
      // gathered into tmp, then whole planes transposed
      std::vector<T> tmp(direct ? 0 : size_t(std::max<int64_t>(1, group * hw * g.n)));
      for (int64_t i0 = b; i0 < e; i0 += group) {
        const int64_t i1 = std::min(e, i0 + group);
        for (int64_t ic = i0; ic < i1; ++ic) {
          const T* s = gin + ic * g.qr;
          if (direct) {
            for (int64_t y = 0; y < g.h; ++y)
              sp_transpose_block(s + yo[size_t(y)] + xo[0], g.n, gx + (ic * g.h + y) * g.w,
                                 sample, g.w, g.n);
            continue;
          }
          T* t = tmp.data() + (ic - i0) * hw * g.n;
          for (int64_t y = 0; y < g.h; ++y)
            for (int64_t xx = 0; xx < g.w; ++xx)
              std::memcpy(t + (y * g.w + xx) * g.n, s + yo[size_t(y)] + xo[size_t(xx)],
                          size_t(g.n) * sizeof(T));
        }
        if (!direct)
          sp_transpose_block(tmp.data(), g.n, gx + i0 * hw, sample, (i1 - i0) * hw, g.n);
      }
    });
    return;
  }
  const std::vector<char> read = g.phases_read();
  par.for_range(g.n * g.c, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / g.c, ic = t % g.c;
      T* d = gx + t * g.h * g.w;
      for (int64_t y = 0; y < g.h; ++y) {
        const int64_t yp = y + g.ph, a = yp % g.sh;
        T* dr = d + y * g.w;
        // columns x with (x + pw) % sw == b, read at (x + pw) / sw (no division per element)
        for (int64_t b = 0; b < g.sw; ++b) {
          if (!read[size_t(a * g.sw + b)]) {  // no tap reads this phase: no gradient
            for (int64_t x = ((b - g.pw) % g.sw + g.sw) % g.sw; x < g.w; x += g.sw) dr[x] = T(0);
            continue;
          }
          const T* sr = gin + ((a * g.sw + b) * g.c + ic) * g.qr + n * g.plane +
                        (yp / g.sh) * g.wq;
          const int64_t x0 = ((b - g.pw) % g.sw + g.sw) % g.sw;
          int64_t c = (x0 + g.pw) / g.sw;
          for (int64_t x = x0; x < g.w; x += g.sw, ++c) dr[x] = sr[c];
        }
      }
    }
  });
}


}  // namespace core
}  // namespace sparsepai
