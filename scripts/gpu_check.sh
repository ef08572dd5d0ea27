#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU, finished in under 8 minutes:
#   1. build   the extension in place against the torch it finds
#              (pip install --no-build-isolation --no-deps -e .: no venv, no downloads;
#              CUDA kernels for this GPU's architecture only, to keep it short);
#   2. tests   every CUDA- and Triton-parametrised test, on the GPU: the `device`-parametrised
#              tests' cuda cases, tests/ops/*_triton.py and test_compile_ptx.py (Triton kernels on CUDA tensors, through the
#              public API), the dispatch table's tests;
#   3. bench   benchmarks/bench_gpu.py: topk_mask at 1e9 float32 against torch.topk /
#              torch.kthvalue and a read-pass memory floor; masked SGD/AdamW against torch's
#              fused optimizers; a slim ResNet-18 training step against the dense one;
#   4. summary a JSON summary in $OUT/gpu_check.json when $OUT is set, else in
#              benchmarks/results/gpu_check.json, with the logs beside it.
# Without a GPU it says so and runs what it can: the build, the dispatch and Triton tests (Triton
# under TRITON_INTERPRET=1 on CPU tensors) and bench_gpu.py --smoke (toy sizes, no timings).
#
# Switches: PYTHON (default python3); GPU_CHECK_BUILD=pip|inplace|skip (default pip; inplace
# runs setup.py build_ext --inplace, installing nothing; skip uses the extension already there).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
LOGS="$DEST/gpu_check_logs"
mkdir -p "$LOGS"
T0=$SECONDS
STATUS="$LOGS/status.txt"
: > "$STATUS"
step() { echo "$1 $2 $3" >> "$STATUS"; }  # name, exit code, seconds

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  GPU=1
  "$PY" -c "import torch; print('== GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
  ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
  export SPARSEPAI_CUDA_ARCHS=${SPARSEPAI_CUDA_ARCHS:-$ARCH}
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
else
  GPU=0
  echo "== no CUDA GPU here: building, then running the CPU subset (dispatch and Triton tests" \
       "under TRITON_INTERPRET=1, bench_gpu.py --smoke); the GPU parts are skipped"
  export MAX_JOBS=${MAX_JOBS:-2}
fi

# 1. build
t=$SECONDS
case "${GPU_CHECK_BUILD:-pip}" in
  pip) timeout 240 "$PY" -m pip install -v --no-build-isolation --no-deps -e . > "$LOGS/build.log" 2>&1 ;;
  inplace) timeout 240 "$PY" setup.py build_ext --inplace > "$LOGS/build.log" 2>&1 ;;
  skip) echo "build skipped (GPU_CHECK_BUILD=skip)" > "$LOGS/build.log" ;;
  *) echo "GPU_CHECK_BUILD must be pip, inplace or skip" >&2; exit 2 ;;
esac
rc=$?
step build $rc $((SECONDS - t))
if [ $rc -ne 0 ]; then
  tail -n 40 "$LOGS/build.log"
  echo "== build failed (rc $rc); the tests and benchmarks below use whatever extension is there"
fi
echo "== build: rc $rc in $((SECONDS - t)) s"
"$PY" -c "import sparsepai; from sparsepai.ops import dispatch; import json; print(json.dumps(dispatch.table()))" \
  > "$LOGS/dispatch.json" 2> "$LOGS/dispatch.err"

# 2. tests (pytest exit 5 = nothing selected counts as a failure: the selection is the point)
run_tests() {  # name, timeout, pytest args...
  local name=$1 limit=$2; shift 2
  local t=$SECONDS
  timeout "$limit" "$PY" -m pytest -q -p no:cacheprovider --junitxml="$LOGS/$name.xml" "$@" \
    > "$LOGS/$name.log" 2>&1
  local rc=$?
  step "$name" $rc $((SECONDS - t))
  echo "== $name: rc $rc in $((SECONDS - t)) s: $(tail -n 1 "$LOGS/$name.log")"
}
if [ $GPU -eq 1 ]; then
  run_tests tests_cuda 150 tests/ops tests/optim tests/test_package.py -k cuda
  run_tests tests_triton 150 tests/ops/test_topk_triton.py tests/ops/test_masked_optim_triton.py tests/ops/test_compile_ptx.py tests/ops/test_dispatch.py \
    "tests/ops/test_channel_sparse.py::test_triton_kernels_match_reference"
else
  run_tests tests_cpu 300 tests/ops/test_dispatch.py tests/ops/test_topk_triton.py tests/ops/test_masked_optim_triton.py tests/ops/test_compile_ptx.py \
    "tests/ops/test_channel_sparse.py::test_triton_kernels_match_reference"
fi

# 3. benchmarks
t=$SECONDS
if [ $GPU -eq 1 ]; then
  timeout 150 "$PY" benchmarks/bench_gpu.py --out "$LOGS/bench.json" > "$LOGS/bench.log" 2>&1
else
  timeout 300 "$PY" benchmarks/bench_gpu.py --smoke --out "$LOGS/bench.json" > "$LOGS/bench.log" 2>&1
fi
rc=$?
step bench $rc $((SECONDS - t))
echo "== bench: rc $rc in $((SECONDS - t)) s"
cut -c1-300 "$LOGS/bench.log" | tail -n 5

# 4. summary
"$PY" - "$DEST/gpu_check.json" "$LOGS" "$GPU" $((SECONDS - T0)) <<'EOF'
import json, os, platform, subprocess, sys
import xml.etree.ElementTree as ET

path, logs, gpu, seconds = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
def load(name):
    try:
        with open(os.path.join(logs, name)) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        return {"error": f"{name}: {exc}"}
steps = {}
for line in open(os.path.join(logs, "status.txt")):
    name, rc, secs = line.split()
    steps[name] = {"rc": int(rc), "seconds": int(secs)}
    xml = os.path.join(logs, name + ".xml")
    if os.path.exists(xml):
        root = ET.parse(xml).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        steps[name].update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors",
                                                               "skipped")})
        steps[name]["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter(
            "testcase") if c.find("failure") is not None or c.find("error") is not None]
info = {"python": platform.python_version(), "gpu": gpu}
try:
    import torch
    info.update(torch=torch.__version__, cuda=torch.version.cuda,
                device=torch.cuda.get_device_name(0) if gpu else None)
except Exception as exc:
    info["torch"] = f"unavailable: {exc}"
try:
    import triton
    info["triton"] = triton.__version__
except Exception:
    info["triton"] = None
try:
    info["nvcc"] = subprocess.run(["nvcc", "--version"], capture_output=True, text=True,
                                  timeout=30).stdout.strip().splitlines()[-1]
except Exception:
    info["nvcc"] = None
summary = {"machine": info, "seconds": seconds, "steps": steps,
           "ok": all(s["rc"] == 0 for s in steps.values()),
           "dispatch": load("dispatch.json"), "bench": load("bench.json")}
with open(path, "w") as f:
    json.dump(summary, f, indent=1)
print(f"== summary: {path} (ok={summary['ok']}, {seconds} s)")
sys.exit(0 if summary["ok"] else 1)
EOF
