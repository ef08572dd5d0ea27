// Order-preserving integer keys for floating-point scores, shared by the CPU, CUDA and
// CMake-tested code. Torch-free: everything here works on raw bits.
//
// A key is an unsigned integer as wide as the float format. Keys compare like the values they
// come from: -0.0 and +0.0 map to the same key (they tie), NaN maps below every number
// (nan_mode "low") or above every number (nan_mode "high"). Selecting the k *smallest* values is
// selecting the k largest inverted keys, so every algorithm only ever looks for the k largest.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SP_HD __host__ __device__ __forceinline__
#else
#define SP_HD inline
#endif

namespace sparsepai {
namespace core {

enum NanMode : int { kNanError = 0, kNanLow = 1, kNanHigh = 2 };
// What is ranked (the ops' `transform` argument): the values, or their magnitudes |x|.
enum Transform : int { kTransformNone = 0, kTransformAbs = 1 };

// Dtypes of the score tensors, as the core sees them.
enum class Dtype : int { kF16 = 0, kBF16 = 1, kF32 = 2, kF64 = 3 };

// Storage formats of the supported dtypes. kAbsInf is the bit pattern of +inf; anything with a
// larger magnitude pattern is a NaN.
struct Fp16Fmt {
  using Bits = uint16_t;
  static constexpr Dtype kDtype = Dtype::kF16;
  static constexpr int kBits = 16;
  static constexpr Bits kSign = 0x8000u;
  static constexpr Bits kAbsInf = 0x7C00u;
};
struct Bf16Fmt {
  using Bits = uint16_t;
  static constexpr Dtype kDtype = Dtype::kBF16;
  static constexpr int kBits = 16;
  static constexpr Bits kSign = 0x8000u;
  static constexpr Bits kAbsInf = 0x7F80u;
};
struct Fp32Fmt {
  using Bits = uint32_t;
  static constexpr Dtype kDtype = Dtype::kF32;
  static constexpr int kBits = 32;
  static constexpr Bits kSign = 0x80000000u;
  static constexpr Bits kAbsInf = 0x7F800000u;
};
struct Fp64Fmt {
  using Bits = uint64_t;
  static constexpr Dtype kDtype = Dtype::kF64;
  static constexpr int kBits = 64;
  static constexpr Bits kSign = 0x8000000000000000ull;
  static constexpr Bits kAbsInf = 0x7FF0000000000000ull;
};

template <class Fmt>
SP_HD bool is_nan_bits(typename Fmt::Bits bits) {
  return typename Fmt::Bits(bits & typename Fmt::Bits(~Fmt::kSign)) > Fmt::kAbsInf;
}

// Key of a value given by its bits. `largest == false` inverts the key so that the k smallest
// values become the k largest keys.
template <class Fmt>
SP_HD typename Fmt::Bits order_key(typename Fmt::Bits bits, int nan_mode, bool largest) {
  using B = typename Fmt::Bits;
  const B abs = B(bits & B(~Fmt::kSign));
  B key;
  if (abs > Fmt::kAbsInf) {
    key = nan_mode == kNanHigh ? B(~B(0)) : B(0);
  } else if (abs == 0) {
    key = Fmt::kSign;  // +0.0 and -0.0 share one key: they tie
  } else {
    key = (bits & Fmt::kSign) ? B(~bits) : B(bits | Fmt::kSign);
  }
  return largest ? key : B(~key);
}

// Inverse of order_key for non-NaN keys; zero comes back as +0.0.
template <class Fmt>
SP_HD typename Fmt::Bits key_to_bits(typename Fmt::Bits key, bool largest) {
  using B = typename Fmt::Bits;
  if (!largest) key = B(~key);
  return (key & Fmt::kSign) ? B(key & B(~Fmt::kSign)) : B(~key);
}

// True when a key is the NaN key of the given mode (only meaningful for modes low/high).
template <class Fmt>
SP_HD bool is_nan_key(typename Fmt::Bits key, int nan_mode, bool largest) {
  using B = typename Fmt::Bits;
  if (!largest) key = B(~key);
  if (nan_mode == kNanHigh) return key == B(~B(0));
  if (nan_mode == kNanLow) return key == B(0);
  return false;
}

// Radix digit helpers. A pass looks at `bits` digits starting at bit `shift`, and only at keys
// whose bits above the digit equal `prefix`. Written so that shifts by the full key width (which
// are undefined behaviour in C++) never happen.
template <class Key>
SP_HD Key high_part(Key key, int from_bit) {
  return from_bit >= int(sizeof(Key) * 8) ? Key(0) : Key(key >> from_bit);
}

template <class Key>
SP_HD uint32_t digit_of(Key key, int shift, int bits) {
  return uint32_t(Key(key >> shift) & Key((Key(1) << bits) - 1));
}

// Half-precision bits to float, exact (every fp16/bf16 value is a float32 value).
SP_HD float bf16_bits_to_float(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

SP_HD float fp16_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  uint32_t u;
  if (exp == 0x1Fu) {
    u = sign | 0x7F800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {
    // subnormal: normalise the mantissa
    int e = -1;
    do {
      ++e;
      man <<= 1;
    } while ((man & 0x400u) == 0);
    u = sign | (uint32_t(112 - e) << 23) | ((man & 0x3FFu) << 13);
  }
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

SP_HD uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}

SP_HD uint64_t double_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof(u));
  return u;
}


// The key format every tensor of a call is compared in: the dtype itself when all tensors share
// it, else float32 (fp16/bf16/fp32 mixes) or float64. Conversions are exact, so order is kept.
inline int key_bits_for(Dtype common) {
  switch (common) {
    case Dtype::kF16:
    case Dtype::kBF16:
      return 16;
    case Dtype::kF32:
      return 32;
    default:
      return 64;
  }
}

// Key of element `i` of a buffer of dtype `src` in the key format of `Fmt`.
template <class Fmt>
SP_HD typename Fmt::Bits load_key(const void* data, int64_t i, Dtype src, int nan_mode,
                                  bool largest);

template <>
SP_HD uint16_t load_key<Fp16Fmt>(const void* data, int64_t i, Dtype, int nan_mode, bool largest) {
  return order_key<Fp16Fmt>(static_cast<const uint16_t*>(data)[i], nan_mode, largest);
}
template <>
SP_HD uint16_t load_key<Bf16Fmt>(const void* data, int64_t i, Dtype, int nan_mode, bool largest) {
  return order_key<Bf16Fmt>(static_cast<const uint16_t*>(data)[i], nan_mode, largest);
}
template <>
SP_HD uint32_t load_key<Fp32Fmt>(const void* data, int64_t i, Dtype src, int nan_mode,
                                 bool largest) {
  uint32_t bits;
  switch (src) {
    case Dtype::kF16:
      bits = float_bits(fp16_bits_to_float(static_cast<const uint16_t*>(data)[i]));
      break;
    case Dtype::kBF16:
      bits = uint32_t(static_cast<const uint16_t*>(data)[i]) << 16;
      break;
    default:
      bits = static_cast<const uint32_t*>(data)[i];
  }
  return order_key<Fp32Fmt>(bits, nan_mode, largest);
}
template <>
SP_HD uint64_t load_key<Fp64Fmt>(const void* data, int64_t i, Dtype src, int nan_mode,
                                 bool largest) {
  uint64_t bits;
  switch (src) {
    case Dtype::kF16:
      bits = double_bits(double(fp16_bits_to_float(static_cast<const uint16_t*>(data)[i])));
      break;
    case Dtype::kBF16:
      bits = double_bits(double(bf16_bits_to_float(static_cast<const uint16_t*>(data)[i])));
      break;
    case Dtype::kF32: {
      float f;
      memcpy(&f, static_cast<const char*>(data) + i * 4, 4);
      bits = double_bits(double(f));
      break;
    }
    default:
      bits = static_cast<const uint64_t*>(data)[i];
  }
  return order_key<Fp64Fmt>(bits, nan_mode, largest);
}

// Key of element `i` as load_key, of |x| when `abs`: the key of |x| is the key of x with the
// sign bit cleared first (NaN stays NaN, -0.0 becomes +0.0), so no |x| tensor is ever made.
template <class Fmt>
SP_HD typename Fmt::Bits load_key_abs(const void* data, int64_t i, Dtype src, int nan_mode,
                                      bool largest, bool abs) {
  switch (src) {
    case Dtype::kF16:
    case Dtype::kBF16: {
      const uint16_t r =
          uint16_t(static_cast<const uint16_t*>(data)[i] & (abs ? 0x7FFFu : 0xFFFFu));
      return load_key<Fmt>(&r, 0, src, nan_mode, largest);
    }
    case Dtype::kF32: {
      const uint32_t r = static_cast<const uint32_t*>(data)[i] & (abs ? 0x7FFFFFFFu : ~0u);
      return load_key<Fmt>(&r, 0, src, nan_mode, largest);
    }
    default: {
      const uint64_t r = static_cast<const uint64_t*>(data)[i] & (abs ? ~Fp64Fmt::kSign : ~0ull);
      return load_key<Fmt>(&r, 0, src, nan_mode, largest);
    }
  }
}

// NaN test on element `i` of a buffer of dtype `src`.
SP_HD bool load_is_nan(const void* data, int64_t i, Dtype src) {
  switch (src) {
    case Dtype::kF16:
      return is_nan_bits<Fp16Fmt>(static_cast<const uint16_t*>(data)[i]);
    case Dtype::kBF16:
      return is_nan_bits<Bf16Fmt>(static_cast<const uint16_t*>(data)[i]);
    case Dtype::kF32:
      return is_nan_bits<Fp32Fmt>(static_cast<const uint32_t*>(data)[i]);
    default:
      return is_nan_bits<Fp64Fmt>(static_cast<const uint64_t*>(data)[i]);
  }
}

}  // namespace core
}  // namespace sparsepai
