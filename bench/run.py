#!/usr/bin/env python3
"""Times one rollback (plan + commit + push, as the `rollbackd rollback` command) on synthetic
config repos of several history lengths, next to the same rollback done with the git CLI
(`git clone --shared && git revert && git push`).

    cargo build --release && python3 bench/run.py --sizes 1000,50000,100000 --rollbacks 30

Each rollback undoes a different service's bad deploy, so every run does the full work (no
duplicate short-cut). The mirror is primed once per size (the service keeps it across requests).
Talks only to local paths.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from gen_repo import build_workspace, pct


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {cmd}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def timed(cmd, **kw):
    t = time.perf_counter()
    out = run(cmd, **kw)
    return (time.perf_counter() - t) * 1000, out


def bench_size(binary, n, rollbacks, work):
    d = os.path.join(work, f"n{n}")
    os.makedirs(d)
    origin = build_workspace(d, n, rollbacks)
    git_origin = os.path.join(d, "origin-git.git")
    shutil.copytree(origin, git_origin)
    cfg = os.path.join(d, "rollbackd.yaml")
    with open(cfg, "w") as f:
        f.write("repo: { url: origin.git, branch: main }\ndata_dir: data\npause: { breaker: { max_services: 0 } }\n")
    prime_ms, _ = timed([binary, "--config", cfg, "history"])

    ours = []
    for i in range(rollbacks):
        ms, out = timed([binary, "--config", cfg, "rollback", f"s{i:03d}", "--env", "prod", "--actor", "bench"])
        if "outcome: rolled back" not in out:
            sys.exit(f"unexpected outcome:\n{out}")
        ours.append(ms)
    trailers = run(["git", "--git-dir", origin, "log", "-1", "--format=%(trailers:key=Rollback-Service,valueonly)"]).strip()
    assert trailers == f"s{rollbacks - 1:03d}", trailers

    theirs = []
    for i in range(rollbacks):
        w = os.path.join(d, "w")
        shutil.rmtree(w, ignore_errors=True)
        script = (
            f"git clone -q --shared {git_origin} {w} && cd {w} && "
            f"git -c user.name=b -c user.email=b@b revert --no-edit $(git log -1 --format=%H -- apps/s{i:03d}/prod) >/dev/null && "
            f"git push -q origin HEAD:main"
        )
        ms, _ = timed(["sh", "-c", script])
        theirs.append(ms)
    return prime_ms, ours, theirs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,50000,100000")
    ap.add_argument("--rollbacks", type=int, default=30)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "rollbackd"))
    a = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}")
    print(f"binary: {a.bin}\n")
    print("| commits | rollbackd p50 | p90 | max | git CLI p50 | p90 | speed-up (p50) | first fetch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="rollbackd-bench-") as work:
        for n in [int(s) for s in a.sizes.split(",")]:
            prime, ours, theirs = bench_size(a.bin, n, a.rollbacks, work)
            p50, p50g = statistics.median(ours), statistics.median(theirs)
            print(
                f"| {n} | {p50:.1f} ms | {pct(ours, 90):.1f} ms | {max(ours):.1f} ms | {p50g:.0f} ms | {pct(theirs, 90):.0f} ms"
                f" | {p50g / p50:.0f}x | {prime:.0f} ms |",
                flush=True,
            )


if __name__ == "__main__":
    main()
