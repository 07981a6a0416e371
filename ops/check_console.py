#!/usr/bin/env python3
"""Web console check (run by ops/check-console.sh): Debian's chromium, headless, driven through Debian's
chromium-driver by Selenium (pinned in ops/requirements-ops.txt), against tessera-server --http-listen on
builtin:tiny.

Starts the server (temp data dir, loopback ports) with tenants acme and beta, uploads a file and starts
a fine-tuning job for acme through the HTTP API, then in the browser:
  1. logs in with the admin key through the console's form and sees both tenants;
  2. opens acme's page and sees the job's loss curve move (more train points while the job runs), until
     the job succeeds;
  3. promotes the new version (accepting the confirmation), sees it live and its slots outlined on the
     heat map, runs the playground (base vs live side by side), sees the heat map count tokens, and rolls
     back (confirmed) to the base;
  4. logs in as acme's tenant key: no promote buttons, and beta's page (by URL) shows "Not allowed"; the
     JSON route of beta answers 403 to acme's key.
Prints PASS/FAIL per check and a summary; exit status 1 on any failure. --screenshots DIR keeps PNGs.
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

from tessera_ops import Checks, Server, require_binaries

checks = Checks("check-console")
check = checks.check


def http(base, key, method, path, body=None, files=None):
    headers = {"Authorization": "Bearer " + key}
    data = None
    if files is not None:
        boundary = "tessera-check-boundary"
        parts = []
        for name, (filename, content) in files.items():
            disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            parts.append(f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + content + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def chat_jsonl(n):
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"add({i % 17},{i % 11})="},
                                            {"role": "assistant", "content": str(i % 17 + i % 11)}]}) + "\n"
                   for i in range(n)).encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build_dir")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--screenshots", default="")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = ap.parse_args()
    bin_dir = os.path.join(os.path.abspath(args.build_dir), "services")
    require_binaries(bin_dir, ("tessera-server", "tessera-admin", "tessera"), "check-console")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    with Server(bin_dir, "builtin:tiny", "check-console", keep=args.keep, prefix="tessera-console-check.",
                extra_args=["--http-listen", "127.0.0.1:0"]) as srv:
        base = f"http://127.0.0.1:{srv.http_port}"
        srv.admin("tenants", "create", "beta")
        status, f = http(base, srv.tenant_key, "POST", "/v1/files",
                         files={"purpose": (None, b"fine-tune"), "file": ("train.jsonl", chat_jsonl(48))})
        check("upload through the API", status == 200, str(f))
        status, job = http(base, srv.tenant_key, "POST", "/v1/fine_tuning/jobs",
                           {"model": "acme", "training_file": f["id"],
                            "hyperparameters": {"max_steps": 60, "batch_size": 4}})
        check("job created", status == 200, str(job))

        opts = webdriver.ChromeOptions()
        opts.binary_location = args.chromium
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1280,1600"):
            opts.add_argument(a)
        # The browser's profile lives in the check's work directory, removed with it (without this
        # chromium leaves an org.chromium.Chromium.* directory in /tmp on every run).
        opts.add_argument("--user-data-dir=" + os.path.join(srv.work, "chromium-profile"))
        driver = webdriver.Chrome(service=Service(args.chromedriver), options=opts)
        # The page re-renders its panels on every poll, so an element found by one lookup can be
        # replaced before its text is read: such a read is retried, not a failure.
        wait = WebDriverWait(driver, 60, ignored_exceptions=[StaleElementReferenceException])
        shot = lambda name: args.screenshots and driver.save_screenshot(os.path.join(args.screenshots, name + ".png"))
        if args.screenshots:
            os.makedirs(args.screenshots, exist_ok=True)
        try:
            def login(key):
                driver.get(base + "/console")
                box = wait.until(EC.presence_of_element_located((By.ID, "api-key")))
                box.send_keys(key)
                driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
                wait.until(EC.presence_of_element_located((By.ID, "logout")))

            login(srv.admin_key)
            wait.until(EC.presence_of_element_located((By.ID, "tenants")))
            names = driver.find_element(By.ID, "tenants").text
            check("admin logs in and sees every tenant", "acme" in names and "beta" in names, names[:200])
            shot("tenants")

            driver.get(base + "/console#/t/acme")
            # The job view is re-rendered as events arrive: read it in one script call (no stale elements).
            read = lambda: driver.execute_script(
                "const s = document.querySelector('#loss-chart .series-train'), j = document.getElementById('job-state');"
                "return [s ? Number(s.getAttribute('data-points')) : -1, j ? j.textContent : ''];")
            wait.until(lambda d: read()[0] >= 0)
            seen, deadline = [read()[0]], time.time() + 600
            while time.time() < deadline:
                n, state = read()
                seen.append(n)
                if state.startswith("succeeded") or state.startswith("failed"):
                    break
                time.sleep(0.5)
            check("the job's loss curve moves while it trains", len(set(seen)) >= 3 and seen[-1] > seen[0],
                  f"train points seen: {sorted(set(seen))[:8]}...")
            state = read()[1]
            check("the job succeeds (shown on the page)", state.startswith("succeeded"), state)
            val = driver.execute_script("const v = document.querySelector('#loss-chart .series-validation');"
                                        "return v ? Number(v.getAttribute('data-points')) : 0;")
            check("the validation curve has points", val > 0, str(val))
            shot("job")

            driver.get(base + "/console#/t/acme")
            driver.refresh()
            button = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#version-1 button.promote")))
            button.click()
            wait.until(EC.alert_is_present()).accept()
            wait.until(lambda d: d.find_element(By.ID, "live-version").text == "1")
            check("promote (confirmed) makes version 1 live", True)
            wait.until(EC.presence_of_element_located((By.ID, "heatmap")))
            overlay = driver.find_elements(By.CSS_SELECTOR, "#heatmap rect.overlay")
            check("the heat map outlines the live version's slots", len(overlay) > 0, f"{len(overlay)} slots")
            driver.find_element(By.ID, "run").click()
            wait.until(lambda d: "[version" in d.find_element(By.ID, "out-a").text and
                       "[version" in d.find_element(By.ID, "out-b").text)
            a, b = driver.find_element(By.ID, "out-a").text, driver.find_element(By.ID, "out-b").text
            check("the playground runs base and live side by side", "[version 0" in a and "[version 1" in b,
                  f"{a[-40:]!r} | {b[-40:]!r}")
            driver.refresh()
            wait.until(EC.presence_of_element_located((By.ID, "heatmap")))
            counts = [float(r.get_attribute("data-tokens")) for r in driver.find_elements(By.CSS_SELECTOR, "#heatmap rect.cell")]
            check("the heat map counts the tenant's routed tokens", sum(counts) > 0, f"{sum(counts)} tokens")
            shot("tenant")
            wait.until(EC.element_to_be_clickable((By.ID, "rollback"))).click()
            wait.until(EC.alert_is_present()).accept()
            wait.until(lambda d: d.find_element(By.ID, "live-version").text == "0")
            check("roll back (confirmed) makes the base live again", True)

            driver.find_element(By.ID, "logout").click()
            login(srv.tenant_key)
            wait.until(EC.presence_of_element_located((By.ID, "versions")))
            check("a tenant key lands on its own page", "acme" in driver.find_element(By.ID, "tenant-title").text)
            check("a tenant sees no promote buttons", not driver.find_elements(By.CSS_SELECTOR, "button.promote"))
            driver.get(base + "/console#/t/beta")
            driver.refresh()
            err = wait.until(EC.presence_of_element_located((By.ID, "error"))).text
            check("another tenant's page (by URL) shows Not allowed", err.startswith("Not allowed"), err)
            shot("denied")
            status, _ = http(base, srv.tenant_key, "GET", "/console/api/tenants/beta")
            check("another tenant's data (by URL) is 403", status == 403, str(status))
        finally:
            driver.quit()
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
