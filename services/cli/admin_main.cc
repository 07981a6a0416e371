// tessera-admin: the operator's command-line client of tessera.v1.Admin. See --help.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/strings/ascii.h"
#include "nlohmann/json.hpp"
#include "services/cli/backup_client.h"
#include "services/cli/cli_common.h"
#include "tessera/v1/admin.grpc.pb.h"

namespace tessera::cli {
namespace {

constexpr char kUsage[] = R"(tessera-admin: operate a Tessera server (needs an ADMIN key).

Usage: tessera-admin [--server HOST:PORT] [--json] [--key-file FILE] COMMAND ...

The admin key is read from $TESSERA_ADMIN_KEY, or from --key-file FILE (e.g. DATA_DIR/admin.key).

Commands:
  tenants create TENANT [--display-name NAME]   create a tenant; prints its first API key (once)
  tenants list
  tenants delete --tenant T [--force]           delete T: keys, datasets, jobs, versions and their blobs
                                                (blobs another tenant shares stay). Refused while T has
                                                queued or running jobs unless --force (cancels them)
  keys list [--tenant T]                        key id, tenant, role, scopes, created, last used, expiry
                                                (never the secret)
  keys issue --tenant T [--scopes S] [--expires-in D]
                                                a new API key for tenant T (printed once). S: comma-
                                                separated inference,fine-tune,read (default: all);
                                                D: seconds or 30m, 12h, 90d (default: never expires)
  keys rotate KEY_ID [--grace D] [--scopes S] [--expires-in D]
                                                a new key for KEY_ID's tenant with its scopes; the old
                                                key keeps working until revoked, or for D with --grace
  keys revoke KEY_ID                            refused from the next request on (within 1 s)
  versions list --tenant T                      T's expert versions, newest first (* = live)
  promote --tenant T --version N                make version N live (0 = base); returns once served
  rollback --tenant T [--to N]                  back to the previously live version (or to N);
                                                prints which version is live now
  jobs list [--tenant T] [--page-size N] [--page-token TOKEN]
  jobs cancel JOB_ID
  status                                        backbone, device, resident versions, queues
  backup --out DIR                              an online backup while the server serves: the registry
                                                (a consistent SQLite snapshot) and every blob it
                                                references, with manifest.json (sha256 and size of each
                                                file, schema version, backbone sha256). Written to
                                                DIR.partial-PID, verified, then renamed to DIR (which must
                                                not exist or be empty). Progress on stderr. Restore:
                                                tessera-server --restore DIR --data-dir NEW
  quotas get --tenant T                         T's quotas (effective limit, override or server default)
                                                and what T uses of each
  quotas set --tenant T [--requests-per-second N] [--tokens-per-minute N] [--max-running-jobs N]
        [--max-queued-jobs N] [--storage-bytes N] [--max-versions N]
                                                override T's quotas; N: an integer >= 0 (0 = unlimited)
                                                or "default" (the server's --default-* value again).
                                                Quotas not named stay as they are
  audit [--tenant T] [--actor KEY_ID] [--action A] [--since TIME] [--until TIME] [--page-size N]
        [--page-token TOKEN]                    the audit log, newest first: time, actor key, tenant,
                                                action, object, result (OK or the refusal's code).
                                                A: exact, or a prefix ending in '.' (job.); TIME:
                                                RFC 3339 (2026-12-06T17:00:00Z) or an age (30m, 2h, 7d)

Global options:
  --server HOST:PORT   default 127.0.0.1:7070
  --tls-ca PEM         use TLS, trusting this CA for the server's certificate
  --tls-cert PEM --tls-key PEM  a client certificate for a server that requires mutual TLS
  --json               machine-readable output (the response message as JSON)
  --quiet              no progress lines on stderr (backup shows them; stdout is the result either way)
  --help               this text
Exit status: 0 on success; 1 when the server refused or failed the call; 2 for usage errors.
)";

struct Ctx {
  Args args;
  std::string key;
  std::unique_ptr<v1::Admin::Stub> stub;
  bool json = false;
};

std::optional<CliError> NeedTenant(const Args& a, std::string* tenant) {
  *tenant = a.Get("--tenant");
  if (tenant->empty()) return UsageError("--tenant T is required");
  return std::nullopt;
}

// "3600", "3600s", "30m", "12h", "90d" -> seconds (> 0).
std::optional<CliError> ParseDurationFlag(const Args& a, const std::string& flag, int64_t* seconds) {
  std::string v = a.Get(flag);
  int64_t unit = 1;
  if (!v.empty()) {
    switch (v.back()) {
      case 's': unit = 1; v.pop_back(); break;
      case 'm': unit = 60; v.pop_back(); break;
      case 'h': unit = 3600; v.pop_back(); break;
      case 'd': unit = 86400; v.pop_back(); break;
      default: break;
    }
  }
  int64_t n = 0;
  if (v.empty() || !absl::SimpleAtoi(v, &n) || n < 0 || n > int64_t{3650} * 86400 / unit) {
    return UsageError(flag + " needs a duration: seconds, or a number with s, m, h or d (e.g. 90d)");
  }
  *seconds = n * unit;
  return std::nullopt;
}

// --since/--until: RFC 3339, or an age (a duration before now).
std::optional<CliError> ParseTimeFlag(const Args& a, const std::string& flag, google::protobuf::Timestamp* out) {
  const std::string v = a.Get(flag);
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, v, &t, &err)) {
    int64_t ago = 0;
    if (ParseDurationFlag(a, flag, &ago)) {
      return UsageError(flag + " needs a time: RFC 3339 (2026-12-06T17:00:00Z) or an age (30m, 2h, 7d)");
    }
    t = absl::Now() - absl::Seconds(ago);
  }
  const int64_t us = absl::ToUnixMicros(t);
  out->set_seconds(us / 1000000);
  out->set_nanos(static_cast<int32_t>(us % 1000000) * 1000);
  return std::nullopt;
}

// The Quotas field of "--requests-per-second" etc. (the proto field name with dashes).
const google::protobuf::FieldDescriptor* QuotaFieldOfFlag(const std::string& flag) {
  const google::protobuf::Descriptor* d = v1::Quotas::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    std::string name = d->field(i)->name();
    std::replace(name.begin(), name.end(), '_', '-');
    if (flag == "--" + name) return d->field(i);
  }
  return nullptr;
}

void PrintQuotas(const v1::TenantQuotas& q) {
  const google::protobuf::Descriptor* d = v1::Quotas::descriptor();
  const v1::QuotaUsage& u = q.usage();
  std::printf("tenant %s\n%-21s %-14s %-9s %s\n", q.tenant_id().c_str(), "QUOTA", "LIMIT", "SOURCE", "USED");
  for (int i = 0; i < d->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = d->field(i);
    const int64_t limit = q.effective().GetReflection()->GetInt64(q.effective(), f);
    const bool overridden = q.overrides().GetReflection()->HasField(q.overrides(), f);
    std::string used = "-";
    if (f->name() == "max_running_jobs") used = absl::StrCat(u.running_jobs());
    if (f->name() == "max_queued_jobs") used = absl::StrCat(u.queued_jobs());
    if (f->name() == "storage_bytes") {
      used = absl::StrCat(u.storage_bytes(), " (datasets ", u.dataset_bytes(), ", versions ", u.version_bytes(), ")");
    }
    if (f->name() == "max_versions") used = absl::StrCat(u.versions());
    const std::string shown = limit == 0 ? "unlimited" : absl::StrCat(limit);
    std::printf("%-21s %-14s %-9s %s\n", f->name().c_str(), shown.c_str(), overridden ? "override" : "default",
                used.c_str());
  }
}

void PrintKeys(const v1::ListApiKeysResponse& r) {
  std::printf("%-14s %-16s %-7s %-26s %-22s %-22s %s\n", "KEY", "TENANT", "ROLE", "SCOPES", "CREATED", "LAST USED",
              "EXPIRES / REVOKED");
  for (const v1::ApiKey& k : r.api_keys()) {
    std::string state = k.has_revoked_at() ? "revoked " + FormatTime(k.revoked_at().seconds())
                        : k.has_expires_at() ? FormatTime(k.expires_at().seconds())
                                             : "never";
    std::printf("%-14s %-16s %-7s %-26s %-22s %-22s %s\n", k.key_id().c_str(),
                k.tenant_id().empty() ? "-" : k.tenant_id().c_str(), v1::Role_Name(k.role()).c_str(),
                absl::StrJoin(k.scopes(), ",").c_str(), FormatTime(k.created_at().seconds()).c_str(),
                FormatTime(k.last_used_at().seconds()).c_str(), state.c_str());
  }
}

void PrintVersions(const v1::ListVersionsResponse& r, const std::string& tenant) {
  std::printf("tenant %s: live version %lld%s\n", tenant.c_str(), static_cast<long long>(r.live_version()),
              r.live_version() == 0 ? " (base experts)" : "");
  if (r.versions().empty()) {
    std::printf("no versions yet\n");
    return;
  }
  std::printf("%-3s %-8s %-7s %-10s %-10s %-7s %-22s %-13s %s\n", "", "VERSION", "PARENT", "VAL_LOSS", "BASE_LOSS",
              "SLOTS", "CREATED", "BACKBONE", "JOB");
  for (const v1::ExpertVersion& v : r.versions()) {
    const std::string backbone = v.backbone_sha256().empty() ? "-" : v.backbone_sha256().substr(0, 12);
    std::printf("%-3s %-8lld %-7lld %-10.4f %-10.4f %-7d %-22s %-13s %s\n", v.live() ? "*" : "",
                static_cast<long long>(v.version()), static_cast<long long>(v.parent_version()),
                v.metrics().val_loss(), v.metrics().base_val_loss(), v.slots_size(),
                FormatTime(v.created_at().seconds()).c_str(), backbone.c_str(), v.job_id().c_str());
  }
}

void PrintJobs(const v1::ListJobsResponse& r) {
  std::printf("%-26s %-16s %-10s %-12s %-10s %-8s %s\n", "JOB", "TENANT", "STATE", "STEP", "LOSS", "VERSION",
              "CREATED");
  for (const v1::Job& j : r.jobs()) {
    std::string step = absl::StrCat(j.progress().step(), "/", j.progress().max_steps());
    std::string version = j.has_result_version() ? absl::StrCat(j.result_version(), j.promoted() ? "*" : "") : "-";
    std::printf("%-26s %-16s %-10s %-12s %-10.4f %-8s %s\n", j.job_id().c_str(), j.tenant_id().c_str(),
                v1::JobState_Name(j.state()).c_str(), step.c_str(), j.progress().train_loss(), version.c_str(),
                FormatTime(j.created_at().seconds()).c_str());
  }
  if (!r.next_page_token().empty()) std::printf("next page: --page-token %s\n", r.next_page_token().c_str());
}

// backup --out DIR (services/cli/backup_client.h), with progress on stderr: one updating line on a
// terminal, else a line per 10%.
std::optional<CliError> Backup(Ctx& c) {
  if (auto e = c.args.OnlyFlags({"--out"})) return e;
  const std::vector<std::string>& p = c.args.positional();
  if (p.size() != 1 || c.args.Get("--out").empty()) return UsageError("usage: tessera-admin backup --out DIR");
  const bool quiet = c.args.Has("--quiet");
  const bool tty = !quiet && ::isatty(2) != 0;
  int last_decile = -1;
  auto progress = [&](int64_t done, int64_t total) {
    if (quiet) return;
    const int pct = total > 0 ? static_cast<int>(100 * done / total) : 100;
    if (tty) {
      std::fprintf(stderr, "\rbackup: %3d%% (%.1f of %.1f MiB)", pct, done / 1048576.0, total / 1048576.0);
    } else if (pct / 10 != last_decile) {
      last_decile = pct / 10;
      std::fprintf(stderr, "backup: %d%% (%lld of %lld bytes)\n", pct, static_cast<long long>(done),
                   static_cast<long long>(total));
    }
  };
  auto ctx = MakeContext(c.key, /*deadline_seconds=*/0);
  absl::StatusOr<BackupOutcome> r = WriteBackup(*c.stub, ctx.get(), c.args.Get("--out"), progress);
  if (tty) std::fprintf(stderr, "\n");
  if (!r.ok()) {
    return CliError{1, absl::StrCat(absl::StatusCodeToString(r.status().code()), ": ", r.status().message())};
  }
  const tessera::services::BackupManifest& m = r->manifest;
  if (c.json) {
    nlohmann::json j = {{"out", r->out_dir},
                        {"files", m.files.size()},
                        {"bytes", m.total_bytes()},
                        {"seconds", r->seconds},
                        {"schema_version", m.schema_version},
                        {"backbone", {{"name", m.backbone_name}, {"sha256", m.backbone_sha256}}},
                        {"counts", {{"tenants", m.counts.tenants}, {"api_keys", m.counts.api_keys},
                                    {"datasets", m.counts.datasets}, {"jobs", m.counts.jobs},
                                    {"jobs_unfinished", m.counts.jobs_unfinished}, {"versions", m.counts.versions}}},
                        {"verified", true}};
    std::printf("%s\n", j.dump().c_str());
    return std::nullopt;
  }
  std::printf("backup written to %s in %.1f s: %zu files, %lld bytes, every sha256 verified\n", r->out_dir.c_str(),
              r->seconds, m.files.size(), static_cast<long long>(m.total_bytes()));
  std::printf("  registry schema %d: %lld tenants, %lld API keys, %lld datasets, %lld jobs (%lld unfinished), "
              "%lld versions\n",
              m.schema_version, static_cast<long long>(m.counts.tenants), static_cast<long long>(m.counts.api_keys),
              static_cast<long long>(m.counts.datasets), static_cast<long long>(m.counts.jobs),
              static_cast<long long>(m.counts.jobs_unfinished), static_cast<long long>(m.counts.versions));
  std::printf("  backbone %s (sha256 %s)\n", m.backbone_name.c_str(), m.backbone_sha256.c_str());
  std::printf("restore: tessera-server --restore %s --data-dir NEW_DIR --backbone %s\n", r->out_dir.c_str(),
              m.backbone_name.c_str());
  return std::nullopt;
}

std::optional<CliError> Run(Ctx& c) {
  const std::vector<std::string>& p = c.args.positional();
  std::string cmd = p.empty() ? "" : p[0];
  std::string sub = p.size() > 1 ? p[1] : "";
  auto ctx = MakeContext(c.key, /*deadline_seconds=*/300);
  grpc::Status st;
  if (cmd == "tenants" && sub == "create") {
    if (auto e = c.args.OnlyFlags({"--display-name"})) return e;
    if (p.size() != 3) return UsageError("usage: tessera-admin tenants create TENANT [--display-name NAME]");
    v1::CreateTenantRequest req;
    req.set_tenant_id(p[2]);
    req.set_display_name(c.args.Get("--display-name", p[2]));
    v1::CreateTenantResponse resp;
    if (!(st = c.stub->CreateTenant(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("created tenant %s\nAPI key (shown once): %s\nkey id: %s\n", resp.tenant().tenant_id().c_str(),
                resp.api_key().secret().c_str(), resp.api_key().key_id().c_str());
  } else if (cmd == "tenants" && sub == "delete") {
    if (auto e = c.args.OnlyFlags({"--force"})) return e;
    if (p.size() != 2) return UsageError("usage: tessera-admin tenants delete --tenant T [--force]");
    v1::DeleteTenantRequest req;
    std::string tenant;
    if (auto e = NeedTenant(c.args, &tenant)) return e;
    req.set_tenant_id(tenant);
    req.set_force(c.args.Has("--force"));
    v1::DeleteTenantResponse resp;
    if (!(st = c.stub->DeleteTenant(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("deleted tenant %s: %lld keys, %lld datasets, %lld versions, %lld jobs (%lld cancelled); "
                "%lld blobs deleted (%lld bytes), %lld kept (shared)\n",
                resp.tenant_id().c_str(), static_cast<long long>(resp.api_keys_deleted()),
                static_cast<long long>(resp.datasets_deleted()), static_cast<long long>(resp.versions_deleted()),
                static_cast<long long>(resp.jobs_deleted()), static_cast<long long>(resp.jobs_cancelled()),
                static_cast<long long>(resp.blobs_deleted()), static_cast<long long>(resp.bytes_freed()),
                static_cast<long long>(resp.blobs_kept()));
  } else if (cmd == "tenants" && sub == "list") {
    if (auto e = c.args.OnlyFlags({})) return e;
    v1::ListTenantsResponse resp;
    if (!(st = c.stub->ListTenants(ctx.get(), {}, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("%-24s %-6s %-22s %s\n", "TENANT", "LIVE", "CREATED", "DISPLAY NAME");
    for (const v1::Tenant& t : resp.tenants()) {
      std::printf("%-24s %-6lld %-22s %s\n", t.tenant_id().c_str(), static_cast<long long>(t.live_version()),
                  FormatTime(t.created_at().seconds()).c_str(), t.display_name().c_str());
    }
  } else if (cmd == "keys" && sub == "list") {
    if (auto e = c.args.OnlyFlags({})) return e;
    if (p.size() != 2) return UsageError("usage: tessera-admin keys list [--tenant T]");
    v1::ListApiKeysRequest req;
    req.set_tenant_id(c.args.Get("--tenant"));
    v1::ListApiKeysResponse resp;
    if (!(st = c.stub->ListApiKeys(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    PrintKeys(resp);
  } else if (cmd == "keys" && (sub == "issue" || sub == "rotate")) {
    v1::IssueApiKeyRequest req;
    if (sub == "issue") {
      if (auto e = c.args.OnlyFlags({"--scopes", "--expires-in"})) return e;
      if (p.size() != 2) return UsageError("usage: tessera-admin keys issue --tenant T [--scopes S] [--expires-in D]");
      std::string tenant;
      if (auto e = NeedTenant(c.args, &tenant)) return e;
      req.set_tenant_id(tenant);
    } else {
      if (auto e = c.args.OnlyFlags({"--scopes", "--expires-in", "--grace"})) return e;
      if (p.size() != 3) return UsageError("usage: tessera-admin keys rotate KEY_ID [--grace D] [--scopes S] [--expires-in D]");
      req.set_replaces_key_id(p[2]);
      req.set_tenant_id(c.args.Get("--tenant"));
      if (c.args.Has("--grace")) {
        int64_t grace = 0;
        if (auto e = ParseDurationFlag(c.args, "--grace", &grace)) return e;
        req.set_replaced_key_ttl_seconds(grace);
      }
    }
    if (c.args.Has("--scopes")) {
      for (absl::string_view s : absl::StrSplit(c.args.Get("--scopes"), ',', absl::SkipWhitespace())) {
        req.add_scopes(std::string(absl::StripAsciiWhitespace(s)));
      }
      if (req.scopes_size() == 0) return UsageError("--scopes needs inference, fine-tune and/or read");
    }
    if (c.args.Has("--expires-in")) {
      int64_t ttl = 0;
      if (auto e = ParseDurationFlag(c.args, "--expires-in", &ttl)) return e;
      if (ttl == 0) return UsageError("--expires-in must be > 0 (leave it out for a key that never expires)");
      req.set_ttl_seconds(ttl);
    }
    v1::IssueApiKeyResponse resp;
    if (!(st = c.stub->IssueApiKey(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    const v1::ApiKey& k = resp.api_key();
    std::printf("API key for %s (shown once): %s\nkey id: %s\nscopes: %s\nexpires: %s\n", k.tenant_id().c_str(),
                k.secret().c_str(), k.key_id().c_str(), absl::StrJoin(k.scopes(), ",").c_str(),
                k.has_expires_at() ? FormatTime(k.expires_at().seconds()).c_str() : "never");
    if (sub == "rotate") {
      std::printf("replaces key %s: %s\n", req.replaces_key_id().c_str(),
                  req.has_replaced_key_ttl_seconds() ? "expires after the grace period"
                                                     : "keeps working until you revoke it");
    }
  } else if (cmd == "keys" && sub == "revoke") {
    if (auto e = c.args.OnlyFlags({})) return e;
    if (p.size() != 3) return UsageError("usage: tessera-admin keys revoke KEY_ID");
    v1::RevokeApiKeyRequest req;
    req.set_key_id(p[2]);
    v1::RevokeApiKeyResponse resp;
    if (!(st = c.stub->RevokeApiKey(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("revoked key %s\n", resp.api_key().key_id().c_str());
  } else if (cmd == "versions" && sub == "list") {
    if (auto e = c.args.OnlyFlags({})) return e;
    v1::ListVersionsRequest req;
    std::string tenant;
    if (auto e = NeedTenant(c.args, &tenant)) return e;
    req.set_tenant_id(tenant);
    v1::ListVersionsResponse resp;
    if (!(st = c.stub->ListVersions(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    PrintVersions(resp, tenant);
  } else if (cmd == "promote" || cmd == "rollback") {
    std::string tenant;
    if (auto e = NeedTenant(c.args, &tenant)) return e;
    v1::LiveVersionResponse resp;
    if (p.size() != 1) return UsageError("usage: tessera-admin " + cmd + " --tenant T " +
                                         (cmd == "promote" ? "--version N" : "[--to N]"));
    if (cmd == "promote") {
      if (auto e = c.args.OnlyFlags({"--version"})) return e;
      int64_t version = -1;
      if (auto e = c.args.GetInt("--version", &version)) return e;
      if (!c.args.Has("--version")) return UsageError("--version N is required");
      v1::PromoteRequest req;
      req.set_tenant_id(tenant);
      req.set_version(version);
      if (!(st = c.stub->Promote(ctx.get(), req, &resp)).ok()) return RpcError(st);
    } else {
      if (auto e = c.args.OnlyFlags({"--to"})) return e;
      v1::RollbackRequest req;
      req.set_tenant_id(tenant);
      if (c.args.Has("--to")) {
        int64_t to = 0;
        if (auto e = c.args.GetInt("--to", &to)) return e;
        req.set_to_version(to);
      }
      if (!(st = c.stub->Rollback(ctx.get(), req, &resp)).ok()) return RpcError(st);
    }
    if (c.json) return PrintJson(resp), std::nullopt;
    if (resp.changed()) {
      std::printf("tenant %s: live version is now %lld (was %lld)\n", tenant.c_str(),
                  static_cast<long long>(resp.live_version()), static_cast<long long>(resp.previous_version()));
    } else {
      std::printf("tenant %s: live version is now %lld (unchanged)\n", tenant.c_str(),
                  static_cast<long long>(resp.live_version()));
    }
    if (resp.replicas_applied() > 0 || resp.lagging_replicas_size() > 0) {
      std::printf("  served by %lld inference replicas", static_cast<long long>(resp.replicas_applied()));
      if (resp.lagging_replicas_size() > 0) {
        std::printf("; NOT yet by: %s", absl::StrJoin(resp.lagging_replicas(), ", ").c_str());
      }
      std::printf("\n");
    }
  } else if (cmd == "jobs" && sub == "list") {
    if (auto e = c.args.OnlyFlags({"--page-size", "--page-token"})) return e;
    v1::ListJobsRequest req;
    req.set_tenant_id(c.args.Get("--tenant"));
    int64_t page_size = 0;
    if (auto e = c.args.GetInt("--page-size", &page_size)) return e;
    req.set_page_size(static_cast<int32_t>(page_size));
    req.set_page_token(c.args.Get("--page-token"));
    v1::ListJobsResponse resp;
    if (!(st = c.stub->ListJobs(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    PrintJobs(resp);
  } else if (cmd == "jobs" && sub == "cancel") {
    if (auto e = c.args.OnlyFlags({})) return e;
    if (p.size() != 3) return UsageError("usage: tessera-admin jobs cancel JOB_ID");
    v1::CancelJobRequest req;
    req.set_job_id(p[2]);
    v1::Job resp;
    if (!(st = c.stub->CancelJob(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("job %s: %s\n", resp.job_id().c_str(), v1::JobState_Name(resp.state()).c_str());
  } else if (cmd == "audit") {
    if (auto e = c.args.OnlyFlags({"--actor", "--action", "--since", "--until", "--page-size", "--page-token"})) return e;
    if (p.size() != 1) return UsageError("usage: tessera-admin audit [--tenant T] [--actor KEY_ID] [--action A] ...");
    v1::ListAuditEventsRequest req;
    req.set_tenant_id(c.args.Get("--tenant"));
    req.set_actor(c.args.Get("--actor"));
    req.set_action(c.args.Get("--action"));
    if (c.args.Has("--since")) {
      if (auto e = ParseTimeFlag(c.args, "--since", req.mutable_since())) return e;
    }
    if (c.args.Has("--until")) {
      if (auto e = ParseTimeFlag(c.args, "--until", req.mutable_until())) return e;
    }
    int64_t page_size = 0;
    if (auto e = c.args.GetInt("--page-size", &page_size)) return e;
    req.set_page_size(static_cast<int32_t>(page_size));
    req.set_page_token(c.args.Get("--page-token"));
    v1::ListAuditEventsResponse resp;
    if (!(st = c.stub->ListAuditEvents(ctx.get(), req, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    std::printf("%-22s %-14s %-16s %-18s %-34s %-19s %s\n", "TIME", "ACTOR", "TENANT", "ACTION", "OBJECT", "RESULT",
                "DETAIL");
    for (const v1::AuditEvent& e : resp.events()) {
      std::printf("%-22s %-14s %-16s %-18s %-34s %-19s %s\n", FormatTime(e.time().seconds()).c_str(), e.actor().c_str(),
                  e.tenant_id().empty() ? "-" : e.tenant_id().c_str(), e.action().c_str(), e.object().c_str(),
                  e.result().c_str(), e.detail().c_str());
    }
    if (!resp.next_page_token().empty()) std::printf("next page: --page-token %s\n", resp.next_page_token().c_str());
  } else if (cmd == "backup") {
    return Backup(c);
  } else if (cmd == "quotas" && (sub == "get" || sub == "set")) {
    if (p.size() != 2) return UsageError("usage: tessera-admin quotas get|set --tenant T ... (see --help)");
    std::string tenant;
    if (auto e = NeedTenant(c.args, &tenant)) return e;
    v1::TenantQuotas result;
    if (sub == "get") {
      if (auto e = c.args.OnlyFlags({})) return e;
      v1::GetQuotasRequest req;
      req.set_tenant_id(tenant);
      v1::GetQuotasResponse resp;
      if (!(st = c.stub->GetQuotas(ctx.get(), req, &resp)).ok()) return RpcError(st);
      if (c.json) return PrintJson(resp), std::nullopt;
      result = resp.quotas();
    } else {
      std::set<std::string> allowed;
      const google::protobuf::Descriptor* d = v1::Quotas::descriptor();
      for (int i = 0; i < d->field_count(); ++i) {
        std::string name = d->field(i)->name();
        std::replace(name.begin(), name.end(), '_', '-');
        allowed.insert("--" + name);
      }
      if (auto e = c.args.OnlyFlags(allowed)) return e;
      v1::SetQuotasRequest req;
      req.set_tenant_id(tenant);
      v1::Quotas* q = req.mutable_quotas();
      for (const std::string& flag : allowed) {
        if (!c.args.Has(flag)) continue;
        int64_t n = -1;
        if (c.args.Get(flag) != "default" && (!absl::SimpleAtoi(c.args.Get(flag), &n) || n < 0)) {
          return UsageError(flag + " needs an integer >= 0 (0 = unlimited) or \"default\", got \"" + c.args.Get(flag) + "\"");
        }
        q->GetReflection()->SetInt64(q, QuotaFieldOfFlag(flag), n);
      }
      if (q->ByteSizeLong() == 0) return UsageError("quotas set needs at least one quota flag (see --help)");
      v1::SetQuotasResponse resp;
      if (!(st = c.stub->SetQuotas(ctx.get(), req, &resp)).ok()) return RpcError(st);
      if (c.json) return PrintJson(resp), std::nullopt;
      result = resp.quotas();
    }
    PrintQuotas(result);
  } else if (cmd == "status") {
    if (auto e = c.args.OnlyFlags({})) return e;
    v1::RuntimeStatus resp;
    if (!(st = c.stub->GetRuntimeStatus(ctx.get(), {}, &resp)).ok()) return RpcError(st);
    if (c.json) return PrintJson(resp), std::nullopt;
    const v1::BackboneInfo& b = resp.backbone();
    std::printf("server:    %s (up since %s)\n", resp.server_version().c_str(),
                FormatTime(resp.started_at().seconds()).c_str());
    std::printf("backbone:  %s (%s), %lld parameters (%lld in experts), %d layers x %d experts, top-%d\n",
                b.name().c_str(), b.architecture().c_str(), static_cast<long long>(b.total_parameters()),
                static_cast<long long>(b.expert_parameters()), b.num_layers(), b.num_experts(),
                b.experts_per_token());
    if (!b.sha256().empty()) std::printf("weights:   sha256 %s\n", b.sha256().c_str());
    if (!b.dtype().empty()) std::printf("dtype:     %s   tokenizer: %s\n", b.dtype().c_str(), b.tokenizer().c_str());
    std::printf("context:   %lld positions per request (model: %lld), KV caches %lld bytes\n",
                static_cast<long long>(resp.context_length()), static_cast<long long>(b.max_position_embeddings()),
                static_cast<long long>(resp.kv_cache_bytes()));
    if (resp.prefix_cache_bytes_limit() > 0) {
      const v1::PrefixCacheStatus& pc = resp.prefix_cache();
      std::printf("prefix:    %lld of %lld bytes (%lld blocks of %lld tokens), %lld blocks hit, %lld missed, "
                  "%lld evicted\n",
                  static_cast<long long>(resp.prefix_cache_bytes()),
                  static_cast<long long>(resp.prefix_cache_bytes_limit()), static_cast<long long>(pc.blocks()),
                  static_cast<long long>(pc.block_tokens()), static_cast<long long>(pc.hit_blocks()),
                  static_cast<long long>(pc.miss_blocks()), static_cast<long long>(pc.evictions()));
    } else {
      std::printf("prefix:    cache off (--prefix-cache-bytes)\n");
    }
    std::printf("device:    %s\n", resp.device().c_str());
    if (!resp.cpu_features().empty()) std::printf("cpu:       %s\n", resp.cpu_features().c_str());
    if (!resp.kernel_set().empty()) std::printf("kernels:   %s\n", resp.kernel_set().c_str());
    if (!resp.role().empty()) {
      std::printf("role:      %s%s%s%s\n", resp.role().c_str(),
                  resp.control_plane().empty() ? "" : ("  control plane " + resp.control_plane()).c_str(),
                  resp.replica_id().empty() ? "" : ("  replica " + resp.replica_id()).c_str(),
                  resp.inference_available() ? absl::StrCat("  applied change ", resp.applied_change_seq()).c_str() : "");
    }
    std::printf("inference: %s   training: %s\n", resp.inference_available() ? "available" : "NOT AVAILABLE",
                resp.training_available() ? "available" : "NOT AVAILABLE");
    std::printf("jobs:      %lld queued, %lld running\n", static_cast<long long>(resp.queues().jobs_queued()),
                static_cast<long long>(resp.jobs_running()));
    std::printf("requests:  %lld waiting for a batch slot\n",
                static_cast<long long>(resp.queues().inference_pending()));
    std::printf("resident:  %d versions, %lld bytes (limit %lld)\n", resp.resident_versions_size(),
                static_cast<long long>(resp.resident_bytes()), static_cast<long long>(resp.resident_bytes_limit()));
    for (const v1::ResidentVersion& r : resp.resident_versions()) {
      std::printf("  %s v%lld  %lld bytes  %s\n", r.tenant_id().c_str(), static_cast<long long>(r.version()),
                  static_cast<long long>(r.bytes()), r.sha256().substr(0, 12).c_str());
    }
    std::printf("overlays:  host tier %lld bytes (limit %lld); device hits %lld misses %lld, host hits %lld "
                "misses %lld; %lld promotions, %lld demotions; %lld loads in flight\n",
                static_cast<long long>(resp.overlay_host_bytes()), static_cast<long long>(resp.overlay_host_bytes_limit()),
                static_cast<long long>(resp.overlay_device_hits()), static_cast<long long>(resp.overlay_device_misses()),
                static_cast<long long>(resp.overlay_host_hits()), static_cast<long long>(resp.overlay_host_misses()),
                static_cast<long long>(resp.overlay_promotions()), static_cast<long long>(resp.overlay_demotions()),
                static_cast<long long>(resp.overlay_loads_in_flight()));
  } else {
    return UnknownCommand(cmd, sub);
  }
  return std::nullopt;
}

}  // namespace
}  // namespace tessera::cli

int main(int argc, char** argv) {
  using namespace tessera::cli;
  Ctx c;
  if (auto e = Args::Parse(argc, argv, {"--json", "--quiet", "--help", "--force"}, &c.args)) {
    std::fprintf(stderr, "tessera-admin: %s\n", e->message.c_str());
    return e->exit_code;
  }
  if (c.args.Has("--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  c.json = c.args.Has("--json");
  std::optional<CliError> err = LoadKey(c.args, "TESSERA_ADMIN_KEY", &c.key);
  if (!err) {
    std::shared_ptr<grpc::Channel> channel;
    err = MakeChannel(c.args, &channel);
    if (!err) {
      c.stub = tessera::v1::Admin::NewStub(channel);
      err = Run(c);
    }
  }
  if (err) {
    std::fprintf(stderr, "tessera-admin: %s\n", err->message.c_str());
    return err->exit_code;
  }
  return 0;
}
