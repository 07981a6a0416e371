#include "storage/quotas.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "storage/quota_refusal.h"

namespace tessera::storage {

const char* QuotaName(Quota q) {
  switch (q) {
    case Quota::kRequestsPerSecond: return "requests_per_second";
    case Quota::kTokensPerMinute: return "tokens_per_minute";
    case Quota::kMaxRunningJobs: return "max_running_jobs";
    case Quota::kMaxQueuedJobs: return "max_queued_jobs";
    case Quota::kStorageBytes: return "storage_bytes";
    case Quota::kMaxVersions: return "max_versions";
  }
  return "unknown";
}

QuotaLimits ApplyOverrides(const QuotaLimits& defaults, const QuotaOverrides& overrides) {
  QuotaLimits out = defaults;
  for (int i = 0; i < kNumQuotas; ++i) {
    if (overrides.value[i].has_value()) out.value[i] = *overrides.value[i];
  }
  return out;
}

std::string QuotaExceededMessage(const std::string& tenant_id, const std::string& what, const std::string& retry) {
  return absl::StrCat("quota exceeded for tenant '", tenant_id, "': ", what, "; ", retry);
}

absl::Status QuotaRefusal(const std::string& tenant_id, Quota quota, const std::string& what,
                          const std::string& retry) {
  absl::Status s = absl::ResourceExhaustedError(QuotaExceededMessage(tenant_id, what, retry));
  // "<quota>\t<tenant>": a tenant id never holds a tab (ValidateTenantId).
  s.SetPayload(kQuotaRefusalPayload, absl::Cord(absl::StrCat(QuotaName(quota), "\t", tenant_id)));
  return s;
}

std::optional<QuotaRefusalInfo> QuotaRefusalOf(const absl::Status& status) {
  if (!absl::IsResourceExhausted(status)) return std::nullopt;
  auto p = status.GetPayload(kQuotaRefusalPayload);  // absl::optional in this Abseil
  if (!p.has_value()) return std::nullopt;
  const std::string v(*p);
  const size_t tab = v.find('\t');
  if (tab == std::string::npos) return std::nullopt;
  return QuotaRefusalInfo{v.substr(tab + 1), v.substr(0, tab)};
}

}  // namespace tessera::storage
