// Registry: per-tenant quota overrides (table tenant_quotas, migration 12), usage, and the count and
// size checks that CreateDataset / CreateJob / PublishVersion / ClaimNextJob run inside their own write
// transactions (storage/quotas.h says which limit is checked where).
#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"
#include "storage/migrations.h"
#include "storage/quota_refusal.h"
#include "storage/registry.h"
#include "storage/registry_internal.h"
#include "storage/sv.h"

namespace tessera::storage {
namespace internal {

absl::StatusOr<QuotaOverrides> LoadQuotaOverrides(Conn& c, const std::string& tenant_id, const QuotaPolicy& quotas) {
  if (!quotas.overrides) return QuotaOverrides();
  std::string cols;
  for (int i = 0; i < kNumQuotas; ++i) absl::StrAppend(&cols, i ? ", " : "", QuotaName(QuotaAt(i)));
  ASSIGN_OR_RETURN(Stmt st, c.Prepare(absl::StrCat("SELECT ", cols, " FROM tenant_quotas WHERE tenant_id = ?1"),
                                      tenant_id));
  ASSIGN_OR_RETURN(bool row, st.Step());
  QuotaOverrides out;
  if (row) {
    for (int i = 0; i < kNumQuotas; ++i) out.value[i] = st.OptInt(i);
  }
  return out;
}

absl::StatusOr<QuotaUsage> LoadQuotaUsage(Conn& c, const std::string& tenant_id) {
  // CAST: PostgreSQL's SUM of a BIGINT is NUMERIC; both engines read the same integer back.
  ASSIGN_OR_RETURN(Stmt st, c.Prepare("SELECT CAST((SELECT COALESCE(SUM(size_bytes), 0) FROM datasets WHERE "
                                      "tenant_id = ?1) AS BIGINT), "
                                      "CAST((SELECT COALESCE(SUM(size_bytes), 0) FROM versions WHERE tenant_id = ?1) "
                                      "AS BIGINT), "
                                      "(SELECT COUNT(*) FROM versions WHERE tenant_id = ?1), "
                                      "(SELECT COUNT(*) FROM jobs WHERE state = 'RUNNING' AND tenant_id = ?1), "
                                      "(SELECT COUNT(*) FROM jobs WHERE state = 'QUEUED' AND tenant_id = ?1)",
                                      tenant_id));
  ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::InternalError("quota usage query returned no row");
  QuotaUsage u;
  u.dataset_bytes = st.Int(0);
  u.version_bytes = st.Int(1);
  u.versions = st.Int(2);
  u.running_jobs = st.Int(3);
  u.queued_jobs = st.Int(4);
  return u;
}

namespace {

absl::StatusOr<QuotaLimits> LoadLimits(Conn& c, const std::string& tenant_id, const QuotaPolicy& quotas) {
  ASSIGN_OR_RETURN(QuotaOverrides o, LoadQuotaOverrides(c, tenant_id, quotas));
  return ApplyOverrides(quotas.defaults, o);
}

std::string RaiseHint(const std::string& tenant_id, const char* flag) {
  return absl::StrCat("an operator can raise it (tessera-admin quotas set --tenant ", tenant_id, " ", flag, " N)");
}

std::string StorageRetry(const std::string& tenant_id) {
  return absl::StrCat("retry after deleting datasets, or ", RaiseHint(tenant_id, "--storage-bytes"));
}

std::string StorageWhat(const QuotaUsage& u, int64_t adding, int64_t limit, const std::string& what) {
  return absl::StrCat("storage_bytes limit ", limit, " bytes: the tenant stores ", u.storage_bytes(),
                      " bytes (datasets ", u.dataset_bytes, ", versions ", u.version_bytes, ")",
                      adding > 0 ? absl::StrCat(" and ", what, " of ", adding, " bytes would exceed it")
                                 : absl::StrCat(", no room for ", what));
}

}  // namespace

absl::Status CheckDatasetQuota(Conn& c, const std::string& tenant_id, const QuotaPolicy& quotas, int64_t bytes) {
  ASSIGN_OR_RETURN(QuotaLimits l, LoadLimits(c, tenant_id, quotas));
  const int64_t limit = l[Quota::kStorageBytes];
  if (limit == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(QuotaUsage u, LoadQuotaUsage(c, tenant_id));
  if (u.storage_bytes() + bytes <= limit) return absl::OkStatus();
  return QuotaRefusal(tenant_id, Quota::kStorageBytes, StorageWhat(u, bytes, limit, "this dataset"),
                      StorageRetry(tenant_id));
}

absl::Status CheckJobQuota(Conn& c, const std::string& tenant_id, const QuotaPolicy& quotas) {
  ASSIGN_OR_RETURN(QuotaLimits l, LoadLimits(c, tenant_id, quotas));
  if (l[Quota::kMaxQueuedJobs] == 0 && l[Quota::kMaxVersions] == 0 && l[Quota::kStorageBytes] == 0) {
    return absl::OkStatus();  // nothing to check: skip the usage query
  }
  ASSIGN_OR_RETURN(QuotaUsage u, LoadQuotaUsage(c, tenant_id));
  if (int64_t limit = l[Quota::kMaxQueuedJobs]; limit > 0 && u.queued_jobs >= limit) {
    return QuotaRefusal(tenant_id, Quota::kMaxQueuedJobs,
                        absl::StrCat("max_queued_jobs limit ", limit, " jobs: ", u.queued_jobs, " of its jobs are queued"),
                        "retry once one of them starts or is cancelled");
  }
  if (int64_t limit = l[Quota::kMaxVersions]; limit > 0 && u.versions + u.queued_jobs + u.running_jobs >= limit) {
    return QuotaRefusal(tenant_id, Quota::kMaxVersions,
                        absl::StrCat("max_versions limit ", limit, " versions: it has ", u.versions, " versions and ",
                                     u.queued_jobs + u.running_jobs,
                                     " unfinished jobs that may each publish one, so this job could not publish its "
                                     "version"),
                        absl::StrCat("versions are never deleted: retry after an unfinished job ends without "
                                     "publishing, or ",
                                     RaiseHint(tenant_id, "--max-versions")));
  }
  if (int64_t limit = l[Quota::kStorageBytes]; limit > 0 && u.storage_bytes() >= limit) {
    return QuotaRefusal(tenant_id, Quota::kStorageBytes, StorageWhat(u, 0, limit, "the version this job would publish"),
                        StorageRetry(tenant_id));
  }
  return absl::OkStatus();
}

absl::Status CheckVersionQuota(Conn& c, const std::string& tenant_id, const QuotaPolicy& quotas, int64_t bytes,
                               const std::string& job_id) {
  ASSIGN_OR_RETURN(QuotaLimits l, LoadLimits(c, tenant_id, quotas));
  if (l[Quota::kMaxVersions] == 0 && l[Quota::kStorageBytes] == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(QuotaUsage u, LoadQuotaUsage(c, tenant_id));
  // Before training (bytes < 0): the tenant's other running jobs publish first (they matter only to
  // max_versions).
  int64_t ahead = 0;
  if (bytes < 0 && l[Quota::kMaxVersions] > 0) {
    ASSIGN_OR_RETURN(ahead, c.QueryInt("SELECT COUNT(*) FROM jobs WHERE state = 'RUNNING' AND tenant_id = ?1 "
                                       "AND job_id != ?2",
                                       0, tenant_id, job_id));
  }
  if (int64_t limit = l[Quota::kMaxVersions]; limit > 0 && u.versions + ahead >= limit) {
    return QuotaRefusal(tenant_id, Quota::kMaxVersions,
                        absl::StrCat("max_versions limit ", limit, " versions: it has ", u.versions, " versions",
                                     ahead > 0 ? absl::StrCat(" and ", ahead, " other running jobs publishing") : "",
                                     ", so no further version can be published"),
                        absl::StrCat("versions are never deleted: ", RaiseHint(tenant_id, "--max-versions"),
                                     " and the job be created again"));
  }
  if (int64_t limit = l[Quota::kStorageBytes];
      limit > 0 && (bytes < 0 ? u.storage_bytes() >= limit : u.storage_bytes() + bytes > limit)) {
    return QuotaRefusal(tenant_id, Quota::kStorageBytes, StorageWhat(u, bytes < 0 ? 0 : bytes, limit, "the version"),
                        StorageRetry(tenant_id));
  }
  return absl::OkStatus();
}

}  // namespace internal

absl::StatusOr<TenantQuotas> Registry::GetQuotas(const std::string& tenant_id) {
  RETURN_IF_ERROR(ValidateTenantId(tenant_id));
  TenantQuotas out;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    RETURN_IF_ERROR(internal::RequireTenant(c, tenant_id));
    ASSIGN_OR_RETURN(out.overrides, internal::LoadQuotaOverrides(c, tenant_id, quotas_));
    ASSIGN_OR_RETURN(out.usage, internal::LoadQuotaUsage(c, tenant_id));
    return absl::OkStatus();
  }));
  out.tenant_id = tenant_id;
  out.defaults = quotas_.defaults;
  out.effective = ApplyOverrides(out.defaults, out.overrides);
  return out;
}

absl::StatusOr<QuotaLimits> Registry::GetQuotaLimits(const std::string& tenant_id) {
  RETURN_IF_ERROR(ValidateTenantId(tenant_id));
  QuotaOverrides overrides;
  RETURN_IF_ERROR(pool_->Read([&](Conn& c) -> absl::Status {
    RETURN_IF_ERROR(internal::RequireTenant(c, tenant_id));
    ASSIGN_OR_RETURN(overrides, internal::LoadQuotaOverrides(c, tenant_id, quotas_));
    return absl::OkStatus();
  }));
  return ApplyOverrides(quotas_.defaults, overrides);
}

absl::StatusOr<TenantQuotas> Registry::SetQuotas(const std::string& tenant_id, const QuotaOverrides& update,
                                                 const std::string& actor) {
  RETURN_IF_ERROR(ValidateTenantId(tenant_id));
  std::string detail;
  for (int i = 0; i < kNumQuotas; ++i) {
    const std::optional<int64_t>& v = update.value[i];
    if (!v.has_value()) continue;
    if (*v < kClearQuotaOverride) {
      return absl::InvalidArgumentError(absl::StrCat(QuotaName(QuotaAt(i)), ": must be >= 0 (0 = unlimited) or -1 "
                                                     "(back to the server default), got ", *v));
    }
    absl::StrAppend(&detail, detail.empty() ? "" : ",", "\"", QuotaName(QuotaAt(i)), "\":",
                    *v == kClearQuotaOverride ? std::string("\"default\"") : absl::StrCat(*v));
  }
  if (!quotas_.overrides) {
    return absl::FailedPreconditionError(absl::StrCat("the registry schema predates quota overrides (migration ",
                                                      kQuotaMigration, "); reopen it migrated to the latest"));
  }
  RETURN_IF_ERROR(pool_->Write(false, [&](Conn& c) -> absl::Status {
    RETURN_IF_ERROR(internal::RequireTenant(c, tenant_id));
    RETURN_IF_ERROR(c.Exec("INSERT INTO tenant_quotas(tenant_id, updated_at_us) VALUES (?1, ?2) "
                           "ON CONFLICT(tenant_id) DO UPDATE SET updated_at_us = excluded.updated_at_us",
                           tenant_id, NowMicros()));
    for (int i = 0; i < kNumQuotas; ++i) {
      const std::optional<int64_t>& v = update.value[i];
      if (!v.has_value()) continue;
      std::optional<int64_t> stored;
      if (*v != kClearQuotaOverride) stored = *v;
      RETURN_IF_ERROR(c.Exec(absl::StrCat("UPDATE tenant_quotas SET ", QuotaName(QuotaAt(i)), " = ?2 WHERE tenant_id = ?1"),
                             tenant_id, stored));
    }
    return internal::AppendAudit(c, actor, "tenant.quotas.set", absl::StrCat("tenant/", tenant_id),
                                 absl::StrCat("{", detail, "}"));
  }));
  return GetQuotas(tenant_id);
}

absl::Status Registry::CheckPublishQuota(const std::string& tenant_id, const std::string& job_id) {
  return pool_->Read([&](Conn& c) -> absl::Status {
    return internal::CheckVersionQuota(c, tenant_id, quotas_, -1, job_id);
  });
}

}  // namespace tessera::storage
