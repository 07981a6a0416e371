// Per-tenant quotas: what a tenant may use, as stored overrides over server-wide defaults.
//
// Six limits (API.md "Additions": Admin.SetQuotas/GetQuotas). Every limit is an integer >= 0 and 0 means
// unlimited. A tenant's effective limit is its override when one is stored (registry table
// tenant_quotas, migration 12; NULL = none) and else the server's default (Registry::Options::
// default_quotas, from tessera-server's --default-* flags), so changing a default changes every tenant
// without an override of its own.
//
// Where each is enforced:
//   requests_per_second, tokens_per_minute  in memory, by services/rate_limiter.h (inference only)
//   max_running_jobs   Registry::ClaimNextJob never runs more of the tenant's jobs at once; more wait
//                      QUEUED (a concurrency limit delays work, it does not refuse it)
//   max_queued_jobs    Registry::CreateJob: RESOURCE_EXHAUSTED once that many of its jobs are QUEUED
//   storage_bytes      sum of size_bytes of the tenant's dataset and version rows (a blob two rows share
//                      counts twice: each row is the tenant's own). CreateDataset refuses a dataset that
//                      would go over; CreateJob refuses while usage is at or over the limit (the version
//                      the job publishes could not be stored); PublishVersion refuses a version that
//                      would go over
//   max_versions       versions are immutable and never deleted, so this caps what a tenant ever
//                      publishes. CreateJob refuses when versions + unfinished jobs (each publishes at
//                      most one) reach it, the scheduler fails a job before it trains when its version
//                      could not be published (CheckPublishQuota), and PublishVersion checks again
// The count and size checks run inside the same write transaction as the insert they guard, so
// concurrent requests cannot overshoot them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tessera::storage {

enum class Quota : int {
  kRequestsPerSecond = 0,
  kTokensPerMinute,
  kMaxRunningJobs,
  kMaxQueuedJobs,
  kStorageBytes,
  kMaxVersions,
};
inline constexpr int kNumQuotas = 6;

// The API name of a quota ("requests_per_second", ...): the proto field and the registry column.
const char* QuotaName(Quota q);
inline Quota QuotaAt(int i) { return static_cast<Quota>(i); }

// One value per quota; 0 = unlimited.
struct QuotaLimits {
  std::array<int64_t, kNumQuotas> value{};
  int64_t operator[](Quota q) const { return value[static_cast<int>(q)]; }
  int64_t& operator[](Quota q) { return value[static_cast<int>(q)]; }
  bool operator==(const QuotaLimits& o) const { return value == o.value; }
};

// A tenant's stored overrides (unset = the default applies). As an update (Registry::SetQuotas): an
// unset entry is left as it is, a value >= 0 is stored, -1 removes the override.
struct QuotaOverrides {
  std::array<std::optional<int64_t>, kNumQuotas> value{};
  const std::optional<int64_t>& operator[](Quota q) const { return value[static_cast<int>(q)]; }
  std::optional<int64_t>& operator[](Quota q) { return value[static_cast<int>(q)]; }
};
inline constexpr int64_t kClearQuotaOverride = -1;

QuotaLimits ApplyOverrides(const QuotaLimits& defaults, const QuotaOverrides& overrides);

// How a registry applies quotas: the server's defaults, and whether the schema stores overrides (false
// only for a registry a migration test opened below migration 12: then the defaults apply to everyone).
struct QuotaPolicy {
  QuotaLimits defaults;
  bool overrides = true;
};

// What a tenant uses of the count and size quotas.
struct QuotaUsage {
  int64_t dataset_bytes = 0;
  int64_t version_bytes = 0;
  int64_t versions = 0;
  int64_t running_jobs = 0;
  int64_t queued_jobs = 0;
  int64_t storage_bytes() const { return dataset_bytes + version_bytes; }
};

struct TenantQuotas {
  std::string tenant_id;
  QuotaLimits effective;
  QuotaOverrides overrides;
  QuotaLimits defaults;
  QuotaUsage usage;
};

// "quota exceeded for tenant 'acme': <what>; <when to retry>" -- the RESOURCE_EXHAUSTED text every
// quota refusal shares (it starts with no field name, so HTTP's error param stays null).
std::string QuotaExceededMessage(const std::string& tenant_id, const std::string& what, const std::string& retry);

}  // namespace tessera::storage
