// The mask pass of the CPU top-k core: masks[t][i] = key > T, and the deterministic tie order
// (ties are switched on first in position order, counted per fixed chunk). Torch-free.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "topk_passes.h"

namespace sparsepai {
namespace core {

// How many of each chunk's ties (key == T) to switch on: the first `budget` ties in position
// order, which is chunk order. Chunks are fixed by position, so this does not depend on the
// thread count. `todo` lists the chunks with a non-zero allowance.
struct TieAllowance {
  std::vector<int64_t> allow;
  std::vector<int64_t> todo;
};

inline TieAllowance allot_ties(const std::vector<int64_t>& ties, int64_t budget) {
  TieAllowance out;
  out.allow.assign(ties.size(), 0);
  int64_t left = budget;
  for (size_t c = 0; c < ties.size() && left > 0; ++c) {
    if (ties[c] == 0) continue;
    out.allow[c] = std::min(left, ties[c]);
    left -= out.allow[c];
    out.todo.push_back(int64_t(c));
  }
  return out;
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
        if (fast_path<Fmt>(v) && !v.abs && use_avx512()) {
          ties[c] = mask_f32_avx512(static_cast<const B*>(v.data) + ch.begin, ch.end - ch.begin, T,
                                    fk.nk, fk.inv, m + ch.begin);
          continue;
        }
      }
#endif
      if (fast_path<Fmt>(v)) {
        ties[c] = SP_ISA_CALL(mask_block<Fmt>, static_cast<const B*>(v.data) + ch.begin,
                              ch.end - ch.begin, T, fk.of(v), m + ch.begin);
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
  const TieAllowance ta = allot_ties(ties, budget);
  const std::vector<int64_t>& allow = ta.allow;
  const std::vector<int64_t>& todo = ta.todo;
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

}  // namespace core
}  // namespace sparsepai
