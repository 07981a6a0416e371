// RateLimiter (services/rate_limiter.h) on a fake clock: the requests/s and tokens/min buckets, the
// estimate-then-settle rule, retry-after, limit changes, unlimited tenants.
#include "services/rate_limiter.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "services/status_util.h"
#include "storage/quota_refusal.h"

namespace tessera::services {
namespace {

using storage::Quota;
using storage::QuotaLimits;

class RateLimiterTest : public ::testing::Test {
 protected:
  RateLimiterTest()
      : limiter_([this](const std::string& tenant) -> absl::StatusOr<QuotaLimits> {
                   ++reads_;
                   if (tenant == "ghost") return absl::NotFoundError("tenant 'ghost' not found");
                   return limits_;
                 },
                 [this] { return now_; }) {}
  void Advance(absl::Duration d) { now_ += d; }

  QuotaLimits limits_;
  absl::Time now_ = absl::FromUnixSeconds(1700000000);
  int reads_ = 0;
  RateLimiter limiter_;
};

TEST_F(RateLimiterTest, RequestsPerSecondAllowsABurstOfOneSecondThenRefusesWithRetryAfter) {
  limits_[Quota::kRequestsPerSecond] = 3;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter_.Admit("acme", 10).ok()) << i;
  absl::StatusOr<RateTicket> t = limiter_.Admit("acme", 10);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(t.status().message(), "requests_per_second limit 3 requests/s")) << t.status();
  EXPECT_TRUE(absl::StrContains(t.status().message(), "tenant 'acme'")) << t.status();
  EXPECT_TRUE(absl::StrContains(t.status().message(), "retry after 1 s")) << t.status();
  EXPECT_EQ(RetryAfterSeconds(t.status()), 1);
  std::optional<storage::QuotaRefusalInfo> info = storage::QuotaRefusalOf(t.status());
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->tenant_id, "acme");
  EXPECT_EQ(info->quota, "requests_per_second");
  // A third of a second refills one request, not two.
  Advance(absl::Milliseconds(340));
  EXPECT_TRUE(limiter_.Admit("acme", 10).ok());
  EXPECT_FALSE(limiter_.Admit("acme", 10).ok());
  // Other tenants have their own bucket.
  EXPECT_TRUE(limiter_.Admit("other", 10).ok());
  // A long pause refills to the capacity only.
  Advance(absl::Hours(1));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter_.Admit("acme", 10).ok()) << i;
  EXPECT_FALSE(limiter_.Admit("acme", 10).ok());
}

TEST_F(RateLimiterTest, TokensAreEstimatedAtAdmissionAndSettledToTheActualCount) {
  limits_[Quota::kTokensPerMinute] = 600;  // 10 tokens/s
  // 400 estimated, 100 used: 500 left.
  absl::StatusOr<RateTicket> a = limiter_.Admit("acme", 400);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->charged_tokens, 400);
  limiter_.Settle(*a, absl::OkStatus(), 100);
  // 500 estimated against 500: admitted (positive before), and the budget is now 0.
  absl::StatusOr<RateTicket> b = limiter_.Admit("acme", 500);
  ASSERT_TRUE(b.ok());
  absl::StatusOr<RateTicket> c = limiter_.Admit("acme", 1);
  ASSERT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  // Used 700 in fact: 200 in debt -> 20 s at 10 tokens/s.
  limiter_.Settle(*b, absl::OkStatus(), 700);
  c = limiter_.Admit("acme", 1);
  ASSERT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(c.status().message(), "tokens_per_minute limit 600 tokens/min")) << c.status();
  EXPECT_TRUE(absl::StrContains(c.status().message(), "200 tokens over")) << c.status();
  EXPECT_EQ(RetryAfterSeconds(c.status()), 21);
  ASSERT_TRUE(storage::QuotaRefusalOf(c.status()).has_value());
  EXPECT_EQ(storage::QuotaRefusalOf(c.status())->quota, "tokens_per_minute");  // ceil(20 s + epsilon): at exactly 20 s the level is 0
  Advance(absl::Seconds(19));
  EXPECT_FALSE(limiter_.Admit("acme", 1).ok());
  Advance(absl::Seconds(2));
  EXPECT_TRUE(limiter_.Admit("acme", 1).ok());
}

TEST_F(RateLimiterTest, FailedRequestsAreRefundedCancelledOnesKeepTheirEstimate) {
  limits_[Quota::kTokensPerMinute] = 100;
  absl::StatusOr<RateTicket> a = limiter_.Admit("acme", 100);
  ASSERT_TRUE(a.ok());
  limiter_.Settle(*a, absl::InvalidArgumentError("prompt too long"), 0);
  absl::StatusOr<RateTicket> b = limiter_.Admit("acme", 100);
  ASSERT_TRUE(b.ok()) << "a failed request must be refunded";
  limiter_.Settle(*b, absl::CancelledError("client went away"), 0);
  EXPECT_EQ(limiter_.Admit("acme", 1).status().code(), absl::StatusCode::kResourceExhausted)
      << "a cancelled request keeps its estimate";
}

TEST_F(RateLimiterTest, BothBucketsAreCheckedBeforeEitherIsCharged) {
  limits_[Quota::kRequestsPerSecond] = 1;
  limits_[Quota::kTokensPerMinute] = 60;
  absl::StatusOr<RateTicket> a = limiter_.Admit("acme", 120);
  ASSERT_TRUE(a.ok());
  limiter_.Settle(*a, absl::OkStatus(), 120);  // 60 tokens in debt: 61 s
  Advance(absl::Seconds(2));                     // the request bucket is full again
  absl::StatusOr<RateTicket> b = limiter_.Admit("acme", 1);
  ASSERT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(b.status().message(), "tokens_per_minute")) << b.status();
  EXPECT_EQ(RetryAfterSeconds(b.status()), 59);
  // Raising the token limit (fetched again after Refresh) admits at once; the refused request took no
  // request token, so this one finds the request bucket still full.
  limits_[Quota::kTokensPerMinute] = 0;
  limiter_.Refresh("acme");
  EXPECT_TRUE(limiter_.Admit("acme", 1).ok());
  EXPECT_FALSE(limiter_.Admit("acme", 1).ok()) << "requests/s still applies";
}

TEST_F(RateLimiterTest, RaisingALimitAddsItsHeadroomAtOnceLoweringClamps) {
  limits_[Quota::kTokensPerMinute] = 60;
  absl::StatusOr<RateTicket> a = limiter_.Admit("acme", 100);
  ASSERT_TRUE(a.ok());
  limiter_.Settle(*a, absl::OkStatus(), 100);  // 40 in debt
  ASSERT_FALSE(limiter_.Admit("acme", 1).ok());
  limits_[Quota::kTokensPerMinute] = 100;  // +40: exactly back to 0, still not positive
  limiter_.Refresh("acme");
  ASSERT_FALSE(limiter_.Admit("acme", 1).ok());
  limits_[Quota::kTokensPerMinute] = 1000;  // +900
  limiter_.Refresh("acme");
  absl::StatusOr<RateTicket> b = limiter_.Admit("acme", 800);
  ASSERT_TRUE(b.ok());
  limiter_.Settle(*b, absl::OkStatus(), 0);  // refunded: 900 again
  limits_[Quota::kTokensPerMinute] = 10;  // lowered: clamped to 10
  limiter_.Refresh("acme");
  absl::StatusOr<RateTicket> c = limiter_.Admit("acme", 11);
  ASSERT_TRUE(c.ok());
  limiter_.Settle(*c, absl::OkStatus(), 11);  // 10 - 11 = 1 over
  absl::StatusOr<RateTicket> d = limiter_.Admit("acme", 1);
  ASSERT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "1 tokens over")) << d.status();
}

TEST_F(RateLimiterTest, LimitsAreCachedForASecondAndUnknownOrUnlimitedTenantsPass) {
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(limiter_.Admit("acme", 1000).ok());
  EXPECT_EQ(reads_, 1);
  limits_[Quota::kRequestsPerSecond] = 1;
  EXPECT_TRUE(limiter_.Admit("acme", 1).ok()) << "the cached (unlimited) limits still apply";
  Advance(absl::Seconds(1));
  EXPECT_TRUE(limiter_.Admit("acme", 1).ok());  // re-read: limit 1, bucket starts full
  EXPECT_FALSE(limiter_.Admit("acme", 1).ok());
  EXPECT_EQ(reads_, 2);
  EXPECT_TRUE(limiter_.Admit("ghost", 1).ok()) << "an unknown tenant is the engine's to refuse";
}

}  // namespace
}  // namespace tessera::services
