// CPU implementations of the top-k ops: thin ATen wrappers over the torch-free core
// (csrc/core/topk_select.h and the headers it lists), run on ATen's thread pool.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../core/topk_fused.h"
#include "aten_par.h"
#include "../topk_common.h"

namespace sparsepai {
namespace {

// Raises ValueError naming the first tensor that holds a NaN (only called when there is one).
void raise_nan(const ScoreTable& tab, const std::vector<core::Chunk>& chunks, const char* op) {
  const int64_t t = core::first_nan_tensor(tab.views, chunks, AtenPar{});
  TORCH_CHECK_VALUE(false, "sparsepai.", op, ": scores[", t,
                    "] contains NaN; pass nan='low' or nan='high' to rank NaN scores");
}

std::vector<at::Tensor> empty_masks(at::TensorList scores) {
  std::vector<at::Tensor> masks;
  masks.reserve(scores.size());
  for (const auto& s : scores)
    masks.push_back(at::empty(s.sizes(), s.options().dtype(at::kBool).memory_format(
                                             at::MemoryFormat::Contiguous)));
  return masks;
}

std::vector<bool*> mask_ptrs(std::vector<at::Tensor>& masks) {
  std::vector<bool*> out;
  for (auto& m : masks) out.push_back(m.numel() ? m.data_ptr<bool>() : nullptr);
  return out;
}

template <class Fmt>
std::tuple<at::Tensor, std::vector<at::Tensor>> topk_impl(const ScoreTable& tab,
                                                          at::TensorList scores, int64_t k,
                                                          bool largest, int64_t nan,
                                                          bool want_masks, const char* op) {
  const auto chunks = core::make_chunks(tab.views);
  const int nm = int(nan);
  AtenPar par;
  std::vector<at::Tensor> masks;
  if (want_masks) masks = empty_masks(scores);
  if (k == 0) {
    if (nan == core::kNanError && core::first_nan_tensor(tab.views, chunks, par) >= 0)
      raise_nan(tab, chunks, op);
    if (want_masks)
      for (auto& m : masks) m.zero_();
    return {threshold_tensor<Fmt>(0, false, largest, nm, tab.common), masks};
  }
  // with masks, the selection and the mask pass share one pass over the scores when they can
  const auto sel = want_masks ? core::select_and_mask<Fmt>(tab.views, chunks, tab.numel, k, nm,
                                                           largest, mask_ptrs(masks), par)
                              : core::select_kth<Fmt>(tab.views, chunks, tab.numel, k, nm,
                                                      largest, par);
  if (nan == core::kNanError && sel.nan_count > 0) raise_nan(tab, chunks, op);
  return {threshold_tensor<Fmt>(sel.key, true, largest, nm, tab.common), masks};
}

std::tuple<at::Tensor, std::vector<at::Tensor>> run_topk(at::TensorList scores, int64_t k,
                                                         bool largest, int64_t nan,
                                                         int64_t transform, bool want_masks,
                                                         const char* op) {
  check_nan_mode(nan, op);
  const ScoreTable tab = make_table(scores, op, transform);
  check_k(k, tab.numel, op);
  std::tuple<at::Tensor, std::vector<at::Tensor>> out;
  core::dispatch_key_format(tab.common, [&](auto fmt) {
    out = topk_impl<decltype(fmt)>(tab, scores, k, largest, nan, want_masks, op);
  });
  return out;
}

std::tuple<at::Tensor, std::vector<at::Tensor>> topk_mask_cpu(at::TensorList scores, int64_t k,
                                                              bool largest, int64_t nan,
                                                              int64_t transform) {
  return run_topk(scores, k, largest, nan, transform, true, "topk_mask");
}

at::Tensor kth_largest_cpu(at::TensorList scores, int64_t k, bool largest, int64_t nan,
                           int64_t transform) {
  return std::get<0>(run_topk(scores, k, largest, nan, transform, false, "kth_largest"));
}

at::Tensor key_histogram_cpu(at::TensorList scores, int64_t shift, int64_t bits, int64_t prefix,
                             bool largest, int64_t nan, int64_t transform) {
  check_nan_mode(nan, "key_histogram");
  ScoreTable tab = make_table(scores, "key_histogram", transform);
  const int kb = core::key_bits_for(tab.common);
  TORCH_CHECK_VALUE(bits >= 1 && bits <= 16 && shift >= 0 && shift + bits <= kb,
                    "sparsepai.key_histogram: need 1 <= bits <= 16 and 0 <= shift, shift + bits <= ",
                    kb, "; got shift=", shift, ", bits=", bits);
  const auto chunks = core::make_chunks(tab.views);
  at::Tensor out = at::empty({int64_t(1) << bits}, at::kLong);
  core::dispatch_key_format(tab.common, [&](auto fmt) {
    using Fmt = decltype(fmt);
    using B = typename Fmt::Bits;
    auto h = core::key_histogram<Fmt>(tab.views, chunks, int(shift), int(bits), B(uint64_t(prefix)),
                                      int(nan), largest, AtenPar{});
    std::copy(h.begin(), h.end(), out.data_ptr<int64_t>());
  });
  return out;
}

std::vector<at::Tensor> threshold_masks_cpu(at::TensorList scores, int64_t threshold_key,
                                            int64_t budget, bool largest, int64_t nan,
                                            int64_t transform) {
  check_nan_mode(nan, "threshold_masks");
  TORCH_CHECK_VALUE(budget >= 0, "sparsepai.threshold_masks: budget must be >= 0, got ", budget);
  ScoreTable tab = make_table(scores, "threshold_masks", transform);
  const auto chunks = core::make_chunks(tab.views);
  std::vector<at::Tensor> masks = empty_masks(scores);
  core::dispatch_key_format(tab.common, [&](auto fmt) {
    using Fmt = decltype(fmt);
    using B = typename Fmt::Bits;
    core::write_masks<Fmt>(tab.views, chunks, B(uint64_t(threshold_key)), budget, int(nan),
                           largest, mask_ptrs(masks), AtenPar{});
  });
  return masks;
}

at::Tensor first_nan_cpu(at::TensorList scores) {
  ScoreTable tab = make_table(scores, "first_nan");
  const auto chunks = core::make_chunks(tab.views);
  return at::scalar_tensor(core::first_nan_tensor(tab.views, chunks, AtenPar{}), at::kLong);
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsepai, CPU, m) {
  m.impl("topk_mask", &topk_mask_cpu);
  m.impl("kth_largest", &kth_largest_cpu);
  m.impl("key_histogram", &key_histogram_cpu);
  m.impl("threshold_masks", &threshold_masks_cpu);
  m.impl("first_nan", &first_nan_cpu);
}

}  // namespace sparsepai
