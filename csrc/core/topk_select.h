// Torch-free CPU core of global top-k over a table of tensors (no concatenation, no copy of the
// scores). Used by csrc/cpu/topk.cpp through ATen's thread pool and by tests/cpp through a plain
// std::thread pool, so the same code is what the C++ unit tests and sanitizers check.
//
// The algorithm, for N scores and 1 <= k <= N, all in order-preserving integer keys:
//  * 16-bit keys: one 65536-bin histogram pass gives the k-th key exactly.
//  * 32/64-bit keys: a deterministic sample of the keys brackets the k-th key in [lo, hi]
//    (topk_passes.h); one pass counts keys above hi and collects the (few) keys inside the
//    bracket, and a selection among those gives the k-th key. If the bracket missed (or held too
//    many keys), MSB-first radix passes with 16-bit digits find it instead.
//  * masks (topk_masks.h): one more pass writes key > T, counting ties (key == T) per fixed-size
//    chunk; the first `k - count(key > T)` ties in position order are then switched on. Chunks
//    are fixed by position, never by thread, so masks do not depend on the thread count.
//  * masks with a bracket (topk_fused.h): the counting pass itself writes key > hi and keeps the
//    positions of the in-bracket keys, so that after the selection only those are fixed up: the
//    scores are read once, plus the sample.
//
// Files: topk_views.h (views, chunks, keys), topk_passes.h (NaN scan, histogram, sample),
// this file (selection), topk_masks.h (mask pass, tie order), topk_fused.h (fused pass), and the
// hand-vectorised blocks topk_avx2.h / topk_avx512.h.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "topk_passes.h"

namespace sparsepai {
namespace core {

template <class Fmt>
struct Selection {
  typename Fmt::Bits key;  // the k-th largest key
  int64_t count_gt;        // how many keys are strictly larger
  int64_t nan_count;       // how many keys are NaN
};

// MSB-first radix select with `digit`-bit digits. Needs 1 <= k <= N.
template <class Fmt, class Par>
Selection<Fmt> radix_select(const std::vector<TensorView>& ts, const std::vector<Chunk>& chunks,
                            int64_t k, int nan_mode, bool largest, const Par& par,
                            int digit = 16) {
  using B = typename Fmt::Bits;
  B prefix = 0;
  int64_t count_gt = 0, nan_count = 0;
  for (int top = Fmt::kBits; top > 0;) {
    const int bits = std::min(digit, top);
    const int shift = top - bits;
    std::vector<int64_t> hist =
        key_histogram<Fmt>(ts, chunks, shift, bits, prefix, nan_mode, largest, par);
    // With 16-bit first digits, the bin of the NaN key holds NaNs only: a top digit of all zeros
    // (or ones) is a NaN bit pattern in every format.
    if (top == Fmt::kBits && bits >= 16) nan_count = hist[digit_of<B>(nan_key<Fmt>(nan_mode, largest), shift, bits)];
    int64_t b = int64_t(hist.size()) - 1;
    for (; b > 0; --b) {
      if (count_gt + hist[b] >= k) break;
      count_gt += hist[b];
    }
    prefix = B((B(prefix) << bits) | B(b));  // bits < 64 always, so the shift is defined
    top = shift;
  }
  return {prefix, count_gt, nan_count};
}

// Below ~4M scores two radix passes cost less than sampling (measured on a 2-core Xeon).
constexpr int64_t kBracketMinN = int64_t(1) << 22;

// Memory guard of the bracket passes: at most N/50 candidates are kept (a key, as wide as the
// scores, plus a 2-byte offset in the fused pass); past that the radix passes run instead.
inline int64_t bracket_cap(int64_t N) { return std::max<int64_t>(int64_t(1) << 16, N / 50); }

// The `need`-th largest of `keys` (1 <= need <= keys.size()) and how many keys are larger.
// Reorders `keys`.
template <class Fmt>
std::pair<typename Fmt::Bits, int64_t> select_among(std::vector<typename Fmt::Bits>& keys,
                                                    int64_t need) {
  using B = typename Fmt::Bits;
  auto nth = keys.begin() + (int64_t(keys.size()) - need);
  std::nth_element(keys.begin(), nth, keys.end());
  const B key = *nth;
  int64_t gt = 0;
  for (B x : keys) gt += x > key;
  return {key, gt};
}

// The k-th largest key (1 <= k <= N). `sample_size` (0 = automatic) sets the sample that
// brackets it; the bracket pass keeps at most bracket_cap(N) candidate keys in memory.
template <class Fmt, class Par>
Selection<Fmt> select_kth(const std::vector<TensorView>& ts, const std::vector<Chunk>& chunks,
                          int64_t N, int64_t k, int nan_mode, bool largest, const Par& par,
                          int64_t sample_size = 0) {
  using B = typename Fmt::Bits;
  if (Fmt::kBits == 16 || N <= kBracketMinN) {
    return radix_select<Fmt>(ts, chunks, k, nan_mode, largest, par);
  }
  const Bracket<Fmt> br = sample_bracket<Fmt>(ts, N, k, nan_mode, largest, par, sample_size);
  const B lo = br.lo, hi = br.hi;
  const double frac = br.frac;
  const int64_t cap = bracket_cap(N);

  const int nthreads = par.max_threads();
  std::vector<std::vector<B>> cand(nthreads);
  std::vector<int64_t> above(nthreads, 0), nans(nthreads, 0);
  const B nkey = nan_key<Fmt>(nan_mode, largest);
  const FastKey<Fmt> fk(nan_mode, largest);
  const B width = B(hi - lo);
  std::atomic<int64_t> total{0};
  std::atomic<bool> overflow{false};
  const size_t reserve = size_t(std::min<double>(double(cap), frac * double(N) * 1.25 / nthreads + 1024));
  par.for_range(int64_t(chunks.size()), [&](int64_t cb, int64_t ce) {
    const int tid = par.thread_id();
    std::vector<B>& mine = cand[tid];
    if (mine.capacity() == 0) mine.reserve(reserve);
    int64_t gt = 0, nn = 0;
    std::unique_ptr<B[]> scratch;
    for (int64_t c = cb; c < ce; ++c) {
      if (overflow.load(std::memory_order_relaxed)) break;
      const Chunk& ch = chunks[c];
      const size_t before = mine.size();
      const TensorView& v = ts[ch.tensor];
#if SP_HAVE_AVX512_DISPATCH
      if constexpr (std::is_same_v<Fmt, Fp32Fmt>) {
        if (fast_path<Fmt>(v) && !v.abs && use_avx512()) {
          // scratch (uninitialised, reused) with room for the full-width stores
          if (!scratch) scratch.reset(new B[size_t(kChunk) + 16]);
          const int64_t got = bracket_f32_avx512(static_cast<const B*>(v.data) + ch.begin,
                                                 ch.end - ch.begin, lo, width, hi, nkey, fk.nk,
                                                 fk.inv, gt, nn, scratch.get());
          mine.insert(mine.end(), scratch.get(), scratch.get() + got);
          if (total.fetch_add(got) + got > cap) overflow.store(true);
          continue;
        }
      }
#endif
      if (fast_path<Fmt>(v)) {
        SP_ISA_CALL(bracket_block<Fmt>, static_cast<const B*>(v.data) + ch.begin, ch.end - ch.begin,
                    lo, width, hi, nkey, fk.of(v), gt, nn, mine);
      } else {
        for_each_key<Fmt>(v, ch.begin, ch.end, nan_mode, largest, [&](int64_t, B key) {
          gt += key > hi;
          nn += key == nkey;
          if (B(key - lo) <= width) mine.push_back(key);
        });
      }
      if (total.fetch_add(int64_t(mine.size() - before)) + int64_t(mine.size() - before) > cap)
        overflow.store(true);
    }
    above[tid] += gt;
    nans[tid] += nn;
  });
  int64_t nan_count = 0;
  for (int64_t x : nans) nan_count += x;
  if (!overflow.load()) {
    int64_t n_above = 0;
    for (int64_t a : above) n_above += a;
    size_t n_cand = 0;
    for (auto& c : cand) n_cand += c.size();
    const int64_t need = k - n_above;
    if (need >= 1 && need <= int64_t(n_cand)) {
      // merge the per-thread buffers into the largest one, release the rest
      size_t big = 0;
      for (size_t i = 1; i < cand.size(); ++i)
        if (cand[i].size() > cand[big].size()) big = i;
      std::vector<B> all = std::move(cand[big]);
      for (size_t i = 0; i < cand.size(); ++i) {
        if (i == big) continue;
        all.insert(all.end(), cand[i].begin(), cand[i].end());
        std::vector<B>().swap(cand[i]);
      }
      const auto [key, gt_in] = select_among<Fmt>(all, need);
      return {key, n_above + gt_in, nan_count};
    }
  }
  for (auto& c : cand) std::vector<B>().swap(c);
  return radix_select<Fmt>(ts, chunks, k, nan_mode, largest, par);
}

}  // namespace core
}  // namespace sparsepai
