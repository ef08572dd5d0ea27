// CPU channel-sparse convolution: gather the kept input channels, run the native convolution
// (oneDNN) on the narrow problem, scatter the computed channels into the wide output. The
// gather and scatter are skipped when an index list is the identity, which is the common case
// in a slimmed network (only the branch end that writes into a wider residual stream scatters).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace {

// The index list must be int64, 1-d, in [0, bound), and (for scatters) free of duplicates.
void check_index(const at::Tensor& idx, int64_t bound, bool unique, const char* arg) {
  TORCH_CHECK(idx.scalar_type() == at::kLong && idx.dim() == 1,
              "channel_sparse_conv2d: ", arg, " must be a 1-d int64 tensor, got ",
              idx.scalar_type(), " with ", idx.dim(), " dims");
  TORCH_CHECK(idx.device().is_cpu(), "channel_sparse_conv2d: ", arg, " must be on the CPU");
  auto c = idx.contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  const int64_t n = c.numel();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(p[i] >= 0 && p[i] < bound, "channel_sparse_conv2d: ", arg, "[", i, "] = ", p[i],
                " is outside [0, ", bound, ")");
  if (unique) {
    std::vector<int64_t> v(p, p + n);
    std::sort(v.begin(), v.end());
    TORCH_CHECK(std::adjacent_find(v.begin(), v.end()) == v.end(),
                "channel_sparse_conv2d: ", arg, " has duplicate channels");
  }
}

bool is_identity(const at::Tensor& idx, int64_t n) {
  if (idx.numel() != n) return false;
  auto c = idx.contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    if (p[i] != i) return false;
  return true;
}

void check_common(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& in_idx,
                  const at::Tensor& out_idx) {
  TORCH_CHECK(input.dim() == 4, "channel_sparse_conv2d: input must be (N, C, H, W), got ",
              input.dim(), " dims");
  TORCH_CHECK(weight.dim() == 4, "channel_sparse_conv2d: weight must be (O, I, kh, kw), got ",
              weight.dim(), " dims");
  TORCH_CHECK(input.scalar_type() == weight.scalar_type(),
              "channel_sparse_conv2d: input (", input.scalar_type(), ") and weight (",
              weight.scalar_type(), ") dtypes differ");
  TORCH_CHECK(weight.size(1) == in_idx.numel(), "channel_sparse_conv2d: weight has ",
              weight.size(1), " input channels, in_idx ", in_idx.numel());
  TORCH_CHECK(weight.size(0) == out_idx.numel(), "channel_sparse_conv2d: weight has ",
              weight.size(0), " output channels, out_idx ", out_idx.numel());
  check_index(in_idx, input.size(1), false, "in_idx");
}

at::Tensor gather(const at::Tensor& input, const at::Tensor& in_idx) {
  return is_identity(in_idx, input.size(1)) ? input : input.index_select(1, in_idx);
}

at::Tensor channel_sparse_conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias,
                                     const at::Tensor& in_idx, const at::Tensor& out_idx,
                                     int64_t out_channels, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation) {
  check_common(input, weight, in_idx, out_idx);
  check_index(out_idx, out_channels, true, "out_idx");
  if (bias.has_value() && bias->defined())
    TORCH_CHECK(bias->dim() == 1 && bias->numel() == weight.size(0),
                "channel_sparse_conv2d: bias must have ", weight.size(0), " entries");
  at::Tensor y = at::convolution(gather(input, in_idx), weight, bias, stride, padding, dilation,
                                 /*transposed=*/false, /*output_padding=*/{0, 0}, /*groups=*/1);
  if (is_identity(out_idx, out_channels)) return y;
  at::Tensor out = at::zeros({y.size(0), out_channels, y.size(2), y.size(3)}, y.options());
  out.index_copy_(1, out_idx, y);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_sparse_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& in_idx, const at::Tensor& out_idx, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, std::array<bool, 3> output_mask) {
  check_common(input, weight, in_idx, out_idx);
  check_index(out_idx, grad_out.size(1), true, "out_idx");
  const at::Tensor g = is_identity(out_idx, grad_out.size(1)) ? grad_out
                                                               : grad_out.index_select(1, out_idx);
  const at::Tensor xg = gather(input, in_idx);
  auto [gx, gw, gb] = at::convolution_backward(
      g.contiguous(), xg, weight, at::OptionalIntArrayRef({weight.size(0)}), stride, padding,
      dilation, /*transposed=*/false, /*output_padding=*/{0, 0}, /*groups=*/1, output_mask);
  at::Tensor grad_input;
  if (output_mask[0]) {
    if (is_identity(in_idx, input.size(1))) {
      grad_input = gx;
    } else {
      // index_add: an input channel read twice receives both gradients
      grad_input = at::zeros_like(input).index_add_(1, in_idx, gx);
    }
  }
  return {grad_input, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsepai, CPU, m) {
  m.impl("channel_sparse_conv2d", &channel_sparse_conv2d_cpu);
  m.impl("channel_sparse_conv2d_backward", &channel_sparse_conv2d_backward_cpu);
}
