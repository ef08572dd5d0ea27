// ATen-side argument checks of the masked optimizer ops, shared by the CPU and CUDA
// registrations (the Python optimizers check first, with parameter names; these guard the ops).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <initializer_list>

#include "core/masked_optim.h"

namespace sparsepai {

// Calls f(T{}) with the C++ storage type of the parameters' dtype.
template <class F>
void dispatch_param_dtype(at::ScalarType st, const char* op, F&& f) {
  switch (st) {
    case at::kFloat:
      f(float{});
      break;
    case at::kHalf:
      f(c10::Half{});
      break;
    case at::kBFloat16:
      f(c10::BFloat16{});
      break;
    default:
      TORCH_CHECK_TYPE(false, "sparsepai.", op,
                       ": parameters must be float32, float16 or bfloat16, got ", st);
  }
}

inline core::SgdHyper sgd_hyper(double lr, double momentum, double dampening,
                                double weight_decay, bool nesterov, bool maximize) {
  core::SgdHyper h;
  h.lr = float(lr);
  h.momentum = float(momentum);
  h.dampening = float(dampening);
  h.weight_decay = float(weight_decay);
  h.nesterov = nesterov;
  h.maximize = maximize;
  return h;
}

inline core::AdamWHyper adamw_hyper(double lr, double beta1, double beta2, double weight_decay,
                                    double eps, bool amsgrad, bool maximize) {
  core::AdamWHyper h;
  h.lr = float(lr);
  h.beta1 = float(beta1);
  h.beta2 = float(beta2);
  h.weight_decay = float(weight_decay);
  h.eps = float(eps);
  h.amsgrad = amsgrad;
  h.maximize = maximize;
  return h;
}

struct StateList {
  const char* name;
  at::TensorList tensors;
  bool required;  // must have one tensor per param (else: must be empty)
};

// Whether params[i]'s state is stored compactly: a 1-D tensor of its kept elements only (the CPU
// layout for very sparse tensors). A fully kept tensor's compact and dense layouts coincide.
inline bool compact_state(const at::Tensor& param, const at::Tensor& state,
                          const at::Tensor& mask) {
  return mask.numel() != 0 && state.numel() != param.numel();
}

// allow_compact: state tensors may be compact (CPU); their length is checked by the kernel
// against the mask's kept count.
inline void check_group(const char* op, at::TensorList params, at::TensorList grads,
                        at::TensorList masks, std::initializer_list<StateList> states,
                        bool allow_compact = false) {
  const size_t n = params.size();
  TORCH_CHECK_VALUE(grads.size() == n && masks.size() == n, "sparsepai.", op, ": got ", n,
                    " params, ", grads.size(), " grads and ", masks.size(), " masks");
  for (const auto& s : states)
    TORCH_CHECK_VALUE(s.tensors.size() == (s.required ? n : 0), "sparsepai.", op, ": ", s.name,
                      " has ", s.tensors.size(), " tensors, expected ", s.required ? n : 0);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK_VALUE(p.is_contiguous(), "sparsepai.", op, ": params[", i, "] must be contiguous");
    TORCH_CHECK_VALUE(grads[i].sizes() == p.sizes() && grads[i].scalar_type() == p.scalar_type() &&
                          grads[i].device() == p.device() && grads[i].is_contiguous() &&
                          grads[i].layout() == at::kStrided,
                      "sparsepai.", op, ": grads[", i,
                      "] must be a dense contiguous tensor like params[", i, "]");
    for (const auto& s : states) {
      if (s.required && allow_compact && compact_state(p, s.tensors[i], masks[i])) {
        TORCH_CHECK_VALUE(s.tensors[i].dim() == 1 && s.tensors[i].numel() < p.numel() &&
                              s.tensors[i].scalar_type() == p.scalar_type() &&
                              s.tensors[i].device() == p.device() && s.tensors[i].is_contiguous(),
                          "sparsepai.", op, ": ", s.name, "[", i,
                          "] must be like params[", i, "] or a compact 1-D tensor of its kept "
                          "elements");
      } else if (s.required) {
        TORCH_CHECK_VALUE(s.tensors[i].sizes() == p.sizes() &&
                              s.tensors[i].scalar_type() == p.scalar_type() &&
                              s.tensors[i].device() == p.device() && s.tensors[i].is_contiguous(),
                          "sparsepai.", op, ": ", s.name, "[", i,
                          "] must be a contiguous tensor like params[", i, "]");
      }
    }
    const at::Tensor& m = masks[i];
    TORCH_CHECK_VALUE(m.numel() == 0 || (m.scalar_type() == at::kLong && m.dim() == 1 &&
                                         m.numel() == (p.numel() + 63) / 64 &&
                                         m.device() == p.device() && m.is_contiguous()),
                      "sparsepai.", op, ": masks[", i, "] must be empty or ", (p.numel() + 63) / 64,
                      " int64 words on ", p.device());
  }
}

// The argument checks of masked_adamw_, shared by both backends.
inline void check_adamw_group(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                              at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                              at::TensorList masks, at::ArrayRef<double> steps, bool amsgrad,
                              bool allow_compact = false) {
  check_group("masked_adamw_", params, grads, masks,
              {{"exp_avgs", exp_avgs, true},
               {"exp_avg_sqs", exp_avg_sqs, true},
               {"max_exp_avg_sqs", max_exp_avg_sqs, amsgrad}},
              allow_compact);
  if (allow_compact)
    for (size_t i = 0; i < params.size(); ++i) {
      const bool c = compact_state(params[i], exp_avgs[i], masks[i]);
      TORCH_CHECK_VALUE(c == compact_state(params[i], exp_avg_sqs[i], masks[i]) &&
                            (!amsgrad || c == compact_state(params[i], max_exp_avg_sqs[i],
                                                            masks[i])) &&
                            (!c || (exp_avg_sqs[i].numel() == exp_avgs[i].numel() &&
                                    (!amsgrad ||
                                     max_exp_avg_sqs[i].numel() == exp_avgs[i].numel()))),
                        "sparsepai.masked_adamw_: the state tensors of params[", i,
                        "] mix compact and dense layouts");
    }
  TORCH_CHECK_VALUE(steps.size() == params.size(), "sparsepai.masked_adamw_: steps has ",
                    steps.size(), " entries for ", params.size(), " params");
}

}  // namespace sparsepai
