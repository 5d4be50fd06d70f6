#!/usr/bin/env python3
"""POST -> pushed when the origin is across a network: the origin served over smart HTTP by the
real `git http-backend`, behind token auth (401 until the request carries the token, as GitHub
answers), with a round-trip time added to every HTTP request. Reports p50/p99 of POST -> origin
branch moved and the origin requests per rollback, for each RTT; and, over the same link, the
`git clone --depth 1 && git revert && git push` a person would run instead.

    cargo build --release && python3 bench/remote.py --rtt 0,20,50,100 --alerts 20
"""
import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from gen_repo import alert, build_workspace, free_port, pct

TOKEN = "bench-git-token"


class Origin(BaseHTTPRequestHandler):
    """`git http-backend` as CGI, each request delayed by one round trip."""

    root = ""
    rtt = 0.0
    log = []
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def serve(self):
        time.sleep(self.rtt)
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        ok = auth.startswith("Basic ") and base64.b64decode(auth[6:]).decode().endswith(":" + TOKEN)
        with self.lock:
            self.log.append((self.command, self.path, ok))
        if not ok:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="origin"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = dict(os.environ, GIT_PROJECT_ROOT=self.root, GIT_HTTP_EXPORT_ALL="1", REMOTE_USER="bench",
                   REQUEST_METHOD=self.command, PATH_INFO=path, QUERY_STRING=query,
                   CONTENT_TYPE=self.headers.get("Content-Type", ""), CONTENT_LENGTH=str(len(body)),
                   HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding", ""),
                   GIT_PROTOCOL=self.headers.get("Git-Protocol", ""))
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = out.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode().splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = serve
    do_POST = serve


def run_rtt(a, rtt_ms):
    with tempfile.TemporaryDirectory(prefix="rollbackd-remote-") as d:
        build_workspace(d, a.commits, a.alerts * 2 + 1, source="alertmanager", extra_matchers=", 'env=\"prod\"'")
        Origin.root, Origin.rtt, Origin.log = d, rtt_ms / 1000, []
        http = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{http.server_address[1]}/origin.git"
        open(os.path.join(d, "tokens"), "w").write("bench-token\n")
        cfg = os.path.join(d, "rollbackd.yaml")
        open(cfg, "w").write(
            f"repo: {{ url: '{url}', token_env: GIT_TOKEN }}\ndata_dir: data\n"
            "pause: { breaker: { max_services: 0 } }\n"
            # The mirror stays fresh by the background refresh; the hot path fetches only when older.
            f"git: {{ fetch_freshness: {a.freshness} }}\n"
            "sources:\n  alertmanager: { bearer_tokens_file: tokens }\n")
        port = free_port()
        env = dict(os.environ, ROLLBACKD_LOG="warn", GIT_TOKEN=TOKEN)
        server = subprocess.Popen([a.bin, "--config", cfg, "serve", "--listen", f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE)
        times, requests = [], []
        try:
            server.stdout.readline()
            while True:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200:
                        break
                except Exception:
                    time.sleep(0.1)
            for i in range(a.alerts):
                time.sleep(a.pause)
                before = len(Origin.log)
                t = time.perf_counter()
                resp = alert(port, i)
                times.append((time.perf_counter() - t) * 1000)
                requests.append(len(Origin.log) - before)
                if resp["outcome"] != "rolled_back":
                    sys.exit(f"unexpected answer: {resp}")
        finally:
            server.terminate()
            server.wait()
        # The same rollback by hand, over the same link.
        manual = []
        for i in range(min(a.alerts, 5)):
            work = os.path.join(d, f"manual{i}")
            authed = url.replace("http://", f"http://x-access-token:{TOKEN}@")
            t = time.perf_counter()
            subprocess.run(["git", "clone", "-q", "--depth", "2", authed, work], check=True)
            subprocess.run(["git", "-C", work, "-c", "user.name=b", "-c", "user.email=b@x", "revert", "--no-edit", "HEAD"],
                           check=True, capture_output=True)
            subprocess.run(["git", "-C", work, "push", "-q", "origin", "HEAD:main"], check=True)
            manual.append((time.perf_counter() - t) * 1000)
        http.shutdown()
        return times, requests, manual


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rtt", default="0,20,50,100", help="round-trip times to add, ms")
    ap.add_argument("--alerts", type=int, default=20)
    ap.add_argument("--commits", type=int, default=50000)
    ap.add_argument("--freshness", default="30s", help="git.fetch_freshness: 0s fetches on every event")
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between alerts")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "rollbackd"))
    a = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} cores, {cpu}; repo: {a.commits} commits; fetch_freshness {a.freshness}")
    print("rtt ms | POST->pushed p50 | p99 | origin requests/rollback (median, max) | clone+revert+push p50")
    for rtt in [int(x) for x in a.rtt.split(",")]:
        times, requests, manual = run_rtt(a, rtt)
        print(f"{rtt:6d} | {statistics.median(times):8.1f} ms | {pct(times, 99):8.1f} ms | "
              f"{statistics.median(requests):.0f}, {max(requests)} | {statistics.median(manual):8.1f} ms")


if __name__ == "__main__":
    main()
