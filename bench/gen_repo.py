#!/usr/bin/env python3
"""Writes a `git fast-import` stream for a synthetic GitOps config repo.

    python3 bench/gen_repo.py --commits 50000 --bad 100 | git --git-dir origin.git fast-import

Layout: 500 services (--services) x {prod, staging} x 10 files (--files-per) = 10,000 files under
apps/<svc>/<env>/. The
first commit adds them all; every later commit is a deploy (one image tag bump) of a random
service/env, 30 s apart, ending now. The last --bad commits are bad deploys of s000..s(bad-1)
in prod, one each, so each can be rolled back independently.
"""
import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The benchmarks' policy: alerts or requests (`source`) roll a service back directly, with every
# guard on, so a benchmarked rollback does all the work a production one does.
POLICY = """- name: bench
  match: {{ source: {source}, matchers: ['service=~".+"'{extra}] }}
  target:
    service: "{{{{ labels.service }}}}"
    env: "{{{{ labels.env }}}}"
    paths: ["apps/{{{{ labels.service }}}}/{{{{ labels.env }}}}/**"]
  action: {{ mode: direct, strategy: auto }}
  guards: {{ cooldown: 30m, max_rollbacks: {{ count: 3, per: 24h }}, max_change_age: 30d, require_immutable_artifacts: true }}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def alert(port, i, **labels):
    """POSTs a firing alert for s<i> in prod to the server on `port`; returns its answer."""
    return alerts(port, [i], **labels)


def alerts(port, indices, **labels):
    """POSTs one notification with a firing alert for each s<i> in prod; returns the answer
    (its top level is the first alert's; `results` has each)."""
    body = json.dumps({"version": "4", "status": "firing", "alerts": [{
        "status": "firing", "startsAt": "2026-11-21T10:00:00Z", "fingerprint": f"fp{i}",
        "labels": {"alertname": "Errors", "service": f"s{i:03d}", "env": "prod", "severity": "page", **labels},
    } for i in indices]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/alertmanager", data=body, headers={
        "Content-Type": "application/json", "Authorization": "Bearer bench-token"})
    return json.loads(urllib.request.urlopen(req).read())


def pct(xs, p):
    """The p-th percentile, interpolated."""
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def build_workspace(d, commits, bad, source="any", extra_matchers="", services=500, files_per=10):
    """A bare origin with the synthetic history, packed, plus the policy and the templates."""
    origin = os.path.join(d, "origin.git")
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", origin], check=True)
    gen = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--commits", str(commits), "--bad", str(bad),
                            "--services", str(services), "--files-per", str(files_per)], stdout=subprocess.PIPE)
    subprocess.run(["git", "--git-dir", origin, "fast-import", "--quiet", "--done"], stdin=gen.stdout, check=True)
    if gen.wait() != 0:
        sys.exit("gen_repo.py failed")
    subprocess.run(["git", "--git-dir", origin, "gc", "-q"], check=True)
    os.makedirs(os.path.join(d, "policies"))
    with open(os.path.join(d, "policies", "bench.yaml"), "w") as f:
        f.write(POLICY.format(source=source, extra=extra_matchers))
    shutil.copytree(os.path.join(ROOT, "templates"), os.path.join(d, "templates"))
    return origin

SERVICES = 500
ENVS = ("prod", "staging")
FILES_PER = 10


def deployment(svc, env, version):
    return (
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {svc}\n  namespace: {env}\n"
        f"spec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n        - name: {svc}\n"
        f"          image: registry.example.com/acme/{svc}:{version}\n"
    )


def config(svc, env, i):
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {svc}-{i}\n  namespace: {env}\ndata:\n  key: value-{i}\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, required=True)
    ap.add_argument("--bad", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--services", type=int, default=SERVICES, help="x 2 envs x --files-per files")
    ap.add_argument("--files-per", type=int, default=FILES_PER, help="files per service and env")
    a = ap.parse_args()
    services = a.services
    rnd = random.Random(a.seed)
    out = sys.stdout.buffer
    now = int(time.time()) - 60
    start = now - 30 * a.commits
    mark = 0

    def data(text):
        b = text.encode()
        out.write(b"data %d\n" % len(b))
        out.write(b)
        out.write(b"\n")

    def commit(n, message, files):
        nonlocal mark
        mark += 1
        t = start + 30 * n
        out.write(b"commit refs/heads/main\n")
        out.write(b"mark :%d\n" % mark)
        out.write(b"committer deploy-bot <deploy@example.com> %d +0000\n" % t)
        data(message)
        if mark > 1:
            out.write(b"from :%d\n" % (mark - 1))
        for path, text in files:
            out.write(f"M 100644 inline {path}\n".encode())
            data(text)
        out.write(b"\n")

    initial = []
    for s in range(services):
        svc = f"s{s:03d}"
        for env in ENVS:
            initial.append((f"apps/{svc}/{env}/deployment.yaml", deployment(svc, env, "1.0.0")))
            for i in range(a.files_per - 1):
                initial.append((f"apps/{svc}/{env}/config-{i}.yaml", config(svc, env, i)))
    commit(0, "Initial config", initial)
    normal = a.commits - 1 - a.bad
    for n in range(1, normal + 1):
        svc, env = f"s{rnd.randrange(a.bad, services):03d}" if a.bad < services else "s000", rnd.choice(ENVS)
        v = f"1.{n // 100}.{n % 100}"
        commit(n, f"Deploy {svc} {v} to {env}", [(f"apps/{svc}/{env}/deployment.yaml", deployment(svc, env, v))])
    for b in range(a.bad):
        svc = f"s{b:03d}"
        n = normal + 1 + b
        commit(n, f"Deploy {svc} 9.9.9 to prod", [(f"apps/{svc}/prod/deployment.yaml", deployment(svc, "prod", "9.9.9"))])
    out.write(b"done\n")


if __name__ == "__main__":
    main()
