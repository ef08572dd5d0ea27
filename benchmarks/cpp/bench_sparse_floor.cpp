// How close the compact masked optimizer steps come to the memory floor of a sparse update, on
// one DRAM-sized tensor (VGG-16's first classifier layer, 4096 x 25088 = 103M weights) with a
// random unstructured mask, 2 threads, the extension's 32K-element ranges.
//
// Floors (no optimizer math, no state): only what any update of the kept weights must touch.
//   read kept p,g        loads the param and grad of every kept weight, stores nothing
//   update kept p        p[i] -= 1e-9 * g[i] at every kept weight (reads p and g, writes p)
// Against them: the dense update (our loops, every weight; what torch's fused step costs too)
// and the compact-state masked steps the optimizers run. Medians of --repeats runs, interleaved.
//
//   cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release
//   cmake --build build/bench --target bench_sparse_floor
//   build/bench/bench_sparse_floor [density=0.05] [repeats=9]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/masked_optim_cpu.h"

using namespace sparsepai::core;

namespace {

constexpr int64_t kRange = 1 << 15;  // as csrc/cpu/masked_optim.cpp

// Calls f(begin, end, range_index) for every range, two threads over contiguous halves.
void for_ranges(int64_t n, const std::function<void(int64_t, int64_t, int64_t)>& f) {
  const int64_t nr = (n + kRange - 1) / kRange;
  auto half = [&](int64_t rb, int64_t re) {
    for (int64_t r = rb; r < re; ++r) f(r * kRange, std::min(n, (r + 1) * kRange), r);
  };
  std::thread t(half, nr / 2, nr);
  half(0, nr / 2);
  t.join();
}

}  // namespace

int main(int argc, char** argv) {
  const double density = argc > 1 ? std::atof(argv[1]) : 0.05;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 9;
  const int64_t n = int64_t(4096) * 25088;
  std::vector<float> p(n, 0.f), g(n), dense_buf(n, 0.01f), dense_m(n, 0.01f), dense_v(n, 0.02f);
  std::vector<uint64_t> words((n + 63) / 64, 0);
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> u;
  for (int64_t i = 0; i < n; ++i) {
    g[size_t(i)] = float(u(rng) - 0.5);
    if (u(rng) < density) {
      words[size_t(i >> 6)] |= uint64_t(1) << (i & 63);
      p[size_t(i)] = float(u(rng));
    }
  }
  std::vector<int64_t> off((n + kRange - 1) / kRange);
  int64_t kept = 0;
  for (size_t r = 0; r < off.size(); ++r) {
    off[r] = kept;
    kept += kept_count(words.data(), int64_t(r) * kRange, std::min(n, int64_t(r + 1) * kRange));
  }
  std::vector<float> buf(size_t(kept), 0.01f), m(size_t(kept), 0.01f), v(size_t(kept), 0.02f);
  const SgdHyper hs{.lr = 0.01f, .momentum = 0.9f, .weight_decay = 5e-4f};
  const AdamWHyper ha{.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                      .weight_decay = 1e-2f};
  const AdamWStep sa = adamw_step_scalars(ha, 3.0);
  float* P = p.data();
  const float* G = g.data();
  const uint64_t* W = words.data();
  std::vector<double> sink(off.size(), 0.0);

  struct Case {
    std::string name;
    std::function<void(int64_t, int64_t, int64_t)> f;
  };
  const std::vector<Case> cases = {
      {"floor: read kept p,g",
       [&](int64_t b, int64_t e, int64_t r) {
         float acc = 0.f;
         for (int64_t w0 = b; w0 < e; w0 += 64)
           for (uint64_t x = W[w0 >> 6]; x; x &= x - 1) {
             const int64_t i = w0 + __builtin_ctzll(x);
             acc += P[i] * G[i];
           }
         sink[size_t(r)] += acc;
       }},
      {"floor: read kept p,g + prefetch",
       [&](int64_t b, int64_t e, int64_t r) {
         float acc = 0.f;
         for (int64_t w0 = b; w0 < e; w0 += 64) {
           for (int q = 0; q < 4; ++q) {  // the lines 8 words ahead, as the kernels do
             __builtin_prefetch(P + w0 + 512 + 16 * q);
             __builtin_prefetch(G + w0 + 512 + 16 * q);
           }
           for (uint64_t x = W[w0 >> 6]; x; x &= x - 1) {
             const int64_t i = w0 + __builtin_ctzll(x);
             acc += P[i] * G[i];
           }
         }
         sink[size_t(r)] += acc;
       }},
      {"floor: update kept p",
       [&](int64_t b, int64_t e, int64_t) {
         for (int64_t w0 = b; w0 < e; w0 += 64)
           for (uint64_t x = W[w0 >> 6]; x; x &= x - 1) {
             const int64_t i = w0 + __builtin_ctzll(x);
             P[i] = P[i] - 1e-9f * G[i];
           }
       }},
      {"SGD dense (every weight)",
       [&](int64_t b, int64_t e, int64_t) {
         sgd_range<float, true, false>(P, G, dense_buf.data(), nullptr, b, e, hs, false);
       }},
      {"SGD masked, compact state",
       [&](int64_t b, int64_t e, int64_t r) {
         sgd_range_compact<float, true, false>(P, G, buf.data(), W, b, e, off[size_t(r)], hs,
                                               false);
       }},
      {"AdamW dense (every weight)",
       [&](int64_t b, int64_t e, int64_t) {
         adamw_range<float, false>(P, G, dense_m.data(), dense_v.data(), nullptr, nullptr, b, e,
                                   ha, sa);
       }},
      {"AdamW masked, compact state",
       [&](int64_t b, int64_t e, int64_t r) {
         adamw_range_compact<float, false>(P, G, m.data(), v.data(), nullptr, W, b, e,
                                           off[size_t(r)], ha, sa);
       }},
  };
  std::vector<std::vector<double>> ts(cases.size());
  for (int rep = 0; rep < repeats + 1; ++rep)
    for (size_t c = 0; c < cases.size(); ++c) {
      const auto t0 = std::chrono::steady_clock::now();
      for_ranges(n, cases[c].f);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (rep > 0) ts[c].push_back(s);  // the first round warms up
    }
  std::printf("%lld weights, density %.3f (%lld kept), median of %d, interleaved\n",
              static_cast<long long>(n), density, static_cast<long long>(kept), repeats);
  std::vector<double> med(cases.size());
  for (size_t c = 0; c < cases.size(); ++c) {
    std::sort(ts[c].begin(), ts[c].end());
    med[c] = ts[c][ts[c].size() / 2];
  }
  for (size_t c = 0; c < cases.size(); ++c) {
    const bool sgd = c < 5;
    const double dense = sgd ? med[3] : med[5];
    std::printf("  %-32s %8.2f ms   %.2fx the dense %s step\n", cases[c].name.c_str(),
                1e3 * med[c], med[c] / dense, sgd ? "SGD" : "AdamW");
  }
  return sink[0] == 12345.0;  // keeps the read floor's loads alive
}
