// The drivers of the unstructured-sparse kernels (sparse_conv.h, sparse_linear.h): the
// instruction-set dispatch of the inner loops (sparse_conv_blocks.inc), the scratch buffers, the
// rules of the cache blocking and the parallel gathers and dot products over rows of kept
// weights. The design, layouts and kept-weight order are described in sparse_conv.h.
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

// The row of every CSR position.
template <class Par>
void sp_rows_of(int64_t rows, const int64_t* row_ptr, int64_t* row_of, const Par& par) {
  sp_for(par, rows, row_ptr[rows], [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t j = row_ptr[r]; j < row_ptr[r + 1]; ++j) row_of[j] = r;
  });
}

}  // namespace core
}  // namespace sparsepai
