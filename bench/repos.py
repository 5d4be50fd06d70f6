#!/usr/bin/env python3
"""One rollbackd serving many config repos (`repos:`): memory and time to ready.

    cargo build --release && python3 bench/repos.py --repos 50 --commits 50000

Every repo is a copy of one synthetic origin (default 50,000 commits, 10,000 files) with a policy
of its own (alerts labelled team=r<i>). The server is started twice: first with empty data dirs
(each writer clones its mirror), then again on the warm mirrors, which is what a restart or a
rollout waits for. RSS is read from /proc when every repo is ready and the server idle, and
compared with the same server for one repo: the difference, divided, is the cost of an idle repo.
Then one alert per repo (each to its own repo) is timed POST to pushed.
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

from gen_repo import POLICY, alert, build_workspace, free_port, pct


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(binary, cfg):
    """Starts the server; returns it, its port and its time from start to ready."""
    port = free_port()
    env = dict(os.environ, ROLLBACKD_LOG="warn")
    t = time.perf_counter()
    server = subprocess.Popen([binary, "--config", cfg, "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                              stdout=subprocess.PIPE)
    server.stdout.readline()
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200:
                return server, port, time.perf_counter() - t
        except Exception:
            if server.poll() is not None:
                sys.exit("the server exited before it was ready")
            time.sleep(0.05)


def stop(server):
    server.terminate()
    server.wait()


def idle_rss(server):
    """RSS after the writers settle (the first idle refresh has run)."""
    time.sleep(2)
    return rss_mib(server.pid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", type=int, default=50)
    ap.add_argument("--commits", type=int, default=50000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "rollbackd"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollbackd-repos-") as d:
        t = time.perf_counter()
        base = build_workspace(d, a.commits, a.repos, source="alertmanager")
        generated = time.perf_counter() - t
        open(os.path.join(d, "tokens"), "w").write("bench-token\n")
        common = "templates: templates\npause: { breaker: { max_services: 0 } }\n" \
                 "sources:\n  alertmanager: { bearer_tokens_file: tokens }\n"
        entries = []
        for i in range(a.repos):
            name = f"r{i}"
            # A local clone hardlinks the objects: the origins cost no disk, the mirrors do.
            subprocess.run(["git", "clone", "-q", "--bare", "--local", base, os.path.join(d, f"{name}.git")], check=True)
            pol = os.path.join(d, f"policies-{name}")
            os.makedirs(pol)
            with open(os.path.join(pol, "bench.yaml"), "w") as f:
                f.write(POLICY.format(source="alertmanager", extra=f", 'team=\"{name}\"'"))
            entries.append(f"  - name: {name}\n    repo: {{ url: {name}.git }}\n    policies: policies-{name}\n")
        many = os.path.join(d, "many.yaml")
        open(many, "w").write(f"data_dir: data-many\n{common}repos:\n" + "".join(entries))
        one = os.path.join(d, "one.yaml")
        open(one, "w").write(f"data_dir: data-one\n{common}repos:\n" + entries[0])

        server, _, one_cold = serve(a.bin, one)
        stop(server)
        server, _, one_warm = serve(a.bin, one)
        one_rss = idle_rss(server)
        stop(server)

        server, _, cold = serve(a.bin, many)
        stop(server)
        server, port, warm = serve(a.bin, many)
        many_rss = idle_rss(server)
        try:
            times = []
            for i in range(a.repos):
                t = time.perf_counter()
                resp = alert(port, i, team=f"r{i}")
                times.append((time.perf_counter() - t) * 1000)
                if resp["outcome"] != "rolled_back" or resp.get("repo") != f"r{i}":
                    sys.exit(f"unexpected answer: {resp}")
                head = subprocess.run(["git", "--git-dir", os.path.join(d, f"r{i}.git"), "rev-parse", "main"],
                                      capture_output=True, text=True).stdout.strip()
                if head != resp["commit"]:
                    sys.exit(f"r{i}: origin main {head} is not the answered commit {resp['commit']}")
            busy_rss = rss_mib(server.pid)
        finally:
            stop(server)
        mirror = subprocess.run(["du", "-sm", os.path.join(d, "data-many", "repos", "r0")], capture_output=True, text=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}")
    print(f"each repo: {a.commits} commits, 10,000 files (generated in {generated:.0f} s); "
          f"its mirror {mirror.stdout.split()[0]} MiB on disk")
    print(f"1 repo:  ready in {one_cold:.2f} s cold, {one_warm:.2f} s warm; idle RSS {one_rss:.1f} MiB")
    print(f"{a.repos} repos: ready in {cold:.2f} s cold, {warm:.2f} s warm; idle RSS {many_rss:.1f} MiB "
          f"({(many_rss - one_rss) / (a.repos - 1):.2f} MiB per further idle repo); "
          f"{busy_rss:.1f} MiB after one rollback in each")
    print(f"POST -> origin branch moved, one alert per repo: p50 {statistics.median(times):.1f} ms, "
          f"p99 {pct(times, 99):.1f} ms, max {max(times):.1f} ms")


if __name__ == "__main__":
    main()
