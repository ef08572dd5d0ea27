// Ranking |x| without an |x| buffer (TensorView::abs, the ops' transform=1): keys of x with the
// sign bit cleared, through every path of the CPU core (radix select, the sampled bracket, the
// fused bracket-and-mask pass, strided views, mixed dtypes, NaN modes), against the same core on
// a buffer that holds |x| and against the stable-sort oracle of |x|.
#include <cmath>

#include "thread_par.h"
#include "topk_cases.h"

namespace {

// Two cases over the same values: `raw` ranks |x| through abs views of x, `mag` holds |x|.
struct Pair {
  Case raw, mag;
};

void add_both(Pair& p, const std::vector<float>& v, int64_t rows, bool transposed) {
  std::vector<float> a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(v[i]);
  add_f32(p.raw, v, rows, transposed);
  p.raw.views.back().abs = true;
  add_f32(p.mag, a, rows, transposed);
}

Pair make_pair(size_t n, uint64_t seed) {
  Pair p;
  auto a = normal(n, seed);
  for (size_t i = 0; i < a.size(); i += 101) a[i] = -a[i + 1 < a.size() ? i + 1 : i];  // |x| ties
  for (size_t i = 3; i < a.size(); i += 977) a[i] = -0.0f;
  for (size_t i = 5; i < a.size(); i += 100003) a[i] = -NAN;
  add_both(p, a, 1, false);
  add_both(p, ints(60000, seed + 1, -4, 4), 300, true);  // strided, heavy ties of |x|
  return p;
}

void check_pair(const Pair& p, const std::vector<int64_t>& ks,
                std::vector<int> nan_modes = {kNanLow, kNanHigh}) {
  const auto chunks = make_chunks(p.raw.views);
  for (bool largest : {true, false})
    for (int nan_mode : nan_modes)
      for (int64_t k : ks)
        for (int threads : {1, 3}) {
          ThreadPar par;
          par.threads = threads;
          MaskBuffers got(p.raw), want(p.mag);
          const auto a = select_and_mask<Fp32Fmt>(p.raw.views, chunks, p.raw.n, k, nan_mode,
                                                  largest, got.ptrs, par);
          const auto b = select_and_mask<Fp32Fmt>(p.mag.views, chunks, p.mag.n, k, nan_mode,
                                                  largest, want.ptrs, par);
          CHECK(a.key == b.key && a.count_gt == b.count_gt && a.nan_count == b.nan_count);
          CHECK(got.matches(oracle(p.mag, k, nan_mode, largest), k));
          const auto s = select_kth<Fp32Fmt>(p.raw.views, chunks, p.raw.n, k, nan_mode, largest,
                                             par);
          CHECK(s.key == b.key && s.count_gt == b.count_gt);
        }
}

}  // namespace

TEST(abs_keys_are_keys_of_the_magnitude) {
  for (uint32_t b = 0; b < 65536; ++b)
    for (int nan_mode : {kNanLow, kNanHigh})
      for (bool largest : {true, false}) {
        const uint16_t h = uint16_t(b), m = uint16_t(b & 0x7FFFu);
        CHECK(load_key_abs<Fp16Fmt>(&h, 0, Dtype::kF16, nan_mode, largest, true) ==
              order_key<Fp16Fmt>(m, nan_mode, largest));
        CHECK(load_key_abs<Fp32Fmt>(&h, 0, Dtype::kBF16, nan_mode, largest, true) ==
              load_key<Fp32Fmt>(&m, 0, Dtype::kBF16, nan_mode, largest));
        CHECK(load_key_abs<Bf16Fmt>(&h, 0, Dtype::kBF16, nan_mode, largest, false) ==
              order_key<Bf16Fmt>(h, nan_mode, largest));
        TensorView v;
        v.abs = true;
        CHECK(FastKey<Fp16Fmt>(nan_mode, largest).of(v)(h) ==
              order_key<Fp16Fmt>(m, nan_mode, largest));
      }
  const double vals[] = {-0.0, 0.0, -1.5, 1.5, -INFINITY, -NAN, 3e-310, -3e-310};
  for (double d : vals) {
    const double a = std::fabs(d);
    CHECK(load_key_abs<Fp64Fmt>(&d, 0, Dtype::kF64, kNanHigh, true, true) ==
          load_key<Fp64Fmt>(&a, 0, Dtype::kF64, kNanHigh, true));
  }
}

TEST(abs_small_tables_radix_path) {
  const Pair p = make_pair(20000, 31);
  CHECK(p.raw.n <= kBracketMinN);
  check_pair(p, {0 + 1, 7, 20000, 40000, p.raw.n - 1, p.raw.n});
}

TEST(abs_large_tables_bracket_and_fused_paths) {
  const Pair p = make_pair(size_t(kBracketMinN) + 70000, 32);
  check_pair(p, {p.raw.n / 10, p.raw.n - 3}, {kNanHigh});
}

TEST(abs_mixed_dtypes_compare_in_float64) {
  Pair p = make_pair(3000, 33);
  std::vector<double> d = {-2.0, 2.0, -0.0, 1e300, -1e300, 0.5};
  std::vector<double> da(d.size());
  for (size_t i = 0; i < d.size(); ++i) da[i] = std::fabs(d[i]);
  add_f64(p.raw, d);
  p.raw.views.back().abs = true;
  add_f64(p.mag, da);
  ThreadPar par;
  const auto chunks = make_chunks(p.raw.views);
  for (int64_t k : {int64_t(1), int64_t(4), int64_t(2000), p.raw.n}) {
    MaskBuffers got(p.raw);
    select_and_mask<Fp64Fmt>(p.raw.views, chunks, p.raw.n, k, kNanLow, true, got.ptrs, par);
    CHECK(got.matches(oracle(p.mag, k, kNanLow, true), k));
  }
}

int main() { return run_all(); }
