// ATen-side helpers shared by the CPU and CUDA registrations of the top-k ops: argument checks
// (one place, not one copy per kernel) and the conversion of tensors to core views.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <vector>

#include "core/radix_keys.h"
#include "core/topk_select.h"

namespace sparsepai {

inline core::Dtype to_core_dtype(const at::Tensor& t, const char* op, size_t i) {
  switch (t.scalar_type()) {
    case at::kHalf:
      return core::Dtype::kF16;
    case at::kBFloat16:
      return core::Dtype::kBF16;
    case at::kFloat:
      return core::Dtype::kF32;
    case at::kDouble:
      return core::Dtype::kF64;
    default:
      TORCH_CHECK_TYPE(false, "sparsepai.", op, ": scores[", i,
                       "] must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
  }
}

inline at::ScalarType to_scalar_type(core::Dtype d) {
  switch (d) {
    case core::Dtype::kF16:
      return at::kHalf;
    case core::Dtype::kBF16:
      return at::kBFloat16;
    case core::Dtype::kF32:
      return at::kFloat;
    default:
      return at::kDouble;
  }
}

inline void check_nan_mode(int64_t nan, const char* op) {
  TORCH_CHECK_VALUE(nan >= 0 && nan <= 2, "sparsepai.", op,
                    ": nan must be 0 (error), 1 (low) or 2 (high), got ", nan);
}

// Views over the scores (no copy unless a tensor has more than kMaxDims non-mergeable dims, in
// which case `keep` holds the contiguous copy). All tensors must be on `device`.
struct ScoreTable {
  std::vector<core::TensorView> views;
  std::vector<at::Tensor> keep;
  int64_t numel = 0;
  core::Dtype common = core::Dtype::kF32;
};

inline void check_transform(int64_t transform, const char* op) {
  TORCH_CHECK_VALUE(transform == core::kTransformNone || transform == core::kTransformAbs,
                    "sparsepai.", op, ": transform must be 0 (none) or 1 (abs), got ", transform);
}

inline ScoreTable make_table(at::TensorList scores, const char* op, int64_t transform = 0) {
  check_transform(transform, op);
  ScoreTable tab;
  tab.views.reserve(scores.size());
  for (size_t i = 0; i < scores.size(); ++i) {
    at::Tensor t = scores[i];
    TORCH_CHECK_VALUE(t.device() == scores[0].device(), "sparsepai.", op,
                      ": all scores must be on one device; scores[0] is on ", scores[0].device(),
                      ", scores[", i, "] on ", t.device());
    TORCH_CHECK_VALUE(t.layout() == at::kStrided, "sparsepai.", op, ": scores[", i,
                      "] must be a strided (dense) tensor");
    core::TensorView v;
    v.dtype = to_core_dtype(t, op, i);
    v.numel = t.numel();
    v.abs = transform == core::kTransformAbs;
    if (!core::coalesce(v, int(t.dim()), t.sizes().data(), t.strides().data())) {
      t = t.contiguous();
      tab.keep.push_back(t);
      v.ndim = 1;
      v.sizes[0] = t.numel();
      v.strides[0] = 1;
    }
    v.data = t.numel() ? t.data_ptr() : nullptr;
    tab.numel += v.numel;
    tab.views.push_back(v);
  }
  tab.common = core::common_dtype(tab.views);
  return tab;
}

inline void check_k(int64_t k, int64_t n, const char* op) {
  TORCH_CHECK_VALUE(k >= 0 && k <= n, "sparsepai.", op, ": k must be in [0, ", n, "], got ", k);
}

// 0-d threshold tensor holding the value of `key`, or +-inf for k == 0 / a NaN key.
template <class Fmt>
at::Tensor threshold_tensor(typename Fmt::Bits key, bool found, bool largest, int nan_mode,
                            core::Dtype common) {
  at::Tensor out = at::empty({}, at::TensorOptions().dtype(to_scalar_type(common)));
  const double inf = std::numeric_limits<double>::infinity();
  if (!found) {
    out.fill_(largest ? inf : -inf);
  } else if (core::is_nan_key<Fmt>(key, nan_mode, largest)) {
    // The threshold is documented NaN-free: a NaN k-th value reports the end of the order that
    // NaN was placed at.
    out.fill_(nan_mode == core::kNanHigh ? inf : -inf);
  } else {
    typename Fmt::Bits bits = core::key_to_bits<Fmt>(key, largest);
    std::memcpy(out.data_ptr(), &bits, sizeof(bits));
  }
  return out;
}

}  // namespace sparsepai
