// The masked optimizer loops (csrc/core/masked_optim_blocks.inc, every ISA level via ctest)
// against the per-element math applied one element at a time: kept elements updated exactly as
// the element function does, pruned ones exact zeros, NaN/inf gradients at pruned positions
// never leaking.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"
#include "core/masked_optim_cpu.h"

using namespace sparsepai::core;

static std::vector<uint64_t> random_words(int64_t n, double density, uint64_t seed,
                                          std::vector<uint8_t>& keep, bool runs = true) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u;
  std::vector<uint64_t> w((n + 63) / 64, 0);
  keep.assign(size_t(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    // runs of fully kept and fully pruned words too, not only random bits
    const int64_t word = i >> 6;
    const bool k = !runs ? u(g) < density
                   : word % 7 == 0 ? true
                   : word % 11 == 0 ? false
                                    : u(g) < density;
    keep[size_t(i)] = k;
    if (k) w[size_t(word)] |= uint64_t(1) << (i & 63);
  }
  return w;
}

static bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// The tests' AdamW hyper-parameters (beta1 0.9, eps 1e-8, weight decay 1e-2), written once.
static AdamWHyper adamw_hyper(float lr, float beta2, bool amsgrad) {
  AdamWHyper h;
  h.lr = lr;
  h.beta1 = 0.9f;
  h.beta2 = beta2;
  h.eps = 1e-8f;
  h.weight_decay = 1e-2f;
  h.amsgrad = amsgrad;
  return h;
}

// Mask words of every shape the dense-layout walk tells apart, cycling word by word: empty, full,
// one half full, one bit, 8 bits (the most SGD without momentum takes one by one), 9 bits, and
// random bits at `density`.
static std::vector<uint64_t> patterned_words(int64_t n, double density, uint64_t seed,
                                             std::vector<uint8_t>& keep) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u;
  std::vector<uint64_t> w((n + 63) / 64, 0);
  for (size_t k = 0; k < w.size(); ++k) {
    uint64_t bits = 0;
    switch (k % 8) {
      case 0: bits = 0; break;
      case 1: bits = ~uint64_t(0); break;
      case 2: bits = 0xFFFFFFFFull; break;
      case 3: bits = 0xFFFFFFFFull << 32; break;
      case 4: bits = uint64_t(1) << (k % 64); break;
      case 5: bits = 0x0101010101010101ull << (k % 8); break;
      case 6: bits = (0x0101010101010101ull << (k % 8)) | (uint64_t(1) << 63); break;
      default:
        for (int j = 0; j < 64; ++j) bits |= uint64_t(u(g) < density) << j;
    }
    w[k] = bits;
  }
  if (n % 64) w.back() &= (uint64_t(1) << (n % 64)) - 1;
  keep.assign(size_t(n), 0);
  for (int64_t i = 0; i < n; ++i) keep[size_t(i)] = kept(w.data(), i);
  return w;
}

// Equal bits, or both NaN (a NaN gradient's payload may pass through operands in either order).
static bool same_value(float a, float b) {
  return same_bits(a, b) || (std::isnan(a) && std::isnan(b));
}

TEST(sgd_range_matches_element_math) {
  for (double density : {1.0, 0.5, 0.05}) {
    for (bool first : {true, false}) {
      const int64_t n = 10007;
      std::vector<uint8_t> keep;
      auto words = random_words(n, density, 7, keep);
      std::mt19937 g(3);
      std::normal_distribution<float> d;
      std::vector<float> p(n), grad(n), buf(n);
      for (int64_t i = 0; i < n; ++i) {
        p[i] = keep[i] ? d(g) : 0.f;
        buf[i] = keep[i] ? d(g) : 0.f;
        grad[i] = keep[i] ? d(g) : (i % 2 ? NAN : INFINITY);
      }
      SgdHyper h;
      h.lr = 0.1f;
      h.momentum = 0.9f;
      h.dampening = 0.1f;
      h.weight_decay = 1e-3f;
      h.maximize = true;
      auto want_p = p, want_b = buf;
      const SgdCoef c = sgd_coef(h, first);
      for (int64_t i = 0; i < n; ++i)
        if (keep[i]) sgd_element<true, false>(want_p[i], grad[i], want_b[i], c);
      // two ranges, split on a word boundary, like the extension's parallel ranges
      sgd_range<float, true, false>(p.data(), grad.data(), buf.data(), words.data(), 0, 4096, h,
                                    first);
      sgd_range<float, true, false>(p.data(), grad.data(), buf.data(), words.data(), 4096, n, h,
                                    first);
      bool ok = true;
      for (int64_t i = 0; i < n; ++i) {
        // built without FMA contraction: every ISA level rounds exactly like the scalar math
        ok &= same_bits(p[i], want_p[i]) && same_bits(buf[i], want_b[i]);
        if (!keep[i]) ok &= p[i] == 0.f && buf[i] == 0.f && !std::signbit(p[i] + 0.f);
      }
      CHECK(ok);
    }
  }
}

TEST(adamw_range_matches_element_math) {
  for (double density : {1.0, 0.5, 0.05}) {
    const int64_t n = 5000;
    std::vector<uint8_t> keep;
    auto words = random_words(n, density, 11, keep);
    std::mt19937 g(5);
    std::normal_distribution<float> d;
    std::vector<float> p(n), grad(n), m(n, 0.f), v(n, 0.f), x(n, 0.f);
    for (int64_t i = 0; i < n; ++i) {
      p[i] = keep[i] ? d(g) : 0.f;
      grad[i] = keep[i] ? d(g) : NAN;
    }
    const AdamWHyper h = adamw_hyper(1e-2f, 0.999f, true);
    const AdamWStep s = adamw_step_scalars(h, 3.0);
    auto wp = p, wm = m, wv = v, wx = x;
    for (int64_t i = 0; i < n; ++i)
      if (keep[i]) adamw_element<true>(wp[i], grad[i], wm[i], wv[i], wx[i], h, s);
    adamw_range<float, true>(p.data(), grad.data(), m.data(), v.data(), x.data(), words.data(), 0,
                             n, h, s);
    bool ok = true;
    for (int64_t i = 0; i < n; ++i) {
      ok &= same_bits(p[i], wp[i]) && same_bits(m[i], wm[i]) && same_bits(v[i], wv[i]) &&
            same_bits(x[i], wx[i]);
      if (!keep[i]) ok &= p[i] == 0.f && m[i] == 0.f && v[i] == 0.f && x[i] == 0.f;
    }
    CHECK(ok);
  }
}

TEST(unmasked_range_updates_everything) {
  std::vector<float> p(100, 1.f), grad(100, 2.f);
  SgdHyper h;
  h.lr = 0.5f;
  sgd_range<float, false, false>(p.data(), grad.data(), nullptr, nullptr, 0, 100, h, false);
  bool ok = true;
  for (float x : p) ok &= x == 0.f;
  CHECK(ok);
}

// The compact-state loops against the dense-state ones: the same parameters bit for bit, and the
// compact state equal to the dense state's kept entries in index order. Split into ranges with
// their kept-count offsets, as the extension runs them.
static void check_compact(int64_t n, const std::vector<uint64_t>& words,
                          const std::vector<uint8_t>& keep) {
  std::mt19937 g(9);
  std::normal_distribution<float> d;
  std::vector<float> p(n), grad(n), buf(n), m(n), v(n), x(n);
  for (int64_t i = 0; i < n; ++i) {
    p[i] = keep[i] ? d(g) : 0.f;
    buf[i] = keep[i] ? d(g) : 0.f;
    m[i] = keep[i] ? d(g) : 0.f;
    v[i] = keep[i] ? std::fabs(d(g)) : 0.f;
    x[i] = keep[i] ? v[i] + 0.5f : 0.f;
    grad[i] = keep[i] ? d(g) : (i % 2 ? NAN : -INFINITY);
  }
  std::vector<float> cb, cm, cv, cx;
  for (int64_t i = 0; i < n; ++i)
    if (keep[i]) {
      cb.push_back(buf[i]);
      cm.push_back(m[i]);
      cv.push_back(v[i]);
      cx.push_back(x[i]);
    }
  const int64_t cuts[] = {0, std::min<int64_t>(1984, n), std::min<int64_t>(4096, n),
                          std::min<int64_t>(4160, n), n};
  SgdHyper h;
  h.lr = 0.05f;
  h.momentum = 0.9f;
  h.weight_decay = 5e-4f;
  h.nesterov = true;
  const AdamWHyper ha = adamw_hyper(1e-3f, 0.99f, false);
  const AdamWStep s = adamw_step_scalars(ha, 5.0);
  auto p1 = p, p2 = p, q1 = p, q2 = p;
  for (int c = 0; c + 1 < 5; ++c) {
    const int64_t b = cuts[c], e = cuts[c + 1], off = kept_count(words.data(), 0, b);
    sgd_range<float, true, true>(p1.data(), grad.data(), buf.data(), words.data(), b, e, h,
                                 false);
    sgd_range_compact<float, true, true>(p2.data(), grad.data(), cb.data(), words.data(), b, e,
                                         off, h, false);
    adamw_range<float, true>(q1.data(), grad.data(), m.data(), v.data(), x.data(), words.data(),
                             b, e, ha, s);
    adamw_range_compact<float, true>(q2.data(), grad.data(), cm.data(), cv.data(), cx.data(),
                                     words.data(), b, e, off, ha, s);
  }
  CHECK(kept_count(words.data(), 0, n) == int64_t(cb.size()));
  bool ok = true;
  int64_t j = 0;
  for (int64_t i = 0; i < n; ++i) {
    ok &= same_bits(p1[i], p2[i]) && same_bits(q1[i], q2[i]);
    if (keep[i]) {
      ok &= same_bits(buf[i], cb[j]) && same_bits(m[i], cm[j]) && same_bits(v[i], cv[j]) &&
            same_bits(x[i], cx[j]);
      ++j;
    } else {
      ok &= p2[i] == 0.f && q2[i] == 0.f;
    }
  }
  CHECK(ok);
}

TEST(compact_ranges_match_dense_layout) {
  // with runs of full and empty words, and without (below 1/8 density both update in place)
  for (auto [density, runs] : {std::pair{1.0, true}, {0.3, true}, {0.05, true}, {0.0, true},
                               {0.3, false}, {0.05, false}, {0.01, false}}) {
    std::vector<uint8_t> keep;
    const auto words = random_words(9001, density, 13, keep, runs);
    check_compact(9001, words, keep);
  }
  // every word shape (8 and 9 kept bits: either side of the one-by-one threshold), ragged ends
  for (int64_t n : {64 * 41 + 0, 64 * 41 + 45, 64 * 46 + 7})
    for (double density : {0.5, 0.2}) {
      std::vector<uint8_t> keep;
      const auto words = patterned_words(n, density, 29, keep);
      check_compact(n, words, keep);
    }
}

// The dense-layout loops on every word shape, ragged tails of every kind (inside the first and
// the second half of the last word), NaN and inf gradients kept and pruned, ranges split on word
// boundaries: kept entries as the element math gives them, pruned ones +0 in params and state.
template <bool kMomentum, bool kNesterov>
static void check_sgd_words(int64_t n, double density, bool patterned = true) {
  std::vector<uint8_t> keep;
  const auto words = patterned ? patterned_words(n, density, 17 + uint64_t(n), keep)
                               : random_words(n, density, 17 + uint64_t(n), keep, false);
  std::mt19937 g{uint32_t(n)};
  std::normal_distribution<float> d;
  std::vector<float> p(n), grad(n), buf(n);
  for (int64_t i = 0; i < n; ++i) {
    p[i] = keep[i] ? d(g) : 0.f;
    buf[i] = keep[i] && kMomentum ? d(g) : 0.f;
    grad[i] = i % 97 == 5 ? NAN : i % 89 == 3 ? -INFINITY : d(g);
  }
  SgdHyper h;
  h.lr = 0.05f;
  h.momentum = kMomentum ? 0.9f : 0.f;
  h.weight_decay = 5e-4f;
  h.nesterov = kNesterov;
  auto want_p = p, want_b = buf;
  const SgdCoef c = sgd_coef(h, false);
  for (int64_t i = 0; i < n; ++i)
    if (keep[i]) sgd_element<kMomentum, kNesterov>(want_p[i], grad[i], want_b[i], c);
  const int64_t cut = std::min<int64_t>(64 * 17, n);
  sgd_range<float, kMomentum, kNesterov>(p.data(), grad.data(), buf.data(), words.data(), 0, cut,
                                         h, false);
  sgd_range<float, kMomentum, kNesterov>(p.data(), grad.data(), buf.data(), words.data(), cut, n,
                                         h, false);
  bool ok = true;
  for (int64_t i = 0; i < n; ++i)
    ok &= keep[i] ? same_value(p[i], want_p[i]) && same_value(buf[i], want_b[i])
                  : same_bits(p[i], 0.f) && same_bits(buf[i], 0.f);
  CHECK(ok);
}

template <bool kAmsgrad>
static void check_adamw_words(int64_t n, double density) {
  std::vector<uint8_t> keep;
  const auto words = patterned_words(n, density, 23 + uint64_t(n), keep);
  std::mt19937 g{uint32_t(n) + 1};
  std::normal_distribution<float> d;
  std::vector<float> p(n), grad(n), m(n), v(n), x(n);
  for (int64_t i = 0; i < n; ++i) {
    p[i] = keep[i] ? d(g) : 0.f;
    m[i] = keep[i] ? d(g) : 0.f;
    v[i] = keep[i] ? std::fabs(d(g)) : 0.f;
    x[i] = keep[i] && kAmsgrad ? v[i] + 0.25f : 0.f;
    grad[i] = i % 97 == 5 ? NAN : i % 89 == 3 ? INFINITY : d(g);
  }
  const AdamWHyper h = adamw_hyper(1e-3f, 0.999f, kAmsgrad);
  const AdamWStep s = adamw_step_scalars(h, 4.0);
  auto wp = p, wm = m, wv = v, wx = x;
  for (int64_t i = 0; i < n; ++i)
    if (keep[i]) adamw_element<kAmsgrad>(wp[i], grad[i], wm[i], wv[i], wx[i], h, s);
  const int64_t cut = std::min<int64_t>(64 * 17, n);
  for (auto [b, e] : {std::pair{int64_t(0), cut}, {cut, n}})
    adamw_range<float, kAmsgrad>(p.data(), grad.data(), m.data(), v.data(),
                                 kAmsgrad ? x.data() : nullptr, words.data(), b, e, h, s);
  bool ok = true;
  for (int64_t i = 0; i < n; ++i)
    ok &= keep[i] ? same_value(p[i], wp[i]) && same_value(m[i], wm[i]) &&
                        same_value(v[i], wv[i]) && same_value(x[i], wx[i])
                  : same_bits(p[i], 0.f) && same_bits(m[i], 0.f) && same_bits(v[i], 0.f) &&
                        same_bits(x[i], 0.f);
  CHECK(ok);
}

TEST(dense_layout_every_word_shape_and_tail) {
  // the last word (ragged or not) of every shape
  for (int64_t words = 40; words < 48; ++words)
    for (int64_t tail : {0, 1, 31, 32, 33, 63})
      for (double density : {0.5, 0.2, 0.02}) {
        const int64_t n = 64 * words + tail;
        check_sgd_words<true, false>(n, density);
        check_sgd_words<true, true>(n, density);
        check_sgd_words<false, false>(n, density);
        check_adamw_words<false>(n, density);
        check_adamw_words<true>(n, density);
      }
  // random bits only: below 1/8 kept, SGD without momentum walks the kept elements one by one
  for (double density : {0.02, 0.1, 0.2})
    for (int64_t n : {64 * 40 + 33, 64 * 40}) check_sgd_words<false, false>(n, density, false);
}

int main() { return run_all(); }
