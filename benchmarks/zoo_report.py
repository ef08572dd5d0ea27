"""Tables for ``bench_zoo.py``: a CSV of every model and a markdown summary with per-family
coverage of sparsepai and Torch-Pruning, side by side."""

from __future__ import annotations

import csv
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sparsepai import _io  # noqa: E402  (cheap: the package imports torch lazily)

METHODS = ("random", "magnitude", "snip", "grasp", "synflow", "force", "prospr")


def _ok(rec):
    return rec.get("structured") == "ok" and rec.get("slim_ok", False)


def _tp_ok(rec):
    return rec.get("tp") == "ok" and rec.get("tp_runs", False)


def _unstructured(rec) -> dict:
    """The per-method results; a crash or a timeout of the whole part counts for every method."""
    u = rec.get("unstructured") or {}
    return {m: u for m in METHODS} if isinstance(u, str) else u


def write_report(results: dict, out: str, machine: str) -> None:
    rows = list(results.values())
    cols = ["key", "family", "name", "params_m", "structured", "graph_s", "slim_rel_err",
            "slim_ok", "removed", "pruned_layers", "norm_streams", "removed_norm",
            "norm_rel_err", "tp", "tp_runs", "tp_removed", "wall_s"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols + [f"u_{m}" for m in METHODS])
    for r in rows:
        u = _unstructured(r)
        w.writerow([r.get(c, "") for c in cols] + [u.get(m, "") for m in METHODS])
    _io.atomic_write_bytes(os.path.join(out, "zoo.csv"), buf.getvalue().encode())
    lines = [f"# Model zoo coverage (machine: {machine})", "",
             "| family | models | sparsepai structured ok (slim == masked) | Torch-Pruning ok "
             "(pruned model runs) | both ok | removed, sparsepai (mean over both-ok) | removed, "
             "Torch-Pruning (same models) | sparsepai >= TP | removed, norm_streams (same "
             "models) | norm_streams >= TP | graph build, median s | unstructured: every method ok "
             "(models measured) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam in ("tv", "timm", "hf"):
        fr = [r for r in rows if r.get("family", r["key"].split(":")[0]) == fam]
        if not fr:
            continue
        both = [r for r in fr if _ok(r) and _tp_ok(r)]
        ge = sum(1 for r in both if r["removed"] >= r["tp_removed"] - 1e-4)
        gs = sorted(r["graph_s"] for r in fr if "graph_s" in r)
        mean = (lambda k: sum(r[k] for r in both) / len(both)) if both else (lambda k: float("nan"))
        # models run before the norm_streams column existed count their exact figure
        norm = [r.get("removed_norm", r["removed"]) for r in both]
        ge_n = sum(1 for r, n in zip(both, norm) if n >= r["tp_removed"] - 1e-4)
        us = [_unstructured(r) for r in fr if r.get("unstructured")]
        lines.append(f"| {fam} | {len(fr)} | {sum(map(_ok, fr))} | {sum(map(_tp_ok, fr))} | "
                     f"{len(both)} | {mean('removed'):.3f} | {mean('tp_removed'):.3f} | "
                     f"{ge}/{len(both)} | {sum(norm) / max(len(norm), 1):.3f} | "
                     f"{ge_n}/{len(both)} | {gs[len(gs) // 2] if gs else float('nan'):.2f} | "
                     f"{sum(1 for u in us if all(u.get(m) == 'ok' for m in METHODS))} "
                     f"({len(us)}) |")
    lines += ["", "## Unstructured methods (ok = exact kept count)", "",
              "| model | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for r in rows:
        u = _unstructured(r)
        if u:
            lines.append(f"| {r['key']} | " + " | ".join(
                "ok" if u.get(m) == "ok" else "FAIL" for m in METHODS) + " |")
    lines += ["", "## Every model", "",
              "| model | params (M) | structured | graph s | slim rel err | removed | removed, "
              "norm_streams | TP | TP removed |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r.get("structured", "")
        tp = r.get("tp", "")
        if tp == "ok" and not r.get("tp_runs", True):
            tp = "pruned model fails: " + r.get("tp_run_error", "")
        lines.append(f"| {r['key']} | {r.get('params_m', '')} | {s[:120]} | "
                     f"{r.get('graph_s', '')} | {_fmt(r.get('slim_rel_err'))} | "
                     f"{r.get('removed', '')} | {_norm(r)} | {tp[:120]} | "
                     f"{r.get('tp_removed', '')} |")
    _io.atomic_write_bytes(os.path.join(out, "zoo.md"),
                           ("\n".join(lines).replace("\n\n\n", "\n\n") + "\n").encode())
    print("\n".join(lines[:10]))


def _norm(r):
    """The norm_streams figure, its error if it failed, or blank (not run)."""
    s = r.get("norm_streams")
    if s is None:
        return ""
    return str(r.get("removed_norm", "")) if s == "ok" else s[:80]


def _fmt(v):
    return "" if v is None else f"{v:.1e}"
