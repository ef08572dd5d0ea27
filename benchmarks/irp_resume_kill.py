"""IRP crash safety under SIGKILL: run ``sparsepai irp`` uninterrupted, then run it again into
another folder, killing it with SIGKILL at random moments ``--kills`` times (each restart resumes
the previous), let the last restart finish, and compare every file of the two folders byte for
byte.

    python benchmarks/irp_resume_kill.py --kills 5 \
        --json benchmarks/results/autosparse/resume_kill.json

Exit status 0 when the folders are identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def files(directory):
    out = {}
    for root, _, names in os.walk(directory):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, directory)] = f.read()
    return out


def rounds_done(directory):
    d = os.path.join(directory, "masks")
    return len([f for f in os.listdir(d) if f.endswith(".safetensors")]) if os.path.isdir(d) else 0


def run_kill_test(irp_args, kills, seed, workdir, python=sys.executable, log=print,
                  threads=None):
    cmd = [python, "-m", "sparsepai", "irp", "--no-progress", *irp_args]
    env = dict(os.environ, PYTHONPATH=ROOT)
    if threads:  # the same for the reference and the killed runs (float summation order)
        env["OMP_NUM_THREADS"] = str(threads)
    ref, killed = os.path.join(workdir, "ref"), os.path.join(workdir, "killed")
    t0 = time.perf_counter()
    p = subprocess.run(cmd + ["--out", ref], cwd=ROOT, env=env, capture_output=True, text=True)
    t_ref = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"reference run failed: {p.stderr[-2000:]}")
    t0 = time.perf_counter()
    subprocess.run([python, "-c", "import torch, sparsepai.autosparse, sparsepai.cli"], cwd=ROOT,
                   env=env, check=True)
    t_start = time.perf_counter() - t0
    total_rounds = int(irp_args[irp_args.index("--rounds") + 1]) if "--rounds" in irp_args else 5
    rng = random.Random(seed)
    per_round = max(0.05, (t_ref - t_start) / total_rounds)
    events = []
    landed = attempts = 0
    while landed < kills:
        attempts += 1
        if attempts > 4 * kills:
            raise RuntimeError(f"could not land {kills} kills in {attempts - 1} attempts")
        k = attempts - 1
        # a random moment: during start-up (1 in 6), else inside a random round not yet done, at
        # a random point of it (polling the folder, so that machine load cannot make the run
        # finish before the kill)
        done0 = rounds_done(killed)
        # every round done but the run not finished (killed while writing the survival file and
        # dataset.json): the next kill can only aim at start-up
        in_startup = rng.random() < 1 / 6 or done0 >= total_rounds
        target = rng.randint(done0, total_rounds - 1) if done0 < total_rounds else done0
        frac = rng.uniform(0.0, 0.6)
        proc = subprocess.Popen(cmd + ["--out", killed], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t1 = time.perf_counter()
        if in_startup:
            time.sleep(frac * t_start)
        else:
            if target == done0:  # the round starts once the process has started up
                time.sleep(t_start)
            while rounds_done(killed) < target and proc.poll() is None:
                time.sleep(0.02)
            time.sleep(frac * per_round)
        if proc.poll() is None:
            landed += 1
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            events.append({"kill": k, "at_s": round(time.perf_counter() - t1, 3),
                           "aimed_at": "start-up" if in_startup else
                           f"round {target + 1}, {frac:.2f} of a round in",
                           "killed": True, "rounds_done_after_kill": rounds_done(killed),
                           "tmp_files_left": sorted(f for f in files(killed) if f.endswith(".tmp"))
                           if os.path.isdir(killed) else []})
        else:
            # machine load made the run finish before the kill: start the killed sequence over,
            # so that the compared folder has been through `kills` landed kills
            events.append({"kill": k, "killed": False, "note": "the run finished first; "
                           "killed folder deleted, sequence restarted"})
            shutil.rmtree(killed)
            landed = 0
        proc.stderr.close()
        log(f"kill {k}: {events[-1]}")
    p = subprocess.run(cmd + ["--out", killed], cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"final resume failed: {p.stderr[-2000:]}")
    a, b = files(ref), files(killed)
    same = a == b
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return {"identical": same, "files": len(a), "bytes": sum(len(v) for v in a.values()),
            "differing_files": differing, "reference_seconds": round(t_ref, 2),
            "startup_seconds": round(t_start, 2),
            "kills_landed_in_final_sequence": landed,
            "attempts": attempts,
            "kills": events}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5, help="SIGKILLs at random moments (5)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill times (0)")
    ap.add_argument("--json", default=None, help="write the result here")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs (1)")
    ap.add_argument("irp_args", nargs="*", help="arguments of 'sparsepai irp' (default: lenet5 "
                    "on digits, 5 rounds of 2 epochs, prune 30%%)")
    args = ap.parse_args()
    irp_args = args.irp_args or ["--model", "lenet5", "--dataset", "digits", "--rounds", "5",
                                 "--epochs-per-round", "2", "--prune-fraction", "0.3"]
    work = tempfile.mkdtemp(prefix="irp-kill-")
    try:
        res = run_kill_test(irp_args, args.kills, args.seed, work, threads=args.threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["command"] = " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    res["irp_args"] = irp_args
    print(json.dumps({k: v for k, v in res.items() if k != "kills"}, indent=1))
    if args.json:
        sys.path.insert(0, ROOT)  # the checkout's sparsepai, as the runs above (PYTHONPATH)
        from sparsepai import _io

        _io.atomic_write_bytes(args.json, json.dumps(res, indent=1).encode())
    return 0 if res["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
