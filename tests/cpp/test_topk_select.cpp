// The CPU top-k core (csrc/core/topk_select.h, topk_masks.h, topk_fused.h) against a stable-sort oracle, over thread counts,
// sample sizes (to force bracket misses and fallbacks), strides, NaN modes and mixed dtypes.
#include <numeric>

#include "thread_par.h"
#include "topk_cases.h"

// select_kth + write_masks, and the fused select_and_mask, against the oracle.
template <class Fmt>
static void check_case(const Case& c, int64_t k, int nan_mode, bool largest, int threads,
                       int64_t sample) {
  ThreadPar par;
  par.threads = threads;
  const auto chunks = make_chunks(c.views);
  auto sel = select_kth<Fmt>(c.views, chunks, c.n, k, nan_mode, largest, par, sample);
  MaskBuffers got(c), fused(c);
  write_masks<Fmt>(c.views, chunks, sel.key, k - sel.count_gt, nan_mode, largest, got.ptrs, par);
  auto fsel = select_and_mask<Fmt>(c.views, chunks, c.n, k, nan_mode, largest, fused.ptrs, par,
                                   sample);
  const auto want = oracle(c, k, nan_mode, largest);
  const bool same = got.matches(want, k), fsame = fused.matches(want, k);
  CHECK(same);
  CHECK(fsame);
  CHECK(fsel.key == sel.key && fsel.count_gt == sel.count_gt && fsel.nan_count == sel.nan_count);
  // the selection's count of keys above the threshold, and enough ties to fill k
  int64_t gt = 0, eq = 0;
  for (const auto& v : c.views)
    for_each_key<Fmt>(v, 0, v.numel, nan_mode, largest, [&](int64_t, typename Fmt::Bits key) {
      gt += key > sel.key;
      eq += key == sel.key;
    });
  CHECK(gt == sel.count_gt);
  CHECK(eq >= k - sel.count_gt && eq >= 1);
  if (!same || !fsame)
    std::fprintf(stderr, "  case: n=%lld k=%lld nan=%d largest=%d threads=%d sample=%lld\n",
                 (long long)c.n, (long long)k, nan_mode, int(largest), threads,
                 (long long)sample);
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
