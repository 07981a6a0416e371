#include "services/rate_limiter.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "services/log.h"
#include "services/status_util.h"
#include "storage/quota_refusal.h"

namespace tessera::services {

void RateLimiter::Configure(Bucket& b, int64_t limit, double per_second, absl::Time now) {
  const double capacity = static_cast<double>(limit);
  if (capacity == b.capacity) return;
  Refill(b, now);  // at the old rate up to now
  if (b.capacity == 0) {
    b.level = capacity;  // newly limited: starts full
  } else if (capacity > b.capacity) {
    b.level += capacity - b.capacity;  // raised: the extra headroom is there at once (a debt stays a debt)
  } else {
    b.level = std::min(b.level, capacity);  // lowered
  }
  b.capacity = capacity;
  b.rate = per_second;
  b.last = now;
}

void RateLimiter::Refill(Bucket& b, absl::Time now) {
  if (b.capacity == 0) return;
  if (now > b.last) {
    b.level = std::min(b.capacity, b.level + b.rate * absl::ToDoubleSeconds(now - b.last));
    b.last = now;
  }
}

absl::StatusOr<RateTicket> RateLimiter::Admit(const std::string& tenant, int64_t estimate_tokens) {
  bool fetch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Tenant& t = tenants_[tenant];
    fetch = t.stale || clock_() - t.fetched >= limits_ttl_;
  }
  if (fetch) {
    // Outside the lock: a registry read must not hold up other tenants' admissions.
    absl::StatusOr<storage::QuotaLimits> limits = limits_(tenant);
    std::lock_guard<std::mutex> lock(mu_);
    Tenant& t = tenants_[tenant];
    const absl::Time now = clock_();
    if (limits.ok()) {
      t.limits = *limits;
      Configure(t.requests, (*limits)[storage::Quota::kRequestsPerSecond],
                static_cast<double>((*limits)[storage::Quota::kRequestsPerSecond]), now);
      Configure(t.tokens, (*limits)[storage::Quota::kTokensPerMinute],
                static_cast<double>((*limits)[storage::Quota::kTokensPerMinute]) / 60.0, now);
    } else if (!absl::IsNotFound(limits.status())) {
      // Keep the limits known so far (none for a tenant never read): a registry hiccup must not fail
      // inference. An unknown tenant is refused by the engine, not here.
      LogWarn("reading quotas failed; keeping the previous limits",
              {{"tenant_id", tenant}, {"error", limits.status().ToString()}});
    }
    t.fetched = now;
    t.stale = false;
  }

  std::lock_guard<std::mutex> lock(mu_);
  Tenant& t = tenants_[tenant];
  const absl::Time now = clock_();
  Refill(t.requests, now);
  Refill(t.tokens, now);
  double wait_requests = 0, wait_tokens = 0;
  if (t.requests.capacity > 0 && t.requests.level < 1) wait_requests = (1 - t.requests.level) / t.requests.rate;
  if (t.tokens.capacity > 0 && t.tokens.level <= 0) wait_tokens = -t.tokens.level / t.tokens.rate + 1e-6;
  if (wait_requests > 0 || wait_tokens > 0) {
    const int64_t retry = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(std::max(wait_requests, wait_tokens))));
    std::string what =
        wait_tokens > wait_requests
            ? absl::StrCat("tokens_per_minute limit ", t.limits[storage::Quota::kTokensPerMinute],
                           " tokens/min (prompt + completion) used up, ",
                           static_cast<int64_t>(std::ceil(-t.tokens.level)), " tokens over")
            : absl::StrCat("requests_per_second limit ", t.limits[storage::Quota::kRequestsPerSecond],
                           " requests/s reached");
    const storage::Quota quota =
        wait_tokens > wait_requests ? storage::Quota::kTokensPerMinute : storage::Quota::kRequestsPerSecond;
    return WithRetryAfter(storage::QuotaRefusal(tenant, quota, what, absl::StrCat("retry after ", retry, " s")),
                          retry);
  }
  RateTicket ticket{tenant, 0};
  if (t.requests.capacity > 0) t.requests.level -= 1;
  if (t.tokens.capacity > 0) {
    ticket.charged_tokens = std::max<int64_t>(0, estimate_tokens);
    t.tokens.level -= static_cast<double>(ticket.charged_tokens);
  }
  return ticket;
}

void RateLimiter::Settle(const RateTicket& ticket, const absl::Status& s, int64_t actual_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tenants_.find(ticket.tenant);
  if (it == tenants_.end()) return;
  Bucket& b = it->second.tokens;
  if (b.capacity == 0) return;  // unlimited now: nothing to account
  double refund = 0;
  if (s.ok()) {
    refund = static_cast<double>(ticket.charged_tokens - std::max<int64_t>(0, actual_tokens));
  } else if (!absl::IsCancelled(s) && !absl::IsDeadlineExceeded(s)) {
    refund = static_cast<double>(ticket.charged_tokens);
  }
  Refill(b, clock_());
  b.level = std::min(b.capacity, b.level + refund);
}

void RateLimiter::Refresh(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tenants_.find(tenant);
  if (it != tenants_.end()) it->second.stale = true;
}

}  // namespace tessera::services
