// A quota refusal as a status: RESOURCE_EXHAUSTED with the shared message (storage/quotas.h
// QuotaExceededMessage) plus a payload naming the tenant and the quota, so that callers can count
// refusals by tenant and quota (the services' tessera_quota_refusals_total{tenant,quota}) without
// parsing messages. Payloads ride along wherever the status is passed on unchanged.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "storage/quotas.h"

namespace tessera::storage {

inline constexpr char kQuotaRefusalPayload[] = "type.tessera.dev/quota-refusal";

absl::Status QuotaRefusal(const std::string& tenant_id, Quota quota, const std::string& what,
                          const std::string& retry);

struct QuotaRefusalInfo {
  std::string tenant_id;
  std::string quota;  // QuotaName: "requests_per_second", ...
};
// The tenant and quota of a status made by QuotaRefusal; nullopt for any other status.
std::optional<QuotaRefusalInfo> QuotaRefusalOf(const absl::Status& status);

}  // namespace tessera::storage
