// Unstructured-sparse 2-d convolution and linear layers on the CPU: forward, input gradient and
// weight gradient at the kept positions only. Torch-free; the extension's wrappers are
// csrc/cpu/sparse_conv.cpp, the oracle sparsepai/ops/sparse_conv_ref.py; the geometry and the
// layout copies of the buffers are in sparse_conv_layout.h.
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
#include <memory>
#include <new>
#include <vector>

#include "cpu_isa.h"
#include "sparse_conv_layout.h"

#if SP_HAVE_ISA_DISPATCH
#include <immintrin.h>
#endif

namespace sparsepai {
namespace core {

// The source rows a tile of q reads (rows of `stride` elements from `offset`): gather_rows
// prefetches each one `ahead` elements beyond the tile. Without it the rows, one stream per
// input channel (64 to 512 of them), outnumber what the hardware prefetchers track and the
// loads wait on memory (measured: half the forward pass of a 95% sparse ResNet-18 layer).
struct SpPrefetch {
  int64_t rows = 0, stride = 0, offset = 0, ahead = 0;
};

template <class T>
inline void sp_prefetch_tile(const T* src, const SpPrefetch& pf, int64_t q, int64_t bytes) {
  const char* p = reinterpret_cast<const char*>(src + pf.offset + q + pf.ahead);
  for (int64_t r = 0; r < pf.rows; ++r, p += pf.stride * int64_t(sizeof(T)))
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b, 0, 3);
}

// The kept weights a row of a gather sums: row r's are [ptr[r * stride + rng[2 i]],
// ptr[r * stride + rng[2 i + 1]]) for i < nrng. A CSR row: ptr = row_ptr, stride 1, the one
// range (0, 1). Rows by tap (sp_tap_rows, sp_sort_out): stride kk, and ranges of taps
// t = kh * KW + kw.
// groups > 1: each row's slots are `groups` chunks of the source rows (sp_src_chunk), stride /
// groups slots each, and the ranges pick within every chunk: over each block of 16 of its rows,
// a tile sums chunk 0 for every row of the block, then chunk 1 (adding to what it stored), and
// so on, so that one chunk's source windows stay in the L1 cache while the rows read them.
struct SpPick {
  const int64_t* ptr;
  int64_t stride;
  const int64_t* rng;
  int64_t nrng;
  int64_t groups = 1;
};

// The same for a weight gradient, each range summed over its own segments of q: the pairs
// seg[2 k], seg[2 k + 1] for k in [seg_at[i], seg_at[i + 1]).
struct SpDotPick {
  const int64_t* ptr;
  int64_t stride;
  const int64_t* rng;
  int64_t nrng;
  const int64_t* seg;
  const int64_t* seg_at;
};

namespace isa_base {
#include "sparse_conv_blocks.inc"
}  // namespace isa_base

#if SP_HAVE_ISA_DISPATCH
SP_ISA_BEGIN_AVX2
#define SP_SC_AVX2 1
namespace isa_avx2 {
#include "sparse_conv_blocks.inc"
}  // namespace isa_avx2
#undef SP_SC_AVX2
SP_ISA_END
SP_ISA_BEGIN_AVX512
#define SP_SC_AVX512 1
namespace isa_avx512 {
#include "sparse_conv_blocks.inc"
}  // namespace isa_avx512
#undef SP_SC_AVX512
SP_ISA_END
#endif

template <class T>
inline void sp_gather_rows(T* dst, int64_t dst_stride, int64_t r0, int64_t r1, const SpPick& pk,
                           const int64_t* base, const T* w, const T* src, int64_t q0, int64_t q1,
                           const SpPrefetch& pf) {
  SP_ISA_DISPATCH(gather_rows<T>, dst, dst_stride, r0, r1, pk, base, w, src, q0, q1, pf);
}

template <class T>
inline void sp_dot_group(T* gw, const int64_t* js, int64_t n, const int64_t* base, const T* g,
                         const T* src, int64_t q0, int64_t q1) {
  SP_ISA_DISPATCH(dot_group<T>, gw, js, n, base, g, src, q0, q1);
}

template <class T>
inline void sp_dot_rows(T* gw, int64_t r0, int64_t r1, const SpDotPick& pk, const int64_t* base,
                        const T* g, int64_t g_stride, const T* src) {
  SP_ISA_DISPATCH(dot_rows<T>, gw, r0, r1, pk, base, g, g_stride, src);
}

// Scratch buffers kept between calls: a fresh 20 MB buffer per call costs its page faults
// again every time (measured: more than the whole forward pass of a 95% sparse layer).
class SpWorkspace {
 public:
  enum Slot { kIn, kOut, kBase, kGrad, kW, kRowOf, kPtr, kCount };
  template <class T>
  T* get(Slot slot, int64_t n) {
    const size_t bytes = size_t(std::max<int64_t>(n, 1)) * sizeof(T);
    Buf& b = bufs_[slot];
    if (b.bytes < bytes) {
      b.p.reset(static_cast<char*>(::operator new(bytes, std::align_val_t(64))));
      b.bytes = bytes;
    }
    return reinterpret_cast<T*>(b.p.get());
  }

 private:
  struct Free {
    void operator()(char* p) const { ::operator delete(p, std::align_val_t(64)); }
  };
  struct Buf {
    std::unique_ptr<char, Free> p;
    size_t bytes = 0;
  };
  Buf bufs_[kCount];
};

// Rows of a q block: enough that one block of all source rows stays in the L2 cache (~256 KiB).
template <class T>
inline int64_t sp_q_block(int64_t src_rows, int64_t qr) {
  const int64_t want = (int64_t(256) << 10) / int64_t(sizeof(T)) / std::max<int64_t>(src_rows, 1);
  return std::min(qr, std::max(kSpTile, sp_round_up(std::min<int64_t>(want, 4096), kSpTile)));
}

// Source rows per chunk of a gather (SpPick::groups). A tile's windows into one chunk of the
// source rows stay in the L1 cache (24 KiB of it) while every row of a block of the tile's rows
// reads them, instead of coming from the L2 cache for every row: the forward pass and the input
// gradient ran 1.24-1.54x faster with chunks at 75% density on 8x8 and larger outputs, 1.30-1.45x
// at 50% on 16x16 and larger (benchmarks/bench_conv_cache.py, AVX-512 Xeon, 2 threads, batch
// 64). Each chunk costs a reload and a store of the accumulators per row and an
// iteration per range of taps, so a chunk holds at least 12 kept weights per row and range on
// average; where that takes more than the cache allows (sparse rows, small planes whose tiles
// use few taps) there is one chunk. window: the bytes one source row's taps read for a tile
// (sp_window); kept: the kept weights per row and source row a tile sums on average (the rows'
// density times the taps the tiles use, sp_tap_use), over nrng ranges of taps per tile.
inline int64_t sp_src_chunk(int64_t src_rows, int64_t window, double kept, double nrng) {
  if (src_rows <= 1 || !(kept > 0)) return std::max<int64_t>(src_rows, 1);
  const int64_t by_cache = std::max<int64_t>(1, (int64_t(24) << 10) / std::max<int64_t>(window, 1));
  const double by_work = 12.0 * std::max(nrng, 1.0) / kept;
  return by_work > double(by_cache) ? src_rows : std::min(src_rows, by_cache);
}

// Chunks of ch source rows (at least one, also for no source rows: a layer with no input
// channels still writes its output).
inline int64_t sp_chunks(int64_t src_rows, int64_t ch) {
  ch = std::max<int64_t>(ch, 1);
  return std::max<int64_t>(1, (src_rows + ch - 1) / ch);
}

// The bytes a tile of te elements reads from one source row whose taps sit at `offsets` (the
// union of the tile shifted by each offset). The default, 512 bytes, is the AVX-512 gather tile
// of floats; the AVX2 tile is half of it, so its chunks come out smaller than the budget allows.
template <class T>
inline int64_t sp_window(std::vector<int64_t> offsets, int64_t te = 512 / int64_t(sizeof(T))) {
  std::sort(offsets.begin(), offsets.end());
  int64_t n = 0, end = INT64_MIN;
  for (int64_t o : offsets) {
    n += std::min(te, o + te - std::max(o, end));
    end = o + te;
  }
  return n * int64_t(sizeof(T));
}

// par.for_range for enough work, else one call on this thread: every parallel region costs a
// wake-up and a barrier, which on a loaded machine waits for a descheduled thread.
template <class Par, class F>
void sp_for(const Par& par, int64_t n, int64_t work, F&& f) {
  if (work < (int64_t(1) << 16)) {
    if (n > 0) f(int64_t(0), n);
  } else {
    par.for_range(n, f);
  }
}

// Prefetch 4 tiles ahead along every source row.
inline SpPrefetch sp_ahead(int64_t rows, int64_t stride, int64_t offset) {
  return SpPrefetch{rows, stride, offset, 4 * kSpTile};
}

// Rows [r0, r1) computed over the runs `runs`. taps: for the rows of a convolution by tap
// (sp_tap_rows), which taps a tile can use (SpTapKind); kAll for other rows.
enum class SpTapKind { kAll, kOut, kIn };
struct SpRowRuns {
  int64_t r0 = 0, r1 = 0;
  SpSegs runs;
  SpTapKind taps = SpTapKind::kAll;
};

// Over the lanes positions [q0, q1) (pixels of one plane, the sample innermost), which kernel
// rows vh[kh] and columns vw[kw] can contribute anything: kOut, the positions are output
// pixels and the tap must read an input pixel, not padding (the forward pass, the weight
// gradient); kIn, they are input pixels of one phase and the tap must read an output pixel
// (the input gradient). The taps left out read only zeros there, so leaving them out changes
// no result; a 4x4 plane with padding 1 spends 44% of its work on such taps, a 2x2 plane 125%.
inline void sp_tile_taps(const SpConvGeom& g, SpTapKind kind, int64_t q0, int64_t q1,
                         std::vector<char>& vh, std::vector<char>& vw) {
  vh.assign(size_t(g.kh), 1);
  vw.assign(size_t(g.kw), 1);
  if (!g.lanes || kind == SpTapKind::kAll) return;
  const int64_t pa = q0 / g.px, pb = (q1 - 1) / g.px;
  const int64_t ra = pa / g.wq, rb = pb / g.wq;
  const int64_t ca = ra == rb ? pa % g.wq : 0, cb = ra == rb ? pb % g.wq : g.wq - 1;
  // input row (column) of output row R and kernel row kh, or output row of input row R
  auto ok = [&](int64_t R, int64_t k, int64_t s, int64_t d, int64_t p, int64_t size, int64_t osz) {
    return kind == SpTapKind::kOut ? (R * s + k * d - p >= 0 && R * s + k * d - p < size)
                                   : (R - (k * d) / s >= 0 && R - (k * d) / s < osz);
  };
  for (int64_t k = 0; k < g.kh; ++k) {
    bool any = false;
    for (int64_t R = ra; R <= rb && !any; ++R) any = ok(R, k, g.sh, g.dh, g.ph, g.h, g.oh);
    vh[size_t(k)] = any;
  }
  for (int64_t k = 0; k < g.kw; ++k) {
    bool any = false;
    for (int64_t C = ca; C <= cb && !any; ++C) any = ok(C, k, g.sw, g.dw, g.pw, g.w, g.ow);
    vw[size_t(k)] = any;
  }
}

// The taps vh x vw as ranges of t = kh * KW + kw (SpPick::rng).
inline SpSegs sp_tap_ranges(const SpConvGeom& g, const std::vector<char>& vh,
                            const std::vector<char>& vw) {
  SpSegs r;
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t k = 0; k < g.kw; ++k) {
      if (!vh[size_t(i)] || !vw[size_t(k)]) continue;
      const int64_t t = i * g.kw + k;
      if (!r.empty() && r.back() == t) {
        r.back() = t + 1;
      } else {
        r.push_back(t);
        r.push_back(t + 1);
      }
    }
  return r;
}

// Over the tiles of the parts' runs: the mean fraction of the kernel's taps a tile sums and the
// mean number of ranges they make (sp_tile_taps, sp_tap_ranges); without a geometry (rows in
// CSR order) all taps in one range.
inline void sp_tap_use(const SpConvGeom* g, const std::vector<SpRowRuns>& parts, double& frac,
                       double& nrng) {
  frac = 1.0, nrng = 1.0;
  if (g == nullptr) return;
  std::vector<char> vh, vw;
  double taps = 0, rngs = 0, tiles = 0;
  for (const SpRowRuns& pt : parts)
    for (size_t s = 0; s + 1 < pt.runs.size(); s += 2)
      for (int64_t q = pt.runs[s]; q < pt.runs[s + 1]; q += kSpTile) {
        sp_tile_taps(*g, pt.taps, q, q + kSpTile, vh, vw);
        const SpSegs r = sp_tap_ranges(*g, vh, vw);
        for (size_t m = 0; m + 1 < r.size(); m += 2) taps += double(r[m + 1] - r[m]);
        rngs += double(r.size() / 2);
        tiles += 1;
      }
  if (tiles > 0) frac = taps / tiles / double(g->kh * g->kw), nrng = rngs / tiles;
}

// dst rows of stride dst_stride, each part's rows over its runs, in pieces of 4 tiles, in one
// parallel region over all (part, piece) tasks (every task computes all rows of its part over
// its piece: gather_rows keeps the source windows of a tile in the L1 cache from one row to
// the next). A piece whose tiles use different taps (sp_tile_taps) is cut where they change.
// Each thread takes a contiguous share of the tasks of about equal cost (kept weights picked
// times length): the parts of a strided input gradient differ in cost (a 3x3 kernel of stride
// 2 has 4, 2, 2 and 1 taps per phase), and equal task counts measured one thread twice as busy
// as the other. ptr, stride, groups: the rows' kept weights (SpPick), stride / groups slots per
// chunk of source rows.
template <class T, class Par>
void sp_run_gather(T* dst, int64_t dst_stride, const std::vector<SpRowRuns>& parts,
                   const SpConvGeom* g, const int64_t* ptr, int64_t stride, int64_t groups,
                   const int64_t* base, const T* w, const T* src, const SpPrefetch& pf,
                   const Par& par) {
  const int64_t slots = stride / groups;  // per chunk: the taps, or one
  std::vector<int64_t> task;     // (part, q0, q1, first range, ranges)
  std::vector<int64_t> rng;      // all tasks' ranges
  std::vector<int64_t> cost{0};  // running total before each task
  std::vector<char> vh, vw;
  for (size_t k = 0; k < parts.size(); ++k) {
    const SpRowRuns& pt = parts[k];
    if (pt.r1 <= pt.r0) continue;
    // kept weights per slot (all chunks) over the part's rows, for the tasks' costs
    std::vector<int64_t> per(size_t(slots), 0);
    for (int64_t r = pt.r0; r < pt.r1; ++r)
      for (int64_t t = 0; t < stride; ++t)
        per[size_t(t % slots)] += ptr[r * stride + t + 1] - ptr[r * stride + t];
    const SpSegs pc = sp_pieces(pt.runs, 4 * kSpTile);
    for (size_t i = 0; i + 1 < pc.size(); i += 2) {
      int64_t q = pc[i];
      while (q < pc[i + 1]) {
        SpSegs r{0, slots};
        if (g != nullptr) {
          sp_tile_taps(*g, pt.taps, q, q + kSpTile, vh, vw);
          r = sp_tap_ranges(*g, vh, vw);
        }
        int64_t e = q + kSpTile;
        for (; e < pc[i + 1]; e += kSpTile) {
          if (g == nullptr) continue;
          sp_tile_taps(*g, pt.taps, e, e + kSpTile, vh, vw);
          if (sp_tap_ranges(*g, vh, vw) != r) break;
        }
        e = std::min(e, pc[i + 1]);
        int64_t c = (pt.r1 - pt.r0) * groups;
        for (size_t m = 0; m + 1 < r.size(); m += 2)
          for (int64_t t = r[m]; t < r[m + 1]; ++t) c += per[size_t(t)];
        if (!r.empty()) {
          task.insert(task.end(),
                      {int64_t(k), q, e, int64_t(rng.size() / 2), int64_t(r.size() / 2)});
          rng.insert(rng.end(), r.begin(), r.end());
          cost.push_back(cost.back() + c * (e - q));
        } else {  // no tap reaches these positions: they hold zeros
          for (int64_t row = pt.r0; row < pt.r1; ++row)
            std::fill(dst + row * dst_stride + q, dst + row * dst_stride + e, T(0));
        }
        q = e;
      }
    }
  }
  const int64_t ntask = int64_t(task.size() / 5);
  const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(par.max_threads(), ntask));
  // share s runs the tasks whose cost midpoint lies in [s, s + 1) * total / shares
  std::vector<int64_t> first(size_t(shares + 1), ntask);
  for (int64_t t = ntask - 1; t >= 0; --t) {
    const int64_t mid2 = cost[size_t(t)] + cost[size_t(t + 1)];  // twice the midpoint
    const int64_t s = std::min(shares - 1, mid2 * shares / std::max<int64_t>(1, 2 * cost.back()));
    for (int64_t u = 0; u <= s; ++u) first[size_t(u)] = std::min(first[size_t(u)], t);
  }
  par.for_range(shares, [&](int64_t sb, int64_t se) {
    for (int64_t t = first[size_t(sb)]; t < first[size_t(se)]; ++t) {
      const int64_t* tk = task.data() + 5 * t;
      const SpRowRuns& p = parts[size_t(tk[0])];
      const SpPick pk{ptr, stride, rng.data() + 2 * tk[3], tk[4], groups};
      sp_gather_rows(dst, dst_stride, p.r0, p.r1, pk, base, w, src, tk[1], tk[2], pf);
    }
  });
}

// gw[k] = sum over range i's segments rsegs[i] of g[row(k)][q] * src[base[k] + q], for the
// kept weights k (in the layout's order) of the rows [0, rows) picked by range i of
// ranges (SpPick). The runs seg (the union of every range's segments, each of those a union of
// tiles of seg) are cut into pieces of at most qb; consecutive pieces that span at most qb of q
// go to one dot_rows call (one horizontal sum per kept weight, the source block still in the
// L2 cache). Each thread sums a contiguous share of the calls into its own partial vector; the
// partials are added in thread order, so the result does not depend on the scheduling.
template <class T, class Par>
void sp_run_dot(T* gw, int64_t nnz, int64_t rows,
                const int64_t* ptr, int64_t stride, const SpSegs& ranges,
                const std::vector<SpSegs>& rsegs,
                const int64_t* base, const T* g, int64_t g_stride, const T* src,
                const SpSegs& seg, int64_t qb, const Par& par) {
  const SpSegs pc = sp_pieces(seg, qb);
  std::vector<int64_t> call{0};  // call k covers pieces [call[k], call[k + 1])
  for (int64_t i = 1; i < int64_t(pc.size() / 2); ++i)
    if (pc[size_t(2 * i + 1)] - pc[size_t(2 * call.back())] > qb) call.push_back(i);
  const int64_t ncall = pc.empty() ? 0 : int64_t(call.size());
  call.push_back(int64_t(pc.size() / 2));
  if (ncall == 0 || nnz == 0) {
    std::fill(gw, gw + nnz, T(0));
    return;
  }
  // each call's segments of each range: rsegs[i] within the call's window of q
  const int64_t nrng = int64_t(ranges.size() / 2);
  std::vector<int64_t> cseg, cat;  // pairs; per call nrng + 1 indices into the pairs
  for (int64_t k = 0; k < ncall; ++k) {
    const int64_t w0 = pc[size_t(2 * call[size_t(k)])];
    const int64_t w1 = pc[size_t(2 * call[size_t(k + 1)] - 1)];
    for (int64_t i = 0; i < nrng; ++i) {
      cat.push_back(int64_t(cseg.size() / 2));
      const SpSegs& rs = rsegs[size_t(i)];
      for (size_t s = 0; s + 1 < rs.size(); s += 2) {
        const int64_t a = std::max(rs[s], w0), b = std::min(rs[s + 1], w1);
        if (a < b) cseg.insert(cseg.end(), {a, b});
      }
    }
    cat.push_back(int64_t(cseg.size() / 2));
  }
  int64_t len = 0;
  for (size_t i = 0; i + 1 < seg.size(); i += 2) len += seg[i + 1] - seg[i];
  if (len <= 4 * qb) {
    // The source of all the runs fits the L2 cache (a 2x2 or 4x4 plane): the threads split the
    // rows (by kept weights) instead of q, so each kept weight is summed by one thread, call
    // after call, with no partial vectors to clear and add (measured 5-10% of the weight
    // gradient of a 2x2 plane).
    const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(par.max_threads(), rows));
    std::vector<int64_t> rb(size_t(shares + 1), rows);  // share s: rows [rb[s], rb[s + 1])
    for (int64_t sh = 0, r = 0; sh < shares; ++sh) {
      while (r < rows && ptr[r * stride] * shares < nnz * sh) ++r;
      rb[size_t(sh)] = r;
    }
    par.for_range(shares, [&](int64_t b, int64_t e) {
      for (int64_t sh = b; sh < e; ++sh) {
        const int64_t r0 = rb[size_t(sh)], r1 = rb[size_t(sh + 1)];
        const int64_t k0 = ptr[r0 * stride], k1 = ptr[r1 * stride];
        std::fill(gw + k0, gw + k1, T(0));
        for (int64_t k = 0; k < ncall; ++k) {
          const SpDotPick pk{ptr, stride, ranges.data(), nrng, cseg.data(),
                             cat.data() + k * (nrng + 1)};
          sp_dot_rows(gw, r0, r1, pk, base, g, g_stride, src);
        }
      }
    });
    return;
  }
  const int threads = int(std::max<int64_t>(1, std::min<int64_t>(par.max_threads(), ncall)));
  std::vector<T> part(size_t(threads) * size_t(nnz), T(0));
  par.for_range(threads, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      T* acc = part.data() + size_t(t) * size_t(nnz);
      for (int64_t k = ncall * t / threads; k < ncall * (t + 1) / threads; ++k) {
        const SpDotPick pk{ptr, stride, ranges.data(), nrng, cseg.data(),
                           cat.data() + k * (nrng + 1)};
        sp_dot_rows(acc, 0, rows, pk, base, g, g_stride, src);
      }
    }
  });
  for (int64_t j = 0; j < nnz; ++j) {
    T s = 0;
    for (int t = 0; t < threads; ++t) s += part[size_t(t) * size_t(nnz) + size_t(j)];
    gw[j] = s;
  }
}

// The weight gradient by input channel: gw[j] (CSR order) = sum over the runs of
// g[row(j)][q] * src[base[j] + q]. The runs are cut into pieces of qb (sp_cols_block: one
// channel's source windows over a piece fit the L1 cache); for each piece, each input channel's
// kept weights, in the transpose's order (by row, then tap), go in groups of one row
// (dot_group): the group shares its loads of the row's output gradient, and every row that keeps
// a weight of the channel reads the same windows, from the L1 cache. sp_run_dot reads each kept
// weight's window over an L2-sized block instead. The threads split the input channels by kept
// weights, so each kept weight is summed by one thread, piece after piece.
template <class T, class Par>
void sp_run_dot_cols(T* gw, int64_t c, const int64_t* t_ptr, const int32_t* t_idx,
                     const int64_t* row_of, const int64_t* base, const T* g, int64_t g_stride,
                     const T* src, const SpSegs& runs, int64_t qb, const Par& par) {
  const int64_t nnz = t_ptr[c];
  const SpSegs pc = sp_pieces(runs, qb);
  const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(par.max_threads(), c));
  std::vector<int64_t> cb(size_t(shares + 1), c);  // share s: channels [cb[s], cb[s + 1])
  for (int64_t sh = 0, ic = 0; sh < shares; ++sh) {
    while (ic < c && t_ptr[ic] * shares < nnz * sh) ++ic;
    cb[size_t(sh)] = ic;
  }
  par.for_range(shares, [&](int64_t b, int64_t e) {
    for (int64_t sh = b; sh < e; ++sh) {
      const int64_t c0 = cb[size_t(sh)], c1 = cb[size_t(sh + 1)];
      const int64_t t0 = t_ptr[c0], t1 = t_ptr[c1];
      // the share's kept weights in the transpose's order, and its groups (first, row), channel
      // after channel
      std::vector<int64_t> js(size_t(t1 - t0)), grp;
      for (int64_t ic = c0; ic < c1; ++ic) {
        for (int64_t t = t_ptr[ic]; t < t_ptr[ic + 1]; ++t) {
          const int64_t j = t_idx[t];
          js[size_t(t - t0)] = j;
          gw[j] = T(0);
          if (t == t_ptr[ic] || row_of[j] != row_of[t_idx[t - 1]])
            grp.insert(grp.end(), {t - t0, row_of[j]});
        }
      }
      const int64_t groups = int64_t(grp.size() / 2);
      grp.push_back(t1 - t0);
      for (size_t i = 0; i + 1 < pc.size(); i += 2)
        for (int64_t k = 0; k < groups; ++k) {
          const int64_t first = grp[size_t(2 * k)], row = grp[size_t(2 * k + 1)];
          sp_dot_group(gw, js.data() + first, grp[size_t(2 * k + 2)] - first, base,
                       g + row * g_stride, src, pc[i], pc[i + 1]);
        }
    }
  });
}

// Whether the weight gradient goes by input channel (sp_run_dot_cols) rather than by row
// (sp_run_dot). The channel path wins where the groups of a (row, channel) pair are large: they
// share the loads of the output gradient (benchmarks/bench_conv_cache.py, AVX-512 Xeon, 2
// threads, batch 64, 3x3 kernels: 1.10-1.65x at 75% density on 8x8 and larger outputs,
// 1.16-1.27x at 50% on 16x16 and larger). With small groups it is slower (each kept weight
// loads the output gradient again), and on small planes too, where it sums the taps that read
// only padding, which sp_run_dot leaves out (a 4x4 output: 31% of the taps). pair: the mean
// kept weights of a (row, channel) pair that keeps any; frac: the fraction of the taps the
// tiles use (sp_tap_use; 0.69 on a 4x4 plane, 0.83 on 8x8).
inline bool sp_dot_by_channel(double pair, double frac) {
  return frac >= 0.8 && pair * frac >= 3.2;
}

// The pieces of sp_run_dot_cols: the longest (a multiple of kSpTile, at most 4096) over which
// one input channel's source windows (its taps at `offsets`) take at most 24 KiB.
template <class T>
inline int64_t sp_cols_block(const std::vector<int64_t>& offsets) {
  int64_t qb = 4096;
  while (qb > kSpTile && sp_window<T>(offsets, qb) > (int64_t(24) << 10)) qb /= 2;
  return qb;
}

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

// The row of every CSR position.
template <class Par>
void sp_rows_of(int64_t rows, const int64_t* row_ptr, int64_t* row_of, const Par& par) {
  sp_for(par, rows, row_ptr[rows], [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t j = row_ptr[r]; j < row_ptr[r + 1]; ++j) row_of[j] = r;
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
  par.for_range(g.n * g.c, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t n = t / g.c, ic = t % g.c;
      T* d = gx + t * g.h * g.w;
      for (int64_t y = 0; y < g.h; ++y) {
        const int64_t yp = y + g.ph, a = yp % g.sh;
        T* dr = d + y * g.w;
        // columns x with (x + pw) % sw == b, read at (x + pw) / sw (no division per element)
        for (int64_t b = 0; b < g.sw; ++b) {
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
