// A tiny test harness: CHECK records failures with their location; main() ends with the plain
// "N passed, N failed" line.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

struct TestCase {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> r;
  return r;
}
inline int& failures() {
  static int f = 0;
  return f;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, fn}); }
};

#define TEST(name)                              \
  static void name();                           \
  static Register reg_##name(#name, name);      \
  static void name()

#define CHECK(cond)                                                               \
  do {                                                                            \
    if (!(cond)) {                                                                \
      ++failures();                                                               \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                             \
  } while (0)

inline int run_all() {
  int passed = 0, failed = 0;
  for (auto& t : registry()) {
    const int before = failures();
    t.fn();
    if (failures() == before) {
      ++passed;
    } else {
      ++failed;
      std::fprintf(stderr, "FAILED %s\n", t.name);
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
