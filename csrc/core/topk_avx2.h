// AVX2 version of the fused bracket-and-mask pass over float32 blocks (topk_fused.h), used when
// the CPU has AVX2 (every x86 CPU with AVX-512 has it too). GCC vectorises the plain loop of
// topk_blocks.inc with 4-lane vectors and emulated unsigned compares, which makes that pass
// compute-bound on 2 threads; this one works on 32 scores per step with 8-lane vectors, on float
// compares when the bracket allows it, packs the key > hi masks to bytes, and extracts the (rare)
// in-bracket lanes from a movemask. It must agree bit for bit with FastKey and fused_block
// (tests/cpp checks both versions on every ISA level).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__) && !defined(SP_NO_ISA_DISPATCH)
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu_isa.h"
#include "topk_views.h"

#define SP_HAVE_AVX2_FUSED 1

namespace sparsepai {
namespace core {

#define SP_AVX2 __attribute__((target("avx2,bmi,bmi2,popcnt")))

// FastKey<Fp32Fmt> on 8 lanes, returned with the sign bit flipped so that signed compares order
// it like the unsigned key.
SP_AVX2 inline __m256i f32_skeys8(__m256i b, __m256i nk, __m256i inv_sign) {
  const __m256i sign = _mm256_set1_epi32(int(0x80000000u));
  const __m256i ab = _mm256_and_si256(b, _mm256_set1_epi32(0x7FFFFFFF));
  __m256i key = _mm256_xor_si256(b, _mm256_or_si256(_mm256_srai_epi32(b, 31), sign));
  key = _mm256_blendv_epi8(key, sign, _mm256_cmpeq_epi32(ab, _mm256_setzero_si256()));
  key = _mm256_blendv_epi8(key, nk, _mm256_cmpgt_epi32(ab, _mm256_set1_epi32(0x7F800000)));
  return _mm256_xor_si256(key, inv_sign);  // key ^ inv ^ sign
}

SP_AVX2 inline int64_t hsum8(__m256i v) {
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i t = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  return int64_t(uint32_t(_mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1)))));
}

// 4 x 8 int32 lane masks (-1 / 0) to 32 mask bytes (1 / 0) at m: the packs interleave 128-bit
// halves, the permute restores position order.
SP_AVX2 inline void store_mask32(bool* m, const __m256i* g) {
  const __m256i b16a = _mm256_packs_epi32(g[0], g[1]), b16b = _mm256_packs_epi32(g[2], g[3]);
  const __m256i b8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(b16a, b16b),
                                                 _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(m), _mm256_and_si256(b8, _mm256_set1_epi8(1)));
}

// The scalar end of a block, from position i on (fused_block's loop).
inline int64_t fused_f32_tail(const uint32_t* p, int64_t i, int64_t n, uint32_t lo,
                              uint32_t width, uint32_t hi, uint32_t nkey, FastKey<Fp32Fmt> fk,
                              int64_t& gt, int64_t& nn, bool* m, uint32_t* keys, uint16_t* pos,
                              int64_t o) {
  for (; i < n; ++i) {
    const uint32_t key = fk(p[i]);
    m[i] = key > hi;
    gt += key > hi;
    nn += key == nkey;
    keys[o] = key;
    pos[o] = uint16_t(i);
    o += uint32_t(key - lo) <= width;
  }
  return o;
}

// Appends the lanes set in `in` (bit j: position i + j) as candidates.
SP_AVX2 inline int64_t take_candidates(const uint32_t* p, int64_t i, uint32_t in,
                                       FastKey<Fp32Fmt> fk, uint32_t* keys, uint16_t* pos,
                                       int64_t o) {
  for (; in; in &= in - 1) {
    const int j = __builtin_ctz(in);
    keys[o] = fk(p[i + j]);
    pos[o] = uint16_t(i + j);
    ++o;
  }
  return o;
}

// The general version on integer keys: any bracket, any MXCSR state.
SP_AVX2 inline int64_t fused_f32_avx2_keys(const uint32_t* p, int64_t n, uint32_t lo,
                                           uint32_t width, uint32_t hi, uint32_t nkey,
                                           FastKey<Fp32Fmt> fk, int64_t& gt, int64_t& nn, bool* m,
                                           uint32_t* keys, uint16_t* pos) {
  const uint32_t sg = 0x80000000u;
  const __m256i vnk = _mm256_set1_epi32(int(fk.nk)), vinv = _mm256_set1_epi32(int(fk.inv ^ sg));
  const __m256i shi = _mm256_set1_epi32(int(hi ^ sg)), snan = _mm256_set1_epi32(int(nkey ^ sg));
  // key - lo <= width (unsigned) on sign-flipped keys: (skey - lo) ^ sign <= width ^ sign (signed)
  const __m256i vlo = _mm256_set1_epi32(int(lo)), sw = _mm256_set1_epi32(int(width ^ sg));
  __m256i cg = _mm256_setzero_si256(), cz = _mm256_setzero_si256();
  int64_t o = 0, i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i g[4];
    uint32_t out = 0;  // bit j: key i + j is outside the bracket
    for (int q = 0; q < 4; ++q) {
      const __m256i sk =
          f32_skeys8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 8 * q)), vnk, vinv);
      g[q] = _mm256_cmpgt_epi32(sk, shi);
      cg = _mm256_sub_epi32(cg, g[q]);
      cz = _mm256_sub_epi32(cz, _mm256_cmpeq_epi32(sk, snan));
      // skey - lo == (key - lo) ^ sign: the subtraction carries past the sign bit unchanged
      const __m256i off = _mm256_cmpgt_epi32(_mm256_sub_epi32(sk, vlo), sw);
      out |= uint32_t(_mm256_movemask_ps(_mm256_castsi256_ps(off))) << (8 * q);
    }
    store_mask32(m + i, g);
    o = take_candidates(p, i, ~out, fk, keys, pos, o);
  }
  gt += hsum8(cg);
  nn += hsum8(cz);
  return fused_f32_tail(p, i, n, lo, width, hi, nkey, fk, gt, nn, m, keys, pos, o);
}

// The common case on float compares, about half the instructions: both bracket ends are
// numbers (so NaNs are outside it: above hi when they rank high, below lo when low) and
// denormals are not read as zero (MXCSR.DAZ clear), so that ordered float compares order values
// exactly like their keys, -0.0 == +0.0 included. `hv`/`lv` are the values of the keys hi/lo.
template <bool Largest>
SP_AVX2 inline int64_t fused_f32_avx2_values(const uint32_t* p, int64_t n, uint32_t lo,
                                             uint32_t width, uint32_t hi, uint32_t nkey,
                                             FastKey<Fp32Fmt> fk, float lv, float hv, int64_t& gt,
                                             int64_t& nn, bool* m, uint32_t* keys,
                                             uint16_t* pos) {
  const bool nan_above = nkey > hi;
  const __m256 vh = _mm256_set1_ps(hv), vl = _mm256_set1_ps(lv);
  const __m256 nan_gt = _mm256_castsi256_ps(_mm256_set1_epi32(nan_above ? -1 : 0));
  __m256i cg = _mm256_setzero_si256(), cz = _mm256_setzero_si256();
  int64_t o = 0, i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256i g[4];
    uint32_t in = 0;  // bit j: key i + j is inside the bracket
    for (int q = 0; q < 4; ++q) {
      const __m256 x = _mm256_loadu_ps(reinterpret_cast<const float*>(p + i + 8 * q));
      const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
      // key > hi; lo <= key <= hi (the value order reverses for the k smallest)
      __m256 above, inside;
      if constexpr (Largest) {
        above = _mm256_cmp_ps(x, vh, _CMP_GT_OQ);
        inside = _mm256_and_ps(_mm256_cmp_ps(x, vl, _CMP_GE_OQ), _mm256_cmp_ps(x, vh, _CMP_LE_OQ));
      } else {
        above = _mm256_cmp_ps(x, vh, _CMP_LT_OQ);
        inside = _mm256_and_ps(_mm256_cmp_ps(x, vh, _CMP_GE_OQ), _mm256_cmp_ps(x, vl, _CMP_LE_OQ));
      }
      g[q] = _mm256_castps_si256(_mm256_or_ps(above, _mm256_and_ps(nan, nan_gt)));
      cg = _mm256_sub_epi32(cg, g[q]);
      cz = _mm256_sub_epi32(cz, _mm256_castps_si256(nan));
      in |= uint32_t(_mm256_movemask_ps(inside)) << (8 * q);
    }
    store_mask32(m + i, g);
    o = take_candidates(p, i, in, fk, keys, pos, o);
  }
  gt += hsum8(cg);
  nn += hsum8(cz);
  return fused_f32_tail(p, i, n, lo, width, hi, nkey, fk, gt, nn, m, keys, pos, o);
}

// fused_block<Fp32Fmt> (topk_blocks.inc), same contract: m[i] = key > hi, counts of keys > hi and
// == nkey added to gt/nn, in-bracket keys and their offsets written to keys/pos; returns how many.
SP_AVX2 inline int64_t fused_f32_avx2(const uint32_t* p, int64_t n, uint32_t lo, uint32_t width,
                                      uint32_t hi, uint32_t nkey, FastKey<Fp32Fmt> fk,
                                      int64_t& gt, int64_t& nn, bool* m, uint32_t* keys,
                                      uint16_t* pos) {
  const bool largest = fk.inv == 0;
  const uint32_t lb = key_to_bits<Fp32Fmt>(lo, largest), hb = key_to_bits<Fp32Fmt>(hi, largest);
  const bool daz = (_mm_getcsr() & 0x0040u) != 0;
  if (daz || is_nan_bits<Fp32Fmt>(lb) || is_nan_bits<Fp32Fmt>(hb))
    return fused_f32_avx2_keys(p, n, lo, width, hi, nkey, fk, gt, nn, m, keys, pos);
  float lv, hv;
  std::memcpy(&lv, &lb, 4);
  std::memcpy(&hv, &hb, 4);
  return largest ? fused_f32_avx2_values<true>(p, n, lo, width, hi, nkey, fk, lv, hv, gt, nn, m,
                                               keys, pos)
                 : fused_f32_avx2_values<false>(p, n, lo, width, hi, nkey, fk, lv, hv, gt, nn, m,
                                                keys, pos);
}

#undef SP_AVX2

}  // namespace core
}  // namespace sparsepai

#else
#define SP_HAVE_AVX2_FUSED 0
#endif
