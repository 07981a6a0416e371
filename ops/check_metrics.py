#!/usr/bin/env python3
"""Metrics check (run by ops/check-metrics.sh): `promtool check metrics` (Debian's prometheus package)
accepts what tessera-server's /metrics serves after real traffic, and /metrics accepts an admin key.

Starts tessera-server on builtin:tiny with --metrics-listen and --http-listen (loopback), sends a
completion and a streamed chat through the HTTP API and a failing request, then scrapes /metrics with
`Authorization: Bearer <admin key>` and pipes it to promtool (its lint: names, units, _total on counters,
HELP/TYPE), and checks that the Grafana dashboard (ops/grafana/tessera.json) queries only families the
server exports. A tenant's key is refused (403). Needs only the standard library.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

from tessera_ops import Checks, Server, require_binaries

checks = Checks("check-metrics")
check = checks.check


def get(url, key=None, body=None):
    headers = {"Authorization": "Bearer " + key} if key else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build_dir")
    ap.add_argument("--promtool", default="promtool")
    args = ap.parse_args()
    bin_dir = os.path.join(os.path.abspath(args.build_dir), "services")
    require_binaries(bin_dir, ("tessera-server", "tessera-admin", "tessera"), "check-metrics")
    with Server(bin_dir, "builtin:tiny", "check-metrics", prefix="tessera-metrics-check.",
                extra_args=["--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]) as srv:
        metrics_port = srv.startup.split("metrics on port")[1].split()[0].strip(",")
        api = f"http://127.0.0.1:{srv.http_port}/v1"
        status, _ = get(api + "/completions", srv.tenant_key, {"model": "acme", "prompt": "Hello", "max_tokens": 8})
        check("a completion over HTTP", status == 200, str(status))
        status, _ = get(api + "/chat/completions", srv.tenant_key,
                        {"model": "acme", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
                         "stream": True})
        check("a streamed chat over HTTP", status == 200, str(status))
        status, _ = get(api + "/completions", srv.tenant_key, {"model": "nobody", "prompt": "x"})
        check("an unknown model is 404", status == 404, str(status))
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        status, text = get(url, srv.admin_key)
        check("/metrics with the admin key", status == 200 and "tessera_up 1" in text, str(status))
        check("HTTP calls are counted", 'method="HTTP POST /v1/completions"' in text)
        check("routed tokens are counted per tenant", 'tessera_expert_routed_tokens_total{tenant="acme"' in text)
        status, _ = get(url, srv.tenant_key)
        check("/metrics refuses a tenant key", status == 403, str(status))
        p = subprocess.run([args.promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        check("promtool check metrics", p.returncode == 0, (p.stdout + p.stderr).strip()[:2000])
        # The Grafana dashboard only queries families the server exports (scraped now, or declared in
        # services/server.cc: a gauge family with no series yet is not rendered).
        families = {l.split()[2] for l in text.splitlines() if l.startswith("# TYPE ")}
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        families |= set(re.findall(r'Describe\("(tessera_[a-z_]+)"', open(os.path.join(repo, "services", "server.cc")).read()))
        dash = json.load(open(os.path.join(repo, "ops", "grafana", "tessera.json")))
        used = set()
        for panel in dash["panels"]:
            for t in panel["targets"]:
                used |= set(re.findall(r"\b(tessera_[a-z_]+?)(?:_bucket|_count|_sum)?\b(?=[\[{)\s]|$)", t["expr"]))
        missing = sorted(u for u in used if u not in families)
        check("ops/grafana/tessera.json queries only exported families", used and not missing, f"missing: {missing}")
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
