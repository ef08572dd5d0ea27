// CPU entry points of the masked optimizer loops: masked_optim_blocks.inc compiled for every
// instruction-set level (cpu_isa.h), plus the helpers it uses. Torch-free.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu_isa.h"
#include "masked_optim.h"

#if SP_HAVE_ISA_DISPATCH
#include <immintrin.h>
#endif

namespace sparsepai {
namespace core {

constexpr int kSparseWordBits = 8;  // at most this many kept bits: the one-by-one path

template <class T>
inline float ld(const T* p, int64_t i) {
  return static_cast<float>(p[i]);
}
template <class T>
inline void st(T* p, int64_t i, float v) {
  p[i] = static_cast<T>(v);
}

inline uint64_t word_bits(const uint64_t* words, int64_t w0, int64_t n) {
  uint64_t bits = words ? words[w0 >> 6] : ~uint64_t(0);
  if (n < 64) bits &= (uint64_t(1) << n) - 1;
  return bits;
}

// The element loops of masked_optim_blocks.inc: the element math must be inlined into them or
// they do not vectorise, and in the extension's translation unit (every loop for 3 storage types
// at 3 ISA levels) GCC's growth limits left adamw_element out of line: AdamW's dense step then
// took 10x as long (measured). flatten inlines everything the loop calls.
#define SP_MO_LOOP inline __attribute__((flatten))

// 1 << j for the 32 lanes of a half mask word (lane_of in masked_optim_blocks.inc).
struct BitOf32 {
  uint32_t v[32];
  constexpr BitOf32() : v() {
    for (int j = 0; j < 32; ++j) v[j] = uint32_t(1) << j;
  }
};
inline constexpr BitOf32 kBitOf32{};

// Lane permutations of a mask byte b for the AVX2 compact step (masked_optim_blocks.inc), which
// lacks AVX-512's compress and expand: compress[b] lists the set bits' lanes in order (lane k of
// the packed vector comes from lane compress[b][k]); expand[b][j] is the rank of set bit j among
// the set bits (lane j of the scattered vector comes from packed lane expand[b][j]).
struct BytePerm {
  uint8_t compress[256][8];
  uint8_t expand[256][8];
  constexpr BytePerm() : compress(), expand() {
    for (int b = 0; b < 256; ++b) {
      int k = 0;
      for (int j = 0; j < 8; ++j)
        if ((b >> j) & 1) {
          compress[b][k] = uint8_t(j);
          expand[b][j] = uint8_t(k);
          ++k;
        }
    }
  }
};
inline constexpr BytePerm kBytePerm{};

namespace isa_base {
#include "masked_optim_blocks.inc"
}  // namespace isa_base

#if SP_HAVE_ISA_DISPATCH
SP_ISA_BEGIN_AVX2
#define SP_MO_AVX2 1  // the .inc's AVX2 intrinsics paths
namespace isa_avx2 {
#include "masked_optim_blocks.inc"
}  // namespace isa_avx2
#undef SP_MO_AVX2
SP_ISA_END
SP_ISA_BEGIN_AVX512
#define SP_MO_AVX512 1  // the .inc's AVX-512 intrinsics paths
namespace isa_avx512 {
#include "masked_optim_blocks.inc"
}  // namespace isa_avx512
#undef SP_MO_AVX512
SP_ISA_END
#endif

// Number of kept elements among [begin, end) (begin a multiple of 64), at the widest ISA level:
// compiled for the baseline ISA, __builtin_popcountll is a libgcc call per word, which made the
// kernels' kept-count pass over VGG's 1.6M mask words cost ~3 ms a step (measured).
inline int64_t kept_count(const uint64_t* words, int64_t begin, int64_t end) {
  return SP_ISA_DISPATCH(kept_count, words, begin, end);
}

template <class T, bool kMomentum, bool kNesterov>
inline void sgd_range(T* p, const T* g, T* buf, const uint64_t* words, int64_t begin, int64_t end,
                      const SgdHyper& h, bool first) {
#if SP_HAVE_ISA_DISPATCH
  const int level = isa_level();
  if (level >= 2) return isa_avx512::sgd_range<T, kMomentum, kNesterov>(p, g, buf, words, begin, end, h, first);
  if (level >= 1) return isa_avx2::sgd_range<T, kMomentum, kNesterov>(p, g, buf, words, begin, end, h, first);
#endif
  isa_base::sgd_range<T, kMomentum, kNesterov>(p, g, buf, words, begin, end, h, first);
}

template <class T, bool kAmsgrad>
inline void adamw_range(T* p, const T* g, T* m, T* v, T* vmax, const uint64_t* words,
                        int64_t begin, int64_t end, const AdamWHyper& h, const AdamWStep& s) {
#if SP_HAVE_ISA_DISPATCH
  const int level = isa_level();
  if (level >= 2)
    return isa_avx512::adamw_range<T, kAmsgrad>(p, g, m, v, vmax, words, begin, end, h, s);
  if (level >= 1)
    return isa_avx2::adamw_range<T, kAmsgrad>(p, g, m, v, vmax, words, begin, end, h, s);
#endif
  isa_base::adamw_range<T, kAmsgrad>(p, g, m, v, vmax, words, begin, end, h, s);
}

// Compact-state variants (state holds the kept elements only; see masked_optim_blocks.inc).
template <class T, bool kMomentum, bool kNesterov>
inline void sgd_range_compact(T* p, const T* g, T* buf, const uint64_t* words, int64_t begin,
                              int64_t end, int64_t off, const SgdHyper& h, bool first) {
#if SP_HAVE_ISA_DISPATCH
  const int level = isa_level();
  if (level >= 2)
    return isa_avx512::sgd_range_compact<T, kMomentum, kNesterov>(p, g, buf, words, begin, end,
                                                                   off, h, first);
  if (level >= 1)
    return isa_avx2::sgd_range_compact<T, kMomentum, kNesterov>(p, g, buf, words, begin, end, off,
                                                                 h, first);
#endif
  isa_base::sgd_range_compact<T, kMomentum, kNesterov>(p, g, buf, words, begin, end, off, h,
                                                        first);
}

template <class T, bool kAmsgrad>
inline void adamw_range_compact(T* p, const T* g, T* m, T* v, T* vmax, const uint64_t* words,
                                int64_t begin, int64_t end, int64_t off, const AdamWHyper& h,
                                const AdamWStep& s) {
#if SP_HAVE_ISA_DISPATCH
  const int level = isa_level();
  if (level >= 2)
    return isa_avx512::adamw_range_compact<T, kAmsgrad>(p, g, m, v, vmax, words, begin, end, off,
                                                         h, s);
  if (level >= 1)
    return isa_avx2::adamw_range_compact<T, kAmsgrad>(p, g, m, v, vmax, words, begin, end, off, h,
                                                       s);
#endif
  isa_base::adamw_range_compact<T, kAmsgrad>(p, g, m, v, vmax, words, begin, end, off, h, s);
}

}  // namespace core
}  // namespace sparsepai
