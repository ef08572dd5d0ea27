// CUDA implementations of the top-k ops: the same algorithm as the CPU core (radix select over
// order-preserving keys, then a mask pass with a position-ordered tie fill), over a device table
// of tensor views (no concatenation, no copy of the scores). The key transform and digit logic
// are the __host__ __device__ functions of csrc/core/radix_keys.h, unit-tested on the CPU.
//
// Radix digits are 11 bits (2048 bins of 32-bit shared-memory counters per block, flushed to
// 64-bit global counters), so float32 takes 3 histogram passes, 16-bit dtypes 2, float64 6.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <torch/library.h>

#include "../topk_common.h"

namespace sparsepai {
namespace {

using core::Chunk;
using core::TensorView;

constexpr int kThreads = 256;
constexpr int kDigitBits = 11;
constexpr int kSharedBinsMax = 4096;

__device__ __forceinline__ int64_t imin64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ int64_t elem_offset(const TensorView& v, int64_t i) {
  if (v.ndim == 1) return i * v.strides[0];
  int64_t off = 0;
  for (int d = v.ndim - 1; d >= 0; --d) {
    const int64_t s = v.sizes[d];
    off += (i % s) * v.strides[d];
    i /= s;
  }
  return off;
}

template <class Fmt>
__device__ __forceinline__ typename Fmt::Bits key_at(const TensorView& v, int64_t i, int nan_mode,
                                                     bool largest) {
  return core::load_key_abs<Fmt>(v.data, elem_offset(v, i), v.dtype, nan_mode, largest, v.abs);
}

// Digit histogram of keys whose bits above shift + bits equal prefix. Block b handles chunk b.
template <class Fmt>
__global__ void hist_kernel(const TensorView* __restrict__ views, const Chunk* __restrict__ chunks,
                            int shift, int bits, typename Fmt::Bits prefix, int nan_mode,
                            bool largest, unsigned long long* __restrict__ hist) {
  using B = typename Fmt::Bits;
  __shared__ unsigned int sh[kSharedBinsMax];
  const int nbins = 1 << bits;
  const bool shared = nbins <= kSharedBinsMax;
  if (shared)
    for (int i = threadIdx.x; i < nbins; i += blockDim.x) sh[i] = 0;
  __syncthreads();
  const Chunk ch = chunks[blockIdx.x];
  const TensorView& v = views[ch.tensor];
  const int top = shift + bits;
  for (int64_t i = ch.begin + threadIdx.x; i < ch.end; i += blockDim.x) {
    const B key = key_at<Fmt>(v, i, nan_mode, largest);
    if (core::high_part<B>(key, top) != prefix) continue;
    const uint32_t d = core::digit_of<B>(key, shift, bits);
    if (shared)
      atomicAdd(&sh[d], 1u);
    else
      atomicAdd(&hist[d], 1ull);
  }
  __syncthreads();
  if (shared)
    for (int i = threadIdx.x; i < nbins; i += blockDim.x)
      if (sh[i]) atomicAdd(&hist[i], (unsigned long long)sh[i]);
}

// masks = key > T; ties[chunk] = number of keys == T in the chunk.
template <class Fmt>
__global__ void mask_kernel(const TensorView* __restrict__ views, const Chunk* __restrict__ chunks,
                            bool* const* __restrict__ masks, typename Fmt::Bits T, int nan_mode,
                            bool largest, long long* __restrict__ ties) {
  using BlockReduce = cub::BlockReduce<long long, kThreads>;
  __shared__ typename BlockReduce::TempStorage tmp;
  const Chunk ch = chunks[blockIdx.x];
  const TensorView& v = views[ch.tensor];
  bool* m = masks[ch.tensor];
  long long eq = 0;
  for (int64_t i = ch.begin + threadIdx.x; i < ch.end; i += blockDim.x) {
    const auto key = key_at<Fmt>(v, i, nan_mode, largest);
    m[i] = key > T;
    eq += key == T;
  }
  const long long total = BlockReduce(tmp).Sum(eq);
  if (threadIdx.x == 0) ties[blockIdx.x] = total;
}

// Switches on the first allow[j] ties of chunk todo[j], in position order: each thread owns a
// contiguous segment, and a block-wide exclusive scan of the per-segment tie counts tells each
// thread how many of the chunk's allowance come before it.
template <class Fmt>
__global__ void tie_fill_kernel(const TensorView* __restrict__ views,
                                const Chunk* __restrict__ chunks, bool* const* __restrict__ masks,
                                typename Fmt::Bits T, int nan_mode, bool largest,
                                const long long* __restrict__ todo,
                                const long long* __restrict__ allow) {
  using BlockScan = cub::BlockScan<long long, kThreads>;
  __shared__ typename BlockScan::TempStorage tmp;
  const Chunk ch = chunks[todo[blockIdx.x]];
  const long long a = allow[blockIdx.x];
  const TensorView& v = views[ch.tensor];
  bool* m = masks[ch.tensor];
  const int64_t len = ch.end - ch.begin;
  const int64_t seg = (len + blockDim.x - 1) / blockDim.x;
  const int64_t b = ch.begin + imin64(len, seg * int64_t(threadIdx.x));
  const int64_t e = ch.begin + imin64(len, seg * int64_t(threadIdx.x + 1));
  long long mine = 0;
  for (int64_t i = b; i < e; ++i) mine += key_at<Fmt>(v, i, nan_mode, largest) == T;
  long long before = 0;
  BlockScan(tmp).ExclusiveSum(mine, before);
  long long left = a - before;
  for (int64_t i = b; i < e && left > 0; ++i)
    if (key_at<Fmt>(v, i, nan_mode, largest) == T) {
      m[i] = true;
      --left;
    }
}

__global__ void nan_kernel(const TensorView* __restrict__ views, const Chunk* __restrict__ chunks,
                           int* __restrict__ has) {
  const Chunk ch = chunks[blockIdx.x];
  const TensorView& v = views[ch.tensor];
  int any = 0;
  for (int64_t i = ch.begin + threadIdx.x; i < ch.end; i += blockDim.x)
    any |= core::load_is_nan(v.data, elem_offset(v, i), v.dtype);
  any = __syncthreads_or(any);
  if (threadIdx.x == 0) has[blockIdx.x] = any;
}

// Device copies of the view and chunk tables of one call.
struct DeviceTables {
  ScoreTable tab;
  std::vector<Chunk> chunks;
  at::Tensor views_dev, chunks_dev;
  const TensorView* views() const {
    return reinterpret_cast<const TensorView*>(views_dev.data_ptr());
  }
  const Chunk* chunk_ptr() const { return reinterpret_cast<const Chunk*>(chunks_dev.data_ptr()); }
  int64_t nchunks() const { return int64_t(chunks.size()); }
};

at::Tensor to_device_bytes(const void* p, size_t n, const at::Device& dev) {
  at::Tensor host = at::empty({int64_t(std::max<size_t>(n, 1))}, at::kByte);
  if (n) std::memcpy(host.data_ptr(), p, n);
  return host.to(dev, /*non_blocking=*/false);
}

DeviceTables make_device_tables(at::TensorList scores, const char* op, int64_t transform = 0) {
  DeviceTables d;
  d.tab = make_table(scores, op, transform);
  d.chunks = core::make_chunks(d.tab.views);
  const at::Device dev = scores[0].device();
  d.views_dev = to_device_bytes(d.tab.views.data(), d.tab.views.size() * sizeof(TensorView), dev);
  d.chunks_dev = to_device_bytes(d.chunks.data(), d.chunks.size() * sizeof(Chunk), dev);
  return d;
}

template <class Fmt>
std::vector<int64_t> device_histogram(const DeviceTables& d, int shift, int bits,
                                      typename Fmt::Bits prefix, int nan_mode, bool largest,
                                      const at::Device& dev) {
  at::Tensor hist = at::zeros({int64_t(1) << bits}, at::TensorOptions().dtype(at::kLong).device(dev));
  if (d.nchunks() > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    hist_kernel<Fmt><<<unsigned(d.nchunks()), kThreads, 0, stream>>>(
        d.views(), d.chunk_ptr(), shift, bits, prefix, nan_mode, largest,
        reinterpret_cast<unsigned long long*>(hist.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor h = hist.cpu();
  return std::vector<int64_t>(h.data_ptr<int64_t>(), h.data_ptr<int64_t>() + h.numel());
}

int64_t device_first_nan(const DeviceTables& d, const at::Device& dev) {
  if (d.nchunks() == 0) return -1;
  at::Tensor has = at::empty({d.nchunks()}, at::TensorOptions().dtype(at::kInt).device(dev));
  nan_kernel<<<unsigned(d.nchunks()), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      d.views(), d.chunk_ptr(), has.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor h = has.cpu();
  for (int64_t c = 0; c < d.nchunks(); ++c)
    if (h.data_ptr<int>()[c]) return d.chunks[size_t(c)].tensor;
  return -1;
}

template <class Fmt>
core::Selection<Fmt> device_select(const DeviceTables& d, int64_t k, int nan_mode, bool largest,
                                   const at::Device& dev) {
  using B = typename Fmt::Bits;
  B prefix = 0;
  int64_t count_gt = 0;
  for (int top = Fmt::kBits; top > 0;) {
    const int bits = std::min(kDigitBits, top);
    const int shift = top - bits;
    auto hist = device_histogram<Fmt>(d, shift, bits, prefix, nan_mode, largest, dev);
    int64_t b = int64_t(hist.size()) - 1;
    for (; b > 0; --b) {
      if (count_gt + hist[size_t(b)] >= k) break;
      count_gt += hist[size_t(b)];
    }
    prefix = B((B(prefix) << bits) | B(b));
    top = shift;
  }
  return {prefix, count_gt, 0};
}

at::Tensor mask_ptr_table(std::vector<at::Tensor>& masks, const at::Device& dev) {
  std::vector<bool*> ptrs;
  for (auto& m : masks) ptrs.push_back(m.numel() ? m.data_ptr<bool>() : nullptr);
  return to_device_bytes(ptrs.data(), ptrs.size() * sizeof(bool*), dev);
}

template <class Fmt>
void device_masks(const DeviceTables& d, std::vector<at::Tensor>& masks, typename Fmt::Bits T,
                  int64_t budget, int nan_mode, bool largest, const at::Device& dev) {
  if (d.nchunks() == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor ptrs = mask_ptr_table(masks, dev);
  bool* const* mp = reinterpret_cast<bool* const*>(ptrs.data_ptr());
  at::Tensor ties = at::empty({d.nchunks()}, at::TensorOptions().dtype(at::kLong).device(dev));
  mask_kernel<Fmt><<<unsigned(d.nchunks()), kThreads, 0, stream>>>(
      d.views(), d.chunk_ptr(), mp, T, nan_mode, largest,
      reinterpret_cast<long long*>(ties.data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  // Allowances in position order, decided on the host (one int64 per chunk).
  at::Tensor th = ties.cpu();
  const int64_t* t = th.data_ptr<int64_t>();
  std::vector<int64_t> todo, allow;
  int64_t left = budget;
  for (int64_t c = 0; c < d.nchunks() && left > 0; ++c) {
    if (t[c] == 0) continue;
    todo.push_back(c);
    allow.push_back(std::min(left, t[c]));
    left -= allow.back();
  }
  if (todo.empty()) return;
  at::Tensor todo_d = to_device_bytes(todo.data(), todo.size() * 8, dev);
  at::Tensor allow_d = to_device_bytes(allow.data(), allow.size() * 8, dev);
  tie_fill_kernel<Fmt><<<unsigned(todo.size()), kThreads, 0, stream>>>(
      d.views(), d.chunk_ptr(), mp, T, nan_mode, largest,
      reinterpret_cast<const long long*>(todo_d.data_ptr()),
      reinterpret_cast<const long long*>(allow_d.data_ptr()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::vector<at::Tensor> empty_masks(at::TensorList scores) {
  std::vector<at::Tensor> masks;
  for (const auto& s : scores)
    masks.push_back(at::empty(s.sizes(), s.options().dtype(at::kBool).memory_format(
                                             at::MemoryFormat::Contiguous)));
  return masks;
}

std::tuple<at::Tensor, std::vector<at::Tensor>> run_topk(at::TensorList scores, int64_t k,
                                                         bool largest, int64_t nan,
                                                         int64_t transform, bool want_masks,
                                                         const char* op) {
  check_nan_mode(nan, op);
  TORCH_CHECK_VALUE(!scores.empty(), "sparsepai.", op, ": needs at least one tensor");
  const at::Device dev = scores[0].device();
  c10::cuda::CUDAGuard guard(dev);
  DeviceTables d = make_device_tables(scores, op, transform);
  check_k(k, d.tab.numel, op);
  if (nan == core::kNanError) {
    const int64_t t = device_first_nan(d, dev);
    TORCH_CHECK_VALUE(t < 0, "sparsepai.", op, ": scores[", t,
                      "] contains NaN; pass nan='low' or nan='high' to rank NaN scores");
  }
  std::vector<at::Tensor> masks;
  if (want_masks) masks = empty_masks(scores);
  at::Tensor thr;
  core::dispatch_key_format(d.tab.common, [&](auto fmt) {
    using Fmt = decltype(fmt);
    if (k == 0) {
      for (auto& m : masks) m.zero_();
      thr = threshold_tensor<Fmt>(0, false, largest, int(nan), d.tab.common);
      return;
    }
    auto sel = device_select<Fmt>(d, k, int(nan), largest, dev);
    if (want_masks)
      device_masks<Fmt>(d, masks, sel.key, k - sel.count_gt, int(nan), largest, dev);
    thr = threshold_tensor<Fmt>(sel.key, true, largest, int(nan), d.tab.common);
  });
  return {thr.to(dev), masks};
}

std::tuple<at::Tensor, std::vector<at::Tensor>> topk_mask_cuda(at::TensorList scores, int64_t k,
                                                               bool largest, int64_t nan,
                                                               int64_t transform) {
  return run_topk(scores, k, largest, nan, transform, true, "topk_mask");
}

at::Tensor kth_largest_cuda(at::TensorList scores, int64_t k, bool largest, int64_t nan,
                            int64_t transform) {
  return std::get<0>(run_topk(scores, k, largest, nan, transform, false, "kth_largest"));
}

at::Tensor key_histogram_cuda(at::TensorList scores, int64_t shift, int64_t bits, int64_t prefix,
                              bool largest, int64_t nan, int64_t transform) {
  check_nan_mode(nan, "key_histogram");
  const at::Device dev = scores[0].device();
  c10::cuda::CUDAGuard guard(dev);
  DeviceTables d = make_device_tables(scores, "key_histogram", transform);
  const int kb = core::key_bits_for(d.tab.common);
  TORCH_CHECK_VALUE(bits >= 1 && bits <= 16 && shift >= 0 && shift + bits <= kb,
                    "sparsepai.key_histogram: need 1 <= bits <= 16 and 0 <= shift, shift + bits <= ",
                    kb, "; got shift=", shift, ", bits=", bits);
  std::vector<int64_t> h;
  core::dispatch_key_format(d.tab.common, [&](auto fmt) {
    using Fmt = decltype(fmt);
    using B = typename Fmt::Bits;
    h = device_histogram<Fmt>(d, int(shift), int(bits), B(uint64_t(prefix)), int(nan), largest, dev);
  });
  return at::tensor(h, at::kLong).to(dev);
}

std::vector<at::Tensor> threshold_masks_cuda(at::TensorList scores, int64_t threshold_key,
                                             int64_t budget, bool largest, int64_t nan,
                                             int64_t transform) {
  check_nan_mode(nan, "threshold_masks");
  TORCH_CHECK_VALUE(budget >= 0, "sparsepai.threshold_masks: budget must be >= 0, got ", budget);
  const at::Device dev = scores[0].device();
  c10::cuda::CUDAGuard guard(dev);
  DeviceTables d = make_device_tables(scores, "threshold_masks", transform);
  std::vector<at::Tensor> masks = empty_masks(scores);
  core::dispatch_key_format(d.tab.common, [&](auto fmt) {
    using Fmt = decltype(fmt);
    using B = typename Fmt::Bits;
    device_masks<Fmt>(d, masks, B(uint64_t(threshold_key)), budget, int(nan), largest, dev);
  });
  return masks;
}

at::Tensor first_nan_cuda(at::TensorList scores) {
  const at::Device dev = scores[0].device();
  c10::cuda::CUDAGuard guard(dev);
  DeviceTables d = make_device_tables(scores, "first_nan");
  return at::scalar_tensor(device_first_nan(d, dev), at::kLong).to(dev);
}

}  // namespace

TORCH_LIBRARY_IMPL(sparsepai, CUDA, m) {
  m.impl("topk_mask", &topk_mask_cuda);
  m.impl("kth_largest", &kth_largest_cuda);
  m.impl("key_histogram", &key_histogram_cuda);
  m.impl("threshold_masks", &threshold_masks_cuda);
  m.impl("first_nan", &first_nan_cuda);
}

}  // namespace sparsepai
