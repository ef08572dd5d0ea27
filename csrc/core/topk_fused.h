// Top-k masks with the counting pass and the mask pass fused (see topk_select.h for the whole
// algorithm). With a sampled bracket [lo, hi] around the k-th key T, every key > hi is kept and
// every key < lo is dropped whatever T turns out to be, so one pass can write m = key > hi while
// it counts the keys above hi and keeps the in-bracket keys with their positions (a chunk index
// and a 16-bit offset). After the selection among those candidates only they are revisited:
// key > T switched on, then ties in position order, chunk by chunk as in write_masks. The scores
// are read once (plus the sample) instead of twice. When the bracket misses, the radix passes
// and a full mask pass run as before. Torch-free.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "topk_avx2.h"
#include "topk_masks.h"
#include "topk_select.h"

namespace sparsepai {
namespace core {

static_assert(kChunk <= 65536, "candidate positions are stored as uint16_t offsets in a chunk");

// The in-bracket keys of the fused pass: per thread, keys and chunk offsets in position order;
// per chunk, which thread's buffer holds its candidates and where.
template <class Fmt>
struct Candidates {
  using B = typename Fmt::Bits;
  std::vector<std::vector<B>> keys;
  std::vector<std::vector<uint16_t>> pos;
  std::vector<int> owner;
  std::vector<int64_t> first, count;

  Candidates(int nthreads, size_t nchunks)
      : keys(nthreads), pos(nthreads), owner(nchunks, 0), first(nchunks, 0), count(nchunks, 0) {}

  int64_t total() const {
    int64_t n = 0;
    for (const auto& k : keys) n += int64_t(k.size());
    return n;
  }
  void release() {
    for (auto& k : keys) std::vector<B>().swap(k);
    for (auto& p : pos) std::vector<uint16_t>().swap(p);
  }
};

// One pass: m = key > hi for every key, counts of keys above hi and of NaN keys, and the
// candidates. Stops early (returns false) once more than `cap` candidates were kept.
template <class Fmt, class Par>
bool fused_pass(const std::vector<TensorView>& ts, const std::vector<Chunk>& chunks,
                const Bracket<Fmt>& br, int nan_mode, bool largest,
                const std::vector<bool*>& masks, int64_t cap, size_t reserve,
                Candidates<Fmt>& cand, int64_t& n_above, int64_t& nan_count, const Par& par) {
  using B = typename Fmt::Bits;
  const int nthreads = par.max_threads();
  std::vector<int64_t> above(nthreads, 0), nans(nthreads, 0);
  const B lo = br.lo, hi = br.hi, width = B(br.hi - br.lo);
  const B nkey = nan_key<Fmt>(nan_mode, largest);
  const FastKey<Fmt> fk(nan_mode, largest);
  std::atomic<int64_t> total{0};
  std::atomic<bool> overflow{false};
  par.for_range(int64_t(chunks.size()), [&](int64_t cb, int64_t ce) {
    const int tid = par.thread_id();
    std::vector<B>& keys = cand.keys[tid];
    std::vector<uint16_t>& pos = cand.pos[tid];
    if (keys.capacity() == 0) {
      keys.reserve(reserve);
      pos.reserve(reserve);
    }
    int64_t gt = 0, nn = 0;
    std::unique_ptr<B[]> sk;  // per-chunk scratch, uninitialised and reused
    std::unique_ptr<uint16_t[]> sp;
    for (int64_t c = cb; c < ce; ++c) {
      if (overflow.load(std::memory_order_relaxed)) break;
      const Chunk& ch = chunks[c];
      const TensorView& v = ts[ch.tensor];
      bool* m = masks[ch.tensor];
      const size_t before = keys.size();
      if (fast_path<Fmt>(v)) {
        if (!sk) {
          sk.reset(new B[size_t(kChunk)]);
          sp.reset(new uint16_t[size_t(kChunk)]);
        }
        const B* src = static_cast<const B*>(v.data) + ch.begin;
        int64_t got;
#if SP_HAVE_AVX2_FUSED
        if constexpr (std::is_same_v<Fmt, Fp32Fmt>) {
          if (isa_level() >= 1 && !v.abs) {
            got = fused_f32_avx2(src, ch.end - ch.begin, lo, width, hi, nkey, fk, gt, nn,
                                 m + ch.begin, sk.get(), sp.get());
          } else {
            got = SP_ISA_CALL(fused_block<Fmt>, src, ch.end - ch.begin, lo, width, hi, nkey,
                              fk.of(v), gt, nn, m + ch.begin, sk.get(), sp.get());
          }
        } else
#endif
        {
          got = SP_ISA_CALL(fused_block<Fmt>, src, ch.end - ch.begin, lo, width, hi, nkey,
                            fk.of(v), gt, nn, m + ch.begin, sk.get(), sp.get());
        }
        keys.insert(keys.end(), sk.get(), sk.get() + got);
        pos.insert(pos.end(), sp.get(), sp.get() + got);
      } else {
        for_each_key<Fmt>(v, ch.begin, ch.end, nan_mode, largest, [&](int64_t i, B key) {
          m[i] = key > hi;
          gt += key > hi;
          nn += key == nkey;
          if (B(key - lo) <= width) {
            keys.push_back(key);
            pos.push_back(uint16_t(i - ch.begin));
          }
        });
      }
      const int64_t got = int64_t(keys.size() - before);
      cand.owner[c] = tid;
      cand.first[c] = int64_t(before);
      cand.count[c] = got;
      if (total.fetch_add(got, std::memory_order_relaxed) + got > cap) overflow.store(true);
    }
    above[tid] += gt;
    nans[tid] += nn;
  });
  n_above = nan_count = 0;
  for (int t = 0; t < nthreads; ++t) {
    n_above += above[t];
    nan_count += nans[t];
  }
  return !overflow.load();
}

// Second half of the fused path: candidates with key > T switched on, then the first `budget`
// ties (key == T) in position order.
template <class Fmt, class Par>
void fix_up_candidates(const std::vector<Chunk>& chunks, const Candidates<Fmt>& cand,
                       typename Fmt::Bits T, int64_t budget, const std::vector<bool*>& masks,
                       const Par& par) {
  std::vector<int64_t> ties(chunks.size(), 0);
  par.for_range(int64_t(chunks.size()), [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      if (cand.count[c] == 0) continue;
      bool* m = masks[chunks[c].tensor] + chunks[c].begin;
      const auto* keys = cand.keys[cand.owner[c]].data() + cand.first[c];
      const uint16_t* pos = cand.pos[cand.owner[c]].data() + cand.first[c];
      int64_t eq = 0;
      for (int64_t j = 0; j < cand.count[c]; ++j) {
        if (keys[j] > T) m[pos[j]] = true;
        eq += keys[j] == T;
      }
      ties[c] = eq;
    }
  });
  const TieAllowance ta = allot_ties(ties, budget);
  par.for_range(int64_t(ta.todo.size()), [&](int64_t jb, int64_t je) {
    for (int64_t t = jb; t < je; ++t) {
      const int64_t c = ta.todo[t];
      bool* m = masks[chunks[c].tensor] + chunks[c].begin;
      const auto* keys = cand.keys[cand.owner[c]].data() + cand.first[c];
      const uint16_t* pos = cand.pos[cand.owner[c]].data() + cand.first[c];
      int64_t a = ta.allow[c];
      for (int64_t j = 0; j < cand.count[c] && a > 0; ++j) {
        if (keys[j] == T) {
          m[pos[j]] = true;
          --a;
        }
      }
    }
  });
}

// The k-th largest key (1 <= k <= N) and the masks of the k largest (ties first in position
// order), as select_kth followed by write_masks but with one pass over the scores when the
// sampled bracket holds the k-th key. masks[t] is a contiguous row-major bool buffer of
// ts[t].numel bytes. `sample_size` as for select_kth (tests force bracket misses with it);
// `fused`, when given, tells whether the one-pass path was taken.
template <class Fmt, class Par>
Selection<Fmt> select_and_mask(const std::vector<TensorView>& ts,
                               const std::vector<Chunk>& chunks, int64_t N, int64_t k,
                               int nan_mode, bool largest, const std::vector<bool*>& masks,
                               const Par& par, int64_t sample_size = 0, bool* fused = nullptr) {
  using B = typename Fmt::Bits;
  if (fused) *fused = false;
  if (Fmt::kBits == 16 || N <= kBracketMinN) {
    const Selection<Fmt> sel = select_kth<Fmt>(ts, chunks, N, k, nan_mode, largest, par);
    write_masks<Fmt>(ts, chunks, sel.key, k - sel.count_gt, nan_mode, largest, masks, par);
    return sel;
  }
  const Bracket<Fmt> br = sample_bracket<Fmt>(ts, N, k, nan_mode, largest, par, sample_size);
  // the same cap as select_kth: the fused path is taken whenever its bracket pass would succeed
  const int64_t cap = bracket_cap(N);
  const int nthreads = par.max_threads();
  const size_t reserve =
      size_t(std::min<double>(double(cap), br.frac * double(N) * 1.25 / nthreads + 1024));
  Candidates<Fmt> cand(nthreads, chunks.size());
  int64_t n_above = 0, nan_count = 0;
  const bool fits = fused_pass<Fmt>(ts, chunks, br, nan_mode, largest, masks, cap, reserve, cand,
                                    n_above, nan_count, par);
  const int64_t need = k - n_above;
  if (fits && need >= 1 && need <= cand.total()) {
    std::vector<B> all;  // a copy: the candidates must stay in position order
    all.reserve(size_t(cand.total()));
    for (const auto& ks : cand.keys) all.insert(all.end(), ks.begin(), ks.end());
    const auto [T, gt_in] = select_among<Fmt>(all, need);
    std::vector<B>().swap(all);
    fix_up_candidates<Fmt>(chunks, cand, T, need - gt_in, masks, par);
    if (fused) *fused = true;
    return {T, n_above + gt_in, nan_count};
  }
  cand.release();
  const Selection<Fmt> sel = radix_select<Fmt>(ts, chunks, k, nan_mode, largest, par);
  write_masks<Fmt>(ts, chunks, sel.key, k - sel.count_gt, nan_mode, largest, masks, par);
  return sel;
}

}  // namespace core
}  // namespace sparsepai
