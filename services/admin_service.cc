#include "services/admin_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/backend/cpu/cpu_kernel_set.h"
#include "services/audit.h"
#include "services/convert.h"
#include "services/experts_service.h"
#include "services/fine_tuning_service.h"
#include "services/job_scheduler.h"
#include "services/live_follower.h"
#include "services/replicas.h"
#include "services/log.h"
#include "services/rate_limiter.h"

namespace tessera::services {
namespace {

constexpr size_t kMaxDisplayName = 256;
constexpr int64_t kMaxTtlSeconds = int64_t{10} * 365 * 24 * 3600;  // keeps expiry math far from overflow

void MoveToProto(const storage::LiveMove& m, v1::LiveVersionResponse* out) {
  out->set_tenant_id(m.tenant_id);
  out->set_live_version(m.live_version);
  out->set_previous_version(m.previous_live);
  out->set_changed(m.changed);
}

void ReplicasToProto(const ReplicaWait& w, v1::LiveVersionResponse* out) {
  out->set_replicas_applied(w.applied);
  for (const std::string& id : w.lagging) out->add_lagging_replicas(id);
}

absl::Status CheckTenantId(const std::string& tenant_id) {
  if (tenant_id.empty()) return absl::InvalidArgumentError("tenant_id is required");
  if (absl::Status s = storage::ValidateTenantId(tenant_id); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tenant_id: ", s.message()));
  }
  return absl::OkStatus();
}

// Quotas' fields in storage::Quota order (the proto's field numbers 1..6).
const google::protobuf::FieldDescriptor* QuotaField(storage::Quota q) {
  return v1::Quotas::descriptor()->FindFieldByName(storage::QuotaName(q));
}

void LimitsToProto(const storage::QuotaLimits& l, v1::Quotas* out) {
  for (int i = 0; i < storage::kNumQuotas; ++i) {
    out->GetReflection()->SetInt64(out, QuotaField(storage::QuotaAt(i)), l.value[i]);
  }
}

void QuotasToProto(const storage::TenantQuotas& q, v1::TenantQuotas* out) {
  out->set_tenant_id(q.tenant_id);
  LimitsToProto(q.effective, out->mutable_effective());
  LimitsToProto(q.defaults, out->mutable_defaults());
  v1::Quotas* o = out->mutable_overrides();
  for (int i = 0; i < storage::kNumQuotas; ++i) {
    if (q.overrides.value[i].has_value()) o->GetReflection()->SetInt64(o, QuotaField(storage::QuotaAt(i)), *q.overrides.value[i]);
  }
  v1::QuotaUsage* u = out->mutable_usage();
  u->set_storage_bytes(q.usage.storage_bytes());
  u->set_dataset_bytes(q.usage.dataset_bytes);
  u->set_version_bytes(q.usage.version_bytes);
  u->set_versions(q.usage.versions);
  u->set_running_jobs(q.usage.running_jobs);
  u->set_queued_jobs(q.usage.queued_jobs);
}

}  // namespace

// Authorizes an ADMIN key, runs `body(principal)` inline and finishes the call.
template <typename Body>
grpc::ServerUnaryReactor* AdminUnary(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                     std::string_view method, Body body) {
  absl::Time start = absl::Now();
  absl::StatusOr<storage::Principal> principal = env.auth->AuthorizeAdmin(*ctx);
  absl::Status status = principal.ok() ? body(*principal) : principal.status();
  return FinishUnary(env, ctx, method, start, status);
}

// The same for a mutation: a refusal after authentication is audited (services/audit.h).
template <typename Body>
grpc::ServerUnaryReactor* AdminMutationUnary(const ServiceEnv& env, grpc::CallbackServerContext* ctx,
                                             std::string_view method, const Mutation& m, Body body) {
  absl::Time start = absl::Now();
  absl::StatusOr<storage::Principal> principal = AuthorizeAdminMutation(env, *ctx, m);
  absl::Status status = principal.ok() ? body(*principal) : principal.status();
  if (principal.ok()) AuditRefused(env, *principal, m, status);
  return FinishUnary(env, ctx, method, start, status);
}

grpc::ServerUnaryReactor* AdminService::CreateTenant(grpc::CallbackServerContext* ctx,
                                                     const v1::CreateTenantRequest* req,
                                                     v1::CreateTenantResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/CreateTenant", absl::Now(), bad);
  }
  Mutation m{"tenant.create", req->tenant_id(), "tenant/" + req->tenant_id()};
  return AdminMutationUnary(env_, ctx, "Admin/CreateTenant", m, [&](const storage::Principal& principal) -> absl::Status {
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    if (req->display_name().size() > kMaxDisplayName) {
      return absl::InvalidArgumentError(absl::StrCat("display_name: at most ", kMaxDisplayName, " bytes"));
    }
    absl::StatusOr<storage::Tenant> t =
        env_.registry->CreateTenant(req->tenant_id(), req->display_name(), Actor(principal));
    if (!t.ok()) return t.status();
    absl::StatusOr<storage::IssuedApiKey> key =
        env_.registry->CreateApiKey(storage::Role::kTenant, t->tenant_id, Actor(principal));
    if (!key.ok()) return key.status();
    ToProto(*t, 0, resp->mutable_tenant());
    ToProto(key->key, resp->mutable_api_key());
    resp->mutable_api_key()->set_secret(key->secret);
    LogInfo("tenant created", {{"tenant_id", t->tenant_id}, {"actor", Actor(principal)}});
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::ListTenants(grpc::CallbackServerContext* ctx,
                                                    const v1::ListTenantsRequest*,
                                                    v1::ListTenantsResponse* resp) {
  return AdminUnary(env_, ctx, "Admin/ListTenants", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    absl::StatusOr<std::vector<storage::Tenant>> ts = env_.registry->ListTenants();
    if (!ts.ok()) return ts.status();
    for (const storage::Tenant& t : *ts) {
      absl::StatusOr<int64_t> live = env_.registry->GetLive(t.tenant_id);
      ToProto(t, live.ok() ? *live : 0, resp->add_tenants());
    }
    return absl::OkStatus();
  });
}

// Deletion order, and why:
//   1. force: cancel the tenant's unfinished jobs (audited) and give this process's trainer a moment to
//      stop them, so no job publishes into a tenant that is going away.
//   2. The registry deletes every row in one transaction (FAILED_PRECONDITION if a job is still
//      unfinished). From its commit on, nothing can resolve the tenant: keys do not authenticate, and
//      a version that is not resident can no longer be loaded.
//   3. The runtime forgets the tenant (live entry, resident versions) and the auth cache its keys:
//      requests that start afterwards fail (UNAUTHENTICATED with the tenant's keys, NOT_FOUND with an
//      admin key); requests in flight finish on the weights they already hold in memory.
//   4. Only then the blobs go, each only if no row of any tenant names it any more (content-addressed
//      blobs are shared: another tenant's identical dataset or version keeps it) and it has not been
//      written again since step 2 began (a Put for another tenant's upcoming publish).
static absl::Status DeleteTenantImpl(const ServiceEnv& env, const storage::Principal& principal,
                              const v1::DeleteTenantRequest& req, v1::DeleteTenantResponse* resp) {
  const std::string& tenant = req.tenant_id();
  if (absl::Status s = CheckTenantId(tenant); !s.ok()) return s;
  if (absl::StatusOr<storage::Tenant> t = env.registry->GetTenant(tenant); !t.ok()) return t.status();
  std::vector<std::string> unfinished;
  for (std::string token;;) {
    absl::StatusOr<storage::JobPage> page = env.registry->ListJobs(tenant, 1000, token);
    if (!page.ok()) return page.status();
    for (const storage::Job& j : page->jobs) {
      if (!storage::IsTerminal(j.state)) unfinished.push_back(j.job_id);
    }
    if (page->next_page_token.empty()) break;
    token = page->next_page_token;
  }
  if (!unfinished.empty() && !req.force()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tenant '", tenant, "' has ", unfinished.size(), " queued or running job(s) (", unfinished.front(),
        unfinished.size() > 1 ? ", ..." : "", "): cancel them first, or delete with force"));
  }
  int64_t cancelled = 0;
  for (const std::string& id : unfinished) {
    v1::Job ignored;
    absl::Status s = CancelJobFor(env, tenant, id, Actor(principal), &ignored);
    if (s.ok()) ++cancelled;
    else if (s.code() != absl::StatusCode::kFailedPrecondition) return s;  // finished meanwhile: fine
  }
  if (env.scheduler != nullptr && !unfinished.empty()) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      std::vector<std::string> running = env.scheduler->RunningJobIds();
      bool any = false;
      for (const std::string& id : unfinished) any |= std::find(running.begin(), running.end(), id) != running.end();
      if (!any) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  const absl::Time started = absl::Now();
  absl::StatusOr<storage::TenantDeletion> gone = env.registry->DeleteTenant(tenant, Actor(principal));
  if (!gone.ok()) return gone.status();
  env.live->ForgetTenant(tenant);
  env.auth->ForgetTenant(tenant);
  for (const std::string& key_id : gone->key_ids) env.auth->Forget(key_id);
  absl::StatusOr<storage::GcStats> blobs = env.registry->DeleteBlobsIfUnreferenced(gone->blob_digests, started);
  if (!blobs.ok()) {
    // The tenant is gone; what is left is garbage the periodic GC removes.
    LogError("tenant deleted but its blobs were not", {{"tenant_id", tenant}, {"error", blobs.status().ToString()}});
    blobs = storage::GcStats{};
  }
  resp->set_tenant_id(tenant);
  resp->set_api_keys_deleted(static_cast<int64_t>(gone->key_ids.size()));
  resp->set_datasets_deleted(gone->datasets);
  resp->set_versions_deleted(gone->versions);
  resp->set_jobs_deleted(gone->jobs);
  resp->set_jobs_cancelled(cancelled);
  resp->set_blobs_deleted(blobs->blobs_deleted);
  resp->set_bytes_freed(blobs->bytes_freed);
  resp->set_blobs_kept(static_cast<int64_t>(gone->blob_digests.size()) - blobs->blobs_deleted);
  LogInfo("tenant deleted", {{"tenant_id", tenant}, {"actor", Actor(principal)}, {"versions", gone->versions},
                             {"datasets", gone->datasets}, {"jobs_cancelled", cancelled},
                             {"blobs_deleted", blobs->blobs_deleted}});
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AdminService::DeleteTenant(grpc::CallbackServerContext* ctx,
                                                     const v1::DeleteTenantRequest* req,
                                                     v1::DeleteTenantResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/DeleteTenant", absl::Now(), bad);
  }
  const ServiceEnv& env = env_;
  // May wait for a cancelled job to stop: off the callback threads.
  return RunOnControlPool(env_, ctx, "Admin/DeleteTenant", [&env, ctx, req, resp]() -> absl::Status {
    Mutation m{"tenant.delete", req->tenant_id(), "tenant/" + req->tenant_id()};
    absl::StatusOr<storage::Principal> p = AuthorizeAdminMutation(env, *ctx, m);
    if (!p.ok()) return p.status();
    absl::Status s = DeleteTenantImpl(env, *p, *req, resp);
    AuditRefused(env, *p, m, s);
    return s;
  });
}

grpc::ServerUnaryReactor* AdminService::IssueApiKey(grpc::CallbackServerContext* ctx,
                                                    const v1::IssueApiKeyRequest* req,
                                                    v1::IssueApiKeyResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/IssueApiKey", absl::Now(), bad);
  }
  Mutation m{"apikey.create", req->tenant_id(),
             req->replaces_key_id().empty() ? "tenant/" + req->tenant_id() : "apikey/" + req->replaces_key_id()};
  return AdminMutationUnary(env_, ctx, "Admin/IssueApiKey", m, [&](const storage::Principal& principal) -> absl::Status {
    storage::ApiKeyOptions options;
    std::string tenant = req->tenant_id();
    std::optional<storage::ApiKey> replaced;
    if (!req->replaces_key_id().empty()) {
      absl::StatusOr<storage::ApiKey> old = env_.registry->GetApiKey(req->replaces_key_id());
      if (!old.ok()) return absl::Status(old.status().code(), absl::StrCat("replaces_key_id: ", old.status().message()));
      if (old->role != storage::Role::kTenant) {
        return absl::InvalidArgumentError("replaces_key_id: only TENANT keys are rotated through IssueApiKey");
      }
      if (old->revoked_at_us != 0) {
        return absl::FailedPreconditionError(
            absl::StrCat("replaces_key_id: API key '", old->key_id, "' is revoked"));
      }
      if (!tenant.empty() && tenant != old->tenant_id) {
        return absl::InvalidArgumentError("tenant_id: differs from the tenant of replaces_key_id");
      }
      tenant = old->tenant_id;
      options.scopes = old->scopes;
      replaced = *old;
    } else if (req->has_replaced_key_ttl_seconds()) {
      return absl::InvalidArgumentError("replaced_key_ttl_seconds: needs replaces_key_id");
    }
    if (absl::Status s = CheckTenantId(tenant); !s.ok()) return s;
    if (req->scopes_size() > 0) {
      absl::StatusOr<uint32_t> scopes = storage::ParseScopes(absl::StrJoin(req->scopes(), ","));
      if (!scopes.ok()) return scopes.status();
      options.scopes = *scopes;
    }
    if (req->ttl_seconds() < 0 || req->ttl_seconds() > kMaxTtlSeconds) {
      return absl::InvalidArgumentError(
          absl::StrCat("ttl_seconds: must be in [0, ", kMaxTtlSeconds, "] (0 = never expires), got ", req->ttl_seconds()));
    }
    if (req->has_replaced_key_ttl_seconds() &&
        (req->replaced_key_ttl_seconds() < 0 || req->replaced_key_ttl_seconds() > kMaxTtlSeconds)) {
      return absl::InvalidArgumentError(absl::StrCat("replaced_key_ttl_seconds: must be in [0, ", kMaxTtlSeconds,
                                                     "], got ", req->replaced_key_ttl_seconds()));
    }
    const int64_t now = storage::NowMicros();
    if (req->ttl_seconds() > 0) options.expires_at_us = now + req->ttl_seconds() * 1000000;
    absl::StatusOr<storage::IssuedApiKey> key =
        env_.registry->CreateApiKey(storage::Role::kTenant, tenant, Actor(principal), options);
    if (!key.ok()) return key.status();
    if (replaced.has_value() && req->has_replaced_key_ttl_seconds()) {
      // 0 s: the old key stops now (the new one is already valid: no gap for a client switching over).
      int64_t until = now + std::max<int64_t>(req->replaced_key_ttl_seconds() * 1000000, 1);
      if (absl::Status s = env_.registry->SetApiKeyExpiry(replaced->key_id, until, Actor(principal)); !s.ok()) {
        return s;
      }
      env_.auth->Forget(replaced->key_id);
    }
    ToProto(key->key, resp->mutable_api_key());
    resp->mutable_api_key()->set_secret(key->secret);
    LogInfo("api key issued", {{"tenant_id", tenant}, {"key_id", key->key.key_id},
                               {"replaces", req->replaces_key_id()}, {"actor", Actor(principal)}});
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::ListApiKeys(grpc::CallbackServerContext* ctx,
                                                    const v1::ListApiKeysRequest* req,
                                                    v1::ListApiKeysResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/ListApiKeys", absl::Now(), bad);
  }
  return AdminUnary(env_, ctx, "Admin/ListApiKeys", [&](const storage::Principal&) -> absl::Status {
    if (!req->tenant_id().empty()) {
      if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
      if (absl::StatusOr<storage::Tenant> t = env_.registry->GetTenant(req->tenant_id()); !t.ok()) {
        return t.status();
      }
    }
    absl::StatusOr<std::vector<storage::ApiKey>> keys = env_.registry->ListApiKeys(req->tenant_id());
    if (!keys.ok()) return keys.status();
    for (const storage::ApiKey& k : *keys) ToProto(k, resp->add_api_keys());  // never the secret
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::RevokeApiKey(grpc::CallbackServerContext* ctx,
                                                     const v1::RevokeApiKeyRequest* req,
                                                     v1::RevokeApiKeyResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/RevokeApiKey", absl::Now(), bad);
  }
  Mutation m{"apikey.revoke", "", "apikey/" + req->key_id()};
  return AdminMutationUnary(env_, ctx, "Admin/RevokeApiKey", m, [&](const storage::Principal& principal) -> absl::Status {
    if (req->key_id().empty()) return absl::InvalidArgumentError("key_id is required");
    if (req->key_id() == principal.key_id) {
      return absl::FailedPreconditionError("key_id: an API key cannot revoke itself");
    }
    if (absl::Status s = env_.registry->RevokeApiKey(req->key_id(), Actor(principal)); !s.ok()) return s;
    env_.auth->Forget(req->key_id());
    absl::StatusOr<storage::ApiKey> key = env_.registry->GetApiKey(req->key_id());
    if (!key.ok()) return key.status();
    ToProto(*key, resp->mutable_api_key());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::ListVersions(grpc::CallbackServerContext* ctx,
                                                     const v1::ListVersionsRequest* req,
                                                     v1::ListVersionsResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/ListVersions", absl::Now(), bad);
  }
  return AdminUnary(env_, ctx, "Admin/ListVersions", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    return ListVersionsFor(env_, req->tenant_id(), resp);
  });
}

grpc::ServerUnaryReactor* AdminService::Promote(grpc::CallbackServerContext* ctx,
                                                const v1::PromoteRequest* req, v1::LiveVersionResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/Promote", absl::Now(), bad);
  }
  const ServiceEnv& env = env_;
  // Waits for the runtime to load the version: off the callback threads.
  return RunOnControlPool(env_, ctx, "Admin/Promote", [&env, ctx, req, resp]() -> absl::Status {
    Mutation m{"version.promote", req->tenant_id(), absl::StrCat("tenant/", req->tenant_id(), "/version/", req->version())};
    absl::StatusOr<storage::Principal> p = AuthorizeAdminMutation(env, *ctx, m);
    if (!p.ok()) return p.status();
    absl::Status s = [&]() -> absl::Status {
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    if (req->version() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("version: must be >= 0 (0 = base), got ", req->version()));
    }
    absl::StatusOr<storage::LiveMove> m = env.live->Promote(req->tenant_id(), req->version(), Actor(*p));
    if (!m.ok()) return m.status();
    MoveToProto(*m, resp);
    ReplicasToProto(AwaitReplicas(env, *m), resp);
    return absl::OkStatus();
    }();
    AuditRefused(env, *p, m, s);
    return s;
  });
}

grpc::ServerUnaryReactor* AdminService::Rollback(grpc::CallbackServerContext* ctx,
                                                 const v1::RollbackRequest* req, v1::LiveVersionResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/Rollback", absl::Now(), bad);
  }
  const ServiceEnv& env = env_;
  return RunOnControlPool(env_, ctx, "Admin/Rollback", [&env, ctx, req, resp]() -> absl::Status {
    Mutation m{"version.rollback", req->tenant_id(), "tenant/" + req->tenant_id()};
    absl::StatusOr<storage::Principal> p = AuthorizeAdminMutation(env, *ctx, m);
    if (!p.ok()) return p.status();
    absl::Status s = [&]() -> absl::Status {
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    std::optional<int64_t> to;
    if (req->has_to_version()) {
      if (req->to_version() < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("to_version: must be >= 0 (0 = base), got ", req->to_version()));
      }
      to = req->to_version();
    }
    absl::StatusOr<storage::LiveMove> m = env.live->Rollback(req->tenant_id(), to, Actor(*p));
    if (!m.ok()) return m.status();
    MoveToProto(*m, resp);
    ReplicasToProto(AwaitReplicas(env, *m), resp);
    return absl::OkStatus();
    }();
    AuditRefused(env, *p, m, s);
    return s;
  });
}

grpc::ServerUnaryReactor* AdminService::GetRuntimeStatus(grpc::CallbackServerContext* ctx,
                                                         const v1::GetRuntimeStatusRequest*,
                                                         v1::RuntimeStatus* resp) {
  return AdminUnary(env_, ctx, "Admin/GetRuntimeStatus", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    const BackboneInfo& b = env_.backbone;
    v1::BackboneInfo* bp = resp->mutable_backbone();
    bp->set_name(b.name);
    bp->set_architecture(b.architecture);
    bp->set_total_parameters(b.total_parameters);
    bp->set_expert_parameters(b.expert_parameters);
    bp->set_num_layers(b.num_layers);
    bp->set_num_experts(b.num_experts);
    bp->set_experts_per_token(b.experts_per_token);
    bp->set_sha256(b.sha256);
    bp->set_dtype(b.dtype);
    bp->set_max_position_embeddings(b.max_seq_len);
    bp->set_tokenizer(b.tokenizer);
    resp->set_device(b.device);
    resp->set_context_length(b.context);
    resp->set_kv_cache_bytes(b.kv_cache_bytes);
    resp->set_cpu_features(cpu::CpuFeaturesString());
    resp->set_kernel_set(cpu::CpuKernelSetString());
    resp->set_inference_available(env_.engine != nullptr);
    resp->set_training_available(env_.scheduler != nullptr);
    resp->set_role(ServerRoleName(env_.role));
    resp->set_control_plane(env_.control_plane);
    if (env_.presence != nullptr) resp->set_replica_id(env_.presence->replica_id());
    if (env_.follower != nullptr) resp->set_applied_change_seq(env_.follower->cursor());
    if (env_.engine != nullptr) {
      EngineStatus es = env_.engine->Status();
      for (const ResidentVersionInfo& r : es.resident) {
        v1::ResidentVersion* rp = resp->add_resident_versions();
        rp->set_tenant_id(r.tenant_id);
        rp->set_version(r.version);
        rp->set_bytes(r.bytes);
        rp->set_sha256(r.sha256);
      }
      resp->set_resident_bytes(es.resident_bytes);
      resp->set_resident_bytes_limit(es.resident_bytes_limit);
      resp->set_overlay_host_bytes(es.overlay_host_bytes);
      resp->set_overlay_host_bytes_limit(es.overlay_host_bytes_limit);
      resp->set_overlay_device_hits(es.overlay_device_hits);
      resp->set_overlay_device_misses(es.overlay_device_misses);
      resp->set_overlay_host_hits(es.overlay_host_hits);
      resp->set_overlay_host_misses(es.overlay_host_misses);
      resp->set_overlay_promotions(es.overlay_promotions);
      resp->set_overlay_demotions(es.overlay_demotions);
      resp->set_overlay_loads_in_flight(es.overlay_loads_in_flight);
      resp->set_overlay_waiting_requests(es.overlay_waiting_requests);
      resp->set_overlay_held_bytes(es.overlay_held_bytes);
      resp->set_overlay_host_evictions(es.overlay_host_evictions);
      resp->mutable_queues()->set_inference_pending(es.pending_requests);
      resp->set_prefix_cache_bytes(es.prefix_cache_bytes);
      resp->set_prefix_cache_bytes_limit(es.prefix_cache_bytes_limit);
      v1::PrefixCacheStatus* pc = resp->mutable_prefix_cache();
      pc->set_block_tokens(es.prefix_cache_block_tokens);
      pc->set_blocks(es.prefix_cache_blocks);
      pc->set_capacity_blocks(es.prefix_cache_capacity_blocks);
      pc->set_hit_blocks(es.prefix_cache_hit_blocks);
      pc->set_miss_blocks(es.prefix_cache_miss_blocks);
      pc->set_hit_tokens(es.prefix_cache_hit_tokens);
      pc->set_evictions(es.prefix_cache_evictions);
      pc->set_lookups(es.prefix_cache_lookups);
      pc->set_hit_lookups(es.prefix_cache_hit_lookups);
      auto& pending = *resp->mutable_inference_pending_by_tenant();
      for (const auto& [tenant, n] : es.pending_by_tenant) pending[tenant] += n;
    }
    if (env_.pool != nullptr) {
      auto& pending = *resp->mutable_inference_pending_by_tenant();
      for (const auto& [tenant, n] : env_.pool->Waiting()) {
        if (!tenant.empty()) pending[tenant] += n;
      }
    }
    if (env_.streams != nullptr) {
      StreamCounts sc = env_.streams->Counts();
      resp->set_open_streams(sc.total);
      for (const auto& [tenant, n] : sc.by_tenant) (*resp->mutable_open_streams_by_tenant())[tenant] = n;
    }
    absl::StatusOr<int64_t> queued = env_.registry->CountJobs("", storage::JobState::kQueued);
    if (!queued.ok()) return queued.status();
    resp->mutable_queues()->set_jobs_queued(*queued);
    absl::StatusOr<int64_t> running = env_.registry->CountJobs("", storage::JobState::kRunning);
    if (!running.ok()) return running.status();
    resp->set_jobs_running(*running);
    if (env_.scheduler != nullptr) {
      for (const std::string& id : env_.scheduler->RunningJobIds()) resp->add_running_job_ids(id);
    }
    resp->set_server_version(env_.server_version);
    SetTimestamp(absl::ToUnixMicros(env_.started_at), resp->mutable_started_at());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::ListJobs(grpc::CallbackServerContext* ctx,
                                                 const v1::ListJobsRequest* req, v1::ListJobsResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/ListJobs", absl::Now(), bad);
  }
  return AdminUnary(env_, ctx, "Admin/ListJobs", [&]([[maybe_unused]] const storage::Principal& principal) -> absl::Status {
    if (!req->tenant_id().empty()) {
      if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    }
    return ListJobsFor(env_, req->tenant_id(), req->page_size(), req->page_token(), resp);
  });
}

grpc::ServerUnaryReactor* AdminService::CancelJob(grpc::CallbackServerContext* ctx,
                                                  const v1::CancelJobRequest* req, v1::Job* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/CancelJob", absl::Now(), bad);
  }
  Mutation m{"job.cancel", req->tenant_id(), "job/" + req->job_id()};
  return AdminMutationUnary(env_, ctx, "Admin/CancelJob", m, [&](const storage::Principal& principal) -> absl::Status {
    // Admin scope: any tenant's job; a tenant_id, if given, must match the job's.
    return CancelJobFor(env_, req->tenant_id(), req->job_id(), Actor(principal), resp);
  });
}

grpc::ServerUnaryReactor* AdminService::ListAuditEvents(grpc::CallbackServerContext* ctx,
                                                        const v1::ListAuditEventsRequest* req,
                                                        v1::ListAuditEventsResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Admin/ListAuditEvents", absl::Now(), bad);
  }
  return AdminUnary(env_, ctx, "Admin/ListAuditEvents", [&](const storage::Principal&) -> absl::Status {
    if (req->page_size() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("page_size: must be >= 0, got ", req->page_size()));
    }
    storage::AuditQuery q;
    q.tenant_id = req->tenant_id();
    q.actor = req->actor();
    q.action = req->action();
    if (req->has_since()) q.since_us = TimestampMicros(req->since());
    if (req->has_until()) q.until_us = TimestampMicros(req->until());
    if (req->has_since() && q.since_us <= 0) return absl::InvalidArgumentError("since: must be after 1970");
    if (req->has_until() && q.until_us <= 0) return absl::InvalidArgumentError("until: must be after 1970");
    q.page_size = req->page_size();
    q.page_token = req->page_token();
    absl::StatusOr<storage::AuditPage> page = env_.registry->QueryAudit(q);
    if (!page.ok()) return page.status();
    for (const storage::AuditEntry& e : page->entries) {
      v1::AuditEvent* out = resp->add_events();
      out->set_id(e.id);
      SetTimestamp(e.created_at_us, out->mutable_time());
      out->set_actor(e.actor);
      out->set_tenant_id(e.tenant_id);
      out->set_action(e.action);
      out->set_object(e.target);
      out->set_result(e.result);
      out->set_detail(e.detail);
    }
    resp->set_next_page_token(page->next_page_token);
    return absl::OkStatus();
  });
}

// Quotas are the operator's: admin keys only, like the rest of this service. A tenant learns its limits
// from the RESOURCE_EXHAUSTED refusals, which name the quota, its limit and when to retry.
grpc::ServerUnaryReactor* AdminService::SetQuotas(grpc::CallbackServerContext* ctx, const v1::SetQuotasRequest* req,
                                                  v1::SetQuotasResponse* resp) {
  Mutation m{"tenant.quotas.set", req->tenant_id(), "tenant/" + req->tenant_id()};
  return AdminMutationUnary(env_, ctx, "Admin/SetQuotas", m, [&](const storage::Principal& principal) -> absl::Status {
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    storage::QuotaOverrides update;
    const v1::Quotas& in = req->quotas();
    for (int i = 0; i < storage::kNumQuotas; ++i) {
      const google::protobuf::FieldDescriptor* f = QuotaField(storage::QuotaAt(i));
      if (!in.GetReflection()->HasField(in, f)) continue;
      const int64_t v = in.GetReflection()->GetInt64(in, f);
      if (v < storage::kClearQuotaOverride) {
        return absl::InvalidArgumentError(absl::StrCat("quotas.", f->name(), ": must be >= 0 (0 = unlimited) or -1 "
                                                       "(back to the server default), got ", v));
      }
      update.value[i] = v;
    }
    absl::StatusOr<storage::TenantQuotas> q = env_.registry->SetQuotas(req->tenant_id(), update, Actor(principal));
    if (!q.ok()) return q.status();
    if (env_.rate_limiter != nullptr) env_.rate_limiter->Refresh(req->tenant_id());
    QuotasToProto(*q, resp->mutable_quotas());
    LogInfo("quotas set", {{"tenant_id", req->tenant_id()}, {"actor", Actor(principal)}});
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AdminService::GetQuotas(grpc::CallbackServerContext* ctx, const v1::GetQuotasRequest* req,
                                                  v1::GetQuotasResponse* resp) {
  return AdminUnary(env_, ctx, "Admin/GetQuotas", [&](const storage::Principal&) -> absl::Status {
    if (absl::Status s = CheckTenantId(req->tenant_id()); !s.ok()) return s;
    absl::StatusOr<storage::TenantQuotas> q = env_.registry->GetQuotas(req->tenant_id());
    if (!q.ok()) return q.status();
    QuotasToProto(*q, resp->mutable_quotas());
    return absl::OkStatus();
  });
}

}  // namespace tessera::services
