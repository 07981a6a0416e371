// ReplicaRouter (services/cli/replica_router.h): rendezvous order (stable, the documented hash, spread
// over replicas, minimal movement when a replica goes), failover on UNAVAILABLE/RESOURCE_EXHAUSTED only,
// and shedding when every replica refuses.
#include "services/cli/replica_router.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "core/util/sha256.h"
#include "gtest/gtest.h"

namespace tessera::cli {
namespace {

TEST(ReplicaRouterTest, WeightIsTheFirstEightBytesOfTheSha256OfTenantNewlineReplica) {
  const std::string hex = Sha256Hex("acme\n10.0.0.1:7070");
  uint64_t want = 0;
  for (int i = 0; i < 16; ++i) want = (want << 4) | static_cast<uint64_t>(std::stoi(hex.substr(i, 1), nullptr, 16));
  EXPECT_EQ(ReplicaRouter::Weight("acme", "10.0.0.1:7070"), want);
}

TEST(ReplicaRouterTest, OrderIsStableSpreadAndMovesOnlyTheRemovedReplicasTenants) {
  const std::vector<std::string> four = {"r1:7070", "r2:7070", "r3:7070", "r4:7070"};
  ReplicaRouter all(four);
  ReplicaRouter listed_otherwise({"r4:7070", "r2:7070", "r1:7070", "r3:7070"});
  ReplicaRouter without_r3({"r1:7070", "r2:7070", "r4:7070"});
  std::map<std::string, int> first;
  int moved = 0;
  for (int t = 0; t < 400; ++t) {
    const std::string tenant = absl::StrCat("tenant-", t);
    const std::vector<std::string> order = all.Order(tenant);
    ASSERT_EQ(order.size(), 4u);
    EXPECT_EQ(order, listed_otherwise.Order(tenant));  // the list's order does not matter
    ++first[order[0]];
    const std::string now = without_r3.Order(tenant)[0];
    if (order[0] != "r3:7070") {
      EXPECT_EQ(now, order[0]) << tenant;  // only r3's tenants move
    } else {
      EXPECT_EQ(now, order[1]) << tenant;  // to their second choice
      ++moved;
    }
  }
  for (const std::string& r : four) EXPECT_GT(first[r], 60) << r;  // ~100 each
  EXPECT_EQ(moved, first["r3:7070"]);
}

TEST(ReplicaRouterTest, FailsOverOnlyOnUnavailableOrFullAndShedsWhenAllRefuse) {
  ReplicaRouter router({"a:1", "b:1", "c:1"});
  const std::vector<std::string> order = router.Order("acme");
  std::vector<std::string> tried;
  std::map<std::string, grpc::Status> answer;
  auto attempt = [&](const std::string& r) {
    tried.push_back(r);
    return answer.count(r) ? answer[r] : grpc::Status::OK;
  };
  // The first choice answers: nobody else is asked.
  EXPECT_TRUE(router.Route("acme", attempt).ok());
  EXPECT_EQ(tried, std::vector<std::string>({order[0]}));
  // Down, then full: the third answers.
  tried.clear();
  answer[order[0]] = grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused");
  answer[order[1]] = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full");
  EXPECT_TRUE(router.Route("acme", attempt).ok());
  EXPECT_EQ(tried, order);
  // Any other error is the caller's, not retried elsewhere.
  tried.clear();
  answer[order[0]] = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "max_tokens");
  EXPECT_EQ(router.Route("acme", attempt).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(tried.size(), 1u);
  // All full or down: shed at once, naming each replica's answer.
  answer[order[0]] = grpc::Status(grpc::StatusCode::UNAVAILABLE, "");
  answer[order[2]] = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full");
  grpc::Status shed = router.Route("acme", attempt);
  EXPECT_EQ(shed.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  for (const std::string& r : order) EXPECT_NE(shed.error_message().find(r), std::string::npos) << shed.error_message();
  answer[order[1]] = grpc::Status(grpc::StatusCode::UNAVAILABLE, "");
  answer[order[2]] = grpc::Status(grpc::StatusCode::UNAVAILABLE, "");
  EXPECT_EQ(router.Route("acme", attempt).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(ReplicaRouterTest, ParseRefusesEmptyAndDuplicateAddresses) {
  EXPECT_EQ(ReplicaRouter::Parse("a:1,b:2").value().replicas(), std::vector<std::string>({"a:1", "b:2"}));
  EXPECT_FALSE(ReplicaRouter::Parse("a:1,,b:2").ok());
  EXPECT_FALSE(ReplicaRouter::Parse("a:1,a:1").ok());
}

}  // namespace
}  // namespace tessera::cli
