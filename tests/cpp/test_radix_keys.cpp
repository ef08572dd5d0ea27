// The key transform of csrc/core/radix_keys.h (shared with the CUDA kernels) and its vectorised
// twin FastKey (csrc/core/topk_select.h), against value order computed with real floats.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "check.h"
#include "core/radix_keys.h"
#include "core/topk_select.h"

using namespace sparsepai::core;

static float half_to_float_oracle(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return float(h);
}

TEST(fp16_conversion_exact_for_every_pattern) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float want = half_to_float_oracle(uint16_t(b));
    const float got = fp16_bits_to_float(uint16_t(b));
    if (std::isnan(want)) {
      CHECK(std::isnan(got));
    } else {
      CHECK(std::memcmp(&want, &got, 4) == 0);
    }
  }
}

template <class Fmt>
static void check_all_16bit_patterns(float (*to_float)(uint16_t)) {
  std::vector<uint16_t> pats;
  for (uint32_t b = 0; b < 65536; ++b) pats.push_back(uint16_t(b));
  for (int nan_mode : {kNanLow, kNanHigh})
    for (bool largest : {true, false}) {
      const FastKey<Fmt> fk(nan_mode, largest);
      for (uint16_t a : pats) CHECK(fk(a) == order_key<Fmt>(a, nan_mode, largest));
      // the key order is the value order (NaN placed per mode; -0 == +0)
      auto rank = [&](uint16_t b) {
        const float v = to_float(b);
        if (std::isnan(v)) return nan_mode == kNanHigh ? INFINITY : -INFINITY;
        return v;
      };
      for (int trial = 0; trial < 200000; ++trial) {
        const uint16_t a = uint16_t(trial * 7919u), b = uint16_t(trial * 104729u + 13u);
        const float va = rank(a), vb = rank(b);
        const auto ka = order_key<Fmt>(a, nan_mode, largest), kb = order_key<Fmt>(b, nan_mode, largest);
        const bool nan_a = std::isnan(to_float(a)), nan_b = std::isnan(to_float(b));
        if (nan_a || nan_b) {
          if (nan_a && nan_b) CHECK(ka == kb);
          continue;
        }
        if (va == vb) CHECK(ka == kb);
        else CHECK((va < vb) == (largest ? ka < kb : ka > kb));
      }
    }
}

TEST(fp16_keys_order_like_values) { check_all_16bit_patterns<Fp16Fmt>(half_to_float_oracle); }
TEST(bf16_keys_order_like_values) { check_all_16bit_patterns<Bf16Fmt>(bf16_bits_to_float); }

TEST(fp32_fp64_keys_order_like_values) {
  std::mt19937_64 g(1);
  std::vector<double> vals = {0.0, -0.0, INFINITY, -INFINITY, 1e-310, -1e-310, 1e300, -1e300};
  std::normal_distribution<double> d(0, 1e3);
  for (int i = 0; i < 20000; ++i) vals.push_back(d(g));
  for (bool largest : {true, false}) {
    const FastKey<Fp32Fmt> f32(kNanLow, largest);
    const FastKey<Fp64Fmt> f64(kNanLow, largest);
    for (size_t i = 0; i + 1 < vals.size(); ++i) {
      const double a = vals[i], b = vals[i + 1];
      const uint64_t ka = order_key<Fp64Fmt>(double_bits(a), kNanLow, largest);
      const uint64_t kb = order_key<Fp64Fmt>(double_bits(b), kNanLow, largest);
      CHECK(ka == f64(double_bits(a)));
      if (a == b) CHECK(ka == kb);
      else CHECK((a < b) == (largest ? ka < kb : ka > kb));
      const float fa = float(a), fb = float(b);
      const uint32_t ja = order_key<Fp32Fmt>(float_bits(fa), kNanLow, largest);
      const uint32_t jb = order_key<Fp32Fmt>(float_bits(fb), kNanLow, largest);
      CHECK(ja == f32(float_bits(fa)));
      if (fa == fb) CHECK(ja == jb);
      else CHECK((fa < fb) == (largest ? ja < jb : ja > jb));
      // round trip (zero comes back as +0.0)
      const uint32_t back = key_to_bits<Fp32Fmt>(ja, largest);
      float fr;
      std::memcpy(&fr, &back, 4);
      CHECK(fr == fa);
    }
  }
  // NaN keys sit at the ends
  const uint32_t qnan = 0x7FC00000u, nnan = 0xFFC00001u;
  CHECK(order_key<Fp32Fmt>(qnan, kNanLow, true) == 0u);
  CHECK(order_key<Fp32Fmt>(nnan, kNanHigh, true) == 0xFFFFFFFFu);
  CHECK(order_key<Fp32Fmt>(nnan, kNanLow, false) == 0xFFFFFFFFu);
  CHECK(is_nan_key<Fp32Fmt>(0xFFFFFFFFu, kNanLow, false));
}

TEST(mixed_dtype_keys_match_converted_values) {
  // a bf16/fp16 value keyed in the fp32 format equals the key of the converted float
  for (uint32_t b = 0; b < 65536; b += 3) {
    const uint16_t h = uint16_t(b);
    const float fh = half_to_float_oracle(h), fb = bf16_bits_to_float(h);
    if (!std::isnan(fh))
      CHECK(load_key<Fp32Fmt>(&h, 0, Dtype::kF16, kNanLow, true) ==
            order_key<Fp32Fmt>(float_bits(fh), kNanLow, true));
    if (!std::isnan(fb))
      CHECK(load_key<Fp64Fmt>(&h, 0, Dtype::kBF16, kNanLow, true) ==
            order_key<Fp64Fmt>(double_bits(double(fb)), kNanLow, true));
  }
}

TEST(digit_helpers_never_shift_by_width) {
  CHECK(high_part<uint32_t>(0xFFFFFFFFu, 32) == 0u);
  CHECK(high_part<uint16_t>(0xFFFFu, 16) == 0u);
  CHECK(high_part<uint64_t>(~0ull, 64) == 0ull);
  CHECK(high_part<uint32_t>(0xABCD1234u, 16) == 0xABCDu);
  CHECK(digit_of<uint64_t>(0xFEDCBA9876543210ull, 48, 16) == 0xFEDCu);
  CHECK(digit_of<uint16_t>(0xBEEFu, 0, 16) == 0xBEEFu);
}

int main() { return run_all(); }
