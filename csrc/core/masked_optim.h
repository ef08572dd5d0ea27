// Per-element math of the masked optimizers, shared by the CPU kernels (csrc/cpu/masked_optim.cpp
// through masked_optim_cpu.h), the CUDA kernels (csrc/cuda/masked_optim.cu) and the C++ tests.
// Torch-free. All math is float32; parameters and state may be stored as fp16/bf16/fp32.
//
// The update of a kept element is the one torch.optim.SGD / torch.optim.AdamW make (same order of
// operations); pruned elements are never read for their gradient and are stored as exact zeros.
#pragma once

#include <cmath>
#include <cstdint>

#include "radix_keys.h"  // SP_HD

namespace sparsepai {
namespace core {

struct SgdHyper {
  float lr = 0.f, momentum = 0.f, dampening = 0.f, weight_decay = 0.f;
  bool nesterov = false, maximize = false;
};

// The SGD update written without data-dependent branches, so that it vectorises: the options
// become coefficients whose products are exact (1 * x, 0 * x) and leave torch's operation order
// (and so its float32 rounding) unchanged for finite values.
struct SgdCoef {
  float lr, sign, wd;
  float buf_keep, grad_gain;  // buf = buf_keep * buf + grad_gain * g
  float nest_b;               // Nesterov: g = g + nest_b * buf
};

SP_HD SgdCoef sgd_coef(const SgdHyper& h, bool first) {
  SgdCoef c;
  c.lr = h.lr;
  c.sign = h.maximize ? -1.f : 1.f;
  c.wd = h.weight_decay;
  // torch's first step copies the gradient into the buffer; later ones
  // buf.mul_(momentum).add_(g, alpha=1 - dampening)
  c.buf_keep = first ? 0.f : h.momentum;
  c.grad_gain = first ? 1.f : 1.f - h.dampening;
  c.nest_b = h.momentum;
  return c;
}

// One SGD step of one element (with a momentum buffer when kMomentum; Nesterov when kNesterov).
template <bool kMomentum, bool kNesterov>
SP_HD void sgd_element(float& p, float g, float& buf, const SgdCoef& c) {
  g = c.sign * g;
  g = g + c.wd * p;  // torch adds nothing when weight_decay == 0; + 0 * p is the same for finite p
  if (kMomentum) {
    buf = c.buf_keep * buf + c.grad_gain * g;
    g = kNesterov ? g + c.nest_b * buf : buf;
  }
  p = p - c.lr * g;
}

struct AdamWHyper {
  float lr = 0.f, beta1 = 0.f, beta2 = 0.f, eps = 0.f, weight_decay = 0.f;
  bool amsgrad = false, maximize = false;
};

// Per-tensor scalars of one AdamW step (torch computes them in double from the step count).
struct AdamWStep {
  float decay;      // 1 - lr * weight_decay
  float step_size;  // lr / (1 - beta1^t)
  float bc2_sqrt_inv;  // 1 / sqrt(1 - beta2^t)
};

inline AdamWStep adamw_step_scalars(const AdamWHyper& h, double t) {
  const double bc1 = 1.0 - std::pow(double(h.beta1), t);
  const double bc2 = 1.0 - std::pow(double(h.beta2), t);
  return {float(1.0 - double(h.lr) * double(h.weight_decay)), float(double(h.lr) / bc1),
          float(1.0 / std::sqrt(bc2))};
}

template <bool kAmsgrad>
SP_HD void adamw_element(float& p, float g, float& m, float& v, float& vmax, const AdamWHyper& h,
                         const AdamWStep& s) {
  g = (h.maximize ? -1.f : 1.f) * g;
  p = p * s.decay;
  // torch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
  m = m + (1.f - h.beta1) * (g - m);
  v = h.beta2 * v + (1.f - h.beta2) * (g * g);
  float vv = v;
  if (kAmsgrad) {
    vmax = vmax > v ? vmax : v;
    vv = vmax;
  }
  // torch divides by sqrt(1 - beta2^t); multiplying by its reciprocal saves one of the two
  // divisions per element, which bound the step on the CPU (measured: ~15% of the step), at the
  // cost of at most an ulp or so in denom: the update agrees with torch's to float32 rounding.
  const float denom = sqrtf(vv) * s.bc2_sqrt_inv + h.eps;
  p = p - s.step_size * (m / denom);
}

// Mask words: bit j of word w keeps element 64 * w + j. An unmasked tensor has no words.
SP_HD bool kept(const uint64_t* words, int64_t i) {
  return words == nullptr || ((words[i >> 6] >> (i & 63)) & 1u);
}

}  // namespace core
}  // namespace sparsepai
