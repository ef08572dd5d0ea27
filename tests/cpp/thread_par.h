// A minimal std::thread "parallel policy" for the torch-free core (the extension uses ATen's
// pool instead). for_range splits [0, n) into one contiguous piece per thread, like
// at::parallel_for.
#pragma once

#include <cstdint>
#include <thread>
#include <vector>

struct ThreadPar {
  int threads = 1;
  static thread_local int tid;

  int max_threads() const { return threads; }
  int thread_id() const { return tid; }
  template <class F>
  void for_range(int64_t n, F&& f) const {
    if (n <= 0) return;
    const int t = int(std::min<int64_t>(threads, n));
    std::vector<std::thread> pool;
    for (int i = 0; i < t; ++i) {
      const int64_t b = n * i / t, e = n * (i + 1) / t;
      pool.emplace_back([&, i, b, e] {
        tid = i;
        f(b, e);
      });
    }
    for (auto& th : pool) th.join();
  }
};

inline thread_local int ThreadPar::tid = 0;
