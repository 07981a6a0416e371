"""Shared plumbing of the ops/ compatibility checks: PASS/FAIL bookkeeping, running the CLIs, and a
tessera-server on a temporary data dir and a loopback port with an admin and a tenant's CLI bound to it.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


class Checks:
    """PASS/FAIL lines and the closing summary of one check script."""

    def __init__(self, name):
        self.name = name
        self.results = []

    def check(self, what, ok, detail=""):
        self.results.append((what, bool(ok)))
        print(f"{'PASS' if ok else 'FAIL'}  {what}{': ' + detail if detail else ''}", flush=True)
        return ok

    def summary(self):
        failed = [n for n, ok in self.results if not ok]
        print(f"\n{self.name}: {'PASS' if not failed else 'FAIL'} "
              f"({len(self.results) - len(failed)}/{len(self.results)} checks)")
        return 1 if failed else 0


def run(cmd, env=None):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def require_binaries(bin_dir, names, who):
    for b in names:
        if not os.access(os.path.join(bin_dir, b), os.X_OK):
            sys.exit(f"{who}: {bin_dir}/{b} not built (run ops/build.sh)")


class Server:
    """tessera-server --backbone BACKBONE on 127.0.0.1:0 in a temp dir, with tenant `acme` created.
    Use as a context manager; .admin(*args) and .tessera(*args) run the CLIs against it. `extra_args`
    go to tessera-server; with --http-listen, .http_port is the HTTP API's port (else None)."""

    def __init__(self, bin_dir, backbone, who, keep=False, prefix="tessera-check.", extra_args=()):
        self.bin_dir, self.backbone, self.who, self.keep = bin_dir, backbone, who, keep
        self.extra_args = list(extra_args)
        self.work = tempfile.mkdtemp(prefix=prefix)
        self.proc = None

    def __enter__(self):
        out_path = os.path.join(self.work, "server.out")
        log_path = os.path.join(self.work, "server.log")
        with open(out_path, "w") as out, open(log_path, "w") as log:
            self.proc = subprocess.Popen([os.path.join(self.bin_dir, "tessera-server"), "--data-dir",
                                          os.path.join(self.work, "data"), "--listen", "127.0.0.1:0",
                                          "--backbone", self.backbone, *self.extra_args],
                                         stdout=out, stderr=log)
        port = None
        for _ in range(600):
            text = open(out_path).read()
            if "listening on port" in text:
                port = text.split("listening on port")[1].split()[0].strip(",")
                break
            if self.proc.poll() is not None:
                sys.exit(f"{self.who}: tessera-server exited: " + open(log_path).read()[-800:])
            time.sleep(0.1)
        if port is None:
            sys.exit(f"{self.who}: tessera-server did not start")
        self.startup = open(out_path).read().strip()
        self.http_port = None
        if "HTTP API on port" in self.startup:
            self.http_port = int(self.startup.split("HTTP API on port")[1].split()[0].strip(","))
        self.addr = ["--server", f"127.0.0.1:{port}"]
        admin_key = open(os.path.join(self.work, "data", "admin.key")).read().strip()
        self.admin_key = admin_key
        self.admin_env = dict(os.environ, TESSERA_ADMIN_KEY=admin_key)
        key = json.loads(self.admin("--json", "tenants", "create", "acme"))["api_key"]["secret"]
        self.tenant_key = key
        self.tenant_env = dict(os.environ, TESSERA_API_KEY=key, TESSERA_TENANT="acme")
        return self

    def admin(self, *args):
        return run([os.path.join(self.bin_dir, "tessera-admin"), *self.addr, *args], self.admin_env)

    def tessera(self, *args):
        return run([os.path.join(self.bin_dir, "tessera"), *self.addr, *args], self.tenant_env)

    def wait_job(self, job_id, seconds=600):
        deadline = time.time() + seconds
        while True:
            job = json.loads(self.tessera("--json", "jobs", "get", job_id))
            if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") or time.time() > deadline:
                return job
            time.sleep(0.2)

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.keep:
            print(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        return False
