#include "services/http/console_page.h"

namespace tessera::services::http {
namespace {

// The page. Raw string delimiter TESSERA so the script may contain )" freely.
constexpr char kPage[] = R"TESSERA(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tessera console</title>
<style>
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --accent:#0b5fff; --bad:#b42318; --bg:#fff; --soft:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui, sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; gap:1rem; align-items:center; padding:.6rem 1rem; border-bottom:1px solid var(--line); background:var(--soft); }
header h1 { font-size:1.1rem; margin:0; }
header nav { margin-left:auto; display:flex; gap:.8rem; align-items:center; }
main { padding:1rem; max-width:1200px; margin:0 auto; }
section { margin-bottom:1.6rem; }
h2 { font-size:1.05rem; border-bottom:1px solid var(--line); padding-bottom:.2rem; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:.3rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-weight:600; color:var(--muted); }
button { font:inherit; padding:.25rem .7rem; border:1px solid var(--line); border-radius:4px; background:#fff; cursor:pointer; }
button.primary { background:var(--accent); color:#fff; border-color:var(--accent); }
button:focus-visible, a:focus-visible, input:focus-visible, select:focus-visible, textarea:focus-visible { outline:2px solid var(--accent); outline-offset:2px; }
input, select, textarea { font:inherit; padding:.3rem; border:1px solid var(--line); border-radius:4px; }
.error { color:var(--bad); }
.muted { color:var(--muted); }
.live { font-weight:600; color:#116329; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:1rem; }
pre.out { white-space:pre-wrap; background:var(--soft); padding:.5rem; min-height:3rem; border:1px solid var(--line); border-radius:4px; }
svg text { font:11px system-ui, sans-serif; fill:var(--muted); }
</style>
</head>
<body>
<header>
  <h1>Tessera console</h1>
  <nav id="nav" aria-label="Main"></nav>
</header>
<main id="main" tabindex="-1"></main>
<p id="status" role="status" aria-live="polite" class="muted" style="padding:0 1rem"></p>
<script>
"use strict";
const $main = document.getElementById("main");
const $nav = document.getElementById("nav");
const $status = document.getElementById("status");
let me = null;          // {role, tenant, key_id}
let pollToken = 0;      // bumps on every view change: stale long-polls stop

function key() { return sessionStorage.getItem("tessera_key") || ""; }

// h("tag", {attr: value, onclick: fn}, child...): builds elements; strings become text nodes (never HTML).
function h(tag, attrs, ...children) {
  const ns = ["svg","rect","line","polyline","text","g","title","circle"].includes(tag) ? "http://www.w3.org/2000/svg" : null;
  const el = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

async function api(method, path, body) {
  const opts = {method, headers: {"Authorization": "Bearer " + key()}};
  if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const msg = data && data.error ? data.error.message : ("HTTP " + r.status);
    const err = new Error(msg); err.status = r.status; throw err;
  }
  return {data, headers: r.headers};
}

function say(text, isError) { $status.textContent = text || ""; $status.className = isError ? "error" : "muted"; }
function when(s) { return s ? new Date(s * 1000).toLocaleString() : ""; }
function fmt(x, d) { return (x === null || x === undefined) ? "—" : Number(x).toFixed(d === undefined ? 4 : d); }

function setNav() {
  $nav.replaceChildren();
  if (!me) return;
  if (me.role === "admin") $nav.append(h("a", {href: "#/"}, "Tenants"));
  else $nav.append(h("a", {href: "#/t/" + me.tenant}, me.tenant));
  $nav.append(h("span", {class: "muted", id: "who"}, me.role === "admin" ? "admin key " + me.key_id : "tenant " + me.tenant),
              h("button", {onclick: logout, id: "logout"}, "Log out"));
}

function logout() { sessionStorage.removeItem("tessera_key"); me = null; location.hash = "#/login"; route(); }

function loginView(message) {
  $nav.replaceChildren();
  const input = h("input", {id: "api-key", type: "password", autocomplete: "off", size: 60, required: true});
  const form = h("form", {id: "login", onsubmit: async (ev) => {
      ev.preventDefault();
      sessionStorage.setItem("tessera_key", input.value.trim());
      try { me = (await api("GET", "/console/api/me")).data; setNav(); location.hash = "#/"; route(); }
      catch (e) { sessionStorage.removeItem("tessera_key"); loginView(e.message); }
    }},
    h("h2", {}, "Log in"),
    h("p", {}, h("label", {for: "api-key"}, "API key "), input, " ", h("button", {class: "primary", type: "submit"}, "Log in")),
    message ? h("p", {class: "error", role: "alert"}, message) : null,
    h("p", {class: "muted"}, "The key stays in this tab (sessionStorage) and is sent as Authorization: Bearer."));
  $main.replaceChildren(form);
  input.focus();
}

async function tenantsView() {
  if (me.role !== "admin") { location.hash = "#/t/" + me.tenant; return route(); }
  const {data} = await api("GET", "/console/api/tenants");
  const rows = data.tenants.map(t => h("tr", {},
    h("td", {}, h("a", {href: "#/t/" + t.tenant_id}, t.tenant_id)), h("td", {}, t.display_name),
    h("td", {}, String(t.live_version)), h("td", {}, String(t.versions)),
    h("td", {}, t.keys.map(k => k.key_id + (k.revoked ? " (revoked)" : "")).join(", ")),
    h("td", {}, when(t.created_at))));
  $main.replaceChildren(h("section", {id: "tenants"}, h("h2", {}, "Tenants and keys"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Tenant", "Name", "Live version", "Versions", "API keys", "Created"].map(x => h("th", {scope: "col"}, x)))),
      h("tbody", {}, rows))));
}

async function move(tenant, body, what) {
  if (!confirm(what + "?")) return;
  try {
    const {data} = await api("POST", "/console/api/tenants/" + tenant + (body.version !== undefined ? "/promote" : "/rollback"), body);
    say(`${tenant}: live version ${data.previous_live} → ${data.live_version}`);
  } catch (e) { say(e.message, true); }
  route();
}

function versionsSection(t) {
  const admin = me.role === "admin";
  const rows = t.versions.map(v => h("tr", {id: "version-" + v.version},
    h("td", {}, String(v.version), v.live ? h("span", {class: "live"}, " (live)") : null),
    h("td", {}, v.parent_version ? String(v.parent_version) : "base"),
    h("td", {}, v.job_id || "—"), h("td", {}, fmt(v.val_loss)), h("td", {}, fmt(v.base_val_loss)),
    h("td", {}, v.slots.map(s => s[0] + "." + s[1]).join(" ")), h("td", {}, when(v.created_at)),
    admin ? h("td", {}, v.live ? null : h("button", {class: "promote", "data-version": v.version,
      onclick: () => move(t.tenant_id, {version: v.version}, `Make version ${v.version} live for ${t.tenant_id}`)}, "Promote")) : null));
  const base = h("tr", {id: "version-0"}, h("td", {}, "0 (base)", t.live_version === 0 ? h("span", {class: "live"}, " (live)") : null),
    h("td", {}, "—"), h("td", {}, "—"), h("td", {}, "—"), h("td", {}, "—"), h("td", {}, "—"), h("td", {}, ""),
    admin ? h("td", {}, t.live_version === 0 ? null : h("button", {class: "promote", "data-version": 0,
      onclick: () => move(t.tenant_id, {version: 0}, `Make the base experts live for ${t.tenant_id}`)}, "Promote")) : null);
  const head = ["Version", "Parent", "Job", "Val loss", "Base val loss", "Slots (layer.expert)", "Created"].concat(admin ? ["Action"] : []);
  return h("section", {id: "versions"}, h("h2", {}, "Versions"),
    h("p", {}, "Live: ", h("strong", {id: "live-version"}, String(t.live_version)), " ",
      admin ? h("button", {id: "rollback", onclick: () => move(t.tenant_id, {}, `Roll ${t.tenant_id} back to the previous live version`)}, "Roll back") : null),
    h("table", {}, h("thead", {}, h("tr", {}, head.map(x => h("th", {scope: "col"}, x)))), h("tbody", {}, rows, base)),
    h("h3", {}, "Live pointer history"),
    h("ul", {id: "history"}, t.history.map(c => h("li", {}, `${when(c.at)}: ${c.kind} ${c.from} → ${c.to} by ${c.actor}`))));
}

// A line chart of [[x, y], ...] series; SVG so it scales and needs no library.
function chart(series, colors, labels) {
  const W = 560, H = 220, P = 36;
  const pts = series.flat();
  const svg = h("svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", id: "loss-chart", "aria-label": "loss curve"});
  if (!pts.length) { svg.append(h("text", {x: P, y: H / 2}, "no points yet")); return svg; }
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-6);
  const X = x => P + (x - x0) / (x1 - x0) * (W - 2 * P), Y = y => H - P - (y - y0) / (y1 - y0) * (H - 2 * P);
  svg.append(h("line", {x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#d0d7de"}), h("line", {x1: P, y1: P, x2: P, y2: H - P, stroke: "#d0d7de"}),
    h("text", {x: P, y: H - P + 14}, String(x0)), h("text", {x: W - P - 20, y: H - P + 14}, String(x1)),
    h("text", {x: 2, y: P}, y1.toFixed(3)), h("text", {x: 2, y: H - P}, y0.toFixed(3)));
  series.forEach((s, i) => {
    svg.append(h("polyline", {fill: "none", stroke: colors[i], "stroke-width": 2, class: "series-" + labels[i],
      "data-points": s.length, points: s.map(p => X(p[0]) + "," + Y(p[1])).join(" ")}));
    svg.append(h("text", {x: W - P - 110, y: P + 14 * i, fill: colors[i]}, labels[i] + " (" + s.length + ")"));
  });
  return svg;
}

async function followJob(tenant, jobId, box) {
  const mine = ++pollToken;
  let after = 0, train = [], val = [];
  for (;;) {
    let data;
    try { data = (await api("GET", `/console/api/tenants/${tenant}/jobs/${jobId}/curve?after=${after}&wait=10`)).data; }
    catch (e) { if (mine === pollToken) say(e.message, true); return; }
    if (mine !== pollToken) return;
    train = train.concat(data.train); val = val.concat(data.val); after = data.last_seq;
    const j = data.job;
    box.replaceChildren(h("h3", {}, "Job ", jobId),
      h("p", {id: "job-state"}, `${j.status} — step ${j.tessera.step}/${j.tessera.max_steps}, train loss ${fmt(j.tessera.train_loss)}, val loss ${fmt(j.tessera.val_loss)}`),
      chart([train, val], ["#0b5fff", "#d1242f"], ["train", "validation"]));
    if (data.done) return;
  }
}

function jobsSection(tenant, jobs) {
  const box = h("div", {id: "job-detail"});
  const rows = jobs.map(j => h("tr", {},
    h("td", {}, h("a", {href: `#/t/${tenant}/job/${j.id}`, class: "job-link"}, j.id)), h("td", {}, j.status),
    h("td", {}, `${j.tessera.step}/${j.tessera.max_steps}`), h("td", {}, fmt(j.tessera.train_loss)),
    h("td", {}, fmt(j.tessera.val_loss)), h("td", {}, j.fine_tuned_model || "—"), h("td", {}, when(j.created_at))));
  return h("section", {id: "jobs"}, h("h2", {}, "Jobs"),
    jobs.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Job", "Status", "Step", "Train loss", "Val loss", "Model", "Created"].map(x => h("th", {scope: "col"}, x)))), h("tbody", {}, rows))
                : h("p", {class: "muted"}, "No jobs yet."), box);
}

function heatmapSection(e) {
  const cell = 26, P = 60;
  const max = Math.max(1, ...e.tokens.flat());
  const overlay = new Set(e.overlay.map(s => s[0] + "." + s[1]));
  const svg = h("svg", {id: "heatmap", width: P + e.experts * cell + 10, height: P + e.layers * cell, role: "img",
    "aria-label": `expert utilization, ${e.layers} layers by ${e.experts} experts`});
  for (let x = 0; x < e.experts; ++x) svg.append(h("text", {x: P + x * cell + 8, y: P - 8}, String(x)));
  for (let l = 0; l < e.layers; ++l) {
    svg.append(h("text", {x: 4, y: P + l * cell + 17}, "layer " + l));
    for (let x = 0; x < e.experts; ++x) {
      const v = e.tokens[l][x], a = v / max, ov = overlay.has(l + "." + x);
      svg.append(h("rect", {x: P + x * cell, y: P + l * cell, width: cell - 2, height: cell - 2, class: ov ? "cell overlay" : "cell",
        fill: `rgba(11,95,255,${(0.06 + 0.94 * a).toFixed(3)})`, stroke: ov ? "#d1242f" : "none", "stroke-width": ov ? 3 : 0,
        "data-tokens": v}, h("title", {}, `layer ${l}, expert ${x}: ${v} tokens${ov ? " (tenant overlay)" : ""}`)));
    }
  }
  return h("section", {id: "experts"}, h("h2", {}, "Expert utilization"),
    h("p", {class: "muted"}, `Tokens routed to each expert by this tenant's generations since the server started; red outline: slots of the live version (${e.live_version}).`), svg);
}

function playgroundSection(tenant, versions) {
  const models = [tenant, tenant + ":0"].concat(versions.map(v => tenant + ":" + v.version));
  const sel = (id, value) => h("select", {id}, models.map(m => h("option", {value: m, selected: m === value}, m)));
  const left = sel("model-a", tenant + ":0"), right = sel("model-b", tenant);
  const prompt = h("textarea", {id: "prompt", rows: 3, cols: 80}, "Hello");
  const outA = h("pre", {class: "out", id: "out-a", "aria-live": "polite"}), outB = h("pre", {class: "out", id: "out-b", "aria-live": "polite"});
  async function runOne(model, out) {
    out.textContent = "…";
    try {
      const {data, headers} = await api("POST", "/v1/completions", {model, prompt: prompt.value, max_tokens: 32, temperature: 0});
      out.textContent = data.choices[0].text + `\n\n[version ${headers.get("X-Tessera-Expert-Version")}, ${data.usage.completion_tokens} tokens, ${data.choices[0].finish_reason}]`;
    } catch (e) { out.textContent = "error: " + e.message; }
  }
  return h("section", {id: "playground"}, h("h2", {}, "Playground"),
    h("p", {}, h("label", {for: "prompt"}, "Prompt"), h("br"), prompt),
    h("p", {}, h("button", {class: "primary", id: "run", onclick: () => Promise.all([runOne(left.value, outA), runOne(right.value, outB)])}, "Run on both (greedy, 32 tokens)")),
    h("div", {class: "grid2"}, h("div", {}, h("label", {for: "model-a"}, "Model A "), left, outA), h("div", {}, h("label", {for: "model-b"}, "Model B "), right, outB)));
}

async function tenantView(tenant, jobId) {
  const [t, jobs, experts] = await Promise.all([api("GET", "/console/api/tenants/" + tenant), api("GET", `/console/api/tenants/${tenant}/jobs`),
                                                api("GET", `/console/api/tenants/${tenant}/experts`)]);
  const js = jobsSection(tenant, jobs.data.jobs);
  $main.replaceChildren(h("h2", {id: "tenant-title"}, "Tenant ", tenant), versionsSection(t.data), js, heatmapSection(experts.data),
                        playgroundSection(tenant, t.data.versions));
  const follow = jobId || (jobs.data.jobs[0] && jobs.data.jobs[0].id);
  if (follow) followJob(tenant, follow, js.querySelector("#job-detail"));
}

async function route() {
  pollToken++;
  const hash = location.hash || "#/";
  if (!key()) return loginView();
  try {
    if (!me) { me = (await api("GET", "/console/api/me")).data; setNav(); }
    const m = hash.match(/^#\/t\/([a-z][a-z0-9-]*)(?:\/job\/([^/]+))?$/);
    if (m) await tenantView(m[1], m[2]);
    else if (hash === "#/login") loginView();
    else await tenantsView();
  } catch (e) {
    if (e.status === 401) { sessionStorage.removeItem("tessera_key"); me = null; return loginView(e.message); }
    $main.replaceChildren(h("p", {class: "error", role: "alert", id: "error"}, e.status === 403 ? "Not allowed: " + e.message : e.message));
  }
}
window.addEventListener("hashchange", route);
route();
</script>
</body>
</html>
)TESSERA";

absl::Status ServePage(Call& call) {
  call.res.set_content(kPage, sizeof(kPage) - 1, "text/html; charset=utf-8");
  // The page is code, not data; no key is ever in it. Keep other sites from framing or sniffing it.
  call.res.set_header("Content-Security-Policy",
                      "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'");
  call.res.set_header("X-Content-Type-Options", "nosniff");
  call.res.set_header("Cache-Control", "no-cache");
  return absl::OkStatus();
}

}  // namespace

void RegisterConsolePage(Router& router) {
  router.GetPublic("/console/?", "/console", ServePage);
  router.GetPublic("/", "/", [](Call& call) {
    call.res.set_redirect("/console");
    return absl::OkStatus();
  });
}

}  // namespace tessera::services::http
