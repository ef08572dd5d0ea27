// Unstructured-sparse linear layers on the CPU: y (T, O) = x (T, I) W^T + b, its input gradient
// and its weight gradient at the kept positions only. Torch-free; the extension's wrapper is
// csrc/cpu/sparse_conv.cpp, the oracle sparsepai/ops/sparse_conv_ref.py (sparse_linear_ref).
// The weight is CSR by output feature (row_ptr, col = the input feature, values) with its
// transpose (t_ptr, t_idx), as for the convolutions (sparse_conv.h).
//
// One kept weight w[o][i] adds w * x[t][i] to y[t][o] for every token t: the inner loops of
// sparse_conv_blocks.inc run over tokens, so every operand is first transposed to
// feature-major rows. The rows are cut into blocks of kSpLinBlock tokens, block after block:
// [block][feature][kSpLinBlock]. A gather over one block then reads one contiguous slice of
// I * kSpLinBlock elements (384 KiB for 768 features) that stays in the L2 cache while every
// output row of the block sums its kept weights from it. Feature-major rows of all the tokens
// (one row of 2048 tokens per page pair) put each of a tile's 768 source rows and 3072
// destination rows on its own page, more pages than the second-level TLB holds: measured 3x
// slower per kept weight than the blocks on an AVX-512 Xeon.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "sparse_conv_run.h"

namespace sparsepai {
namespace core {

// Tokens per block: two kSpTile tiles, one 8-vector register tile of AVX-512 floats.
constexpr int64_t kSpLinBlock = 2 * kSpTile;

inline int64_t sp_lin_blocks(int64_t tokens) { return (tokens + kSpLinBlock - 1) / kSpLinBlock; }

// f(offset, tokens of the block) for every block of kSpLinBlock tokens of a (tokens, features)
// tensor, the blocks shared among the threads; offset: where the block starts, both in the
// tensor and in the blocked buffer (a block holds kSpLinBlock * features elements in either).
template <class Par, class F>
void sp_lin_for_blocks(int64_t tokens, int64_t features, const Par& par, F&& f) {
  constexpr int64_t B = kSpLinBlock;
  sp_for(par, sp_lin_blocks(tokens), tokens * features, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) f(b * B * features, std::min(B, tokens - b * B));
  });
}

// x (tokens, features) into blocks buf[b][f][k] = x[b * kSpLinBlock + k][f], zero past the
// last token.
template <class T, class Par>
void sp_lin_pack(const T* x, int64_t tokens, int64_t features, T* buf, const Par& par) {
  constexpr int64_t B = kSpLinBlock;
  sp_lin_for_blocks(tokens, features, par, [&](int64_t at, int64_t rows) {
    T* dst = buf + at;
    sp_transpose_block(x + at, features, dst, B, rows, features);
    if (rows < B)
      for (int64_t f = 0; f < features; ++f) std::fill(dst + f * B + rows, dst + (f + 1) * B, T(0));
  });
}

// The inverse for the first `tokens` tokens, plus bias[f] where given: y[t][f].
template <class T, class Par>
void sp_lin_unpack(const T* buf, int64_t tokens, int64_t features, const T* bias, T* y,
                   const Par& par) {
  sp_lin_for_blocks(tokens, features, par, [&](int64_t at, int64_t rows) {
    T* dst = y + at;
    sp_transpose_block(buf + at, kSpLinBlock, dst, features, features, rows);
    if (bias != nullptr)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t f = 0; f < features; ++f) dst[r * features + f] += bias[f];
  });
}

// Rows [0, rows) of a CSR cut into `shares` contiguous ranges of about equal kept weights:
// share s is [rb[s], rb[s + 1]).
inline std::vector<int64_t> sp_row_shares(int64_t rows, const int64_t* ptr, int64_t shares) {
  std::vector<int64_t> rb(size_t(shares + 1), rows);
  const int64_t nnz = ptr[rows];
  for (int64_t s = 0, r = 0; s < shares; ++s) {
    while (r < rows && ptr[r] * shares < nnz * s) ++r;
    rb[size_t(s)] = r;
  }
  return rb;
}

// dst block b, rows r: sum over the kept weights j of row r (ptr) of w[j] * src block b at
// base[j], for every block. The threads split the rows by kept weights and each walks all the
// blocks (each reads every source slice: a slice is read from memory once per core), so any
// token count keeps every thread busy and each element's sum has one fixed order.
template <class T, class Par>
void sp_lin_gather(T* dst, int64_t dst_rows, const int64_t* ptr, const int64_t* base, const T* w,
                   const T* src, int64_t src_rows, int64_t blocks, const Par& par) {
  constexpr int64_t B = kSpLinBlock;
  const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(par.max_threads(), dst_rows));
  const std::vector<int64_t> rb = sp_row_shares(dst_rows, ptr, shares);
  const int64_t rng[2] = {0, 1};
  const SpPick pk{ptr, 1, rng, 1};
  auto run = [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s)
      for (int64_t b = 0; b < blocks; ++b)
        sp_gather_rows(dst + b * dst_rows * B, B, rb[size_t(s)], rb[size_t(s + 1)], pk, base, w,
                       src + b * src_rows * B, int64_t(0), B, SpPrefetch{});
  };
  sp_for(par, shares, ptr[dst_rows] * blocks * B, run);
}

template <class T, class Par>
void sparse_linear_forward(int64_t tokens, int64_t in_f, int64_t out_f, const T* x,
                           const int64_t* row_ptr, const int32_t* col, const T* values,
                           const T* bias, T* y, SpWorkspace& ws, const Par& par) {
  const int64_t nnz = row_ptr[out_f], nb = sp_lin_blocks(tokens), B = kSpLinBlock;
  T* in = ws.get<T>(SpWorkspace::kIn, nb * in_f * B);
  T* out = ws.get<T>(SpWorkspace::kOut, nb * out_f * B);
  int64_t* base = ws.get<int64_t>(SpWorkspace::kBase, nnz);
  sp_lin_pack(x, tokens, in_f, in, par);
  sp_for(par, nnz, nnz, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) base[j] = int64_t(col[j]) * B;
  });
  sp_lin_gather(out, out_f, row_ptr, base, values, in, in_f, nb, par);
  sp_lin_unpack(out, tokens, out_f, bias, y, par);
}

template <class T, class Par>
void sparse_linear_backward(int64_t tokens, int64_t in_f, int64_t out_f, const T* x, const T* gy,
                            const int64_t* row_ptr, const int32_t* col, const T* values,
                            const int64_t* t_ptr, const int32_t* t_idx, T* gx, T* gw,
                            SpWorkspace& ws, const Par& par) {
  const int64_t nnz = row_ptr[out_f], nb = sp_lin_blocks(tokens), B = kSpLinBlock;
  T* g = ws.get<T>(SpWorkspace::kGrad, nb * out_f * B);
  sp_lin_pack(gy, tokens, out_f, g, par);
  int64_t* base = ws.get<int64_t>(SpWorkspace::kBase, nnz);
  if (gw != nullptr) {
    // gw[j] = sum over every block of g[row(j)] . x[col(j)]; the threads split the rows, so each
    // kept weight is summed by one thread, block after block, with no partial vectors.
    T* in = ws.get<T>(SpWorkspace::kIn, nb * in_f * B);
    sp_lin_pack(x, tokens, in_f, in, par);
    sp_for(par, nnz, nnz, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) base[j] = int64_t(col[j]) * B;
    });
    const int64_t shares = std::max<int64_t>(1, std::min<int64_t>(par.max_threads(), out_f));
    const std::vector<int64_t> rb = sp_row_shares(out_f, row_ptr, shares);
    const int64_t rng[2] = {0, 1}, seg[2] = {0, B}, seg_at[2] = {0, 1};
    const SpDotPick pk{row_ptr, 1, rng, 1, seg, seg_at};
    sp_for(par, shares, nnz * nb * B, [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t r0 = rb[size_t(s)], r1 = rb[size_t(s + 1)];
        std::fill(gw + row_ptr[r0], gw + row_ptr[r1], T(0));
        for (int64_t b = 0; b < nb; ++b)
          sp_dot_rows(gw, r0, r1, pk, base, g + b * out_f * B, B, in + b * in_f * B);
      }
    });
  }
  if (gx == nullptr) return;
  int64_t* row_of = ws.get<int64_t>(SpWorkspace::kRowOf, nnz);
  sp_rows_of(out_f, row_ptr, row_of, par);
  T* w = ws.get<T>(SpWorkspace::kW, nnz);
  sp_for(par, nnz, nnz, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      base[t] = row_of[t_idx[t]] * B;
      w[t] = values[t_idx[t]];
    }
  });
  T* gin = ws.get<T>(SpWorkspace::kOut, nb * in_f * B);
  sp_lin_gather(gin, in_f, t_ptr, base, w, g, out_f, nb, par);
  sp_lin_unpack(gin, tokens, in_f, static_cast<const T*>(nullptr), gx, par);
}

}  // namespace core
}  // namespace sparsepai
