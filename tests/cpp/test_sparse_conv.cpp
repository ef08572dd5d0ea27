// The sparse convolution and linear kernels (csrc/core/sparse_conv.h, sparse_linear.h; every
// ISA level via ctest) against direct loops over the dense weight with the pruned entries zero:
// forward, input gradient and weight gradient at the kept positions, for strides, padding,
// dilation, empty rows and columns, fully pruned layers, and 1 and 3 threads.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "check.h"
#include "core/sparse_conv.h"
#include "core/sparse_linear.h"
#include "thread_par.h"

using namespace sparsepai::core;

namespace {

struct Csr {
  std::vector<int64_t> row_ptr, t_ptr;
  std::vector<int32_t> col, t_idx;
  std::vector<double> dense;  // (O, K) with pruned entries zero
};

// A random mask at `density` over (rows, k); rows listed in `empty_rows` keep nothing.
Csr random_csr(int64_t rows, int64_t k, int64_t cin, int64_t kk, double density, uint64_t seed,
               std::mt19937_64& g, bool empty_rows) {
  std::uniform_real_distribution<double> u(-1, 1);
  std::uniform_real_distribution<double> p(0, 1);
  Csr s;
  s.row_ptr.push_back(0);
  s.dense.assign(size_t(rows * k), 0.0);
  // each row by tap, then input channel: the kernels' order (sparse_conv.h)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < k; ++i) {
      const int64_t c = (i % cin) * kk + i / cin;
      if (empty_rows && r % 3 == 1) continue;
      if (p(g) < density) {
        s.col.push_back(int32_t(c));
        s.dense[size_t(r * k + c)] = u(g);
      }
    }
    s.row_ptr.push_back(int64_t(s.col.size()));
  }
  (void)seed;
  // CSC by input channel (a block of kk consecutive columns)
  s.t_ptr.assign(size_t(cin + 1), 0);
  for (int32_t c : s.col) ++s.t_ptr[size_t(c / kk + 1)];
  for (int64_t i = 0; i < cin; ++i) s.t_ptr[size_t(i + 1)] += s.t_ptr[size_t(i)];
  s.t_idx.assign(s.col.size(), 0);
  std::vector<int64_t> next(s.t_ptr.begin(), s.t_ptr.end() - 1);
  for (size_t j = 0; j < s.col.size(); ++j) s.t_idx[size_t(next[size_t(s.col[j] / kk)]++)] = int32_t(j);
  return s;
}

template <class T>
std::vector<T> values_of(const Csr& s, int64_t k) {
  std::vector<T> v;
  for (size_t r = 0; r + 1 < s.row_ptr.size(); ++r)
    for (int64_t j = s.row_ptr[r]; j < s.row_ptr[r + 1]; ++j)
      v.push_back(T(s.dense[size_t(int64_t(r) * k + s.col[size_t(j)])]));
  return v;
}

bool close(double a, double b, double tol) { return std::fabs(a - b) <= tol * (1 + std::fabs(b)); }

template <class T>
void check_conv(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t kh, int64_t kw,
                int64_t s, int64_t p, int64_t d, double density, bool empty_rows, int threads,
                uint64_t seed, bool with_bias = true) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  SpConvGeom g;
  g.n = n, g.c = c, g.h = h, g.w = w, g.o = o, g.kh = kh, g.kw = kw;
  g.sh = s, g.sw = s == 2 ? 1 : s, g.ph = p, g.pw = p == 0 ? 1 : p, g.dh = d, g.dw = 1;
  CHECK(sp_conv_geom(g));
  const int64_t kk = kh * kw;
  Csr m = random_csr(o, c * kk, c, kk, density, seed, gen, empty_rows);
  std::vector<T> vals = values_of<T>(m, c * kk);
  std::vector<T> x(size_t(n * c * h * w)), gy(size_t(n * o * g.oh * g.ow)), bias(size_t(o), T(0));
  for (std::vector<T>* v : {&x, &gy, &bias})
    for (auto& e : *v) e = T(u(gen));
  if (!with_bias) std::fill(bias.begin(), bias.end(), T(0));  // and nullptr to the kernels
  std::vector<double> ry(gy.size(), 0), rgx(x.size(), 0), rgw_dense(m.dense.size(), 0);
  // direct loops in double
  for (int64_t nn = 0; nn < n; ++nn)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t i = 0; i < g.oh; ++i)
        for (int64_t j = 0; j < g.ow; ++j) {
          double acc = double(bias[size_t(oc)]);
          const double go = double(gy[size_t(((nn * o + oc) * g.oh + i) * g.ow + j)]);
          for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t a = 0; a < kh; ++a)
              for (int64_t b = 0; b < kw; ++b) {
                const int64_t yy = i * g.sh - g.ph + a * g.dh, xx = j * g.sw - g.pw + b * g.dw;
                if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                const size_t xi = size_t(((nn * c + ic) * h + yy) * w + xx);
                const size_t wi = size_t(oc * c * kk + ic * kk + a * kw + b);
                acc += m.dense[wi] * double(x[xi]);
                rgx[xi] += m.dense[wi] * go;
                rgw_dense[wi] += go * double(x[xi]);
              }
          ry[size_t(((nn * o + oc) * g.oh + i) * g.ow + j)] = acc;
        }
  const double tol = sizeof(T) == 4 ? 2e-4 : 1e-11;
  ThreadPar par{threads};
  SpWorkspace ws;  // shared by both layouts: a buffer grown for one must serve the other
  for (int variant = 0; variant < 4; ++variant) {
    const int layout = variant % 2;  // wide, lanes; with and without the cache blocking
    g.cache_blocks = variant < 2;
    CHECK(sp_conv_geom(g, layout));
    CHECK(g.lanes == (layout == 1));
    // NaN in the scratch buffers: a position the kernels read must have been written (the
    // layout copies zero only the borders they do not fill)
    const int64_t big = std::max({g.in_elems(), g.o * g.qr, g.c * g.phases * g.qr,
                                  g.o * (g.e + g.qr) + kSpTile});
    for (auto slot : {SpWorkspace::kIn, SpWorkspace::kOut, SpWorkspace::kGrad}) {
      T* b = ws.get<T>(slot, big);
      std::fill(b, b + big, T(NAN));
    }
    // NaN in the outputs: every element must be written
    std::vector<T> y(gy.size(), T(NAN)), gx(x.size(), T(NAN)), gw(vals.size(), T(NAN));
    sparse_conv2d_forward<T>(g, x.data(), m.row_ptr.data(), m.col.data(), vals.data(),
                             with_bias ? bias.data() : nullptr, y.data(), ws, par);
    sparse_conv2d_backward<T>(g, x.data(), gy.data(), m.row_ptr.data(), m.col.data(),
                              vals.data(), m.t_ptr.data(), m.t_idx.data(), gx.data(), gw.data(),
                              ws, par);
    int bad = 0;
    for (size_t i = 0; i < y.size(); ++i) bad += !close(double(y[i]), ry[i], tol);
    for (size_t i = 0; i < x.size(); ++i) bad += !close(double(gx[i]), rgx[i], tol);
    for (int64_t r = 0; r < o; ++r)
      for (int64_t j = m.row_ptr[size_t(r)]; j < m.row_ptr[size_t(r + 1)]; ++j)
        bad += !close(double(gw[size_t(j)]), rgw_dense[size_t(r * c * kk + m.col[size_t(j)])],
                      tol * 10);
    if (bad)
      std::fprintf(stderr,
                   "conv %s%s n%lld c%lld %lldx%lld o%lld k%lldx%lld s%lld p%lld d%lld: %d bad\n",
                   layout ? "lanes" : "wide", g.cache_blocks ? "" : " (no cache blocks)",
                   (long long)n, (long long)c, (long long)h, (long long)w, (long long)o,
                   (long long)kh, (long long)kw, (long long)s, (long long)p, (long long)d, bad);
    CHECK(bad == 0);
  }
}

template <class T>
void check_linear(int64_t tokens, int64_t in_f, int64_t out_f, double density, int threads,
                  uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  Csr m = random_csr(out_f, in_f, in_f, 1, density, seed, gen, true);
  std::vector<T> vals = values_of<T>(m, in_f);
  std::vector<T> x(size_t(tokens * in_f)), gy(size_t(tokens * out_f)), bias(size_t(out_f), T(0));
  for (std::vector<T>* v : {&x, &gy, &bias})
    for (auto& e : *v) e = T(u(gen));
  ThreadPar par{threads};
  SpWorkspace ws;
  // NaN in the outputs: every element must be written
  std::vector<T> y(gy.size(), T(NAN)), gx(x.size(), T(NAN)), gw(vals.size(), T(NAN));
  sparse_linear_forward<T>(tokens, in_f, out_f, x.data(), m.row_ptr.data(), m.col.data(),
                           vals.data(), bias.data(), y.data(), ws, par);
  sparse_linear_backward<T>(tokens, in_f, out_f, x.data(), gy.data(), m.row_ptr.data(),
                            m.col.data(), vals.data(), m.t_ptr.data(), m.t_idx.data(), gx.data(),
                            gw.data(), ws, par);
  const double tol = sizeof(T) == 4 ? 2e-4 : 1e-11;
  int bad = 0;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t oc = 0; oc < out_f; ++oc) {
      double acc = double(bias[size_t(oc)]);
      for (int64_t i = 0; i < in_f; ++i) acc += m.dense[size_t(oc * in_f + i)] * double(x[size_t(t * in_f + i)]);
      bad += !close(double(y[size_t(t * out_f + oc)]), acc, tol);
    }
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < in_f; ++i) {
      double acc = 0;
      for (int64_t oc = 0; oc < out_f; ++oc)
        acc += m.dense[size_t(oc * in_f + i)] * double(gy[size_t(t * out_f + oc)]);
      bad += !close(double(gx[size_t(t * in_f + i)]), acc, tol);
    }
  for (int64_t r = 0; r < out_f; ++r)
    for (int64_t j = m.row_ptr[size_t(r)]; j < m.row_ptr[size_t(r + 1)]; ++j) {
      double acc = 0;
      for (int64_t t = 0; t < tokens; ++t)
        acc += double(gy[size_t(t * out_f + r)]) * double(x[size_t(t * in_f + m.col[size_t(j)])]);
      bad += !close(double(gw[size_t(j)]), acc, tol * 10);
    }
  if (bad)
    std::fprintf(stderr, "linear t%lld in%lld out%lld: %d bad\n", (long long)tokens,
                 (long long)in_f, (long long)out_f, bad);
  CHECK(bad == 0);
}

}  // namespace

TEST(conv_stride1_same_padding) {
  check_conv<float>(3, 5, 9, 7, 6, 3, 3, 1, 1, 1, 0.3, false, 1, 1);
  check_conv<double>(3, 5, 9, 7, 6, 3, 3, 1, 1, 1, 0.3, true, 3, 2);
}

TEST(conv_stride2_and_dilation) {
  check_conv<float>(2, 4, 11, 10, 5, 3, 3, 2, 1, 1, 0.4, true, 2, 3);
  check_conv<double>(2, 4, 11, 10, 5, 3, 3, 2, 1, 1, 0.4, false, 1, 4);
  check_conv<double>(2, 3, 12, 9, 4, 3, 2, 1, 2, 2, 0.5, true, 3, 5);
  check_conv<float>(1, 3, 13, 13, 4, 5, 5, 3, 2, 2, 0.5, false, 2, 6);
}

TEST(conv_1x1_and_no_padding) {
  check_conv<float>(4, 8, 6, 6, 7, 1, 1, 1, 0, 1, 0.2, false, 3, 7);
  check_conv<double>(4, 8, 6, 6, 7, 1, 1, 2, 0, 1, 0.2, true, 1, 8);
  check_conv<double>(2, 3, 5, 5, 2, 3, 3, 1, 0, 1, 0.9, false, 2, 9);
}

TEST(conv_fully_pruned_and_dense) {
  check_conv<double>(2, 3, 6, 6, 4, 3, 3, 1, 1, 1, 0.0, false, 2, 10);
  check_conv<float>(2, 3, 6, 6, 4, 3, 3, 1, 1, 1, 1.0, false, 2, 11);
}

TEST(conv_empty_batch) { check_conv<float>(0, 3, 6, 6, 4, 3, 3, 1, 1, 1, 0.5, false, 2, 12); }

// Small planes, where the shape would choose the lanes layout: 4x4 and 8x8 outputs, a batch
// that is and one that is not a multiple of the vector width, 1x1 and 3x3 planes, batch 1,
// stride 2 with and without padding, dilation; at batch 64 a tile is one pixel of all samples,
// so the taps that read only padding are left out pixel by pixel (2x2 and 4x4 planes).
TEST(conv_small_planes) {
  check_conv<float>(16, 12, 4, 4, 10, 3, 3, 1, 1, 1, 0.3, true, 2, 20);
  check_conv<double>(19, 7, 8, 8, 9, 3, 3, 2, 1, 1, 0.3, false, 3, 21);
  check_conv<float>(33, 5, 8, 8, 6, 1, 1, 2, 0, 1, 0.5, false, 1, 22);
  check_conv<double>(5, 6, 3, 3, 4, 3, 3, 1, 1, 1, 0.4, true, 2, 23);
  check_conv<float>(1, 6, 1, 1, 5, 3, 3, 1, 1, 1, 0.5, false, 2, 24);
  check_conv<double>(1, 4, 3, 3, 3, 1, 1, 1, 0, 1, 0.7, false, 1, 25);
  check_conv<float>(7, 5, 9, 9, 6, 3, 3, 2, 2, 2, 0.4, true, 3, 26);
  check_conv<double>(20, 8, 4, 4, 7, 3, 3, 1, 1, 1, 1.0, false, 2, 27);
  check_conv<double>(64, 6, 2, 2, 5, 3, 3, 1, 1, 1, 0.4, true, 2, 28);
  check_conv<double>(64, 5, 4, 4, 7, 3, 3, 1, 1, 1, 0.3, false, 3, 29);
  check_conv<double>(64, 4, 7, 6, 5, 3, 3, 2, 1, 1, 0.4, false, 2, 30);
  // 16+ samples and pixels per row: the layout copies transpose whole 16 x 16 squares (row by
  // row; with a stride in both directions, whole planes); planes under 16 pixels are transposed
  // several channels at a time (6 channels of 2x2: a group of 4 and one of 2), the output too
  // when there is no bias
  check_conv<float>(32, 3, 17, 18, 4, 3, 3, 1, 1, 1, 0.4, true, 2, 31);
  check_conv<float>(40, 3, 34, 33, 5, 3, 3, 2, 1, 1, 0.3, false, 3, 32);
  check_conv<float>(32, 3, 34, 34, 5, 3, 3, 3, 1, 1, 0.4, false, 2, 33, false);
  check_conv<float>(64, 6, 2, 2, 5, 3, 3, 1, 1, 1, 0.4, true, 2, 34, false);
  check_conv<double>(20, 7, 3, 3, 6, 3, 3, 1, 1, 1, 0.5, false, 3, 35, false);
}

// Chunks of source rows (sp_src_chunk): the rule, and layers wide enough that the forward pass
// and the input gradient run in several chunks, the last one shorter, in both layouts.
TEST(conv_source_chunks_rule) {
  // a lanes tile's three kernel rows of a 3x3 kernel: 3 x (128 + 2 x 64) floats
  CHECK(sp_window<float>({0, 64, 128, 384, 448, 512, 768, 832, 896}) == 3 * 256 * 4);
  CHECK(sp_window<double>({0, 1, 2}) == (64 + 2) * 8);
  CHECK(sp_window<float>({-5, 300}) == 2 * 512);
  CHECK(sp_src_chunk(64, 3072, 6.75, 1.0) == 8);    // 24 KiB of windows
  CHECK(sp_src_chunk(5, 3072, 6.75, 1.0) == 5);     // fewer rows than a chunk
  CHECK(sp_src_chunk(64, 3072, 0.45, 1.0) == 64);   // too sparse to fill a chunk: one
  CHECK(sp_src_chunk(64, 3072, 4.0, 3.0) == 64);    // small plane: 3 ranges of taps per tile
  CHECK(sp_src_chunk(64, 100000, 6.75, 1.0) == 64);  // windows too big for a full chunk: one
  CHECK(sp_src_chunk(64, 12000, 6.75, 1.0) == 2);   // 2 rows of 12000 bytes
  CHECK(sp_src_chunk(1, 3072, 6.75, 1.0) == 1);
  CHECK(sp_src_chunk(64, 3072, 0.0, 1.0) == 64);
  // the weight gradient by input channel: large (row, channel) groups on planes whose tiles use
  // most taps
  CHECK(sp_dot_by_channel(6.75, 0.97));
  CHECK(!sp_dot_by_channel(6.75, 0.69));  // a 4x4 plane
  CHECK(!sp_dot_by_channel(1.47, 1.0));   // 10% density
  // pieces: one channel's windows over a piece within 24 KiB
  CHECK(sp_cols_block<float>({0, 1, 2}) == 4096);
  CHECK(sp_cols_block<float>({0, 64, 128, 2176, 2240, 2304, 4352, 4416, 4480}) == 1024);
  CHECK(sp_cols_block<double>({0, 100000}) == 1024);
}

TEST(conv_source_chunks) {
  for (int layout : {0, 1}) {
    // the shapes below are cut into several chunks (forward: by input channel, input
    // gradient: by output channel)
    SpConvGeom g;
    g.n = 16, g.c = 76, g.h = 8, g.w = 8, g.o = 45, g.kh = 3, g.kw = 3;
    g.sh = g.sw = 1, g.ph = g.pw = 1, g.dh = g.dw = 1;
    CHECK(sp_conv_geom(g, layout));
    const SpTaps taps(g);
    double frac, nrng;
    sp_tap_use(g.lanes ? &g : nullptr, {SpRowRuns{0, g.o, sp_out_runs(g), SpTapKind::kOut}},
               frac, nrng);
    const int64_t ch = sp_src_chunk(g.c, sp_window<float>(taps.in_buf), 9 * 0.6 * frac, nrng);
    CHECK(ch > 1 && ch < g.c && g.c % ch != 0);
  }
  check_conv<float>(16, 76, 8, 8, 45, 3, 3, 1, 1, 1, 0.6, true, 2, 40);
  check_conv<double>(16, 76, 8, 8, 45, 3, 3, 1, 1, 1, 0.6, false, 3, 41);
  check_conv<float>(32, 36, 12, 12, 20, 3, 3, 2, 1, 1, 0.7, false, 2, 42);
  check_conv<float>(16, 24, 9, 9, 50, 1, 1, 1, 0, 1, 0.9, true, 1, 43, false);
  // the weight gradient by input channel over several pieces of positions (more than 4096 in
  // the wide layout, runs of 256 in the lanes layout), 5x5 taps: groups of more than 9 (on one
  // thread: the channel path needs two input channels per thread)
  check_conv<float>(8, 6, 32, 32, 5, 3, 3, 1, 1, 1, 0.7, false, 2, 44);
  check_conv<double>(8, 3, 20, 20, 4, 5, 5, 1, 2, 1, 0.8, true, 1, 45);
  // the wide layout's input gradient in two chunks of output channels over four phases
  check_conv<float>(4, 8, 12, 12, 60, 3, 3, 2, 1, 1, 0.7, false, 2, 46);
}

TEST(linear) {
  check_linear<float>(70, 33, 21, 0.3, 1, 13);
  check_linear<double>(130, 17, 40, 0.2, 3, 14);
  check_linear<double>(1, 5, 3, 1.0, 2, 15);
  check_linear<float>(0, 5, 3, 0.5, 2, 16);
  check_linear<double>(64, 9, 8, 0.0, 2, 17);
  // several blocks of tokens, the last one partial; fewer output rows than threads
  check_linear<float>(300, 40, 24, 0.2, 2, 18);
  check_linear<double>(257, 12, 2, 0.5, 3, 19);
  // enough work for the threads to split the rows
  check_linear<float>(300, 96, 120, 0.5, 3, 20);
}

int main() { return run_all(); }
