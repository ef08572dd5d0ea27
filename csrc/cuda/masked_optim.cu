// CUDA implementations of the masked optimizer steps: one launch per param group over a table of
// ranges of all its tensors (a multi-tensor apply), the per-element math shared with the CPU
// through csrc/core/masked_optim.h. Kept elements are updated; pruned ones are not touched (the
// optimizer zeroes them when it takes the masks).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstring>

#include "../core/masked_optim.h"
#include "../masked_optim_common.h"

namespace sparsepai {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kRange = int64_t(1) << 16;

struct TensorPtrs {
  void* p;
  const void* g;
  void* s0;  // momentum buffer / exp_avg
  void* s1;  // exp_avg_sq
  void* s2;  // max_exp_avg_sq
  const uint64_t* words;
  core::AdamWStep step;
};

struct Range {
  int64_t tensor, begin, end;
};

template <class T>
__device__ __forceinline__ float ldf(const void* base, int64_t i) {
  return static_cast<float>(static_cast<const T*>(base)[i]);
}
template <class T>
__device__ __forceinline__ void stf(void* base, int64_t i, float v) {
  static_cast<T*>(base)[i] = static_cast<T>(v);
}

template <class T, bool kMomentum, bool kNesterov>
__global__ void sgd_kernel(const TensorPtrs* __restrict__ tabs, const Range* __restrict__ ranges,
                           core::SgdCoef c) {
  const Range r = ranges[blockIdx.x];
  const TensorPtrs t = tabs[r.tensor];
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    if (!core::kept(t.words, i)) continue;
    float p = ldf<T>(t.p, i), b = kMomentum ? ldf<T>(t.s0, i) : 0.f;
    core::sgd_element<kMomentum, kNesterov>(p, ldf<T>(t.g, i), b, c);
    stf<T>(t.p, i, p);
    if (kMomentum) stf<T>(t.s0, i, b);
  }
}

template <class T, bool kAmsgrad>
__global__ void adamw_kernel(const TensorPtrs* __restrict__ tabs, const Range* __restrict__ ranges,
                             core::AdamWHyper h) {
  const Range r = ranges[blockIdx.x];
  const TensorPtrs t = tabs[r.tensor];
  for (int64_t i = r.begin + threadIdx.x; i < r.end; i += blockDim.x) {
    if (!core::kept(t.words, i)) continue;
    float p = ldf<T>(t.p, i), m = ldf<T>(t.s0, i), v = ldf<T>(t.s1, i);
    float x = kAmsgrad ? ldf<T>(t.s2, i) : 0.f;
    core::adamw_element<kAmsgrad>(p, ldf<T>(t.g, i), m, v, x, h, t.step);
    stf<T>(t.p, i, p);
    stf<T>(t.s0, i, m);
    stf<T>(t.s1, i, v);
    if (kAmsgrad) stf<T>(t.s2, i, x);
  }
}

at::Tensor to_device(const void* src, size_t bytes, const at::Device& dev) {
  at::Tensor host = at::empty({int64_t(std::max<size_t>(bytes, 1))}, at::kByte);
  if (bytes) std::memcpy(host.data_ptr(), src, bytes);
  return host.to(dev);
}

void* raw(const at::Tensor& t) { return t.defined() && t.numel() ? t.data_ptr() : nullptr; }

struct Tables {
  at::Tensor tabs, ranges;
  int64_t nranges = 0;
};

Tables make_tables(at::TensorList params, at::TensorList grads, at::TensorList s0,
                   at::TensorList s1, at::TensorList s2, at::TensorList masks,
                   const std::vector<core::AdamWStep>& steps) {
  std::vector<TensorPtrs> tabs(params.size());
  std::vector<Range> ranges;
  for (size_t i = 0; i < params.size(); ++i) {
    tabs[i] = {raw(params[i]),
               raw(grads[i]),
               s0.empty() ? nullptr : raw(s0[i]),
               s1.empty() ? nullptr : raw(s1[i]),
               s2.empty() ? nullptr : raw(s2[i]),
               masks[i].numel() ? reinterpret_cast<const uint64_t*>(masks[i].data_ptr()) : nullptr,
               steps.empty() ? core::AdamWStep{1.f, 0.f, 1.f} : steps[i]};
    for (int64_t b = 0; b < params[i].numel(); b += kRange)
      ranges.push_back({int64_t(i), b, std::min(params[i].numel(), b + kRange)});
  }
  const at::Device dev = params[0].device();
  Tables t;
  t.tabs = to_device(tabs.data(), tabs.size() * sizeof(TensorPtrs), dev);
  t.ranges = to_device(ranges.data(), ranges.size() * sizeof(Range), dev);
  t.nranges = int64_t(ranges.size());
  return t;
}

void masked_sgd_cuda(at::TensorList params, at::TensorList grads, at::TensorList bufs,
                     at::TensorList masks, double lr, double momentum, double dampening,
                     double weight_decay, bool nesterov, bool maximize, bool is_first_step) {
  const bool has_mom = momentum != 0.0;
  check_group("masked_sgd_", params, grads, masks, {{"momentum_buffers", bufs, has_mom}});
  if (params.empty()) return;
  c10::cuda::CUDAGuard guard(params[0].device());
  const core::SgdHyper h =
      sgd_hyper(lr, momentum, dampening, weight_decay, nesterov, maximize);
  const core::SgdCoef c = core::sgd_coef(h, is_first_step);
  Tables t = make_tables(params, grads, bufs, {}, {}, masks, {});
  if (t.nranges == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto* tabs = reinterpret_cast<const TensorPtrs*>(t.tabs.data_ptr());
  const auto* ranges = reinterpret_cast<const Range*>(t.ranges.data_ptr());
  dispatch_param_dtype(params[0].scalar_type(), "masked_sgd_", [&](auto tag) {
    using T = decltype(tag);
    if (!has_mom)
      sgd_kernel<T, false, false><<<unsigned(t.nranges), kThreads, 0, stream>>>(tabs, ranges, c);
    else if (nesterov)
      sgd_kernel<T, true, true><<<unsigned(t.nranges), kThreads, 0, stream>>>(tabs, ranges, c);
    else
      sgd_kernel<T, true, false><<<unsigned(t.nranges), kThreads, 0, stream>>>(tabs, ranges, c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void masked_adamw_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                       at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                       at::TensorList masks, at::ArrayRef<double> steps, double lr, double beta1,
                       double beta2, double weight_decay, double eps, bool amsgrad,
                       bool maximize) {
  check_adamw_group(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, steps,
                    amsgrad);
  if (params.empty()) return;
  c10::cuda::CUDAGuard guard(params[0].device());
  const core::AdamWHyper h =
      adamw_hyper(lr, beta1, beta2, weight_decay, eps, amsgrad, maximize);
  std::vector<core::AdamWStep> per(params.size());
  for (size_t i = 0; i < params.size(); ++i) per[i] = core::adamw_step_scalars(h, steps[i]);
  Tables t = make_tables(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, per);
  if (t.nranges == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto* tabs = reinterpret_cast<const TensorPtrs*>(t.tabs.data_ptr());
  const auto* ranges = reinterpret_cast<const Range*>(t.ranges.data_ptr());
  dispatch_param_dtype(params[0].scalar_type(), "masked_adamw_", [&](auto tag) {
    using T = decltype(tag);
    if (amsgrad)
      adamw_kernel<T, true><<<unsigned(t.nranges), kThreads, 0, stream>>>(tabs, ranges, h);
    else
      adamw_kernel<T, false><<<unsigned(t.nranges), kThreads, 0, stream>>>(tabs, ranges, h);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsepai, CUDA, m) {
  m.impl("masked_sgd_", &masked_sgd_cuda);
  m.impl("masked_adamw_", &masked_adamw_cuda);
}

}  // namespace sparsepai
