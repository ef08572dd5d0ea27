// Torch-free CPU core of global top-k over a table of tensors (no concatenation, no copy of the
// scores). Used by csrc/cpu/topk.cpp through ATen's thread pool and by tests/cpp through a plain
// std::thread pool, so the same code is what the C++ unit tests and sanitizers check.
//
// The algorithm, for N scores and 1 <= k <= N, all in order-preserving integer keys:
//  * 16-bit keys: one 65536-bin histogram pass gives the k-th key exactly.
//  * 32/64-bit keys: a deterministic sample of the keys brackets the k-th key in [lo, hi]; one
//    pass counts keys above hi and collects the (few) keys inside the bracket, and a selection
//    among those gives the k-th key. If the bracket missed (or held too many keys), MSB-first
//    radix passes with 16-bit digits find it instead.
//  * one more pass writes the masks (key > T), counting ties (key == T) per fixed-size chunk; the
//    first `k - count(key > T)` ties in position order are then switched on. Chunks are fixed
//    by position, never by thread, so masks do not depend on the thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu_isa.h"
#include "radix_keys.h"
#include "topk_avx512.h"


namespace sparsepai {
namespace core {

constexpr int kMaxDims = 16;
constexpr int64_t kChunk = int64_t(1) << 16;

// A strided tensor, its dims coalesced (see coalesce()). Strides are in elements.
struct TensorView {
  const void* data = nullptr;
  Dtype dtype = Dtype::kF32;
  int64_t numel = 0;
  int ndim = 1;
  int64_t sizes[kMaxDims] = {0};
  int64_t strides[kMaxDims] = {1};

  bool contiguous() const { return ndim == 1 && (strides[0] == 1 || sizes[0] <= 1); }
};

// Merges dims that are laid out back to back, drops size-1 dims. Returns false when more than
// kMaxDims dims remain (the caller then hands over a contiguous copy).
inline bool coalesce(TensorView& v, int ndim, const int64_t* sizes, const int64_t* strides) {
  int64_t s[64], st[64];
  int n = 0;
  for (int d = 0; d < ndim; ++d) {
    if (sizes[d] == 1) continue;
    if (n > 0 && st[n - 1] == strides[d] * sizes[d]) {
      s[n - 1] *= sizes[d];
      st[n - 1] = strides[d];
    } else {
      if (n >= 64) return false;
      s[n] = sizes[d];
      st[n] = strides[d];
      ++n;
    }
  }
  if (n == 0) {
    s[0] = 1;
    st[0] = 1;
    n = 1;
  }
  if (n > kMaxDims) return false;
  v.ndim = n;
  for (int d = 0; d < n; ++d) {
    v.sizes[d] = s[d];
    v.strides[d] = st[d];
  }
  return true;
}

struct Chunk {
  int64_t tensor;
  int64_t begin;  // flat row-major index inside the tensor
  int64_t end;
};

inline std::vector<Chunk> make_chunks(const std::vector<TensorView>& ts) {
  std::vector<Chunk> out;
  for (size_t t = 0; t < ts.size(); ++t)
    for (int64_t b = 0; b < ts[t].numel; b += kChunk)
      out.push_back({int64_t(t), b, std::min(ts[t].numel, b + kChunk)});
  return out;
}

// Calls f(flat_index, element_offset) for flat indices [begin, end) in row-major order.
template <class F>
inline void for_each_offset(const TensorView& v, int64_t begin, int64_t end, F&& f) {
  if (v.contiguous()) {
    for (int64_t i = begin; i < end; ++i) f(i, i);
    return;
  }
  int64_t idx[kMaxDims];
  int64_t rem = begin, off = 0;
  for (int d = v.ndim - 1; d >= 0; --d) {
    idx[d] = rem % v.sizes[d];
    rem /= v.sizes[d];
    off += idx[d] * v.strides[d];
  }
  const int last = v.ndim - 1;
  for (int64_t i = begin; i < end; ++i) {
    f(i, off);
    // odometer increment
    int d = last;
    ++idx[d];
    off += v.strides[d];
    while (idx[d] == v.sizes[d] && d > 0) {
      off -= idx[d] * v.strides[d];
      idx[d] = 0;
      --d;
      ++idx[d];
      off += v.strides[d];
    }
  }
}

// Storage of each dtype, for loops that know the source dtype at compile time.
template <Dtype D>
struct Storage;
template <>
struct Storage<Dtype::kF16> {
  using T = uint16_t;
};
template <>
struct Storage<Dtype::kBF16> {
  using T = uint16_t;
};
template <>
struct Storage<Dtype::kF32> {
  using T = uint32_t;
};
template <>
struct Storage<Dtype::kF64> {
  using T = uint64_t;
};

template <class F>
inline void dispatch_dtype(Dtype d, F&& f) {
  switch (d) {
    case Dtype::kF16:
      f(std::integral_constant<Dtype, Dtype::kF16>{});
      break;
    case Dtype::kBF16:
      f(std::integral_constant<Dtype, Dtype::kBF16>{});
      break;
    case Dtype::kF32:
      f(std::integral_constant<Dtype, Dtype::kF32>{});
      break;
    default:
      f(std::integral_constant<Dtype, Dtype::kF64>{});
  }
}

// Key of a stored element of compile-time dtype Src in key format Fmt.
template <class Fmt, Dtype Src>
inline typename Fmt::Bits key_of(typename Storage<Src>::T raw, int nan_mode, bool largest) {
  using B = typename Fmt::Bits;
  if constexpr (std::is_same<B, typename Storage<Src>::T>::value) {
    return order_key<Fmt>(raw, nan_mode, largest);
  } else {
    typename Storage<Src>::T tmp = raw;
    return load_key<Fmt>(&tmp, 0, Src, nan_mode, largest);
  }
}

// Hot loops for the common case (contiguous, dtype == key format), written as plain loops over
// raw pointers so that the compiler vectorises them.
template <class Fmt>
struct FastKey {
  using B = typename Fmt::Bits;
  using S = std::make_signed_t<B>;
  B nk, inv;
  FastKey(int nan_mode, bool largest)
      : nk(nan_mode == kNanHigh ? B(~B(0)) : B(0)), inv(largest ? B(0) : B(~B(0))) {}
  inline B operator()(B bits) const {
    const B flip = B(B(S(bits) >> (Fmt::kBits - 1)) | Fmt::kSign);
    const B abs = B(bits & B(~Fmt::kSign));
    B key = B(bits ^ flip);
    key = abs == 0 ? B(Fmt::kSign) : key;
    key = abs > Fmt::kAbsInf ? nk : key;
    return B(key ^ inv);
  }
};

template <class Fmt>
inline bool fast_path(const TensorView& v) {
  return v.contiguous() && v.dtype == Fmt::kDtype;
}

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

// Calls f(flat_index, key) over a chunk, with the dtype dispatch hoisted out of the loop.
template <class Fmt, class F>
inline void for_each_key(const TensorView& v, int64_t begin, int64_t end, int nan_mode,
                         bool largest, F&& f) {
  dispatch_dtype(v.dtype, [&](auto src) {
    constexpr Dtype S = decltype(src)::value;
    using T = typename Storage<S>::T;
    const T* p = static_cast<const T*>(v.data);
    for_each_offset(v, begin, end, [&](int64_t i, int64_t off) {
      f(i, key_of<Fmt, S>(p[off], nan_mode, largest));
    });
  });
}

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
                    ch.end - ch.begin, shift, bits, prefix, fk, h.data());
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

template <class Fmt>
struct Selection {
  typename Fmt::Bits key;  // the k-th largest key
  int64_t count_gt;        // how many keys are strictly larger
  int64_t nan_count;       // how many keys are NaN
};

// The key every NaN gets (kNanError places NaN low, like kNanLow).
template <class Fmt>
inline typename Fmt::Bits nan_key(int nan_mode, bool largest) {
  using B = typename Fmt::Bits;
  const B k = nan_mode == kNanHigh ? B(~B(0)) : B(0);
  return largest ? k : B(~k);
}

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

// Deterministic stratified sample of about `want` keys (all keys when N <= want): slot j takes
// one position inside stratum j, jittered by a hash of j so that periodic data cannot fool it.
// Slots are independent, so threads fill them in any order with the same result.
template <class Fmt, class Par>
std::vector<typename Fmt::Bits> sample_keys(const std::vector<TensorView>& ts, int64_t N,
                                            int64_t want, int nan_mode, bool largest,
                                            const Par& par) {
  using B = typename Fmt::Bits;
  std::vector<int64_t> offsets(ts.size() + 1, 0);
  for (size_t t = 0; t < ts.size(); ++t) offsets[t + 1] = offsets[t] + ts[t].numel;
  const int64_t s = std::min(N, want);
  std::vector<B> out(static_cast<size_t>(s));
  par.for_range(s, [&](int64_t jb, int64_t je) {
    for (int64_t j = jb; j < je; ++j) {
      uint64_t z = 0x9E3779B97F4A7C15ull * uint64_t(j + 1);  // splitmix64 of j
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      z ^= z >> 31;
      const int64_t lo = int64_t((__int128)j * N / s);
      const int64_t hi = int64_t((__int128)(j + 1) * N / s);
      const int64_t g = lo + int64_t(z % uint64_t(hi - lo));
      const size_t t =
          size_t(std::upper_bound(offsets.begin(), offsets.end(), g) - offsets.begin() - 1);
      const TensorView& v = ts[t];
      int64_t rem = g - offsets[t], off = 0;
      for (int d = v.ndim - 1; d >= 0; --d) {
        off += (rem % v.sizes[d]) * v.strides[d];
        rem /= v.sizes[d];
      }
      dispatch_dtype(v.dtype, [&](auto src) {
        constexpr Dtype S = decltype(src)::value;
        out[size_t(j)] = key_of<Fmt, S>(static_cast<const typename Storage<S>::T*>(v.data)[off],
                                        nan_mode, largest);
      });
    }
  });
  return out;
}

// The k-th largest key (1 <= k <= N). `sample_size` (0 = automatic) sets the sample that
// brackets it; the bracket pass keeps at most N/50 candidate keys in memory.
template <class Fmt, class Par>
Selection<Fmt> select_kth(const std::vector<TensorView>& ts, const std::vector<Chunk>& chunks,
                          int64_t N, int64_t k, int nan_mode, bool largest, const Par& par,
                          int64_t sample_size = 0) {
  using B = typename Fmt::Bits;
  // Below ~4M scores two radix passes cost less than sampling (measured on a 2-core Xeon).
  if (Fmt::kBits == 16 || N <= (int64_t(1) << 22)) {
    return radix_select<Fmt>(ts, chunks, k, nan_mode, largest, par);
  }
  if (sample_size <= 0) sample_size = std::clamp<int64_t>(N / 64, int64_t(1) << 16, int64_t(1) << 18);
  std::vector<B> sample = sample_keys<Fmt>(ts, N, sample_size, nan_mode, largest, par);
  const int64_t S = int64_t(sample.size());
  // Position of the k-th largest in the ascending sample, and a margin of ~6 standard
  // deviations of a sample quantile.
  const double p = double(k) / double(N);
  const double centre = double(S) * (1.0 - p);
  const double margin = 6.0 * std::sqrt(double(S) * p * (1.0 - p)) + 16.0;
  const int64_t ilo = int64_t(std::floor(centre - margin));
  const int64_t ihi = int64_t(std::ceil(centre + margin));
  // two selections instead of a sort
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
  const double frac = std::min(1.0, double(ihi - ilo) / double(S));
  // Memory guard: 2% of N keys at most (a key is as wide as the scores it comes from).
  const int64_t cap = std::max<int64_t>(int64_t(1) << 16, N / 50);

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
        if (fast_path<Fmt>(v) && use_avx512()) {
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
                    lo, width, hi, nkey, fk, gt, nn, mine);
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
      auto nth = all.begin() + (int64_t(all.size()) - need);
      std::nth_element(all.begin(), nth, all.end());
      const B key = *nth;
      int64_t gt_in = 0;
      for (B x : all) gt_in += x > key;
      return {key, n_above + gt_in, nan_count};
    }
  }
  for (auto& c : cand) std::vector<B>().swap(c);
  return radix_select<Fmt>(ts, chunks, k, nan_mode, largest, par);
}

// Writes masks[t][i] = key > T, then switches on the first `budget` ties (key == T) in position
// order. masks[t] is a contiguous row-major bool buffer of ts[t].numel bytes.
template <class Fmt, class Par>
void write_masks(const std::vector<TensorView>& ts, const std::vector<Chunk>& chunks,
                 typename Fmt::Bits T, int64_t budget, int nan_mode, bool largest,
                 const std::vector<bool*>& masks, const Par& par) {
  using B = typename Fmt::Bits;
  const FastKey<Fmt> fk(nan_mode, largest);
  std::vector<int64_t> ties(chunks.size(), 0);
  par.for_range(int64_t(chunks.size()), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const Chunk& ch = chunks[c];
      bool* m = masks[ch.tensor];
      const TensorView& v = ts[ch.tensor];
#if SP_HAVE_AVX512_DISPATCH
      if constexpr (std::is_same_v<Fmt, Fp32Fmt>) {
        if (fast_path<Fmt>(v) && use_avx512()) {
          ties[c] = mask_f32_avx512(static_cast<const B*>(v.data) + ch.begin, ch.end - ch.begin, T,
                                    fk.nk, fk.inv, m + ch.begin);
          continue;
        }
      }
#endif
      if (fast_path<Fmt>(v)) {
        ties[c] = SP_ISA_CALL(mask_block<Fmt>, static_cast<const B*>(v.data) + ch.begin,
                              ch.end - ch.begin, T, fk, m + ch.begin);
        continue;
      }
      int64_t eq = 0;
      for_each_key<Fmt>(v, ch.begin, ch.end, nan_mode, largest, [&](int64_t i, B key) {
        m[i] = key > T;
        eq += key == T;
      });
      ties[c] = eq;
    }
  });
  // Allowance per chunk, in position order: this is what makes the tie-break deterministic.
  std::vector<int64_t> allow(chunks.size(), 0);
  std::vector<int64_t> todo;
  int64_t left = budget;
  for (size_t c = 0; c < chunks.size() && left > 0; ++c) {
    if (ties[c] == 0) continue;
    allow[c] = std::min(left, ties[c]);
    left -= allow[c];
    todo.push_back(int64_t(c));
  }
  par.for_range(int64_t(todo.size()), [&](int64_t jb, int64_t je) {
    for (int64_t j = jb; j < je; ++j) {
      const Chunk& ch = chunks[todo[j]];
      bool* m = masks[ch.tensor];
      int64_t a = allow[todo[j]];
      for_each_key<Fmt>(ts[ch.tensor], ch.begin, ch.end, nan_mode, largest, [&](int64_t i, B key) {
        if (a > 0 && key == T) {
          m[i] = true;
          --a;
        }
      });
    }
  });
}

// Key format dispatch: calls f(Fmt{}) for the common key format of a call.
template <class F>
inline void dispatch_key_format(Dtype common, F&& f) {
  switch (common) {
    case Dtype::kF16:
      f(Fp16Fmt{});
      break;
    case Dtype::kBF16:
      f(Bf16Fmt{});
      break;
    case Dtype::kF32:
      f(Fp32Fmt{});
      break;
    default:
      f(Fp64Fmt{});
  }
}

inline Dtype common_dtype(const std::vector<TensorView>& ts) {
  if (ts.empty()) return Dtype::kF32;
  Dtype d = ts[0].dtype;
  bool mixed = false, any64 = false;
  for (const auto& v : ts) {
    mixed |= v.dtype != d;
    any64 |= v.dtype == Dtype::kF64;
  }
  if (!mixed) return d;
  return any64 ? Dtype::kF64 : Dtype::kF32;
}

}  // namespace core
}  // namespace sparsepai
