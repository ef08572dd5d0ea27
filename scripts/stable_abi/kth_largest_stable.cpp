// Probe of the LibTorch stable ABI: sparsepai's CPU kth_largest (the torch-free core of
// csrc/core) registered through STABLE_TORCH_LIBRARY with only torch/csrc/stable and
// torch/headeronly headers, so that one binary can load into several torch releases. Built and
// loaded by probe.py; not part of the package (docs/guides/backends-stable-abi.md says why).
#include <torch/csrc/stable/c/shim.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <cstring>
#include <limits>
#include <vector>

#include "core/topk_fused.h"

namespace {

using torch::stable::Tensor;
using torch::headeronly::ScalarType;
namespace core = sparsepai::core;

struct StablePar {  // the core's parallel interface on the stable thread pool
  int max_threads() const { return int(torch::stable::get_num_threads()); }
  int thread_id() const {
    uint32_t i = 0;
    torch_get_thread_idx(&i);
    return int(i);
  }
  template <class F>
  void for_range(int64_t n, F&& f) const {
    if (n > 0) torch::stable::parallel_for(0, n, 1, f);
  }
};

core::Dtype to_core(ScalarType s) {
  switch (s) {
    case ScalarType::Half: return core::Dtype::kF16;
    case ScalarType::BFloat16: return core::Dtype::kBF16;
    case ScalarType::Float: return core::Dtype::kF32;
    case ScalarType::Double: return core::Dtype::kF64;
    default: STD_TORCH_CHECK(false, "sparsepai.kth_largest: scores must be floating point");
  }
  return core::Dtype::kF32;
}

ScalarType to_scalar(core::Dtype d) {
  switch (d) {
    case core::Dtype::kF16: return ScalarType::Half;
    case core::Dtype::kBF16: return ScalarType::BFloat16;
    case core::Dtype::kF32: return ScalarType::Float;
    default: return ScalarType::Double;
  }
}

template <class Fmt>
void write_inf(void* out, bool negative) {
  using B = typename Fmt::Bits;
  B bits;
  if constexpr (Fmt::kBits == 64) {
    double v = negative ? -std::numeric_limits<double>::infinity()
                        : std::numeric_limits<double>::infinity();
    std::memcpy(&bits, &v, sizeof bits);
  } else if constexpr (Fmt::kBits == 32) {
    float v = negative ? -std::numeric_limits<float>::infinity()
                       : std::numeric_limits<float>::infinity();
    std::memcpy(&bits, &v, sizeof bits);
  } else {  // float16 0x7C00 / bfloat16 0x7F80, sign bit on top
    const bool bf16 = std::is_same_v<Fmt, core::Bf16Fmt>;
    bits = B((bf16 ? 0x7F80 : 0x7C00) | (negative ? 0x8000 : 0));
  }
  std::memcpy(out, &bits, sizeof bits);
}

Tensor kth_largest_stable(std::vector<Tensor> scores, int64_t k, bool largest, int64_t nan) {
  STD_TORCH_CHECK(nan >= 0 && nan <= 2, "sparsepai.kth_largest: nan must be 0, 1 or 2");
  std::vector<Tensor> keep;
  std::vector<core::TensorView> views;
  int64_t numel = 0;
  for (Tensor t : scores) {
    STD_TORCH_CHECK(t.is_cpu(), "sparsepai.kth_largest: this probe runs on CPU tensors");
    core::TensorView v;
    v.dtype = to_core(t.scalar_type());
    v.numel = t.numel();
    if (!core::coalesce(v, int(t.dim()), t.sizes().data(), t.strides().data())) {
      t = torch::stable::contiguous(t);
      keep.push_back(t);
      v.ndim = 1;
      v.sizes[0] = t.numel();
      v.strides[0] = 1;
    }
    v.data = t.numel() ? t.data_ptr() : nullptr;
    numel += v.numel;
    views.push_back(v);
  }
  STD_TORCH_CHECK(k >= 1 && k <= numel, "sparsepai.kth_largest: k must be in [1, ", numel,
                  "], got ", k);
  const core::Dtype common = core::common_dtype(views);
  const auto chunks = core::make_chunks(views);
  std::vector<int64_t> no_dims;
  Tensor out = torch::stable::empty(no_dims, to_scalar(common));
  core::dispatch_key_format(common, [&](auto fmt) {
    using Fmt = decltype(fmt);
    const auto sel = core::select_kth<Fmt>(views, chunks, numel, k, int(nan), largest,
                                           StablePar{});
    STD_TORCH_CHECK(!(nan == core::kNanError && sel.nan_count > 0),
                    "sparsepai.kth_largest: scores contain NaN");
    if (core::is_nan_key<Fmt>(sel.key, int(nan), largest)) {
      write_inf<Fmt>(out.mutable_data_ptr(), nan != core::kNanHigh);
    } else {
      auto bits = core::key_to_bits<Fmt>(sel.key, largest);
      std::memcpy(out.mutable_data_ptr(), &bits, sizeof bits);
    }
  });
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY(sparsepai_stable, m) {
  m.def("kth_largest(Tensor[] scores, int k, bool largest, int nan) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(sparsepai_stable, CPU, m) {
  m.impl("kth_largest", TORCH_BOX(&kth_largest_stable));
}
