#!/usr/bin/env bash
# Installs sparsepai the ways users do, each in a fresh virtual environment that already has
# torch, and checks that the compiled kernels load and serve topk_mask (C++ CPU backend, equal to
# the reference):
#   (a) pip install <clone>                        default build isolation
#   (b) pip install --no-build-isolation <clone>
#   (c) pip install --no-build-isolation -e <clone> (what scripts/run.sh does)
#   (d) pip wheel <clone> -w dist, once, then that wheel in another fresh venv with torch
# and, with TORCH2 set (a second torch release), what happens to
#   (e) the wheel of (d), built against TORCH, installed beside TORCH2
#   (f) pip install <clone> (build isolation) beside TORCH2: the build asks for TORCH2
# <clone> is a fresh `git clone` of this repository: committed work only.
#
# usage: [TORCH=torch==2.14.1] [TORCH2=torch==2.13.0] [SPARSEPAI_CUDA=0] [BUILD_LOCK=/path]
#        bash scripts/check_install.sh
# Needs a few GB per venv under WORK (default: a new temporary folder, removed at the end unless
# KEEP=1); one venv at a time. BUILD_LOCK: a file to flock around each build (shared machines).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TORCH=${TORCH:-torch}
TORCH2=${TORCH2:-}
WORK=${WORK:-$(mktemp -d)}
PYTHON=${PYTHON:-python3}
export MAX_JOBS=${MAX_JOBS:-2}
mkdir -p "$WORK"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK/venv" "$WORK/src" "$WORK/dist"' EXIT
RESULTS="$WORK/results.txt"
: > "$RESULTS"

log() { echo "== $*"; }
record() { echo "$*" | tee -a "$RESULTS"; }
quiet() { grep -v "^WARNING: Location" || true; }  # this machine's pip: one warning per index
locked() { if [ -n "${BUILD_LOCK:-}" ]; then flock "$BUILD_LOCK" "$@"; else "$@"; fi; }

fresh_venv() {  # fresh_venv TORCH_SPEC
  rm -rf "$WORK/venv"
  "$PYTHON" -m venv "$WORK/venv"
  log "venv with $1"
  "$WORK/venv/bin/pip" install -q "$1" 2>&1 | quiet
}

pip_build() {  # pip_build LOGNAME pip-args...: a timed build, its log kept on failure
  local name=$1; shift
  local t0=$SECONDS
  if ! locked "$WORK/venv/bin/pip" "$@" > "$WORK/$name.log" 2>&1; then
    quiet < "$WORK/$name.log" | tail -n 40
    record "FAIL $name: pip $* (log: $WORK/$name.log)"
    return 1
  fi
  log "$name: pip $* ($((SECONDS - t0)) s)"
}

cat > "$WORK/check.py" <<'EOF'
"""Run outside the source tree: sparsepai must come from the venv's site-packages."""
import json
import os
import sys
import warnings

import torch

import sparsepai as sp
from sparsepai.cli.info import collect
from sparsepai.ops import dispatch
from sparsepai.ops.topk_ref import topk_mask_ref

label, src = sys.argv[1], sys.argv[2]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loaded = sp.has_extension()
info = collect()
ext = info["extension"]
where = os.path.dirname(sp.__file__)
out = {"case": label, "torch": torch.__version__, "built_against": ext["built_against"],
       "loaded": loaded, "cpu_isa": ext["cpu_isa"],
       "topk_mask_cpu": info["ops"]["topk_mask"]["cpu"]["backend"],
       "from_source_tree": where.startswith(os.path.realpath(src)),
       "warning": [str(w.message) for w in caught]}
ok = loaded and out["topk_mask_cpu"] == "cpu"
if ok:
    g = torch.Generator().manual_seed(0)
    scores = [torch.randn(1000, generator=g), torch.randn(37, 5, generator=g)]
    got = sp.topk_mask(scores, 200)
    thr, masks = topk_mask_ref(scores, 200)
    ok = torch.equal(got.threshold, thr) and all(torch.equal(a, b)
                                                  for a, b in zip(got.masks, masks))
    out["topk_mask_equals_reference"] = ok
print(json.dumps(out))
sys.exit(0 if ok else 1)
EOF

check() {  # check LABEL [measure]: measure records the outcome, pass or fail
  local line rc=0
  line=$(cd "$WORK" && "$WORK/venv/bin/python" check.py "$1" "$WORK/src" 2>&1 | tail -n 1) || rc=$?
  if [ "${2:-}" = measure ]; then
    record "MEASURED $1 (exit $rc): $line"
  elif [ $rc -eq 0 ]; then
    record "PASS $1: $line"
  else
    record "FAIL $1: $line"
    return 1
  fi
}

log "cloning $ROOT (committed work)"
rm -rf "$WORK/src" "$WORK/dist"
git clone -q "$ROOT" "$WORK/src"
record "source: $(git -C "$WORK/src" log -1 --format='%h %s' | cut -c1-80)"

FAILED=0
asked() {  # the torch the isolated build environment was given (pip -v: "(from torch==X)")
  grep -o "from torch==[^)]*" "$WORK/$1.log" | head -n 1 \
    | sed 's/^from /   build environment: /' | tee -a "$RESULTS" || true
}

fresh_venv "$TORCH"
{ pip_build a-isolated install -v "$WORK/src" && asked a-isolated \
  && check "(a) pip install <clone>"; } || FAILED=1
"$WORK/venv/bin/pip" uninstall -q -y sparsepai 2>&1 | quiet

"$WORK/venv/bin/pip" install -q "setuptools>=77" wheel ninja 2>&1 | quiet
{ pip_build b-no-isolation install -v --no-build-isolation "$WORK/src" \
  && check "(b) pip install --no-build-isolation <clone>"; } || FAILED=1
"$WORK/venv/bin/pip" uninstall -q -y sparsepai 2>&1 | quiet

{ pip_build c-editable install -v --no-build-isolation -e "$WORK/src" \
  && check "(c) pip install --no-build-isolation -e <clone>"; } || FAILED=1
[ -f "$WORK/src/sparsepai/_build_info.py" ] \
  && record "   the editable build wrote sparsepai/_build_info.py into the source tree"
"$WORK/venv/bin/pip" uninstall -q -y sparsepai 2>&1 | quiet

WHEEL=
if pip_build d-wheel wheel -v --no-deps "$WORK/src" -w "$WORK/dist" && asked d-wheel; then
  WHEEL=$(ls "$WORK/dist"/sparsepai-*.whl)
  record "   wheel: $(basename "$WHEEL") ($(du -k "$WHEEL" | cut -f1) KiB)"
  fresh_venv "$TORCH"
  "$WORK/venv/bin/pip" install -q "$WHEEL" 2>&1 | quiet
  check "(d) the wheel in a fresh venv" || FAILED=1
else
  FAILED=1
fi

if [ -n "$TORCH2" ]; then
  fresh_venv "$TORCH2"
  if [ -n "$WHEEL" ]; then
    "$WORK/venv/bin/pip" install -q "$WHEEL" 2>&1 | quiet
    check "(e) the wheel of (d) beside $TORCH2" measure
    "$WORK/venv/bin/pip" uninstall -q -y sparsepai 2>&1 | quiet
  fi
  { pip_build f-isolated-torch2 install -v "$WORK/src" && asked f-isolated-torch2 \
    && check "(f) pip install <clone> beside $TORCH2"; } || FAILED=1
fi
rm -rf "$WORK/venv"
log "results ($RESULTS)"
cat "$RESULTS"
exit $FAILED
