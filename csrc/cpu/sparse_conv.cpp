// CPU registration of the unstructured-sparse convolution and linear ops (schemas in
// csrc/ops.cpp): argument checks, then the torch-free kernels of csrc/core/sparse_conv.h on
// ATen's thread pool.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "../core/sparse_conv.h"
#include "../core/sparse_linear.h"
#include "aten_par.h"

namespace sparsepai {
namespace {

// Each calling thread keeps its scratch buffers between calls (sparse_conv.h says why).
core::SpWorkspace& workspace() {
  static thread_local core::SpWorkspace ws;
  return ws;
}

void check_cpu(const char* op, const char* arg, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), "sparsepai.", op, ": ", arg, " must be a CPU tensor, got ",
              t.device());
}

// The key by which a row's columns must increase: (tap, column), tap = column modulo kk, from a
// table per column (a division per kept weight would cost more than the rest of the checks).
struct TapOrder {
  int64_t cols;
  std::vector<int32_t> tap;
  TapOrder(int64_t n_cols, int64_t kk) : cols(n_cols), tap(size_t(kk > 1 ? n_cols : 0)) {
    for (int64_t c = 0; c < int64_t(tap.size()); ++c) tap[size_t(c)] = int32_t(c % kk);
  }
  // c in [0, cols)
  int64_t key(int64_t c) const { return tap.empty() ? c : int64_t(tap[size_t(c)]) * cols + c; }
};

// Whether the CSR arrays (and the transpose when tp) hold a valid (rows, cols) layout in the
// kernels' order (sparse_conv.h): every row strictly increasing by (tap, input channel), kk taps
// per input channel; each channel's transpose strictly increasing, so that every kept weight is
// in it once. The checks of check_layout's loops, in one parallel region (run serially, they
// measured 5% of a call on a 2x2 plane). The loops stay inside [0, nnz) whatever the pointers
// hold.
bool layout_ok(const int64_t* rp, const int32_t* c, int64_t rows, int64_t cols, int64_t nnz,
               int64_t kk, const int64_t* tp, const int32_t* ti, int64_t t_rows) {
  std::atomic<bool> good{true};
  const int64_t parts = 4 * int64_t(at::get_num_threads());
  const TapOrder order(cols, kk);
  at::parallel_for(0, parts, 1, [&](int64_t b, int64_t e) {
    bool ok = true;
    for (int64_t k = b; k < e; ++k) {
      for (int64_t r = rows * k / parts; r < rows * (k + 1) / parts; ++r) {
        ok &= rp[r] <= rp[r + 1];
        const int64_t j0 = std::max<int64_t>(0, rp[r]), j1 = std::min(nnz, rp[r + 1]);
        int64_t last = -1;
        for (int64_t j = j0; j < j1; ++j) {
          // branch-free: a column out of range reads the table at 0 and fails `in`
          const bool in = uint32_t(c[j]) < uint64_t(cols);
          const int64_t key = order.key(in ? c[j] : 0);
          ok &= in & (key > last);
          last = key;
        }
      }
      if (tp == nullptr) continue;
      for (int64_t r = t_rows * k / parts; r < t_rows * (k + 1) / parts; ++r) {
        ok &= tp[r] <= tp[r + 1];
        const int64_t t0 = std::max<int64_t>(0, tp[r]), t1 = std::min(nnz, tp[r + 1]);
        for (int64_t t = t0; t < t1; ++t)
          ok &= ti[t] >= 0 && ti[t] < nnz && c[ti[t]] >= r * kk && c[ti[t]] < (r + 1) * kk &&
                (t == t0 || ti[t - 1] < ti[t]);
      }
    }
    if (!ok) good.store(false, std::memory_order_relaxed);
  });
  return good.load();
}

// The CSR arrays (and the CSC transpose when given) describe an (rows, cols) matrix of kk taps
// per input channel, in the kernels' order.
void check_layout(const char* op, const at::Tensor& values, const at::Tensor& row_ptr,
                  const at::Tensor& col, int64_t rows, int64_t cols, int64_t kk,
                  const at::Tensor* t_ptr, const at::Tensor* t_idx, int64_t t_rows) {
  check_cpu(op, "values", values);
  check_cpu(op, "row_ptr", row_ptr);
  check_cpu(op, "col", col);
  TORCH_CHECK(row_ptr.scalar_type() == at::kLong && row_ptr.dim() == 1 &&
                  row_ptr.numel() == rows + 1,
              "sparsepai.", op, ": row_ptr must be a 1-d int64 tensor of ", rows + 1,
              " entries, got ", row_ptr.scalar_type(), " ", row_ptr.sizes());
  TORCH_CHECK(col.scalar_type() == at::kInt && col.dim() == 1, "sparsepai.", op,
              ": col must be a 1-d int32 tensor, got ", col.scalar_type(), " ", col.sizes());
  TORCH_CHECK(values.dim() == 1 && values.numel() == col.numel(), "sparsepai.", op,
              ": values must be 1-d with col's ", col.numel(), " entries, got ", values.sizes());
  TORCH_CHECK(row_ptr.is_contiguous() && col.is_contiguous(), "sparsepai.", op,
              ": row_ptr and col must be contiguous");
  const int64_t* rp = row_ptr.data_ptr<int64_t>();
  const int32_t* c = col.data_ptr<int32_t>();
  const int64_t nnz = col.numel();
  TORCH_CHECK(rp[0] == 0 && rp[rows] == nnz, "sparsepai.", op,
              ": row_ptr must run from 0 to col.numel() = ", nnz);
  const int64_t* tp = nullptr;
  const int32_t* ti = nullptr;
  if (t_ptr != nullptr) {
    check_cpu(op, "t_ptr", *t_ptr);
    check_cpu(op, "t_idx", *t_idx);
    TORCH_CHECK(t_ptr->scalar_type() == at::kLong && t_ptr->dim() == 1 &&
                    t_ptr->numel() == t_rows + 1 && t_ptr->is_contiguous(),
                "sparsepai.", op, ": t_ptr must be a contiguous 1-d int64 tensor of ",
                t_rows + 1, " entries");
    TORCH_CHECK(t_idx->scalar_type() == at::kInt && t_idx->dim() == 1 &&
                    t_idx->numel() == nnz && t_idx->is_contiguous(),
                "sparsepai.", op, ": t_idx must be a contiguous 1-d int32 tensor of ", nnz,
                " entries");
    tp = t_ptr->data_ptr<int64_t>();
    ti = t_idx->data_ptr<int32_t>();
    TORCH_CHECK(tp[0] == 0 && tp[t_rows] == nnz, "sparsepai.", op,
                ": t_ptr must run from 0 to ", nnz);
  }
  if (layout_ok(rp, c, rows, cols, nnz, kk, tp, ti, t_rows)) return;
  // something is wrong: find the first fault, in order, for the message
  for (int64_t r = 0; r < rows; ++r)
    TORCH_CHECK(rp[r] <= rp[r + 1], "sparsepai.", op, ": row_ptr must be non-decreasing");
  for (int64_t j = 0; j < nnz; ++j)
    TORCH_CHECK(c[j] >= 0 && c[j] < cols, "sparsepai.", op, ": col[", j, "] = ", c[j],
                " is outside [0, ", cols, ")");
  const TapOrder order(cols, kk);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = rp[r] + 1; j < rp[r + 1]; ++j)
      TORCH_CHECK(order.key(c[j - 1]) < order.key(c[j]), "sparsepai.", op, ": row ", r,
                  " of col is not ",
                  kk == 1 ? "strictly increasing" : "ordered by tap, then input channel",
                  " at col[", j, "] (build the layout with sparse_layout)");
  for (int64_t r = 0; r < t_rows; ++r) {
    TORCH_CHECK(tp[r] <= tp[r + 1], "sparsepai.", op, ": t_ptr must be non-decreasing");
    for (int64_t t = tp[r]; t < tp[r + 1]; ++t) {
      TORCH_CHECK(ti[t] >= 0 && ti[t] < nnz && c[ti[t]] >= r * kk && c[ti[t]] < (r + 1) * kk,
                  "sparsepai.", op,
                  ": t_idx[", t, "] does not point at a kept weight of input channel ", r);
      TORCH_CHECK(t == tp[r] || ti[t - 1] < ti[t], "sparsepai.", op, ": t_idx[", t,
                  "] is not above t_idx[", t - 1, "] (each input channel's positions increase)");
    }
  }
  TORCH_CHECK(false, "sparsepai.", op, ": invalid layout");  // not reached
}

void check_float(const char* op, const at::Tensor& input, const at::Tensor& values,
                 const std::optional<at::Tensor>& bias) {
  check_cpu(op, "input", input);
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
              "sparsepai.", op, ": input must be float32 or float64, got ", input.scalar_type());
  TORCH_CHECK(values.scalar_type() == input.scalar_type(), "sparsepai.", op, ": values (",
              values.scalar_type(), ") and input (", input.scalar_type(), ") dtypes differ");
  if (bias.has_value() && bias->defined()) {
    check_cpu(op, "bias", *bias);
    TORCH_CHECK(bias->scalar_type() == input.scalar_type(), "sparsepai.", op,
                ": bias dtype differs from input's");
  }
}

// The layout of the convolution kernels (sparse_conv.h): SPARSEPAI_SPARSE_CONV_LAYOUT=wide or
// lanes forces one (the tests run both; read at every call so that they can switch), otherwise
// the shape chooses.
int conv_layout() {
  const char* v = std::getenv("SPARSEPAI_SPARSE_CONV_LAYOUT");
  if (v != nullptr && std::strcmp(v, "wide") == 0) return 0;
  if (v != nullptr && std::strcmp(v, "lanes") == 0) return 1;
  return -1;
}

// SPARSEPAI_SPARSE_CONV_CACHE=off turns the kernels' cache blocking off (SpConvGeom::
// cache_blocks), to measure what it gives and to test both paths; read at every call.
bool conv_cache_blocks() {
  const char* v = std::getenv("SPARSEPAI_SPARSE_CONV_CACHE");
  return !(v != nullptr && std::strcmp(v, "off") == 0);
}

core::SpConvGeom conv_geom(const char* op, const at::Tensor& input, int64_t nnz,
                           at::IntArrayRef ws, at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation) {
  TORCH_CHECK(input.dim() == 4, "sparsepai.", op, ": input must be (N, C, H, W), got ",
              input.dim(), " dims");
  TORCH_CHECK(ws.size() == 4 && ws[0] >= 0 && ws[2] > 0 && ws[3] > 0, "sparsepai.", op,
              ": weight_shape must be (O, C, KH, KW), got ", ws);
  TORCH_CHECK(input.size(1) == ws[1], "sparsepai.", op, ": input has ", input.size(1),
              " channels, the weight ", ws[1]);
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0 &&
                  padding[0] >= 0 && padding[1] >= 0,
              "sparsepai.", op, ": stride and dilation must be > 0, padding >= 0");
  core::SpConvGeom g;
  g.n = input.size(0), g.c = input.size(1), g.h = input.size(2), g.w = input.size(3);
  g.o = ws[0], g.kh = ws[2], g.kw = ws[3];
  g.sh = stride[0], g.sw = stride[1], g.ph = padding[0], g.pw = padding[1];
  g.dh = dilation[0], g.dw = dilation[1];
  g.cache_blocks = conv_cache_blocks();
  TORCH_CHECK(core::sp_conv_geom(g, conv_layout(), nnz), "sparsepai.", op, ": the ", ws[2], "x",
              ws[3], " kernel does not fit the padded ", g.h, "x", g.w, " input");
  return g;
}

at::Tensor sparse_conv2d_cpu(const at::Tensor& input, const at::Tensor& values,
                             const at::Tensor& row_ptr, const at::Tensor& col,
                             const at::Tensor& /*t_ptr*/, const at::Tensor& /*t_idx*/,
                             const std::optional<at::Tensor>& bias, at::IntArrayRef weight_shape,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation) {
  const char* op = "sparse_conv2d";
  check_float(op, input, values, bias);
  const core::SpConvGeom g =
      conv_geom(op, input, values.numel(), weight_shape, stride, padding, dilation);
  check_layout(op, values, row_ptr, col, g.o, g.c * g.kh * g.kw, g.kh * g.kw, nullptr, nullptr,
               0);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias)
    TORCH_CHECK(bias->dim() == 1 && bias->numel() == g.o, "sparsepai.", op, ": bias must have ",
                g.o, " entries");
  at::Tensor x = input.contiguous(), v = values.contiguous();
  at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({g.n, g.o, g.oh, g.ow}, input.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_conv2d", [&] {
    core::sparse_conv2d_forward<scalar_t>(g, x.data_ptr<scalar_t>(), row_ptr.data_ptr<int64_t>(),
                                          col.data_ptr<int32_t>(), v.data_ptr<scalar_t>(),
                                          has_bias ? b.data_ptr<scalar_t>() : nullptr,
                                          y.data_ptr<scalar_t>(), workspace(), AtenPar{});
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& values,
    const at::Tensor& row_ptr, const at::Tensor& col, const at::Tensor& t_ptr,
    const at::Tensor& t_idx, at::IntArrayRef weight_shape, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, std::array<bool, 3> output_mask) {
  const char* op = "sparse_conv2d_backward";
  check_float(op, input, values, std::nullopt);
  check_cpu(op, "grad_out", grad_out);
  const core::SpConvGeom g =
      conv_geom(op, input, values.numel(), weight_shape, stride, padding, dilation);
  check_layout(op, values, row_ptr, col, g.o, g.c * g.kh * g.kw, g.kh * g.kw, &t_ptr, &t_idx,
               g.c);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({g.n, g.o, g.oh, g.ow}) &&
                  grad_out.scalar_type() == input.scalar_type(),
              "sparsepai.", op, ": grad_out must be ", at::IntArrayRef({g.n, g.o, g.oh, g.ow}),
              " of the input's dtype, got ", grad_out.sizes());
  at::Tensor gx, gw, gb;
  if (output_mask[0]) gx = at::empty_like(input, at::MemoryFormat::Contiguous);
  if (output_mask[1]) gw = at::zeros_like(values, at::MemoryFormat::Contiguous);
  if (output_mask[2]) gb = grad_out.sum({0, 2, 3});
  if (!output_mask[0] && !output_mask[1]) return {gx, gw, gb};
  if (g.n == 0 || g.o == 0) {
    if (gx.defined()) gx.zero_();
    return {gx, gw, gb};
  }
  at::Tensor x = input.contiguous(), go = grad_out.contiguous(), v = values.contiguous();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_conv2d_backward", [&] {
    core::sparse_conv2d_backward<scalar_t>(
        g, x.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(), row_ptr.data_ptr<int64_t>(),
        col.data_ptr<int32_t>(), v.data_ptr<scalar_t>(), t_ptr.data_ptr<int64_t>(),
        t_idx.data_ptr<int32_t>(), gx.defined() ? gx.data_ptr<scalar_t>() : nullptr,
        gw.defined() ? gw.data_ptr<scalar_t>() : nullptr, workspace(), AtenPar{});
  });
  return {gx, gw, gb};
}

at::Tensor sparse_linear_cpu(const at::Tensor& input, const at::Tensor& values,
                             const at::Tensor& row_ptr, const at::Tensor& col,
                             const at::Tensor& /*t_ptr*/, const at::Tensor& /*t_idx*/,
                             const std::optional<at::Tensor>& bias, int64_t in_features) {
  const char* op = "sparse_linear";
  check_float(op, input, values, bias);
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) == in_features, "sparsepai.", op,
              ": input must end in in_features = ", in_features, ", got ", input.sizes());
  const int64_t out_f = row_ptr.numel() - 1;
  check_layout(op, values, row_ptr, col, out_f, in_features, 1, nullptr, nullptr, 0);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias)
    TORCH_CHECK(bias->dim() == 1 && bias->numel() == out_f, "sparsepai.", op,
                ": bias must have ", out_f, " entries");
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = out_f;
  at::Tensor y = at::empty(shape, input.options());
  const int64_t tokens = in_features ? input.numel() / in_features : 0;
  if (y.numel() == 0) return y;
  at::Tensor x = input.contiguous(), v = values.contiguous();
  at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_linear", [&] {
    core::sparse_linear_forward<scalar_t>(
        tokens, in_features, out_f, x.data_ptr<scalar_t>(), row_ptr.data_ptr<int64_t>(),
        col.data_ptr<int32_t>(), v.data_ptr<scalar_t>(), has_bias ? b.data_ptr<scalar_t>() : nullptr,
        y.data_ptr<scalar_t>(), workspace(), AtenPar{});
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_linear_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& values,
    const at::Tensor& row_ptr, const at::Tensor& col, const at::Tensor& t_ptr,
    const at::Tensor& t_idx, int64_t in_features, std::array<bool, 3> output_mask) {
  const char* op = "sparse_linear_backward";
  check_float(op, input, values, std::nullopt);
  check_cpu(op, "grad_out", grad_out);
  const int64_t out_f = row_ptr.numel() - 1;
  check_layout(op, values, row_ptr, col, out_f, in_features, 1, &t_ptr, &t_idx, in_features);
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) == in_features, "sparsepai.", op,
              ": input must end in in_features = ", in_features);
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = out_f;
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(shape) &&
                  grad_out.scalar_type() == input.scalar_type(),
              "sparsepai.", op, ": grad_out must be ", at::IntArrayRef(shape),
              " of the input's dtype, got ", grad_out.sizes());
  const int64_t tokens = in_features ? input.numel() / in_features : 0;
  at::Tensor gx, gw, gb;
  if (output_mask[0]) gx = at::empty_like(input, at::MemoryFormat::Contiguous);
  if (output_mask[1]) gw = at::zeros_like(values, at::MemoryFormat::Contiguous);
  if (output_mask[2]) gb = grad_out.reshape({-1, out_f}).sum(0);
  if (!output_mask[0] && !output_mask[1]) return {gx, gw, gb};
  if (tokens == 0 || out_f == 0) {
    if (gx.defined()) gx.zero_();
    return {gx, gw, gb};
  }
  at::Tensor x = input.contiguous(), go = grad_out.contiguous(), v = values.contiguous();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "sparse_linear_backward", [&] {
    core::sparse_linear_backward<scalar_t>(
        tokens, in_features, out_f, x.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(),
        row_ptr.data_ptr<int64_t>(), col.data_ptr<int32_t>(), v.data_ptr<scalar_t>(),
        t_ptr.data_ptr<int64_t>(), t_idx.data_ptr<int32_t>(),
        gx.defined() ? gx.data_ptr<scalar_t>() : nullptr,
        gw.defined() ? gw.data_ptr<scalar_t>() : nullptr, workspace(), AtenPar{});
  });
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsepai, CPU, m) {
  m.impl("sparse_conv2d", &sparse_conv2d_cpu);
  m.impl("sparse_conv2d_backward", &sparse_conv2d_backward_cpu);
  m.impl("sparse_linear", &sparse_linear_cpu);
  m.impl("sparse_linear_backward", &sparse_linear_backward_cpu);
}

}  // namespace sparsepai
