#!/usr/bin/env python3
"""Time from POSTing an alert to the origin's branch moving, over distinct alerts, on a
synthetic config repo (default: 50,000 commits, 10,000 files).

    cargo build --release && python3 bench/latency.py --commits 50000 --alerts 100
    python3 bench/latency.py --commits 1000000 --files-per 100 --alerts 30   # 100,000 files

The server answers a webhook after the push (or at the response deadline, 5 s): the time to the
answer is the time to the branch moving, and each answer's commit is checked against the origin.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from gen_repo import alerts, build_workspace, free_port, pct


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=50000)
    ap.add_argument("--alerts", type=int, default=100)
    ap.add_argument("--services", type=int, default=500, help="x 2 envs x --files-per files")
    ap.add_argument("--files-per", type=int, default=10, help="files per service and env")
    ap.add_argument("--per-notification", type=int, default=1,
                    help="alerts per Alertmanager notification (distinct services and changes)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "rollbackd"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollbackd-latency-") as d:
        t = time.perf_counter()
        origin = build_workspace(d, a.commits, a.alerts, source="alertmanager", extra_matchers=", 'env=\"prod\"'",
                                 services=a.services, files_per=a.files_per)
        generated = time.perf_counter() - t
        open(os.path.join(d, "tokens"), "w").write("bench-token\n")
        cfg = os.path.join(d, "rollbackd.yaml")
        open(cfg, "w").write("repo: { url: origin.git }\ndata_dir: data\npause: { breaker: { max_services: 0 } }\nsources:\n  alertmanager: { bearer_tokens_file: tokens }\n")
        port = free_port()
        env = dict(os.environ, ROLLBACKD_LOG="warn")
        args = [a.bin, "--config", cfg, "serve", "--listen", f"127.0.0.1:{port}"]

        def start():
            """The server, and its time from start to ready."""
            t = time.perf_counter()
            server = subprocess.Popen(args, env=env, stdout=subprocess.PIPE)
            server.stdout.readline()
            while True:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200:
                        return server, time.perf_counter() - t
                except Exception:
                    time.sleep(0.05)

        server, prime = start()
        try:
            times = []
            k = a.per_notification
            for first in range(0, a.alerts, k):
                t = time.perf_counter()
                resp = alerts(port, range(first, min(first + k, a.alerts)))
                times.append((time.perf_counter() - t) * 1000)
                results = resp.get("results", [resp])
                if any(r["outcome"] != "rolled_back" for r in results):
                    sys.exit(f"unexpected answer: {resp}")
                head = subprocess.run(["git", "--git-dir", origin, "rev-parse", "main"], capture_output=True, text=True).stdout.strip()
                if head != results[-1]["commit"]:
                    sys.exit(f"origin main {head} is not the last answered commit {results[-1]['commit']}")
            # A restart on the warm mirror: what a new replica or a rollout waits for.
            server.terminate()
            server.wait()
            server, warm = start()
        finally:
            server.terminate()
            server.wait()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}; repo: {a.commits} commits, {a.services * 2 * a.files_per:,} files "
          f"(generated in {generated:.0f} s)")
    print(f"start to ready: {prime:.2f} s with the first fetch (a local origin), {warm:.2f} s from the warm mirror")
    what = "alerts" if a.per_notification == 1 else f"alerts, {a.per_notification} per notification"
    print(f"POST -> origin branch moved, {a.alerts} distinct {what}: p50 {statistics.median(times):.1f} ms, "
          f"p99 {pct(times, 99):.1f} ms, max {max(times):.1f} ms, mean {statistics.mean(times):.1f} ms"
          + (f"; {statistics.mean(times) / a.per_notification:.1f} ms per alert" if a.per_notification > 1 else ""))


if __name__ == "__main__":
    main()
