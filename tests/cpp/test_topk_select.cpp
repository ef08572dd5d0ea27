// The CPU top-k core (csrc/core/topk_select.h) against a stable-sort oracle, over thread counts,
// sample sizes (to force bracket misses and fallbacks), strides, NaN modes and mixed dtypes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "check.h"
#include "core/topk_select.h"
#include "thread_par.h"

using namespace sparsepai::core;

inline int next_case_id() {
  static int id = 0;
  return ++id;
}

struct Case {
  const int id = next_case_id();
  std::vector<std::vector<uint8_t>> storage;  // raw bytes per tensor
  std::vector<TensorView> views;
  int64_t n = 0;
};

static TensorView view_of(const void* data, Dtype dt, std::vector<int64_t> sizes,
                          std::vector<int64_t> strides) {
  TensorView v;
  v.data = data;
  v.dtype = dt;
  v.numel = 1;
  for (auto s : sizes) v.numel *= s;
  const bool ok = coalesce(v, int(sizes.size()), sizes.data(), strides.data());
  CHECK(ok);
  return v;
}

// float32 tensors, optionally viewed transposed (a non-contiguous 2-D view)
static void add_f32(Case& c, const std::vector<float>& vals, int64_t rows, bool transposed) {
  c.storage.emplace_back(vals.size() * 4);
  std::memcpy(c.storage.back().data(), vals.data(), vals.size() * 4);
  const int64_t cols = int64_t(vals.size()) / rows;
  if (transposed)
    c.views.push_back(view_of(c.storage.back().data(), Dtype::kF32, {cols, rows}, {1, cols}));
  else
    c.views.push_back(view_of(c.storage.back().data(), Dtype::kF32, {rows, cols}, {cols, 1}));
  c.n += int64_t(vals.size());
}

static void add_f64(Case& c, const std::vector<double>& vals) {
  c.storage.emplace_back(vals.size() * 8);
  std::memcpy(c.storage.back().data(), vals.data(), vals.size() * 8);
  c.views.push_back(view_of(c.storage.back().data(), Dtype::kF64, {int64_t(vals.size())}, {1}));
  c.n += int64_t(vals.size());
}

static void add_bf16(Case& c, const std::vector<float>& vals) {
  std::vector<uint16_t> b(vals.size());
  for (size_t i = 0; i < vals.size(); ++i) b[i] = uint16_t(float_bits(vals[i]) >> 16);
  c.storage.emplace_back(b.size() * 2);
  std::memcpy(c.storage.back().data(), b.data(), b.size() * 2);
  c.views.push_back(view_of(c.storage.back().data(), Dtype::kBF16, {int64_t(b.size())}, {1}));
  c.n += int64_t(b.size());
}

// Value of element i (row-major) of view v, widened to double; NaN stays NaN.
static double value_at(const TensorView& v, int64_t i) {
  int64_t off = 0, rem = i;
  for (int d = v.ndim - 1; d >= 0; --d) {
    off += (rem % v.sizes[d]) * v.strides[d];
    rem /= v.sizes[d];
  }
  switch (v.dtype) {
    case Dtype::kF32: {
      float f;
      std::memcpy(&f, static_cast<const char*>(v.data) + off * 4, 4);
      return f;
    }
    case Dtype::kF64:
      return static_cast<const double*>(v.data)[off];
    default:
      return bf16_bits_to_float(static_cast<const uint16_t*>(v.data)[off]);
  }
}

// Oracle masks: stable sort of (rank class, value) in flat position order. The sorted order is
// cached per (case, nan mode, direction) since every k reuses it.
struct E {
  int cls;
  double v;
  int64_t t, i;
};

static std::vector<std::vector<uint8_t>> oracle(const Case& c, int64_t k, int nan_mode,
                                                bool largest) {
  static int cached_case = 0;
  static int cached_mode = -1;
  static bool cached_largest = false;
  static std::vector<E> all;
  if (cached_case != c.id || cached_mode != nan_mode || cached_largest != largest ) {
    cached_case = c.id;
    cached_mode = nan_mode;
    cached_largest = largest;
    all.clear();
    for (size_t t = 0; t < c.views.size(); ++t)
      for (int64_t i = 0; i < c.views[t].numel; ++i) {
        double v = value_at(c.views[t], i);
        int cls = 0;
        if (std::isnan(v)) {
          cls = nan_mode == kNanHigh ? 1 : -1;
          v = 0;
        }
        all.push_back({cls, v + 0.0, int64_t(t), i});
      }
    std::stable_sort(all.begin(), all.end(), [&](const E& a, const E& b) {
      if (a.cls != b.cls) return largest ? a.cls > b.cls : a.cls < b.cls;
      return largest ? a.v > b.v : a.v < b.v;
    });
  }
  std::vector<std::vector<uint8_t>> m(c.views.size());
  for (size_t t = 0; t < c.views.size(); ++t) m[t].assign(size_t(c.views[t].numel), 0);
  for (int64_t j = 0; j < k; ++j) m[size_t(all[size_t(j)].t)][size_t(all[size_t(j)].i)] = 1;
  return m;
}

template <class Fmt>
static void check_case(const Case& c, int64_t k, int nan_mode, bool largest, int threads,
                       int64_t sample) {
  ThreadPar par;
  par.threads = threads;
  const auto chunks = make_chunks(c.views);
  auto sel = select_kth<Fmt>(c.views, chunks, c.n, k, nan_mode, largest, par, sample);
  std::vector<std::vector<uint8_t>> got(c.views.size());
  std::vector<bool*> ptrs;
  for (size_t t = 0; t < c.views.size(); ++t) {
    got[t].assign(size_t(c.views[t].numel) + 1, 2);  // 2 = never written
    ptrs.push_back(reinterpret_cast<bool*>(got[t].data()));
  }
  write_masks<Fmt>(c.views, chunks, sel.key, k - sel.count_gt, nan_mode, largest, ptrs, par);
  const auto want = oracle(c, k, nan_mode, largest);
  int64_t kept = 0;
  bool same = true;
  for (size_t t = 0; t < c.views.size(); ++t) {
    CHECK(got[t].back() == 2);  // no write past the end
    for (size_t i = 0; i < want[t].size(); ++i) {
      same &= got[t][i] == want[t][i];
      kept += got[t][i] == 1;
    }
  }
  CHECK(same);
  CHECK(kept == k);
  // the selection's count of keys above the threshold, and enough ties to fill k
  int64_t gt = 0, eq = 0;
  for (const auto& v : c.views)
    for_each_key<Fmt>(v, 0, v.numel, nan_mode, largest, [&](int64_t, typename Fmt::Bits key) {
      gt += key > sel.key;
      eq += key == sel.key;
    });
  CHECK(gt == sel.count_gt);
  CHECK(eq >= k - sel.count_gt && eq >= 1);
  if (!same) std::fprintf(stderr, "  case: n=%lld k=%lld nan=%d largest=%d threads=%d sample=%lld\n",
                          (long long)c.n, (long long)k, nan_mode, int(largest), threads,
                          (long long)sample);
}

static std::vector<float> normal(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

static std::vector<float> ints(size_t n, uint64_t seed, int lo, int hi) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = float(d(g));
  return v;
}

TEST(small_random_all_k) {
  Case c;
  add_f32(c, normal(600, 1), 20, false);
  add_f32(c, normal(391, 2), 17, true);
  for (int64_t k = 1; k <= c.n; k += 37)
    for (bool largest : {true, false}) check_case<Fp32Fmt>(c, k, kNanLow, largest, 2, 0);
}

TEST(ties_and_signed_zeros) {
  Case c;
  auto v = ints(3000, 3, -2, 2);
  for (size_t i = 0; i < v.size(); i += 5) v[i] = -0.0f;
  add_f32(c, v, 30, true);
  auto w = ints(1000, 4, -2, 2);
  for (size_t i = 0; i < w.size(); i += 3) w[i] = w[i] == 0.0f ? -0.0f : w[i];
  add_f32(c, w, 1, false);  // contiguous: the vectorised path
  for (int64_t k = 1; k <= c.n; k += 101)
    for (int threads : {1, 3}) check_case<Fp32Fmt>(c, k, kNanLow, true, threads, 0);
}

TEST(nan_modes) {
  Case c;
  auto v = normal(2000, 5);
  for (size_t i = 0; i < v.size(); i += 13) v[i] = NAN;
  v[1] = -NAN;
  v[2] = INFINITY;
  v[3] = -INFINITY;
  add_f32(c, v, 40, false);
  for (int nan_mode : {kNanLow, kNanHigh})
    for (bool largest : {true, false})
      for (int64_t k : {int64_t(1), int64_t(100), int64_t(160), int64_t(1999), int64_t(2000)})
        check_case<Fp32Fmt>(c, k, nan_mode, largest, 2, 0);
  ThreadPar par;
  par.threads = 2;
  CHECK(first_nan_tensor(c.views, make_chunks(c.views), par) == 0);
}

TEST(bracket_path_and_forced_misses) {
  // above 2**20 scores select_kth samples a bracket; tiny samples make it miss or overflow and
  // fall back to radix passes, which must give the same answer
  Case c;
  add_f32(c, normal(2500000, 6), 2500, false);
  add_f32(c, ints(2000000, 7, -50, 50), 1000, true);
  for (int64_t k : {int64_t(1), int64_t(4321), c.n / 2, c.n - 3})
    for (int64_t sample : {int64_t(0), int64_t(64), int64_t(3)})
      for (int threads : {1, 2, 4}) check_case<Fp32Fmt>(c, k, kNanLow, true, threads, sample);
}

TEST(float64_and_mixed_dtypes) {
  Case c;
  std::vector<double> d((1 << 22) + 1000);
  std::mt19937_64 g(8);
  std::normal_distribution<double> nd(0, 1);
  for (auto& x : d) x = nd(g) * 1e-3;
  d[5] = 1e-300;
  d[6] = -1e-300;
  add_f64(c, d);
  add_bf16(c, normal(5000, 9));
  add_f32(c, normal(999, 10), 9, true);
  for (bool largest : {true, false})
    for (int64_t k : {int64_t(1), int64_t(77777), c.n / 2, c.n}) check_case<Fp64Fmt>(c, k, kNanHigh, largest, 2, 0);
  CHECK(common_dtype(c.views) == Dtype::kF64);
}

TEST(histogram_counts_every_key_once) {
  Case c;
  add_f32(c, normal(5000, 11), 50, true);
  ThreadPar par;
  par.threads = 3;
  const auto chunks = make_chunks(c.views);
  auto h = key_histogram<Fp32Fmt>(c.views, chunks, 16, 16, 0, kNanLow, true, par);
  CHECK(std::accumulate(h.begin(), h.end(), int64_t(0)) == c.n);
  // second digit restricted to one prefix sums to that prefix's bin
  size_t b = size_t(std::max_element(h.begin(), h.end()) - h.begin());
  auto h2 = key_histogram<Fp32Fmt>(c.views, chunks, 0, 16, uint32_t(b), kNanLow, true, par);
  CHECK(std::accumulate(h2.begin(), h2.end(), int64_t(0)) == h[b]);
}

TEST(coalesce_merges_and_rejects) {
  TensorView v;
  int64_t sizes[] = {4, 1, 5, 6}, strides[] = {30, 7, 6, 1};
  CHECK(coalesce(v, 4, sizes, strides));
  CHECK(v.ndim == 1 && v.sizes[0] == 120 && v.contiguous());
  int64_t s2[] = {4, 5}, st2[] = {1, 4};
  CHECK(coalesce(v, 2, s2, st2));
  CHECK(v.ndim == 2 && !v.contiguous());
  std::vector<int64_t> s3(20, 2), st3(20);
  for (int i = 0; i < 20; ++i) st3[size_t(i)] = int64_t(1) << (2 * (19 - i) + 1);
  CHECK(!coalesce(v, 20, s3.data(), st3.data()));
}

int main() { return run_all(); }
