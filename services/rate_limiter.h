// RateLimiter: the two inference quotas of storage/quotas.h, requests_per_second and tokens_per_minute,
// enforced in memory per tenant (per server process) with token buckets.
//
// Math. A bucket with rate r per second and capacity C holds a level L; at time t it refills to
// min(C, L + r * (t - t_last)).
//   requests:  r = C = requests_per_second. A request needs L >= 1 and takes 1 (so bursts of up to one
//              second's worth pass, and the long-run rate is at most the limit).
//   tokens:    r = tokens_per_minute / 60, C = tokens_per_minute. A request needs L > 0; admission
//              charges an estimate (the input's bytes / 4, a usual bytes-per-token ratio, plus max_tokens,
//              the most the completion may use) and the request settles to its actual prompt + completion
//              tokens when it ends (the difference is refunded or charged; L may go negative, and the
//              tenant is refused until it refills past 0). So the long-run rate never exceeds the limit and
//              a burst exceeds a minute's budget by at most the requests admitted while L was positive.
//              A request that fails is refunded in full; a cancelled or timed-out one keeps its estimate
//              (it held a batch slot, and its partial usage is not reported).
// Both buckets are checked before either is charged, so a refused request costs nothing. Limits are
// read through `limits` (the registry's effective quotas) at most once per `limits_ttl` per tenant, and
// at once after Refresh (Admin.SetQuotas in this process). A new limit: a newly limited bucket starts
// full, a raised one gains the added capacity at once (so raising a tenant's quota serves it now), a
// lowered one is clamped to the new capacity. A refusal is RESOURCE_EXHAUSTED naming the quota, its limit and the seconds to wait,
// which also ride on the status as a retry-after payload (status_util.h: gRPC `retry-after` trailing
// metadata, HTTP `Retry-After`): ceil of the time until the bucket admits again, at least 1.
// Several server processes (roles) each keep their own buckets.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "storage/quotas.h"

namespace tessera::services {

// What one admitted request was charged, for settling it.
struct RateTicket {
  std::string tenant;
  int64_t charged_tokens = 0;
};

class RateLimiter {
 public:
  using LimitsFn = std::function<absl::StatusOr<storage::QuotaLimits>(const std::string& tenant)>;
  using Clock = std::function<absl::Time()>;

  explicit RateLimiter(LimitsFn limits, Clock clock = [] { return absl::Now(); },
                       absl::Duration limits_ttl = absl::Seconds(1))
      : limits_(std::move(limits)), clock_(std::move(clock)), limits_ttl_(limits_ttl) {}

  // Admits one request estimated at `estimate_tokens`, or RESOURCE_EXHAUSTED (with retry-after).
  absl::StatusOr<RateTicket> Admit(const std::string& tenant, int64_t estimate_tokens);
  // Settles an admitted request: `s` OK -> charged `actual_tokens`; CANCELLED / DEADLINE_EXCEEDED -> the
  // estimate stays; any other error -> refunded.
  void Settle(const RateTicket& ticket, const absl::Status& s, int64_t actual_tokens);
  // Re-reads the tenant's limits on its next request.
  void Refresh(const std::string& tenant);

  // The admission estimate of a request: ceil(input_bytes / 4) + max_tokens.
  static int64_t Estimate(int64_t input_bytes, int64_t max_tokens) { return (input_bytes + 3) / 4 + max_tokens; }

 private:
  struct Bucket {
    double level = 0;
    double capacity = 0;  // 0: unlimited
    double rate = 0;      // per second
    absl::Time last;
  };
  struct Tenant {
    storage::QuotaLimits limits;
    absl::Time fetched = absl::InfinitePast();
    bool stale = true;
    Bucket requests, tokens;
  };
  static void Configure(Bucket& b, int64_t limit, double per_second, absl::Time now);
  static void Refill(Bucket& b, absl::Time now);

  LimitsFn limits_;
  Clock clock_;
  absl::Duration limits_ttl_;
  std::mutex mu_;
  std::unordered_map<std::string, Tenant> tenants_;
};

}  // namespace tessera::services
