#!/usr/bin/env python3
"""Scale-out proof on one machine (issue 21, part 4): PostgreSQL, one control plane, two inference
replicas and two trainers as separate tessera-server processes on loopback ports.

What it does, in order (standard-library Python; the CLIs and the HTTP API are the clients):
  1. initdb + pg_ctl in a temp dir on a free loopback port (as the user `nobody` when run as root:
     initdb refuses root), then `tessera-server --role control --registry postgres://...`, two
     `--role inference` replicas (HTTP API on) and two `--role trainer` workers (one job each at a time,
     a short job lease so a dead trainer's job is requeued quickly).
  2. Two tenants (acme, globex) with their own datasets and one fine-tuning job each, created on the
     control plane. Client load starts: threads send completions for both tenants to the replicas
     round-robin; a request that fails on one replica is retried once on the other. A request that
     fails on both is a FAILED acknowledged request.
  3. Once the trainers have claimed the jobs and acme's has made progress, its trainer is SIGKILLed: the
     job must be requeued after its lease and completed by the surviving trainer.
  4. With both jobs done, under load: promote each tenant's version, then roll acme back. Each move must
     return with no lagging replica, and right after it returns every replica must answer that tenant
     with the new live version (the X-Tessera-Expert-Version header of a completion).
  5. A replica is SIGKILLed mid-load; the load carries on through the other; a promote afterwards
     returns and the surviving replica serves it; `tessera --server R1,R2 generate` (the CLI's
     tenant-affinity router: rendezvous order, failover) serves each tenant its live version.
     Every follower has its own data dir: blobs move over the control plane's Blobs service (replicas'
     caches must hold the promoted versions' blobs, byte-identical; no follower has data/blobs).
  6. PASS only when every check passed and no acknowledged request failed; prints the summary line
     "scale-out proof: PASS|FAIL (...)".

Usage: scale_out_proof.py BUILD_DIR [--short] [--keep]
"""
import argparse
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_ops import Checks  # noqa: E402

WHO = "scale-out-proof"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir():
    env = os.environ.get("TESSERA_PG_BINDIR")
    if env:
        return env
    best, best_major = None, -1
    root = "/usr/lib/postgresql"
    if os.path.isdir(root):
        for v in os.listdir(root):
            b = os.path.join(root, v, "bin")
            if os.path.exists(os.path.join(b, "initdb")) and v.split(".")[0].isdigit() and int(v.split(".")[0]) > best_major:
                best, best_major = b, int(v.split(".")[0])
    if best:
        return best
    for d in os.environ.get("PATH", "").split(":"):
        if d and os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return d
    return None


class Postgres:
    """A throwaway PostgreSQL server (the C++ test harness does the same: tests/storage/test_database.cc)."""

    def __init__(self, work):
        self.bindir = pg_bindir()
        self.base = os.path.join(work, "pg")
        self.port = None
        self.demote = None

    def _run(self, prog, *args):
        log_path = os.path.join(self.base, "tool.log")
        with open(log_path, "a") as out:
            p = subprocess.run([os.path.join(self.bindir, prog), *args], stdout=out, stderr=out,
                               preexec_fn=self.demote)
        if p.returncode != 0:
            raise RuntimeError(f"{prog} failed ({p.returncode}):\n" + open(log_path).read()[-2000:])

    def start(self):
        os.makedirs(self.base)
        os.chmod(self.base, 0o700)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)

            def demote(uid=pw.pw_uid, gid=pw.pw_gid):
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            self.demote = demote
        self._run("initdb", "-D", os.path.join(self.base, "data"), "-U", "tessera", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        for attempt in range(3):
            self.port = free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                    "-c max_pred_locks_per_transaction=256")
            try:
                self._run("pg_ctl", "-D", os.path.join(self.base, "data"), "-l", os.path.join(self.base, "pg.log"),
                          "-w", "-t", "60", "-o", opts, "start")
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "tessera", "tessera")
        return f"postgres://tessera@127.0.0.1:{self.port}/tessera"

    def stop(self):
        if self.port is not None:
            try:
                self._run("pg_ctl", "-D", os.path.join(self.base, "data"), "-m", "immediate", "-w", "stop")
            except RuntimeError as e:
                log(f"pg_ctl stop: {e}")


class Server:
    """One tessera-server process; started by start(), its ports read from its banner."""

    def __init__(self, bin_dir, work, name, args):
        self.bin_dir, self.name, self.args = bin_dir, name, args
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None
        self.port = self.http_port = None

    def start(self):
        out_path, log_path = os.path.join(self.dir, "out"), os.path.join(self.dir, "log")
        with open(out_path, "w") as out, open(log_path, "w") as err:
            self.proc = subprocess.Popen([os.path.join(self.bin_dir, "tessera-server"), "--data-dir",
                                          os.path.join(self.dir, "data"), "--listen", "127.0.0.1:0",
                                          "--log-level", "warn", *self.args], stdout=out, stderr=err)
        deadline = time.time() + 180
        while time.time() < deadline:
            text = open(out_path).read()
            if "listening on port" in text:
                self.port = int(text.split("listening on port")[1].split()[0].strip(","))
                if "HTTP API on port" in text:
                    self.http_port = int(text.split("HTTP API on port")[1].split()[0].strip(","))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n" + open(log_path).read()[-2000:])
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start in 180 s")

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Cli:
    def __init__(self, bin_dir, admin_key):
        self.bin_dir, self.admin_key = bin_dir, admin_key

    def admin(self, server, *args):
        return self._run("tessera-admin", server, dict(os.environ, TESSERA_ADMIN_KEY=self.admin_key), args)

    def tessera(self, server, key, tenant, *args):
        return self._run("tessera", server, dict(os.environ, TESSERA_API_KEY=key, TESSERA_TENANT=tenant), args)

    def _run(self, prog, server, env, args):
        """`server`: a Server, or an address list for the CLI's replica router ("HOST:PORT,HOST:PORT")."""
        addr = server if isinstance(server, str) else server.addr
        p = subprocess.run([os.path.join(self.bin_dir, prog), "--server", addr, "--json", *args], env=env,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{prog} {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}


def dataset(kind, n, seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b = rng.randrange(100), rng.randrange(100)
        if kind == "add":
            lines.append({"prompt": f"add({a},{b})=", "completion": str(a + b)})
        else:
            w = "".join(rng.choice("abcdefgh") for _ in range(5))
            lines.append({"prompt": f"rev({w})=", "completion": w[::-1]})
    return "".join(json.dumps(x) + "\n" for x in lines)


class Load:
    """Client threads: completions for both tenants, round-robin over the replicas; one retry on the
    other replica when a request fails. Records every request's outcome."""

    def __init__(self, replicas, keys, threads=4):
        self.replicas, self.keys = replicas, keys
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = self.retried = 0
        self.failed = []  # (tenant, first error, retry error)
        self.error_kinds = {}  # first-try failure kind -> count
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]

    def complete(self, replica, tenant, timeout=60):
        body = json.dumps({"model": tenant, "prompt": "add(12,30)=" if tenant == "acme" else "rev(abcde)=",
                           "max_tokens": 4, "temperature": 0}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{replica.http_port}/v1/completions", data=body,
                                     headers={"Authorization": f"Bearer {self.keys[tenant]}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return int(r.headers.get("X-Tessera-Expert-Version", "-1"))

    def _loop(self, i):
        n = i
        while not self.stop_flag.is_set():
            tenant = "acme" if n % 2 == 0 else "globex"
            first = self.replicas[n % len(self.replicas)]
            other = self.replicas[(n + 1) % len(self.replicas)]
            n += 1
            try:
                self.complete(first, tenant)
                with self.lock:
                    self.ok += 1
                continue
            except Exception as e1:  # noqa: BLE001 -- any failure is retried once on the other replica
                err1 = repr(e1)
                kind = f"HTTP {e1.code}" if isinstance(e1, urllib.error.HTTPError) else type(e1).__name__
                with self.lock:
                    self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
            try:
                self.complete(other, tenant)
                with self.lock:
                    self.ok += 1
                    self.retried += 1
            except Exception as e2:  # noqa: BLE001
                with self.lock:
                    self.failed.append((tenant, err1, repr(e2)))

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=90)


def wait_for(what, fn, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {seconds} s waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--short", action="store_true", help="CI: fewer training steps and shorter load phases")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs of every process)")
    ap.add_argument("--backbone", default="builtin:tiny")
    a = ap.parse_args()
    bin_dir = os.path.join(a.build, "services")
    for b in ("tessera-server", "tessera-admin", "tessera"):
        if not os.access(os.path.join(bin_dir, b), os.X_OK):
            sys.exit(f"{WHO}: {bin_dir}/{b} not built (run ops/build.sh)")
    if pg_bindir() is None:
        print(f"{WHO}: SKIP: no PostgreSQL server binaries (initdb, pg_ctl); Debian: apt-get install postgresql")
        return 0
    steps = 20 if a.short else 120
    load_seconds = 2 if a.short else 15
    load_threads = 2 if a.short else 4
    checks = Checks("scale-out proof")
    work = tempfile.mkdtemp(prefix="tessera-scale-out.")
    if os.geteuid() == 0:
        os.chmod(work, 0o755)  # the PostgreSQL user must reach work/pg
    pg = Postgres(work)
    servers = []
    load = None
    t0 = time.time()
    try:
        url = pg.start()
        log(f"PostgreSQL on 127.0.0.1:{pg.port}")
        common = ["--backbone", a.backbone, "--registry", url]
        control = Server(bin_dir, work, "control", common + ["--role", "control", "--replica-wait-seconds", "10"])
        servers.append(control.start())
        key_file = os.path.join(control.dir, "data", "admin.key")
        admin_key = open(key_file).read().strip()
        follow = ["--role", None, "--control-plane", control.addr, "--control-plane-key-file", key_file]

        def follower(name, role, extra):
            args = list(follow)
            args[1] = role
            # Its own data dir, sharing nothing with the control plane's: blobs come and go over the
            # control plane's tessera.internal.v1.Blobs service, into a verified cache (data/blob-cache).
            return Server(bin_dir, work, name, common + args + ["--replica-id", name] + extra)
        replicas = [follower(f"replica-{i}", "inference", ["--http-listen", "127.0.0.1:0"]) for i in (1, 2)]
        trainers = [follower(f"trainer-{i}", "trainer", ["--job-lease-seconds", "3", "--max-joint-jobs", "1",
                                                         "--max-concurrent-jobs", "1"]) for i in (1, 2)]
        for s in replicas + trainers:
            servers.append(s.start())
        log("control plane " + control.addr + ", replicas " + ", ".join(r.addr for r in replicas) +
            ", trainers " + ", ".join(t.addr for t in trainers))
        cli = Cli(bin_dir, admin_key)
        for s in replicas + trainers:
            st = cli.admin(s, "status")
            checks.check(f"{s.name} reports role {st.get('role')} and follows the control plane",
                         st.get("role") in ("inference", "trainer") and st.get("control_plane") == control.addr)

        keys, jobs = {}, {}
        for tenant, kind in (("acme", "add"), ("globex", "rev")):
            keys[tenant] = cli.admin(control, "tenants", "create", tenant)["api_key"]["secret"]
            path = os.path.join(work, f"{tenant}.jsonl")
            with open(path, "w") as f:
                f.write(dataset(kind, 64, 1 if tenant == "acme" else 2))
            ds = cli.tessera(control, keys[tenant], tenant, "datasets", "upload", path)
            job = cli.tessera(control, keys[tenant], tenant, "jobs", "create", "--dataset", ds["dataset_id"],
                              "--max-steps", str(steps), "--batch-size", "4")
            jobs[tenant] = job["job_id"]
        log(f"jobs {jobs} ({steps} steps each)")

        load = Load(replicas, keys, load_threads)
        load.start()

        # Kill acme's trainer once it has made progress.
        def running_on():
            for t in trainers:
                if t.alive() and jobs["acme"] in cli.admin(t, "status").get("running_job_ids", []):
                    return t
            return None
        victim = wait_for("a trainer to claim acme's job", running_on, 120)
        wait_for("acme's job to make progress",
                 lambda: int(cli.tessera(control, keys["acme"], "acme", "jobs", "get", jobs["acme"])
                             .get("progress", {}).get("step", 0)) >= 2, 120)
        victim.kill()
        log(f"SIGKILLed {victim.name} mid-job")
        survivor = [t for t in trainers if t is not victim][0]

        def finished(tenant):
            j = cli.tessera(control, keys[tenant], tenant, "jobs", "get", jobs[tenant])
            return j if j["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None
        done = {t: wait_for(f"{t}'s job to finish", lambda t=t: finished(t), 600) for t in jobs}
        for t, j in done.items():
            checks.check(f"{t}'s job succeeded", j["state"] == "SUCCEEDED", j.get("error", ""))
        checks.check("acme's job was reclaimed after its trainer died and completed by the survivor",
                     int(done["acme"].get("attempts", 0)) >= 2, f"attempts {done['acme'].get('attempts')}")
        checks.check(f"{survivor.name} is still running", survivor.alive())

        def served_versions(tenant):
            out = {}
            for r in replicas:
                if r.alive():
                    out[r.name] = {load.complete(r, tenant) for _ in range(3)}
            return out

        def move(tenant, *args):
            res = cli.admin(control, *args, "--tenant", tenant)
            live = int(res.get("live_version", 0))
            seen = served_versions(tenant)
            return res, live, seen

        time.sleep(load_seconds)
        for tenant in jobs:
            v = int(done[tenant].get("result_version", 0))
            res, live, seen = move(tenant, "promote", "--version", str(v))
            checks.check(f"promote {tenant} v{v} under load returns with no lagging replica",
                         live == v and not res.get("lagging_replicas") and int(res.get("replicas_applied", 0)) == 2,
                         json.dumps(res))
            checks.check(f"both replicas serve {tenant} v{v} right after the promote returned",
                         all(s == {v} for s in seen.values()) and len(seen) == 2, json.dumps({k: sorted(s) for k, s in seen.items()}))
        # Nothing shared: no follower has a blob store of its own; each replica's cache holds the promoted
        # versions' blobs, byte-identical to the control plane's (the trainers uploaded them).
        for tenant in jobs:
            v = int(done[tenant].get("result_version", 0))
            listed = cli.tessera(control, keys[tenant], tenant, "versions", "list").get("versions", [])
            digest = next((x.get("sha256", "") for x in listed if int(x.get("version", 0)) == v), "")
            owned = os.path.join(control.dir, "data", "blobs", digest[:2], digest)
            for r in replicas:
                cached = os.path.join(r.dir, "data", "blob-cache", digest[:2], digest)
                checks.check(f"{r.name} fetched {tenant} v{v}'s blob into its own cache, identical to the control plane's",
                             len(digest) == 64 and os.path.isfile(cached) and os.path.isfile(owned) and
                             open(cached, "rb").read() == open(owned, "rb").read(), cached)
        checks.check("no follower has a blob store of its own (data/blobs)",
                     not any(os.path.exists(os.path.join(s.dir, "data", "blobs")) for s in replicas + trainers))
        time.sleep(load_seconds)
        res, live, seen = move("acme", "rollback")
        checks.check("rollback acme under load returns with no lagging replica",
                     live == 0 and not res.get("lagging_replicas"), json.dumps(res))
        checks.check("both replicas serve acme v0 right after the rollback returned",
                     all(s == {0} for s in seen.values()) and len(seen) == 2, json.dumps({k: sorted(s) for k, s in seen.items()}))

        time.sleep(load_seconds)
        dead = replicas[1]
        retried_before_kill = load.retried
        dead.kill()
        log(f"SIGKILLed {dead.name} mid-load; promoting at once")
        v = int(done["acme"].get("result_version", 0))
        res, live, seen = move("acme", "promote", "--version", str(v))
        lagging = res.get("lagging_replicas", [])
        # The dead replica is named when its last heartbeat was still fresh as the promote began (the
        # usual case: it beat < 1 s before the kill); on a machine slow enough for it to be stale by
        # then it is simply not waited for. Either way the survivor is not lagging and serves v.
        checks.check("promote right after a replica died returns; the survivor serves it; only the dead one may lag",
                     live == v and seen.get(replicas[0].name) == {v} and set(lagging) <= {dead.name},
                     json.dumps(res))
        log(f"lagging replicas reported for that promote: {lagging}")
        # Client-side tenant affinity (services/cli/replica_router.h): `tessera --server R1,R2` sends each
        # tenant to its rendezvous-first replica and fails over to the next; with one replica dead every
        # tenant is still served, by the survivor, with its live version.
        both = ",".join(r.addr for r in replicas)
        for tenant in jobs:
            out = cli.tessera(both, keys[tenant], tenant, "generate", "add(2,3)=", "--max-tokens", "2")
            want = int(cli.tessera(control, keys[tenant], tenant, "versions", "list").get("live_version", 0))
            checks.check(f"tessera --server R1,R2 generate for {tenant} is served (live v{want}) with one replica dead",
                         int(out.get("expert_version", -1)) == want, json.dumps(out))
        time.sleep(load_seconds)
        load.stop()
        log(f"first-try failures retried on the other replica: {retried_before_kill} before the replica kill, "
            f"{load.retried - retried_before_kill} after; kinds: {dict(load.error_kinds)}")
        checks.check(f"no acknowledged request failed on both replicas ({load.ok} served, {load.retried} "
                     "served by the other replica after a failure)", not load.failed and load.ok > 0,
                     "; ".join(f"{t}: {e1} / {e2}" for t, e1, e2 in load.failed[:3]))
    except Exception as e:  # noqa: BLE001 -- reported as a failed check, with the logs kept
        checks.check("the proof ran to the end", False, str(e))
        a.keep = True
    finally:
        if load is not None:
            load.stop_flag.set()
        for s in reversed(servers):
            s.stop()
        pg.stop()
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    rc = checks.summary()
    print(f"scale-out proof: {'PASS' if rc == 0 else 'FAIL'} ({time.time() - t0:.0f} s)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
