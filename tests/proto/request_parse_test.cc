// proto/request_parse.h: a request with invalid UTF-8 in string fields parses, sanitized, with the first
// bad field's path recorded; valid requests parse unchanged with nothing recorded; malformed wire data
// still fails.
#include "proto/request_parse.h"

#include "gtest/gtest.h"
#include "tessera/v1/fine_tuning.pb.h"
#include "tessera/v1/inference.pb.h"

namespace tessera::proto {
namespace {

TEST(RequestParseTest, ValidRequestParsesAsProtobufDoes) {
  v1::GenerateRequest in;
  in.set_tenant_id("acme");
  in.set_prompt("caf\xc3\xa9 \xf0\x9f\xa4\x97");
  in.add_stop("\n");
  in.set_max_tokens(5);
  v1::GenerateRequest out;
  ASSERT_TRUE(ParseRequest(in.SerializeAsString(), &out));
  EXPECT_EQ(out.SerializeAsString(), in.SerializeAsString());
  EXPECT_EQ(Utf8ErrorPath(out), "");
}

TEST(RequestParseTest, InvalidUtf8IsSanitizedAndTheFirstFieldNamed) {
  v1::GenerateRequest in;
  in.set_tenant_id("acme");
  in.set_max_tokens(7);
  in.add_messages()->set_content("fine");
  v1::ChatMessage* bad = in.add_messages();
  bad->set_role("user");
  bad->set_content("a\xff" "b\xc3");
  in.add_stop("\xed\xa0\x80");  // a surrogate: invalid in UTF-8
  v1::GenerateRequest probe;
  ASSERT_FALSE(probe.ParseFromString(in.SerializeAsString())) << "protobuf itself refuses it";

  v1::GenerateRequest out;
  ASSERT_TRUE(ParseRequest(in.SerializeAsString(), &out));
  EXPECT_EQ(Utf8ErrorPath(out), "stop[0]");  // the first in wire order (field 8 before 11)
  EXPECT_EQ(out.messages(1).content(), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  EXPECT_EQ(out.stop(0), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(out.max_tokens(), 7);
  in.clear_stop();
  ASSERT_TRUE(ParseRequest(in.SerializeAsString(), &out));
  EXPECT_EQ(Utf8ErrorPath(out), "messages[1].content");
  EXPECT_EQ(out.tenant_id(), "acme");
}

TEST(RequestParseTest, NestedMessagesAndOverlongForms) {
  v1::CreateJobRequest in;
  in.set_tenant_id("acme");
  in.set_training_dataset_id("ds_1");
  in.mutable_hyperparameters()->set_max_steps(3);
  in.set_method("\xc0\xaf");  // an overlong '/'
  v1::CreateJobRequest out;
  ASSERT_TRUE(ParseRequest(in.SerializeAsString(), &out));
  EXPECT_EQ(Utf8ErrorPath(out), "method");
  EXPECT_EQ(out.hyperparameters().max_steps(), 3);
}

TEST(RequestParseTest, MalformedWireDataFails) {
  v1::GenerateRequest out;
  EXPECT_FALSE(ParseRequest(std::string("\x12\x05" "ab", 4), &out));  // length past the end
  EXPECT_FALSE(ParseRequest(std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11), &out));
}

}  // namespace
}  // namespace tessera::proto
