// Whole-table passes of the CPU top-k core that do not decide anything yet: the NaN scan, the
// radix-digit histogram and the deterministic sample that brackets the k-th key. The hot loops
// of the common case (contiguous, dtype == key format) come from topk_blocks.inc, compiled once
// per instruction-set level (cpu_isa.h). Torch-free.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu_isa.h"
#include "radix_keys.h"
#include "topk_avx512.h"
#include "topk_views.h"

namespace sparsepai {
namespace core {

namespace isa_base {
#include "topk_blocks.inc"
}  // namespace isa_base

#if SP_HAVE_ISA_DISPATCH
SP_ISA_BEGIN_AVX2
namespace isa_avx2 {
#include "topk_blocks.inc"
}  // namespace isa_avx2
SP_ISA_END
SP_ISA_BEGIN_AVX512
namespace isa_avx512 {
#include "topk_blocks.inc"
}  // namespace isa_avx512
SP_ISA_END
#endif

#define SP_ISA_CALL(fn, ...) SP_ISA_DISPATCH(fn, __VA_ARGS__)

// True for the first chunk of every tensor that holds a NaN; returns the smallest tensor index
// holding a NaN, or -1.
template <class Par>
int64_t first_nan_tensor(const std::vector<TensorView>& ts, const std::vector<Chunk>& chunks,
                         const Par& par) {
  std::vector<uint8_t> has(chunks.size(), 0);
  par.for_range(int64_t(chunks.size()), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const Chunk& ch = chunks[c];
      const TensorView& v = ts[ch.tensor];
      bool any = false;
      dispatch_dtype(v.dtype, [&](auto src) {
        constexpr Dtype S = decltype(src)::value;
        using T = typename Storage<S>::T;
        const T* p = static_cast<const T*>(v.data);
        for_each_offset(v, ch.begin, ch.end, [&](int64_t, int64_t off) {
          T tmp = p[off];
          any |= load_is_nan(&tmp, 0, S);
        });
      });
      has[c] = any;
    }
  });
  for (size_t c = 0; c < chunks.size(); ++c)
    if (has[c]) return chunks[c].tensor;
  return -1;
}

// Histogram of one radix digit: keys whose bits above `shift + bits` equal `prefix` count into
// bin digit_of(key, shift, bits). Per-thread histograms are summed, so the result does not depend
// on the thread count.
template <class Fmt, class Par>
std::vector<int64_t> key_histogram(const std::vector<TensorView>& ts,
                                   const std::vector<Chunk>& chunks, int shift, int bits,
                                   typename Fmt::Bits prefix, int nan_mode, bool largest,
                                   const Par& par) {
  using B = typename Fmt::Bits;
  const size_t nbins = size_t(1) << bits;
  const int nthreads = par.max_threads();
  std::vector<std::vector<int64_t>> local(nthreads);
  const int top = shift + bits;
  const FastKey<Fmt> fk(nan_mode, largest);
  par.for_range(int64_t(chunks.size()), [&](int64_t cb, int64_t ce) {
    std::vector<int64_t>& h = local[par.thread_id()];
    if (h.empty()) h.assign(nbins, 0);
    for (int64_t c = cb; c < ce; ++c) {
      const Chunk& ch = chunks[c];
      if (fast_path<Fmt>(ts[ch.tensor])) {
        SP_ISA_CALL(hist_block<Fmt>, static_cast<const B*>(ts[ch.tensor].data) + ch.begin,
                    ch.end - ch.begin, shift, bits, prefix, fk.of(ts[ch.tensor]), h.data());
        continue;
      }
      for_each_key<Fmt>(ts[ch.tensor], ch.begin, ch.end, nan_mode, largest,
                        [&](int64_t, B key) {
                          if (high_part<B>(key, top) == prefix) ++h[digit_of<B>(key, shift, bits)];
                        });
    }
  });
  std::vector<int64_t> hist(nbins, 0);
  for (auto& h : local)
    if (!h.empty())
      for (size_t i = 0; i < nbins; ++i) hist[i] += h[i];
  return hist;
}

// The key every NaN gets (kNanError places NaN low, like kNanLow).
template <class Fmt>
inline typename Fmt::Bits nan_key(int nan_mode, bool largest) {
  using B = typename Fmt::Bits;
  const B k = nan_mode == kNanHigh ? B(~B(0)) : B(0);
  return largest ? k : B(~k);
}

// Deterministic stratified sample of about `want` keys (all keys when N <= want): slot j takes
// one position inside stratum j, jittered by a hash of j so that periodic data cannot fool it.
// Slots are independent, so threads fill them in any order with the same result. The reads are
// cache misses one page apart, so each batch of positions is prefetched before it is read.
template <class Fmt, class Par>
std::vector<typename Fmt::Bits> sample_keys(const std::vector<TensorView>& ts, int64_t N,
                                            int64_t want, int nan_mode, bool largest,
                                            const Par& par) {
  using B = typename Fmt::Bits;
  std::vector<int64_t> offsets(ts.size() + 1, 0);
  for (size_t t = 0; t < ts.size(); ++t) offsets[t + 1] = offsets[t] + ts[t].numel;
  const int64_t s = std::min(N, want);
  // j * N / s in 64 bits when it cannot overflow (always, in practice)
  const bool narrow = N <= INT64_MAX / (s + 1);
  std::vector<B> out(static_cast<size_t>(s));
  constexpr int kBatch = 16;
  par.for_range(s, [&](int64_t jb, int64_t je) {
    size_t t = 0;  // tensor of the current position: positions grow with j
    size_t tens[kBatch];
    int64_t offs[kBatch];
    for (int64_t j0 = jb; j0 < je; j0 += kBatch) {
      const int nb = int(std::min<int64_t>(kBatch, je - j0));
      for (int b = 0; b < nb; ++b) {
        const int64_t j = j0 + b;
        uint64_t z = 0x9E3779B97F4A7C15ull * uint64_t(j + 1);  // splitmix64 of j
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const int64_t lo = narrow ? j * N / s : int64_t((__int128)j * N / s);
        const int64_t hi = narrow ? (j + 1) * N / s : int64_t((__int128)(j + 1) * N / s);
        // z scaled into [0, hi - lo) by a high multiply (no division)
        const int64_t g =
            lo + int64_t((unsigned __int128)z * uint64_t(hi - lo) >> 64);
        while (g >= offsets[t + 1]) ++t;
        const TensorView& v = ts[t];
        int64_t rem = g - offsets[t], off = 0;
        if (v.contiguous()) {
          off = rem;
        } else {
          for (int d = v.ndim - 1; d >= 0; --d) {
            off += (rem % v.sizes[d]) * v.strides[d];
            rem /= v.sizes[d];
          }
        }
        tens[b] = t;
        offs[b] = off;
        const int width = v.dtype == Dtype::kF64 ? 8 : v.dtype == Dtype::kF32 ? 4 : 2;
#if !defined(__CUDACC__)
        __builtin_prefetch(static_cast<const char*>(v.data) + off * width);
#else
        (void)width;
#endif
      }
      for (int b = 0; b < nb; ++b) {
        const TensorView& v = ts[tens[b]];
        dispatch_dtype(v.dtype, [&](auto src) {
          constexpr Dtype S = decltype(src)::value;
          using T = typename Storage<S>::T;
          out[size_t(j0 + b)] = key_of<Fmt, S>(static_cast<const T*>(v.data)[offs[b]], nan_mode,
                                               largest, sign_keep<T>(v.abs));
        });
      }
    }
  });
  return out;
}

// An interval [lo, hi] of keys that holds the k-th largest key with overwhelming probability,
// and the fraction of all keys expected inside it.
template <class Fmt>
struct Bracket {
  typename Fmt::Bits lo, hi;
  double frac;
};

// Brackets the k-th largest key (1 <= k <= N) from a sample of `sample_size` keys (0 =
// automatic): the sample quantile of k, plus and minus ~6 standard deviations of a sample
// quantile, found by two selections instead of a sort.
template <class Fmt, class Par>
Bracket<Fmt> sample_bracket(const std::vector<TensorView>& ts, int64_t N, int64_t k,
                            int nan_mode, bool largest, const Par& par, int64_t sample_size) {
  using B = typename Fmt::Bits;
  if (sample_size <= 0)
    sample_size = std::clamp<int64_t>(N / 64, int64_t(1) << 16, int64_t(1) << 18);
  std::vector<B> sample = sample_keys<Fmt>(ts, N, sample_size, nan_mode, largest, par);
  const int64_t S = int64_t(sample.size());
  const double p = double(k) / double(N);
  const double centre = double(S) * (1.0 - p);
  const double margin = 6.0 * std::sqrt(double(S) * p * (1.0 - p)) + 16.0;
  const int64_t ilo = int64_t(std::floor(centre - margin));
  const int64_t ihi = int64_t(std::ceil(centre + margin));
  B lo = B(0), hi = B(~B(0));
  if (ilo > 0) {
    std::nth_element(sample.begin(), sample.begin() + ilo, sample.end());
    lo = sample[size_t(ilo)];
  }
  if (ihi < S) {
    auto first = sample.begin() + std::max<int64_t>(ilo, 0);
    std::nth_element(first, sample.begin() + ihi, sample.end());
    hi = sample[size_t(ihi)];
  }
  return {lo, hi, std::min(1.0, double(ihi - ilo) / double(S))};
}

}  // namespace core
}  // namespace sparsepai
