// AVX-512 versions of the two float32 hot loops (the bracket pass and the mask pass), used when
// the CPU has AVX-512F/BW/VL; everything else takes the auto-vectorised loops of
// topk_blocks.inc. The bracket pass needs a vector compaction (vpcompressd), which compilers do
// not generate from plain loops. Both must agree bit for bit with FastKey (tests/cpp checks).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__) && !defined(SP_NO_ISA_DISPATCH)
#include <immintrin.h>

#include <cstdint>

#include "cpu_isa.h"

#define SP_HAVE_AVX512_DISPATCH 1

namespace sparsepai {
namespace core {

inline bool use_avx512() { return isa_level() >= 2; }

#define SP_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,popcnt")))

// FastKey<Fp32Fmt> on 16 lanes.
SP_AVX512 inline __m512i f32_keys16(__m512i b, __m512i nk, __m512i inv) {
  const __m512i sign = _mm512_set1_epi32(int(0x80000000u));
  const __m512i absmask = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512i inf = _mm512_set1_epi32(0x7F800000);
  const __m512i flip = _mm512_or_si512(_mm512_srai_epi32(b, 31), sign);
  __m512i key = _mm512_xor_si512(b, flip);
  const __m512i ab = _mm512_and_si512(b, absmask);
  key = _mm512_mask_mov_epi32(key, _mm512_cmpeq_epi32_mask(ab, _mm512_setzero_si512()), sign);
  key = _mm512_mask_mov_epi32(key, _mm512_cmpgt_epu32_mask(ab, inf), nk);
  return _mm512_xor_si512(key, inv);
}

// Bracket pass over a float32 block: counts keys > hi and == nkey, and writes the keys in
// [lo, lo + width] to out (which needs room for n + 16 keys). Returns how many were written.
SP_AVX512 inline int64_t bracket_f32_avx512(const uint32_t* p, int64_t n, uint32_t lo,
                                            uint32_t width, uint32_t hi, uint32_t nkey,
                                            uint32_t nk, uint32_t inv, int64_t& gt, int64_t& nn,
                                            uint32_t* out) {
  const __m512i vnk = _mm512_set1_epi32(int(nk)), vinv = _mm512_set1_epi32(int(inv));
  const __m512i vlo = _mm512_set1_epi32(int(lo)), vw = _mm512_set1_epi32(int(width));
  const __m512i vhi = _mm512_set1_epi32(int(hi)), vnan = _mm512_set1_epi32(int(nkey));
  int64_t g = 0, z = 0, o = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i key = f32_keys16(_mm512_loadu_si512(p + i), vnk, vinv);
    g += __builtin_popcount(_mm512_cmpgt_epu32_mask(key, vhi));
    z += __builtin_popcount(_mm512_cmpeq_epi32_mask(key, vnan));
    const __mmask16 in = _mm512_cmple_epu32_mask(_mm512_sub_epi32(key, vlo), vw);
    // compress then a full-width store: cheaper than a masked compress-store on most cores
    _mm512_storeu_si512(out + o, _mm512_maskz_compress_epi32(in, key));
    o += __builtin_popcount(in);
  }
  if (i < n) {
    const __mmask16 tail = __mmask16((1u << (n - i)) - 1u);
    const __m512i key = f32_keys16(_mm512_maskz_loadu_epi32(tail, p + i), vnk, vinv);
    g += __builtin_popcount(_mm512_mask_cmpgt_epu32_mask(tail, key, vhi));
    z += __builtin_popcount(_mm512_mask_cmpeq_epi32_mask(tail, key, vnan));
    const __mmask16 in = _mm512_mask_cmple_epu32_mask(tail, _mm512_sub_epi32(key, vlo), vw);
    _mm512_storeu_si512(out + o, _mm512_maskz_compress_epi32(in, key));
    o += __builtin_popcount(in);
  }
  gt += g;
  nn += z;
  return o;
}

// Mask pass over a float32 block: m[i] = key > T; returns the number of keys == T.
SP_AVX512 inline int64_t mask_f32_avx512(const uint32_t* p, int64_t n, uint32_t T, uint32_t nk,
                                         uint32_t inv, bool* m) {
  const __m512i vnk = _mm512_set1_epi32(int(nk)), vinv = _mm512_set1_epi32(int(inv));
  const __m512i vt = _mm512_set1_epi32(int(T));
  const __m128i one = _mm_set1_epi8(1);
  int64_t eq = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i key = f32_keys16(_mm512_loadu_si512(p + i), vnk, vinv);
    const __mmask16 gtm = _mm512_cmpgt_epu32_mask(key, vt);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(m + i), _mm_maskz_mov_epi8(gtm, one));
    eq += __builtin_popcount(_mm512_cmpeq_epi32_mask(key, vt));
  }
  if (i < n) {
    const __mmask16 tail = __mmask16((1u << (n - i)) - 1u);
    const __m512i key = f32_keys16(_mm512_maskz_loadu_epi32(tail, p + i), vnk, vinv);
    const __mmask16 gtm = _mm512_mask_cmpgt_epu32_mask(tail, key, vt);
    _mm_mask_storeu_epi8(m + i, tail, _mm_maskz_mov_epi8(gtm, one));
    eq += __builtin_popcount(_mm512_mask_cmpeq_epi32_mask(tail, key, vt));
  }
  return eq;
}

#undef SP_AVX512

}  // namespace core
}  // namespace sparsepai

#else
#define SP_HAVE_AVX512_DISPATCH 0
#endif
