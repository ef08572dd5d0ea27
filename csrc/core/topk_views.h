// Views of the score tensors for the CPU top-k core: strided views with coalesced dims, the
// fixed position chunks every pass is parallelised over, and the key of each element (the
// generic strided loop and the raw-pointer FastKey of the vectorised blocks). Torch-free.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "radix_keys.h"

namespace sparsepai {
namespace core {

constexpr int kMaxDims = 16;
// Positions per chunk. A position inside a chunk fits a uint16_t, which the fused mask pass
// (topk_fused.h) uses to store its candidates' positions in two bytes.
constexpr int64_t kChunk = int64_t(1) << 16;

// A strided tensor, its dims coalesced (see coalesce()). Strides are in elements.
struct TensorView {
  const void* data = nullptr;
  Dtype dtype = Dtype::kF32;
  int64_t numel = 0;
  int ndim = 1;
  int64_t sizes[kMaxDims] = {0};
  int64_t strides[kMaxDims] = {1};
  bool abs = false;  // rank |x|: every key is computed with the element's sign bit cleared

  bool contiguous() const { return ndim == 1 && (strides[0] == 1 || sizes[0] <= 1); }
};

// Merges dims that are laid out back to back, drops size-1 dims. Returns false when more than
// kMaxDims dims remain (the caller then hands over a contiguous copy).
inline bool coalesce(TensorView& v, int ndim, const int64_t* sizes, const int64_t* strides) {
  int64_t s[64], st[64];
  int n = 0;
  for (int d = 0; d < ndim; ++d) {
    if (sizes[d] == 1) continue;
    if (n > 0 && st[n - 1] == strides[d] * sizes[d]) {
      s[n - 1] *= sizes[d];
      st[n - 1] = strides[d];
    } else {
      if (n >= 64) return false;
      s[n] = sizes[d];
      st[n] = strides[d];
      ++n;
    }
  }
  if (n == 0) {
    s[0] = 1;
    st[0] = 1;
    n = 1;
  }
  if (n > kMaxDims) return false;
  v.ndim = n;
  for (int d = 0; d < n; ++d) {
    v.sizes[d] = s[d];
    v.strides[d] = st[d];
  }
  return true;
}

struct Chunk {
  int64_t tensor;
  int64_t begin;  // flat row-major index inside the tensor
  int64_t end;
};

inline std::vector<Chunk> make_chunks(const std::vector<TensorView>& ts) {
  std::vector<Chunk> out;
  for (size_t t = 0; t < ts.size(); ++t)
    for (int64_t b = 0; b < ts[t].numel; b += kChunk)
      out.push_back({int64_t(t), b, std::min(ts[t].numel, b + kChunk)});
  return out;
}

// Calls f(flat_index, element_offset) for flat indices [begin, end) in row-major order.
template <class F>
inline void for_each_offset(const TensorView& v, int64_t begin, int64_t end, F&& f) {
  if (v.contiguous()) {
    for (int64_t i = begin; i < end; ++i) f(i, i);
    return;
  }
  int64_t idx[kMaxDims];
  int64_t rem = begin, off = 0;
  for (int d = v.ndim - 1; d >= 0; --d) {
    idx[d] = rem % v.sizes[d];
    rem /= v.sizes[d];
    off += idx[d] * v.strides[d];
  }
  const int last = v.ndim - 1;
  for (int64_t i = begin; i < end; ++i) {
    f(i, off);
    // odometer increment
    int d = last;
    ++idx[d];
    off += v.strides[d];
    while (idx[d] == v.sizes[d] && d > 0) {
      off -= idx[d] * v.strides[d];
      idx[d] = 0;
      --d;
      ++idx[d];
      off += v.strides[d];
    }
  }
}

// Storage of each dtype, for loops that know the source dtype at compile time.
template <Dtype D>
struct Storage;
template <>
struct Storage<Dtype::kF16> {
  using T = uint16_t;
};
template <>
struct Storage<Dtype::kBF16> {
  using T = uint16_t;
};
template <>
struct Storage<Dtype::kF32> {
  using T = uint32_t;
};
template <>
struct Storage<Dtype::kF64> {
  using T = uint64_t;
};

template <class F>
inline void dispatch_dtype(Dtype d, F&& f) {
  switch (d) {
    case Dtype::kF16:
      f(std::integral_constant<Dtype, Dtype::kF16>{});
      break;
    case Dtype::kBF16:
      f(std::integral_constant<Dtype, Dtype::kBF16>{});
      break;
    case Dtype::kF32:
      f(std::integral_constant<Dtype, Dtype::kF32>{});
      break;
    default:
      f(std::integral_constant<Dtype, Dtype::kF64>{});
  }
}

// AND mask of a raw element: all ones, or everything but the sign bit for |x|.
template <class T>
inline T sign_keep(bool abs) {
  return abs ? T(~T(T(1) << (sizeof(T) * 8 - 1))) : T(~T(0));
}

// Key of a stored element of compile-time dtype Src in key format Fmt (`keep`: sign_keep).
template <class Fmt, Dtype Src>
inline typename Fmt::Bits key_of(typename Storage<Src>::T raw, int nan_mode, bool largest,
                                 typename Storage<Src>::T keep) {
  using B = typename Fmt::Bits;
  raw = typename Storage<Src>::T(raw & keep);
  if constexpr (std::is_same<B, typename Storage<Src>::T>::value) {
    return order_key<Fmt>(raw, nan_mode, largest);
  } else {
    typename Storage<Src>::T tmp = raw;
    return load_key<Fmt>(&tmp, 0, Src, nan_mode, largest);
  }
}

// Hot loops for the common case (contiguous, dtype == key format), written as plain loops over
// raw pointers so that the compiler vectorises them.
template <class Fmt>
struct FastKey {
  using B = typename Fmt::Bits;
  using S = std::make_signed_t<B>;
  B nk, inv, keep = B(~B(0));
  FastKey(int nan_mode, bool largest)
      : nk(nan_mode == kNanHigh ? B(~B(0)) : B(0)), inv(largest ? B(0) : B(~B(0))) {}
  // The same keys for a view: of |x| when the view asks for it.
  FastKey of(const TensorView& v) const {
    FastKey f = *this;
    f.keep = sign_keep<B>(v.abs);
    return f;
  }
  inline B operator()(B bits) const {
    bits = B(bits & keep);
    const B flip = B(B(S(bits) >> (Fmt::kBits - 1)) | Fmt::kSign);
    const B abs = B(bits & B(~Fmt::kSign));
    B key = B(bits ^ flip);
    key = abs == 0 ? B(Fmt::kSign) : key;
    key = abs > Fmt::kAbsInf ? nk : key;
    return B(key ^ inv);
  }
};

template <class Fmt>
inline bool fast_path(const TensorView& v) {
  return v.contiguous() && v.dtype == Fmt::kDtype;
}

// Calls f(flat_index, key) over a chunk, with the dtype dispatch hoisted out of the loop.
template <class Fmt, class F>
inline void for_each_key(const TensorView& v, int64_t begin, int64_t end, int nan_mode,
                         bool largest, F&& f) {
  dispatch_dtype(v.dtype, [&](auto src) {
    constexpr Dtype S = decltype(src)::value;
    using T = typename Storage<S>::T;
    const T* p = static_cast<const T*>(v.data);
    const T keep = sign_keep<T>(v.abs);
    for_each_offset(v, begin, end, [&](int64_t i, int64_t off) {
      f(i, key_of<Fmt, S>(p[off], nan_mode, largest, keep));
    });
  });
}

// Key format dispatch: calls f(Fmt{}) for the common key format of a call.
template <class F>
inline void dispatch_key_format(Dtype common, F&& f) {
  switch (common) {
    case Dtype::kF16:
      f(Fp16Fmt{});
      break;
    case Dtype::kBF16:
      f(Bf16Fmt{});
      break;
    case Dtype::kF32:
      f(Fp32Fmt{});
      break;
    default:
      f(Fp64Fmt{});
  }
}

inline Dtype common_dtype(const std::vector<TensorView>& ts) {
  if (ts.empty()) return Dtype::kF32;
  Dtype d = ts[0].dtype;
  bool mixed = false, any64 = false;
  for (const auto& v : ts) {
    mixed |= v.dtype != d;
    any64 |= v.dtype == Dtype::kF64;
  }
  if (!mixed) return d;
  return any64 ? Dtype::kF64 : Dtype::kF32;
}

}  // namespace core
}  // namespace sparsepai
