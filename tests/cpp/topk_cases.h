// Score tables and the stable-sort oracle shared by the C++ tests of the top-k core.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"
#include "core/topk_fused.h"

using namespace sparsepai::core;

inline int next_case_id() {
  static int id = 0;
  return ++id;
}

struct Case {
  const int id = next_case_id();
  std::vector<std::vector<uint8_t>> storage;  // raw bytes per tensor
  std::vector<TensorView> views;
  int64_t n = 0;
};

inline TensorView view_of(const void* data, Dtype dt, std::vector<int64_t> sizes,
                          std::vector<int64_t> strides) {
  TensorView v;
  v.data = data;
  v.dtype = dt;
  v.numel = 1;
  for (auto s : sizes) v.numel *= s;
  const bool ok = coalesce(v, int(sizes.size()), sizes.data(), strides.data());
  CHECK(ok);
  return v;
}

// float32 tensors, optionally viewed transposed (a non-contiguous 2-D view)
inline void add_f32(Case& c, const std::vector<float>& vals, int64_t rows, bool transposed) {
  c.storage.emplace_back(vals.size() * 4);
  std::memcpy(c.storage.back().data(), vals.data(), vals.size() * 4);
  const int64_t cols = int64_t(vals.size()) / rows;
  if (transposed)
    c.views.push_back(view_of(c.storage.back().data(), Dtype::kF32, {cols, rows}, {1, cols}));
  else
    c.views.push_back(view_of(c.storage.back().data(), Dtype::kF32, {rows, cols}, {cols, 1}));
  c.n += int64_t(vals.size());
}

inline void add_f64(Case& c, const std::vector<double>& vals) {
  c.storage.emplace_back(vals.size() * 8);
  std::memcpy(c.storage.back().data(), vals.data(), vals.size() * 8);
  c.views.push_back(view_of(c.storage.back().data(), Dtype::kF64, {int64_t(vals.size())}, {1}));
  c.n += int64_t(vals.size());
}

inline void add_bf16(Case& c, const std::vector<float>& vals) {
  std::vector<uint16_t> b(vals.size());
  for (size_t i = 0; i < vals.size(); ++i) b[i] = uint16_t(float_bits(vals[i]) >> 16);
  c.storage.emplace_back(b.size() * 2);
  std::memcpy(c.storage.back().data(), b.data(), b.size() * 2);
  c.views.push_back(view_of(c.storage.back().data(), Dtype::kBF16, {int64_t(b.size())}, {1}));
  c.n += int64_t(b.size());
}

// Value of element i (row-major) of view v, widened to double; NaN stays NaN.
inline double value_at(const TensorView& v, int64_t i) {
  int64_t off = 0, rem = i;
  for (int d = v.ndim - 1; d >= 0; --d) {
    off += (rem % v.sizes[d]) * v.strides[d];
    rem /= v.sizes[d];
  }
  switch (v.dtype) {
    case Dtype::kF32: {
      float f;
      std::memcpy(&f, static_cast<const char*>(v.data) + off * 4, 4);
      return f;
    }
    case Dtype::kF64:
      return static_cast<const double*>(v.data)[off];
    default:
      return bf16_bits_to_float(static_cast<const uint16_t*>(v.data)[off]);
  }
}

// Oracle masks: stable sort of (rank class, value) in flat position order. The sorted order is
// cached per (case, nan mode, direction) since every k reuses it.
struct E {
  int cls;
  double v;
  int64_t t, i;
};

inline std::vector<std::vector<uint8_t>> oracle(const Case& c, int64_t k, int nan_mode,
                                                bool largest) {
  static int cached_case = 0;
  static int cached_mode = -1;
  static bool cached_largest = false;
  static std::vector<E> all;
  if (cached_case != c.id || cached_mode != nan_mode || cached_largest != largest ) {
    cached_case = c.id;
    cached_mode = nan_mode;
    cached_largest = largest;
    all.clear();
    for (size_t t = 0; t < c.views.size(); ++t)
      for (int64_t i = 0; i < c.views[t].numel; ++i) {
        double v = value_at(c.views[t], i);
        int cls = 0;
        if (std::isnan(v)) {
          cls = nan_mode == kNanHigh ? 1 : -1;
          v = 0;
        }
        all.push_back({cls, v + 0.0, int64_t(t), i});
      }
    std::stable_sort(all.begin(), all.end(), [&](const E& a, const E& b) {
      if (a.cls != b.cls) return largest ? a.cls > b.cls : a.cls < b.cls;
      return largest ? a.v > b.v : a.v < b.v;
    });
  }
  std::vector<std::vector<uint8_t>> m(c.views.size());
  for (size_t t = 0; t < c.views.size(); ++t) m[t].assign(size_t(c.views[t].numel), 0);
  for (int64_t j = 0; j < k; ++j) m[size_t(all[size_t(j)].t)][size_t(all[size_t(j)].i)] = 1;
  return m;
}

// Mask buffers with a guard byte past each end; 2 = never written.
struct MaskBuffers {
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<bool*> ptrs;
  explicit MaskBuffers(const Case& c) : bytes(c.views.size()) {
    for (size_t t = 0; t < c.views.size(); ++t) {
      bytes[t].assign(size_t(c.views[t].numel) + 1, 2);
      ptrs.push_back(reinterpret_cast<bool*>(bytes[t].data()));
    }
  }
  // Every mask byte as the oracle says, k kept, nothing written past the end.
  bool matches(const std::vector<std::vector<uint8_t>>& want, int64_t k) const {
    int64_t kept = 0;
    bool same = true;
    for (size_t t = 0; t < bytes.size(); ++t) {
      same &= bytes[t].back() == 2;
      for (size_t i = 0; i < want[t].size(); ++i) {
        same &= bytes[t][i] == want[t][i];
        kept += bytes[t][i] == 1;
      }
    }
    return same && kept == k;
  }
};

inline std::vector<float> normal(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

inline std::vector<float> ints(size_t n, uint64_t seed, int lo, int hi) {
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = float(d(g));
  return v;
}

