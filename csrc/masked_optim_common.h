// ATen-side argument checks of the masked optimizer ops, shared by the CPU and CUDA
// registrations (the Python optimizers check first, with parameter names; these guard the ops).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <initializer_list>

namespace sparsepai {

struct StateList {
  const char* name;
  at::TensorList tensors;
  bool required;  // must have one tensor per param (else: must be empty)
};

inline void check_group(const char* op, at::TensorList params, at::TensorList grads,
                        at::TensorList masks, std::initializer_list<StateList> states) {
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
    for (const auto& s : states)
      if (s.required)
        TORCH_CHECK_VALUE(s.tensors[i].sizes() == p.sizes() &&
                              s.tensors[i].scalar_type() == p.scalar_type() &&
                              s.tensors[i].device() == p.device() && s.tensors[i].is_contiguous(),
                          "sparsepai.", op, ": ", s.name, "[", i,
                          "] must be a contiguous tensor like params[", i, "]");
    const at::Tensor& m = masks[i];
    TORCH_CHECK_VALUE(m.numel() == 0 || (m.scalar_type() == at::kLong && m.dim() == 1 &&
                                         m.numel() == (p.numel() + 63) / 64 &&
                                         m.device() == p.device() && m.is_contiguous()),
                      "sparsepai.", op, ": masks[", i, "] must be empty or ", (p.numel() + 63) / 64,
                      " int64 words on ", p.device());
  }
}

}  // namespace sparsepai
