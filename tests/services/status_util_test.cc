// services/status_util.h: timestamps from clients saturate instead of overflowing (a fuzzed
// ListAuditEvents `since` of +-2^63 s was signed-overflow UB), and RequestUtf8Status names the field
// proto/request_parse.h recorded.
#include "services/status_util.h"

#include <limits>

#include "gtest/gtest.h"
#include "proto/request_parse.h"
#include "tessera/v1/inference.pb.h"

namespace tessera::services {
namespace {

TEST(StatusUtilTest, TimestampMicrosSaturates) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(1700000000);
  ts.set_nanos(123456789);
  EXPECT_EQ(TimestampMicros(ts), int64_t{1700000000} * 1000000 + 123456);
  ts.set_seconds(std::numeric_limits<int64_t>::max());
  EXPECT_EQ(TimestampMicros(ts), std::numeric_limits<int64_t>::max());
  ts.set_seconds(std::numeric_limits<int64_t>::min());
  EXPECT_EQ(TimestampMicros(ts), std::numeric_limits<int64_t>::min());
  ts.set_seconds(std::numeric_limits<int64_t>::max() / 1000000 - 1);
  ts.set_nanos(0);
  EXPECT_EQ(TimestampMicros(ts), (std::numeric_limits<int64_t>::max() / 1000000 - 1) * 1000000);
}

TEST(StatusUtilTest, RequestUtf8StatusNamesTheField) {
  v1::GenerateRequest in;
  in.set_prompt("ok\xff");
  v1::GenerateRequest out;
  ASSERT_TRUE(proto::ParseRequest(in.SerializeAsString(), &out));
  absl::Status s = RequestUtf8Status(out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "prompt: must be valid UTF-8");
  in.set_prompt("ok");
  ASSERT_TRUE(proto::ParseRequest(in.SerializeAsString(), &out));
  EXPECT_TRUE(RequestUtf8Status(out).ok());
}

}  // namespace
}  // namespace tessera::services
