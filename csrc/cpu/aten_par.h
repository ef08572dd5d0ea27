// The parallel policy the torch-free cores (csrc/core) take, on ATen's thread pool: for_range
// splits [0, n) into one contiguous piece per thread (tests/cpp/thread_par.h is the std::thread
// one of the C++ tests).
#pragma once

#include <ATen/Parallel.h>

namespace sparsepai {

struct AtenPar {
  int max_threads() const { return at::get_num_threads(); }
  int thread_id() const { return at::get_thread_num(); }
  template <class F>
  void for_range(int64_t n, F&& f) const {
    if (n > 0) at::parallel_for(0, n, 1, f);
  }
};

}  // namespace sparsepai
