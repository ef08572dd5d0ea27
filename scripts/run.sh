#!/usr/bin/env bash
# One entry point for a fresh machine with nothing but Python:
#   bash scripts/run.sh demo    set everything up, then run the main job (sparsepai demo)
#   bash scripts/run.sh test    set everything up, fail unless the compiled extension loads,
#                               then run the whole test suite (sanitized C++ core tests, this
#                               site's build, pytest), then the pure-Python lane; CI runs exactly
#                               this
#   bash scripts/run.sh test-pure   the pure-Python lane alone: SPARSEPAI_PURE_PYTHON=1 (no
#                               extension, every op its reference) over the tests that exercise
#                               the package end to end (op tests would compare the reference
#                               with itself there)
#   bash scripts/run.sh docs    set up, then build the documentation site (build/site)
#   bash scripts/run.sh setup   only set up
# Setup is idempotent: a venv in .venv (or $SPARSEPAI_VENV) with the pinned requirements, and the
# extension (CPU + CUDA kernels when a CUDA toolkit is found) rebuilt only when csrc/ changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SPARSEPAI_VENV:-.venv}
PY="$VENV/bin/python"
export MAX_JOBS=${MAX_JOBS:-2}

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

setup() {
  if [ ! -x "$PY" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
  fi
  local req_hash; req_hash=$(hash_of requirements.txt)
  if [ "$(cat "$VENV/.req-hash" 2>/dev/null || true)" != "$req_hash" ]; then
    echo "== installing requirements (torch is a few GB; a few minutes)"
    # (this machine's pip prints a warning per missing local index folder: noise, filtered)
    "$PY" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    "$PY" -m pip install -q -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
    "$PY" -c "import torch, torchvision" || { echo "requirements failed to install" >&2; exit 1; }
    echo "$req_hash" > "$VENV/.req-hash"
  fi
  local src_hash; src_hash=$(hash_of setup.py $(find csrc -type f | sort))
  if [ "$(cat "$VENV/.build-hash" 2>/dev/null || true)" != "$src_hash" ] \
     || ! "$PY" -c "import sparsepai._C" 2>/dev/null; then
    echo "== building the extension (MAX_JOBS=$MAX_JOBS)"
    local t0=$SECONDS
    "$PY" -m pip install -v --no-build-isolation --no-deps -e . > build-ext.log 2>&1 \
      || { grep -v "^WARNING: Location" build-ext.log | tail -n 60; exit 1; }
    grep -m1 "sparsepai: building" build-ext.log || true
    echo "== built in $((SECONDS - t0)) s"
    echo "$src_hash" > "$VENV/.build-hash"
  fi
}

require_extension() {
  # a broken build must fail here, not pass as 10-100x slower reference ops
  echo "== sparsepai info"
  "$PY" -m sparsepai info --require-extension
}

PURE_TESTS=(tests/test_package.py tests/cli/test_info.py tests/optim tests/masks
            tests/ops/test_dispatch.py)

pure_tests() {
  echo "== pytest, pure-Python lane (SPARSEPAI_PURE_PYTHON=1)"
  SPARSEPAI_PURE_PYTHON=1 "$PY" -m pytest -q "${PURE_TESTS[@]}" "$@"
}

cpp_tests() {
  echo "== C++ core tests (ASan + UBSan)"
  cmake -S . -B build/cpp -DSPARSEPAI_SANITIZE=ON > build-cpp.log 2>&1 \
    && cmake --build build/cpp -j "$MAX_JOBS" >> build-cpp.log 2>&1 \
    || { cat build-cpp.log; exit 1; }
  ctest --test-dir build/cpp --output-on-failure
}

docs_build() {
  # the site with warnings as errors: a broken link, a missing page or an undocumented argument
  # in a public docstring fails CI (a few seconds)
  echo "== docs (mkdocs build --strict)"
  NO_MKDOCS_2_WARNING=1 "$PY" -m mkdocs build --strict --quiet -d build/site
}

case "${1:-}" in
  setup) setup ;;
  demo) shift; setup; "$PY" -m sparsepai demo "$@" ;;
  test) shift; setup; require_extension; cpp_tests; docs_build; echo "== pytest"
        "$PY" -m pytest -q "$@"
        # the pure-Python lane with the whole suite only (arguments select tests of the first)
        if [ $# -eq 0 ]; then pure_tests; fi ;;
  test-pure) shift; setup; pure_tests "$@" ;;
  docs) shift; setup; docs_build ;;
  *) echo "usage: bash scripts/run.sh {demo|test|test-pure|docs|setup} [args...]" >&2; exit 2 ;;
esac
