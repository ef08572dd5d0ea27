// The data layouts of the unstructured-sparse convolution (csrc/core/sparse_conv.h explains
// them): the geometry of the packed buffers (SpConvGeom), the runs of q each pass computes, and
// the layout copies of the input and of the output gradient into those buffers. Torch-free.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu_isa.h"

#if SP_HAVE_ISA_DISPATCH
#include <immintrin.h>
#endif

namespace sparsepai {
namespace core {

namespace isa_base {
#include "transpose_blocks.inc"
}  // namespace isa_base

#if SP_HAVE_ISA_DISPATCH
SP_ISA_BEGIN_AVX2
#define SP_TR_AVX2 1
namespace isa_avx2 {
#include "transpose_blocks.inc"
}  // namespace isa_avx2
#undef SP_TR_AVX2
SP_ISA_END
SP_ISA_BEGIN_AVX512
#define SP_TR_AVX512 1
namespace isa_avx512 {
#include "transpose_blocks.inc"
}  // namespace isa_avx512
#undef SP_TR_AVX512
SP_ISA_END
#endif

// dst[c * dld + r] = src[r * sld + c] (+ *add unless add is nullptr), r < rows, c < cols.
template <class T>
inline void sp_transpose_block(const T* src, int64_t sld, T* dst, int64_t dld, int64_t rows,
                               int64_t cols, const T* add = nullptr) {
  SP_ISA_DISPATCH(transpose<T>, src, sld, dst, dld, rows, cols, add);
}

// Every q range is a multiple of this many elements; every buffer has this much slack.
constexpr int64_t kSpTile = 64;

inline int64_t sp_round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Runs of q to compute: [begin, end) pairs, ascending and disjoint, each a multiple of kSpTile
// long.
using SpSegs = std::vector<int64_t>;

// Appends the run [b, e), its length rounded up to kSpTile, merged with the last run when they
// touch (so the runs stay disjoint: no two threads write one position). Every end stays below
// the largest e passed plus kSpTile.
inline void sp_push_run(SpSegs& s, int64_t b, int64_t e) {
  if (e <= b) return;
  if (!s.empty() && b <= s.back()) {
    const int64_t b0 = s[s.size() - 2];
    s.back() = b0 + sp_round_up(std::max(s.back(), e) - b0, kSpTile);
  } else {
    s.push_back(b);
    s.push_back(b + sp_round_up(e - b, kSpTile));
  }
}

// The runs cut into pieces of at most qb (a multiple of kSpTile).
inline SpSegs sp_pieces(const SpSegs& seg, int64_t qb) {
  SpSegs out;
  for (size_t s = 0; s + 1 < seg.size(); s += 2)
    for (int64_t q = seg[s]; q < seg[s + 1]; q += qb) {
      out.push_back(q);
      out.push_back(std::min(seg[s + 1], q + qb));
    }
  return out;
}

struct SpConvGeom {
  int64_t n = 0, c = 0, h = 0, w = 0;  // input (N, C, H, W)
  int64_t o = 0, kh = 0, kw = 0;       // weight (O, C, KH, KW)
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  // The lanes layout (chosen by sp_conv_geom): the sample is the innermost index, q = (R * wq
  // + C) * n + sample, so a kept weight's run over one output row is ow * n long and the
  // vector lanes stay full on 4x4 and 8x8 planes; only the rows and columns that hold outputs
  // (or inputs, for the input gradient) are computed. The wide layout (sample outermost)
  // computes the whole padded plane.
  bool lanes = false;
  // Cache blocking (sparse_conv.h): the gathers in chunks of source rows and the weight
  // gradient by input channel where the shape gains from them. Off only to measure what they
  // give (benchmarks/bench_conv_cache.py).
  bool cache_blocks = true;
  // derived
  int64_t oh = 0, ow = 0;  // output plane
  int64_t hq = 0, wq = 0;  // one phase of the padded input
  int64_t phases = 1;      // sh * sw
  int64_t plane = 0;       // hq * wq
  int64_t px = 1;           // the q step of one pixel: 1, or n in the lanes layout
  int64_t q = 0;            // n * plane: the run of one buffer row
  int64_t qr = 0;           // the stride of rows computed over q: past every run's end
  int64_t e = 0;            // the largest tap offset

  int64_t tap_phase(int64_t i, int64_t j) const {
    return ((i * dh) % sh) * sw + (j * dw) % sw;
  }
  int64_t tap_offset(int64_t i, int64_t j) const {
    return (((i * dh) / sh) * wq + (j * dw) / sw) * px;
  }
  // Per phase p of the input, whether some tap reads it. A 1x1 kernel of stride 2 reads one
  // phase of four (so does a 3x3 one of stride 2 and dilation 2): the packing zeroes the others
  // instead of copying the input into them, and the input gradient is zero there.
  std::vector<char> phases_read() const {
    std::vector<char> read(size_t(phases), 0);
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) read[size_t(tap_phase(i, j))] = 1;
    return read;
  }
  // Elements of the packed input buffer: its rows plus slack for the runs' rounding and the
  // taps' offsets.
  int64_t in_elems() const { return c * phases * q + e + (qr - q) + kSpTile; }
};

// Which layout a convolution runs in (SpConvGeom::lanes), for nnz kept weights. The lanes
// layout loads aligned vectors and computes no wasted positions, but pays transposing copies of
// the input, the output and both gradients: a fixed cost per call, against kernels whose time
// grows with the kept weights per output channel. Measured with both layouts forced
// (benchmarks/bench_conv_layout.py; results/sparse_train/conv_layout*.md: ResNet-18's and
// VGG-16's CIFAR convolutions with outputs above 8x8, batch 32 and 64, 5-60% density, AVX-512
// Xeon, 2 threads, seven runs):
//   - 8x8 and smaller outputs: lanes, at every density (the wide layout wastes 56-125%);
//   - 16x16 outputs of stride 1: lanes in every run;
//   - 32x32 outputs, and strided 16x16 ones (four input pixels per output pixel to copy): the
//     runs disagree below about 100 kept weights per output channel (one run measured the wide
//     layout up to 1.6x faster there, six the lanes layout up to 1.5x, the last of them, with
//     the cache blocking, everywhere), so the threshold is the one whose worst cell over all
//     runs is least bad (1.54x the faster layout, against 1.58x for 96 and 1.60x for always
//     lanes): lanes from kLanesKept kept weights per output channel (times the stride) on
//     (`bench_conv_layout.py --choose`, conv_layout_rule.md).
// The batch must fill the vector lanes of a row's run.
constexpr int64_t kLanesKept = 16;
inline bool sp_conv_prefer_lanes(const SpConvGeom& g, int64_t nnz) {
  if (g.n < 16) return false;
  const int64_t out = g.oh * g.ow, step = std::max(g.sh, g.sw);
  if (out <= 64 || (out <= 256 && step == 1)) return true;
  return nnz >= kLanesKept * step * std::max<int64_t>(g.o, 1);
}

// Fills the derived fields; layout: 0 wide, 1 lanes, -1 chosen by sp_conv_prefer_lanes for nnz
// kept weights. False when the output would be empty (the kernel does not fit the padded input).
inline bool sp_conv_geom(SpConvGeom& g, int layout = 0, int64_t nnz = 0) {
  const int64_t hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw;
  const int64_t ekh = g.dh * (g.kh - 1) + 1, ekw = g.dw * (g.kw - 1) + 1;
  if (hp < ekh || wp < ekw) return false;
  g.oh = (hp - ekh) / g.sh + 1;
  g.ow = (wp - ekw) / g.sw + 1;
  g.hq = (hp + g.sh - 1) / g.sh;
  g.wq = (wp + g.sw - 1) / g.sw;
  g.phases = g.sh * g.sw;
  g.plane = g.hq * g.wq;
  g.q = g.n * g.plane;
  g.lanes = layout < 0 ? sp_conv_prefer_lanes(g, nnz) : layout == 1;
  g.px = g.lanes ? g.n : 1;
  g.qr = sp_round_up(g.q, kSpTile) + (g.lanes ? kSpTile : 0);
  g.e = g.tap_offset(g.kh - 1, g.kw - 1);
  return true;
}

// The runs of q that hold outputs (the forward pass and the weight gradient): all of it in the
// wide layout, one run per output row in the lanes layout.
inline SpSegs sp_out_runs(const SpConvGeom& g) {
  SpSegs s;
  if (!g.lanes) {
    sp_push_run(s, 0, g.qr);
    return s;
  }
  for (int64_t r = 0; r < g.oh; ++r) sp_push_run(s, r * g.wq * g.px, (r * g.wq + g.ow) * g.px);
  return s;
}

// [lo, hi): the positions R of phase a of one dimension (size, stride st, padding p, nq
// positions) that hold an input pixel: st * R + a - p in [0, size).
inline void sp_phase_span(int64_t size, int64_t st, int64_t p, int64_t nq, int64_t a,
                          int64_t& lo, int64_t& hi) {
  lo = std::min(nq, std::max<int64_t>(0, (p - a + st - 1) / st));
  hi = std::max(lo, std::min(nq, (size + p - a + st - 1) / st));
}

// The runs of q that hold input pixels of phase (a, b) (the input gradient).
inline SpSegs sp_in_runs(const SpConvGeom& g, int64_t a, int64_t b) {
  SpSegs s;
  if (!g.lanes) {
    sp_push_run(s, 0, g.qr);
    return s;
  }
  int64_t r0, r1, c0, c1;
  sp_phase_span(g.h, g.sh, g.ph, g.hq, a, r0, r1);
  sp_phase_span(g.w, g.sw, g.pw, g.wq, b, c0, c1);
  for (int64_t r = r0; r < r1; ++r) sp_push_run(s, (r * g.wq + c0) * g.px, (r * g.wq + c1) * g.px);
  return s;
}

// ---- layout copies of the convolution -------------------------------------------------------

// Whether the lanes layout's copies transpose one image row of `width` pixels (stride `stride`)
// at a time, straight between the tensor and the buffer: rows of at least one square of the
// register transposes (transpose_blocks.inc) and no stride. Otherwise they transpose whole
// planes through a scratch buffer, so that 8x8, 4x4 and 2x2 planes, whose rows are narrower
// than a square, still fill the squares from 4x4 up, and copy each pixel's run of samples.
inline bool sp_rows_direct(int64_t width, int64_t stride) { return stride == 1 && width >= 16; }

// Channels per whole-plane transpose: enough planes of `pixels` pixels (consecutive channels'
// planes are contiguous in the tensor) to fill a square's 16 columns: 4 planes of 2x2.
inline int64_t sp_plane_group(int64_t pixels) {
  const int64_t p = std::max<int64_t>(pixels, 1);
  return p >= 16 ? 1 : (16 + p - 1) / p;
}

// Where input pixel (y, x) of sample 0 lies in the lanes layout, for buffers whose phase rows
// are `stride` apart: at yo[y] + xo[x] (+ the sample).
inline void sp_lanes_offsets(const SpConvGeom& g, int64_t stride, std::vector<int64_t>& yo,
                             std::vector<int64_t>& xo) {
  yo.resize(size_t(g.h));
  xo.resize(size_t(g.w));
  for (int64_t y = 0; y < g.h; ++y) {
    const int64_t yp = y + g.ph;
    yo[size_t(y)] = (yp % g.sh) * g.sw * stride + (yp / g.sh) * g.wq * g.px;
  }
  for (int64_t x = 0; x < g.w; ++x) {
    const int64_t xp = x + g.pw;
    xo[size_t(x)] = (xp % g.sw) * stride + (xp / g.sw) * g.px;
  }
}

// Zeroes the pixels of one phase plane (lanes layout: n elements each, from d) outside rows
// [r0, r1) and columns [c0, c1): the rest is written by the caller, and zeroing only the border
// halves the traffic of the layout copies of a 4x4 plane (the whole-plane fill measured most of
// their cost).
template <class T>
inline void sp_zero_border(const SpConvGeom& g, T* d, int64_t r0, int64_t r1, int64_t c0,
                           int64_t c1) {
  const int64_t row = g.wq * g.px;
  if (r1 <= r0 || c1 <= c0) {
    std::fill(d, d + g.hq * row, T(0));
    return;
  }
  std::fill(d, d + r0 * row, T(0));
  for (int64_t r = r0; r < r1; ++r) {
    std::fill(d + r * row, d + r * row + c0 * g.px, T(0));
    std::fill(d + r * row + c1 * g.px, d + (r + 1) * row, T(0));
  }
  std::fill(d + r1 * row, d + g.hq * row, T(0));
}

// x (N, C, H, W) into the buffer [C * phases][q] (+ slack, zeroed here), in g's layout.
template <class T, class Par>
void sp_pack_input(const SpConvGeom& g, const T* x, T* buf, const Par& par) {
  std::fill(buf + g.c * g.phases * g.q, buf + g.in_elems(), T(0));
  const std::vector<char> read = g.phases_read();
  if (g.lanes) {
    std::vector<int64_t> yo, xo;
    sp_lanes_offsets(g, g.q, yo, xo);
    const bool direct = sp_rows_direct(g.w, g.sw);
    const int64_t hw = g.h * g.w, sample = g.c * hw, group = direct ? 1 : sp_plane_group(hw);
    par.for_range(g.c, [&](int64_t b, int64_t e) {
      std::vector<T> tmp(direct ? 0 : size_t(std::max<int64_t>(1, group * hw * g.n)));
      for (int64_t i0 = b; i0 < e; i0 += group) {
        const int64_t i1 = std::min(e, i0 + group);
        // the (samples x pixels) planes transposed to pixel-major: row by row straight into
        // place, or (narrow rows, strides) whole planes into tmp, then each pixel's run of
        // samples where its phase row puts it (sp_rows_direct, sp_plane_group)
        if (!direct) sp_transpose_block(x + i0 * hw, sample, tmp.data(), g.n, g.n, (i1 - i0) * hw);
        for (int64_t ic = i0; ic < i1; ++ic) {
          T* d = buf + ic * g.phases * g.q;
          for (int64_t a = 0; a < g.sh; ++a)
            for (int64_t bb = 0; bb < g.sw; ++bb) {
              T* dp = d + (a * g.sw + bb) * g.q;
              if (!read[size_t(a * g.sw + bb)]) {
                std::fill(dp, dp + g.q, T(0));
                continue;
              }
              int64_t r0, r1, c0, c1;
              sp_phase_span(g.h, g.sh, g.ph, g.hq, a, r0, r1);
              sp_phase_span(g.w, g.sw, g.pw, g.wq, bb, c0, c1);
              sp_zero_border(g, dp, r0, r1, c0, c1);
            }
          if (direct) {
            for (int64_t y = 0; y < g.h; ++y)
              sp_transpose_block(x + (ic * g.h + y) * g.w, sample, d + yo[size_t(y)] + xo[0],
                                 g.n, g.n, g.w);
            continue;
          }
          const T* t = tmp.data() + (ic - i0) * hw * g.n;
          for (int64_t y = 0; y < g.h; ++y)
            for (int64_t xx = 0; xx < g.w; ++xx)
              if (read[size_t(((y + g.ph) % g.sh) * g.sw + (xx + g.pw) % g.sw)])
                std::memcpy(d + yo[size_t(y)] + xo[size_t(xx)], t + (y * g.w + xx) * g.n,
                            size_t(g.n) * sizeof(T));
        }
      }
    });
    return;
  }
  par.for_range(g.c * g.n, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t ic = t / g.n, n = t % g.n;
      const T* xs = x + (n * g.c + ic) * g.h * g.w;
      for (int64_t a = 0; a < g.sh; ++a)
        for (int64_t bb = 0; bb < g.sw; ++bb) {
          T* d = buf + (ic * g.phases + a * g.sw + bb) * g.q + n * g.plane;
          if (!read[size_t(a * g.sw + bb)]) {
            std::fill(d, d + g.plane, T(0));
            continue;
          }
          // columns C with 0 <= sw * C + bb - pw < w
          const int64_t c0 = std::min(g.wq, std::max<int64_t>(0, (g.pw - bb + g.sw - 1) / g.sw));
          const int64_t c1 =
              std::max(c0, std::min(g.wq, (g.w + g.pw - bb + g.sw - 1) / g.sw));
          for (int64_t r = 0; r < g.hq; ++r) {
            T* dr = d + r * g.wq;
            const int64_t y = g.sh * r + a - g.ph;
            if (y < 0 || y >= g.h) {
              std::fill(dr, dr + g.wq, T(0));
              continue;
            }
            std::fill(dr, dr + c0, T(0));
            const T* xr = xs + y * g.w + (g.sw * c0 + bb - g.pw);
            if (g.sw == 1) {
              std::memcpy(dr + c0, xr, size_t(c1 - c0) * sizeof(T));
            } else {
              for (int64_t c = c0; c < c1; ++c) dr[c] = xr[(c - c0) * g.sw];
            }
            std::fill(dr + c1, dr + g.wq, T(0));
          }
        }
    }
  });
}

// The output gradient gy (N, O, OH, OW) into [O][e + qr] rows: q at e + q, zeros elsewhere.
template <class T, class Par>
void sp_pack_grad(const SpConvGeom& g, const T* gy, T* buf, const Par& par) {
  const int64_t gs = g.e + g.qr;
  if (g.lanes) {
    const bool direct = sp_rows_direct(g.ow, 1);
    const int64_t ohw = g.oh * g.ow, group = direct ? 1 : sp_plane_group(ohw);
    par.for_range(g.o, [&](int64_t b, int64_t e) {
      std::vector<T> tmp(direct ? 0 : size_t(std::max<int64_t>(1, group * ohw * g.n)));
      for (int64_t o0 = b; o0 < e; o0 += group) {
        const int64_t o1 = std::min(e, o0 + group);
        if (!direct)
          sp_transpose_block(gy + o0 * ohw, g.o * ohw, tmp.data(), g.n, g.n, (o1 - o0) * ohw);
        for (int64_t oc = o0; oc < o1; ++oc) {
          T* row = buf + oc * gs;
          std::fill(row, row + g.e, T(0));
          sp_zero_border(g, row + g.e, 0, g.oh, 0, g.ow);
          std::fill(row + g.e + g.q, row + gs, T(0));
          if (direct) {
            for (int64_t r = 0; r < g.oh; ++r)
              sp_transpose_block(gy + oc * ohw + r * g.ow, g.o * ohw,
                                 row + g.e + r * g.wq * g.px, g.px, g.n, g.ow);
            continue;
          }
          const T* t = tmp.data() + (oc - o0) * ohw * g.n;
          for (int64_t r = 0; r < g.oh; ++r)
            std::memcpy(row + g.e + r * g.wq * g.px, t + r * g.ow * g.n,
                        size_t(g.ow * g.n) * sizeof(T));
        }
      }
    });
    return;
  }
  par.for_range(g.o, [&](int64_t b, int64_t e) {
    for (int64_t oc = b; oc < e; ++oc) {
      T* row = buf + oc * gs;
      std::fill(row, row + g.e, T(0));
      for (int64_t n = 0; n < g.n; ++n) {
        T* d = row + g.e + n * g.plane;
        const T* s = gy + (n * g.o + oc) * g.oh * g.ow;
        for (int64_t r = 0; r < g.hq; ++r) {
          T* dr = d + r * g.wq;
          if (r >= g.oh) {
            std::fill(dr, dr + g.wq, T(0));
            continue;
          }
          std::memcpy(dr, s + r * g.ow, size_t(g.ow) * sizeof(T));
          std::fill(dr + g.ow, dr + g.wq, T(0));
        }
      }
      std::fill(row + g.e + g.q, row + gs, T(0));
    }
  });
}
}  // namespace core
}  // namespace sparsepai
