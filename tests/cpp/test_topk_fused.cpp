// The fused bracket-and-mask path of the top-k core (csrc/core/topk_fused.h) on tables above
// kBracketMinN, where it is taken: ties straddling chunk boundaries and tensors, NaN modes,
// strided views, a bracket that holds the k-th key and two that do not (too many candidates, and
// a sample fooled into a bracket below the k-th key), against the stable-sort oracle and with
// byte-identical masks on 1, 2 and 3 threads.
#include "thread_par.h"
#include "topk_cases.h"

namespace {

struct Run {
  std::vector<std::vector<uint8_t>> bytes;
  Selection<Fp32Fmt> sel;
  bool fused;
};

Run run(const Case& c, int64_t k, int nan_mode, bool largest, int threads, int64_t sample) {
  ThreadPar par;
  par.threads = threads;
  MaskBuffers m(c);
  Run r;
  r.sel = select_and_mask<Fp32Fmt>(c.views, make_chunks(c.views), c.n, k, nan_mode, largest,
                                   m.ptrs, par, sample, &r.fused);
  CHECK(m.matches(oracle(c, k, nan_mode, largest), k));
  r.bytes = m.bytes;
  return r;
}

// Runs on 1, 2 and 3 threads: each against the oracle, all byte-identical; returns whether the
// fused path was taken (the same on every thread count).
bool check_threads(const Case& c, int64_t k, int nan_mode, bool largest, int64_t sample = 0) {
  const Run one = run(c, k, nan_mode, largest, 1, sample);
  for (int threads : {2, 3}) {
    const Run r = run(c, k, nan_mode, largest, threads, sample);
    CHECK(r.bytes == one.bytes);
    CHECK(r.fused == one.fused);
    CHECK(r.sel.key == one.sel.key && r.sel.count_gt == one.sel.count_gt &&
          r.sel.nan_count == one.sel.nan_count);
  }
  return one.fused;
}

constexpr float kTie = 1.25f;

// ~4.6M float32 scores over a contiguous tensor and a transposed view, with runs of kTie around
// every chunk boundary of the first tensor and across the end of the first tensor, and NaNs.
Case tie_case() {
  Case c;
  auto a = normal(3 * size_t(kChunk) * 20 + 123, 21);
  for (int64_t b = kChunk; b < int64_t(a.size()); b += kChunk)
    for (int64_t i = b - 40; i < b + 40; ++i) a[size_t(i)] = kTie;
  for (size_t i = a.size() - 50; i < a.size(); ++i) a[i] = kTie;
  for (size_t i = 7; i < a.size(); i += 100003) a[i] = NAN;
  add_f32(c, a, 1, false);
  auto b = normal(600000, 22);
  for (size_t i = 0; i < 300; ++i) b[i * 7] = kTie;  // scattered in position order of the view
  add_f32(c, b, 600, true);
  return c;
}

// k such that the k-th largest (or smallest) value is kTie and only part of the ties are kept.
int64_t k_inside_ties(const Case& c, bool largest, int64_t skip) {
  int64_t beyond = 0;
  for (const auto& v : c.views)
    for (int64_t i = 0; i < v.numel; ++i) {
      const double x = value_at(v, i);
      beyond += largest ? x > kTie : x < kTie;
    }
  return beyond + skip;
}

}  // namespace

TEST(fused_ties_straddle_chunks_and_tensors) {
  const Case c = tie_case();
  CHECK(c.n > kBracketMinN);
  for (bool largest : {true, false})
    for (int nan_mode : {kNanLow, kNanHigh}) {
      // NaNs rank beyond every number on the side nan_mode puts them
      const bool nan_first = (nan_mode == kNanHigh) == largest;
      int64_t nans = 0;
      for (const auto& v : c.views)
        for (int64_t i = 0; i < v.numel; ++i) nans += std::isnan(value_at(v, i));
      const int64_t base = k_inside_ties(c, largest, 0) + (nan_first ? nans : 0);
      // a few ties, ties ending inside a straddling run, and all but one tie
      for (int64_t skip : {int64_t(1), int64_t(95), int64_t(1000)})
        CHECK(check_threads(c, base + skip, nan_mode, largest));
    }
}

TEST(fused_tight_bracket_is_taken) {
  Case c;
  add_f32(c, normal(4500000, 23), 1500, false);
  for (int64_t k : {int64_t(1), int64_t(4500), int64_t(450000), int64_t(4499999)})
    if (!check_threads(c, k, kNanLow, true)) {
      CHECK(false);
      std::fprintf(stderr, "  not fused at k=%lld\n", (long long)k);
    }
  // k = N/2 at this N: the 6-sigma bracket of the default sample holds ~2.3% of the keys, above
  // the 2% cap, so this one falls back (as select_kth does), with the same masks
  CHECK(!check_threads(c, c.n / 2, kNanLow, true));
}

TEST(fused_bracket_overflow_falls_back) {
  // three sample keys cannot bracket anything: the bracket is every key, more than the
  // candidate cap, so the radix passes and the full mask pass run instead
  const Case c = tie_case();
  const int64_t k = k_inside_ties(c, true, 17);
  CHECK(!check_threads(c, k, kNanLow, true, 3));
}

TEST(fused_bracket_below_the_kth_key_falls_back) {
  // Scores that fool the sampler: the sampled positions (found by sampling a table that holds
  // each position as its value) get the smallest score, every other position a larger one, so
  // the bracket sits below the k-th key and the count above it exceeds k.
  const int64_t n = 4300000, S = 4096;
  std::vector<float> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = float(i);  // exact below 2**24
  Case probe;
  add_f32(probe, pos, 1, false);
  ThreadPar par;
  par.threads = 2;
  const auto keys = sample_keys<Fp32Fmt>(probe.views, n, S, kNanLow, true, par);
  std::vector<float> vals = ints(size_t(n), 24, 1, 1000);
  for (auto key : keys) {
    const uint32_t bits = key_to_bits<Fp32Fmt>(key, true);
    float f;
    std::memcpy(&f, &bits, 4);
    vals[size_t(f)] = 0.0f;
  }
  Case c;
  add_f32(c, vals, 1, false);
  for (int64_t k : {int64_t(10), c.n / 3}) CHECK(!check_threads(c, k, kNanLow, true, S));
}

// The fused blocks against order_key on raw bit patterns: random ones with signed zeros,
// denormals, infinities and NaNs of both signs mixed in, odd lengths (vector tails), brackets
// that start at or are the key of zero, with NaN ends, and with MXCSR.DAZ set (the AVX2 block
// must then leave its float compares). Variants: the baseline loop, the AVX2 block as dispatched,
// and its integer-key version.
TEST(fused_blocks_match_order_key) {
  std::mt19937_64 g(31);
  const uint32_t specials[] = {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u,
                               0x7FC00000u, 0xFFC00001u, 0x3F800000u, 0xBF800000u,
                               0x00000001u, 0x80000003u, 0x007FFFFFu, 0x807FFFFFu};
  constexpr size_t kSpecials = sizeof(specials) / sizeof(specials[0]);
  for (int64_t n : {int64_t(1), int64_t(31), int64_t(1000), kChunk}) {
    std::vector<uint32_t> bits(static_cast<size_t>(n));
    for (auto& b : bits) {
      b = uint32_t(g());
      if (g() % 4 == 0) b = specials[g() % kSpecials];
      if (g() % 4 == 0) b &= 0xBFFFFFFFu;  // more ordinary magnitudes
    }
    for (int nan_mode : {kNanLow, kNanHigh})
      for (bool largest : {true, false})
        for (int br = 0; br < 6; ++br) {
          const FastKey<Fp32Fmt> fk(nan_mode, largest);
          auto key_at = [&](uint64_t r) {
            return order_key<Fp32Fmt>(bits[size_t(r % uint64_t(n))], nan_mode, largest);
          };
          const uint32_t zero = order_key<Fp32Fmt>(0u, nan_mode, largest);
          const uint32_t nkey = nan_key<Fp32Fmt>(nan_mode, largest);
          uint32_t lo = key_at(g()), hi = key_at(g());
          if (br == 1) lo = zero;         // zeros on the edge
          if (br == 2) lo = hi = zero;    // a bracket of tied zeros
          if (br == 3) lo = 0u;           // bracket ends that are no number
          if (br == 4) hi = ~0u;
          if (lo > hi) std::swap(lo, hi);
          if (br == 5) hi = lo;
          int64_t gt = 0, nn = 0;
          std::vector<uint8_t> m(static_cast<size_t>(n));
          std::vector<uint32_t> keys;
          std::vector<uint16_t> pos;
          for (int64_t i = 0; i < n; ++i) {
            const uint32_t key = order_key<Fp32Fmt>(bits[size_t(i)], nan_mode, largest);
            m[size_t(i)] = key > hi;
            gt += key > hi;
            nn += key == nkey;
            if (key >= lo && key <= hi) {
              keys.push_back(key);
              pos.push_back(uint16_t(i));
            }
          }
          const int variants = isa_level() >= 1 ? 5 : 1;
          for (int variant = 0; variant < variants; ++variant) {
            std::vector<uint8_t> gm(size_t(n), 2);
            std::vector<uint32_t> gk(static_cast<size_t>(n));
            std::vector<uint16_t> gp(static_cast<size_t>(n));
            int64_t ggt = 0, gnn = 0, got = -1;
            bool* mp = reinterpret_cast<bool*>(gm.data());
            if (variant == 0)
              got = isa_base::fused_block<Fp32Fmt>(bits.data(), n, lo, hi - lo, hi, nkey, fk, ggt,
                                                   gnn, mp, gk.data(), gp.data());
#if SP_HAVE_AVX2_FUSED
            const unsigned csr = _mm_getcsr();
            if (variant >= 3) _mm_setcsr(csr | 0x0040u);  // DAZ (variant 4 adds FTZ too)
            if (variant == 4) _mm_setcsr(_mm_getcsr() | 0x8000u);
            if (variant == 1 || variant >= 3)
              got = fused_f32_avx2(bits.data(), n, lo, hi - lo, hi, nkey, fk, ggt, gnn, mp,
                                   gk.data(), gp.data());
            if (variant == 2)
              got = fused_f32_avx2_keys(bits.data(), n, lo, hi - lo, hi, nkey, fk, ggt, gnn, mp,
                                        gk.data(), gp.data());
            _mm_setcsr(csr);
#endif
            const bool ok = got == int64_t(keys.size()) && ggt == gt && gnn == nn && gm == m;
            CHECK(ok);
            gk.resize(size_t(std::max<int64_t>(got, 0)));
            gp.resize(size_t(std::max<int64_t>(got, 0)));
            CHECK(gk == keys && gp == pos);
            if (!ok)
              std::fprintf(stderr, "  variant %d n=%lld br=%d nan=%d largest=%d\n", variant,
                           (long long)n, br, nan_mode, int(largest));
          }
        }
  }
}

int main() { return run_all(); }
