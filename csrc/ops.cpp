// Every sparsepai op schema, declared once. Backends (csrc/cpu/*.cpp, csrc/cuda/*.cu) only
// register implementations. Python wrappers, fake implementations and *_ref oracles live in
// sparsepai/ops/.
#include <torch/library.h>

// Keys are order-preserving unsigned integers (csrc/core/radix_keys.h) passed through `int`
// (int64) arguments bit for bit; nan is 0 = error, 1 = low, 2 = high; transform is 0 = rank the
// scores, 1 = rank |scores| (the key with the sign bit cleared: no |x| tensor is made).
TORCH_LIBRARY(sparsepai, m) {
  // Global top-k over a list of tensors: (threshold, masks). Threshold is 0-d in the common
  // dtype of the scores.
  m.def(
      "topk_mask(Tensor[] scores, int k, bool largest, int nan, int transform=0) -> "
      "(Tensor, Tensor[])");
  // The threshold alone.
  m.def(
      "kth_largest(Tensor[] scores, int k, bool largest, int nan, int transform=0) -> Tensor");
  // int64 histogram of one radix digit of the keys, over keys whose higher bits equal prefix.
  m.def(
      "key_histogram(Tensor[] scores, int shift, int bits, int prefix, bool largest, int nan, "
      "int transform=0) -> Tensor");
  // Masks key > threshold_key plus the first `budget` ties in position order.
  m.def(
      "threshold_masks(Tensor[] scores, int threshold_key, int budget, bool largest, int nan, "
      "int transform=0) -> Tensor[]");
  // int64 0-d tensor: index of the first tensor holding a NaN, or -1.
  m.def("first_nan(Tensor[] scores) -> Tensor");

  // Masked optimizer steps, one call for all tensors of a param group (sparsepai/optim). A mask
  // is an int64 tensor of ceil(numel / 64) words (bit j of word w keeps element 64 w + j) or an
  // empty tensor (nothing pruned). momentum_buffers is empty when momentum == 0;
  // max_exp_avg_sqs is empty unless amsgrad. steps: each tensor's step count after this step.
  m.def(
      "masked_sgd_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, "
      "Tensor[] masks, float lr, float momentum, float dampening, float weight_decay, "
      "bool nesterov, bool maximize, bool is_first_step) -> ()");
  m.def(
      "masked_adamw_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] max_exp_avg_sqs, Tensor[] masks, float[] steps, "
      "float lr, float beta1, float beta2, float weight_decay, float eps, bool amsgrad, "
      "bool maximize) -> ()");

  // Channel-sparse 2-d convolution (sparsepai/structured): reads input channels in_idx, computes
  // weight.size(0) output channels and writes them to channels out_idx of an output with
  // out_channels channels (zeros elsewhere). weight: [out_idx.numel(), in_idx.numel(), kh, kw].
  m.def(
      "channel_sparse_conv2d(Tensor input, Tensor weight, Tensor? bias, Tensor in_idx, "
      "Tensor out_idx, int out_channels, int[2] stride, int[2] padding, int[2] dilation) -> "
      "Tensor");
  // Its gradients (input, weight, bias) for the outputs selected by output_mask.
  m.def(
      "channel_sparse_conv2d_backward(Tensor grad_out, Tensor input, Tensor weight, "
      "Tensor in_idx, Tensor out_idx, int[2] stride, int[2] padding, int[2] dilation, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");

  // Unstructured-sparse convolution and linear layers (sparsepai/ops/sparse_conv.py,
  // sparse_linear.py): the weight is CSR by output channel, row_ptr [O + 1] int64, col [nnz]
  // int32 (flat index ic * KH * KW + kh * KW + kw of the dense weight; for a linear layer the
  // input feature; each row strictly increasing by tap kh * KW + kw, then input channel),
  // values [nnz] (the trainable parameter). The backward passes also take the transpose, CSC by
  // input channel: t_ptr [C + 1] int64, t_idx [nnz] int32 (positions in the CSR arrays,
  // increasing within each channel). sparse_layout builds this order. weight_shape: the dense
  // (O, C, KH, KW). The weight gradient is [nnz], at the kept positions only. The forward ops
  // take the transpose too (unused there) so that their autograd formula finds it among the
  // inputs.
  m.def(
      "sparse_conv2d(Tensor input, Tensor values, Tensor row_ptr, Tensor col, Tensor t_ptr, "
      "Tensor t_idx, Tensor? bias, int[4] weight_shape, int[2] stride, int[2] padding, "
      "int[2] dilation) -> Tensor");
  m.def(
      "sparse_conv2d_backward(Tensor grad_out, Tensor input, Tensor values, Tensor row_ptr, "
      "Tensor col, Tensor t_ptr, Tensor t_idx, int[4] weight_shape, int[2] stride, "
      "int[2] padding, int[2] dilation, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  // input (..., in_features) -> (..., row_ptr.numel() - 1)
  m.def(
      "sparse_linear(Tensor input, Tensor values, Tensor row_ptr, Tensor col, Tensor t_ptr, "
      "Tensor t_idx, Tensor? bias, int in_features) -> Tensor");
  m.def(
      "sparse_linear_backward(Tensor grad_out, Tensor input, Tensor values, Tensor row_ptr, "
      "Tensor col, Tensor t_ptr, Tensor t_idx, int in_features, bool[3] output_mask) -> "
      "(Tensor, Tensor, Tensor)");
}


// Importing the Python module sparsepai._C loads this library and so runs the registrations
// above. The module itself holds two functions for `sparsepai info`: what the binary was built
// against, and the CPU instruction-set level its kernels use.
#include <Python.h>

#if __has_include(<torch/headeronly/version.h>)
#include <torch/headeronly/version.h>
#else
#include <torch/version.h>
#endif

#include "core/cpu_isa.h"

namespace {

#if defined(__clang__)
constexpr const char* kCompiler = "clang " __clang_version__;
#elif defined(__GNUC__)
constexpr const char* kCompiler = "gcc " __VERSION__;
#else
constexpr const char* kCompiler = "unknown";
#endif

#ifdef SPARSEPAI_WITH_CUDA
constexpr int kWithCuda = 1;
#else
constexpr int kWithCuda = 0;
#endif

PyObject* build_info(PyObject*, PyObject*) {
  return Py_BuildValue("{s:s,s:s,s:O}", "torch", TORCH_VERSION, "compiler", kCompiler, "cuda",
                       kWithCuda ? Py_True : Py_False);
}

PyObject* cpu_isa(PyObject*, PyObject*) {
  static const char* const names[] = {"baseline", "AVX2", "AVX-512"};
  return PyUnicode_FromString(names[sparsepai::core::isa_level()]);
}

PyMethodDef methods[] = {
    {"build_info", build_info, METH_NOARGS,
     "{'torch': headers' version, 'compiler': ..., 'cuda': CUDA kernels built}"},
    {"cpu_isa", cpu_isa, METH_NOARGS,
     "The instruction-set level of the CPU kernels: 'baseline', 'AVX2' or 'AVX-512'"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}
