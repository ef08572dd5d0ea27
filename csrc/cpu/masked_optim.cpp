// CPU implementations of the masked optimizer steps: one call per param group, all tensors at
// once (a multi-tensor op), parallel over fixed-size ranges of all tensors on ATen's pool. The
// loops are csrc/core/masked_optim_blocks.inc (vectorised, per instruction-set level).
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include "../core/masked_optim_cpu.h"
#include "../masked_optim_common.h"

namespace sparsepai {
namespace {

// Ranges of about 32K elements (a multiple of 64, so every range starts on a mask word).
constexpr int64_t kRange = int64_t(1) << 15;

struct Range {
  int64_t tensor, begin, end;
};

std::vector<Range> make_ranges(at::TensorList params) {
  std::vector<Range> out;
  for (size_t t = 0; t < params.size(); ++t)
    for (int64_t b = 0; b < params[t].numel(); b += kRange)
      out.push_back({int64_t(t), b, std::min(params[t].numel(), b + kRange)});
  return out;
}

// For each range: the kept elements of its tensor before the range starts, where the tensor's
// state is compact (else 0). Checks each compact state's length against the mask's kept count.
std::vector<int64_t> compact_offsets(const char* op, const char* state_name,
                                     const std::vector<Range>& ranges, at::TensorList params,
                                     at::TensorList states, at::TensorList masks,
                                     const std::vector<char>& compact) {
  std::vector<int64_t> counts(ranges.size(), 0);
  at::parallel_for(0, int64_t(ranges.size()), 1, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const Range& rg = ranges[r];
      if (compact[rg.tensor])
        counts[r] = core::kept_count(
            reinterpret_cast<const uint64_t*>(masks[rg.tensor].data_ptr<int64_t>()), rg.begin,
            rg.end);
    }
  });
  std::vector<int64_t> offsets(ranges.size(), 0);
  std::vector<int64_t> total(params.size(), 0);
  for (size_t r = 0; r < ranges.size(); ++r) {
    offsets[r] = total[ranges[r].tensor];
    total[ranges[r].tensor] += counts[r];
  }
  for (size_t t = 0; t < params.size(); ++t)
    TORCH_CHECK_VALUE(!compact[t] || states[t].numel() == total[t], "sparsepai.", op, ": ",
                      state_name, "[", t, "] is compact with ", states[t].numel(),
                      " elements but masks[", t, "] keeps ", total[t]);
  return offsets;
}

template <class T>
T* ptr(const at::Tensor& t) {
  return t.defined() && t.numel() ? reinterpret_cast<T*>(t.data_ptr()) : nullptr;
}

const uint64_t* words_of(const at::Tensor& mask) {
  return mask.numel() ? reinterpret_cast<const uint64_t*>(mask.data_ptr<int64_t>()) : nullptr;
}

void masked_sgd_cpu(at::TensorList params, at::TensorList grads, at::TensorList bufs,
                    at::TensorList masks, double lr, double momentum, double dampening,
                    double weight_decay, bool nesterov, bool maximize, bool is_first_step) {
  const bool has_mom = momentum != 0.0;
  check_group("masked_sgd_", params, grads, masks, {{"momentum_buffers", bufs, has_mom}},
              /*allow_compact=*/true);
  const core::SgdHyper h =
      sgd_hyper(lr, momentum, dampening, weight_decay, nesterov, maximize);
  const auto ranges = make_ranges(params);
  std::vector<char> compact(params.size(), 0);
  if (has_mom)
    for (size_t t = 0; t < params.size(); ++t)
      compact[t] = compact_state(params[t], bufs[t], masks[t]);
  const auto offsets =
      compact_offsets("masked_sgd_", "momentum_buffers", ranges, params, bufs, masks, compact);
  at::parallel_for(0, int64_t(ranges.size()), 1, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const Range& rg = ranges[r];
      const at::Tensor& p = params[rg.tensor];
      dispatch_param_dtype(p.scalar_type(), "masked_sgd_", [&](auto tag) {
        using T = decltype(tag);
        T* pp = ptr<T>(p);
        const T* gg = ptr<T>(grads[rg.tensor]);
        const uint64_t* w = words_of(masks[rg.tensor]);
        if (compact[rg.tensor]) {
          T* bb = ptr<T>(bufs[rg.tensor]);
          if (nesterov)
            core::sgd_range_compact<T, true, true>(pp, gg, bb, w, rg.begin, rg.end, offsets[r], h,
                                                   is_first_step);
          else
            core::sgd_range_compact<T, true, false>(pp, gg, bb, w, rg.begin, rg.end, offsets[r],
                                                    h, is_first_step);
        } else if (!has_mom) {
          core::sgd_range<T, false, false>(pp, gg, nullptr, w, rg.begin, rg.end, h, false);
        } else if (nesterov) {
          core::sgd_range<T, true, true>(pp, gg, ptr<T>(bufs[rg.tensor]), w, rg.begin, rg.end, h,
                                         is_first_step);
        } else {
          core::sgd_range<T, true, false>(pp, gg, ptr<T>(bufs[rg.tensor]), w, rg.begin, rg.end, h,
                                          is_first_step);
        }
      });
    }
  });
}

void masked_adamw_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                      at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                      at::TensorList masks, at::ArrayRef<double> steps, double lr, double beta1,
                      double beta2, double weight_decay, double eps, bool amsgrad, bool maximize) {
  check_adamw_group(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, steps,
                    amsgrad, /*allow_compact=*/true);
  const core::AdamWHyper h =
      adamw_hyper(lr, beta1, beta2, weight_decay, eps, amsgrad, maximize);
  std::vector<core::AdamWStep> per(params.size());
  for (size_t t = 0; t < params.size(); ++t) per[t] = core::adamw_step_scalars(h, steps[t]);
  const auto ranges = make_ranges(params);
  std::vector<char> compact(params.size(), 0);
  for (size_t t = 0; t < params.size(); ++t)
    compact[t] = compact_state(params[t], exp_avgs[t], masks[t]);
  const auto offsets =
      compact_offsets("masked_adamw_", "exp_avgs", ranges, params, exp_avgs, masks, compact);
  at::parallel_for(0, int64_t(ranges.size()), 1, [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) {
      const Range& rg = ranges[r];
      const int64_t t = rg.tensor;
      dispatch_param_dtype(params[t].scalar_type(), "masked_adamw_", [&](auto tag) {
        using T = decltype(tag);
        const uint64_t* w = words_of(masks[t]);
        if (compact[t] && amsgrad)
          core::adamw_range_compact<T, true>(ptr<T>(params[t]), ptr<T>(grads[t]),
                                             ptr<T>(exp_avgs[t]), ptr<T>(exp_avg_sqs[t]),
                                             ptr<T>(max_exp_avg_sqs[t]), w, rg.begin, rg.end,
                                             offsets[r], h, per[t]);
        else if (compact[t])
          core::adamw_range_compact<T, false>(ptr<T>(params[t]), ptr<T>(grads[t]),
                                              ptr<T>(exp_avgs[t]), ptr<T>(exp_avg_sqs[t]),
                                              nullptr, w, rg.begin, rg.end, offsets[r], h,
                                              per[t]);
        else if (amsgrad)
          core::adamw_range<T, true>(ptr<T>(params[t]), ptr<T>(grads[t]), ptr<T>(exp_avgs[t]),
                                     ptr<T>(exp_avg_sqs[t]), ptr<T>(max_exp_avg_sqs[t]), w,
                                     rg.begin, rg.end, h, per[t]);
        else
          core::adamw_range<T, false>(ptr<T>(params[t]), ptr<T>(grads[t]), ptr<T>(exp_avgs[t]),
                                      ptr<T>(exp_avg_sqs[t]), nullptr, w, rg.begin, rg.end, h,
                                      per[t]);
      });
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsepai, CPU, m) {
  m.impl("masked_sgd_", &masked_sgd_cpu);
  m.impl("masked_adamw_", &masked_adamw_cpu);
}

}  // namespace sparsepai
