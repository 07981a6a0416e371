// The Inference service over the real runtime (random:tiny): Generate / GenerateStream / Score,
// version pinning, determinism, request validation, and hot swap under load (8 client threads while
// promote/rollback flip 20+ times: no failed request, and no request that started after a flip returned
// is served by the previous version).
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

class InferenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = server_.CreateTenant("acme");
    v1_ = PublishScaledVersion(server_.registry(), "acme", {{0, 0}, {1, 1}, {2, 2}, {3, 3}}, 3.0f);
    v2_ = PublishScaledVersion(server_.registry(), "acme", {{0, 5}, {1, 6}}, -2.0f);
  }
  v1::GenerateRequest Req(const std::string& prompt) {
    v1::GenerateRequest r;
    r.set_tenant_id("acme");
    r.set_prompt(prompt);
    r.set_max_tokens(6);
    return r;
  }
  TestServer server_{WithModel()};
  std::string key_;
  int64_t v1_ = 0, v2_ = 0;
};

TEST_F(InferenceTest, GenerateServesLiveOrPinnedVersionDeterministically) {
  auto inf = server_.Inference();
  v1::GenerateRequest r = Req("add(2,3)=");
  r.set_temperature(0.8f);
  r.set_seed(42);
  r.set_return_routing(true);
  v1::GenerateResponse a, b;
  ASSERT_TRUE(inf->Generate(Ctx(key_).get(), r, &a).ok());
  ASSERT_TRUE(inf->Generate(Ctx(key_).get(), r, &b).ok());
  EXPECT_EQ(a.expert_version(), 0);  // nothing promoted yet
  EXPECT_EQ(a.text(), b.text());
  EXPECT_EQ(a.usage().prompt_tokens(), 10);  // BOS + 9 bytes
  EXPECT_GT(a.usage().completion_tokens(), 0);
  EXPECT_NE(a.finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  ASSERT_EQ(a.routing().layers_size(), 4);
  EXPECT_EQ(a.routing().layers(0).expert_tokens_size(), 16);
  EXPECT_EQ(a.routing().layers(0).overlay_experts_size(), 0);
  EXPECT_EQ(a.routing().SerializeAsString(), b.routing().SerializeAsString());

  r.set_version(v1_);
  v1::GenerateResponse pinned;
  ASSERT_TRUE(inf->Generate(Ctx(key_).get(), r, &pinned).ok());
  EXPECT_EQ(pinned.expert_version(), v1_);
  r.set_version(99);
  EXPECT_EQ(inf->Generate(Ctx(key_).get(), r, &pinned).error_code(), grpc::StatusCode::NOT_FOUND);

  v1::PromoteRequest p;
  p.set_tenant_id("acme");
  p.set_version(v2_);
  v1::LiveVersionResponse live;
  ASSERT_TRUE(server_.Admin()->Promote(Ctx(server_.admin_key()).get(), p, &live).ok());
  r.clear_version();
  ASSERT_TRUE(inf->Generate(Ctx(key_).get(), r, &a).ok());
  EXPECT_EQ(a.expert_version(), v2_);
  r.set_version(0);
  ASSERT_TRUE(inf->Generate(Ctx(key_).get(), r, &a).ok());
  EXPECT_EQ(a.expert_version(), 0);
}

// tessera-server --decode-routing device: the same text and routing as the host plan, for the base and a
// tenant version (the CPU computes both groupings bitwise alike).
TEST(InferenceRoutingTest, DeviceDecodeRoutingServesTheSameTextAndRouting) {
  std::vector<std::vector<std::string>> served;
  for (const char* routing : {"host", "device"}) {
    TestServerOptions o = WithModel();
    o.decode_routing = routing;
    TestServer server(o);
    const std::string key = server.CreateTenant("acme");
    const int64_t v1 = PublishScaledVersion(server.registry(), "acme", {{0, 0}, {1, 1}, {2, 2}, {3, 3}}, 3.0f);
    served.emplace_back();
    for (int64_t version : {int64_t{0}, v1}) {
      for (const char* prompt : {"add(2,3)=", "the quick brown fox", "x"}) {
        v1::GenerateRequest r;
        r.set_tenant_id("acme");
        r.set_prompt(prompt);
        r.set_max_tokens(12);
        r.set_version(version);
        r.set_return_routing(true);
        v1::GenerateResponse out;
        grpc::Status st = server.Inference()->Generate(Ctx(key).get(), r, &out);
        ASSERT_TRUE(st.ok()) << routing << ": " << st.error_message();
        ASSERT_EQ(out.expert_version(), version);
        served.back().push_back(out.text() + "|" + out.routing().SerializeAsString());
      }
    }
  }
  EXPECT_EQ(served[1], served[0]);
}

TEST(InferenceRoutingTest, UnknownDecodeRoutingIsRefusedNamingTheFlag) {
  CoreOptions co;
  co.backbone = "random:tiny";
  co.decode_routing = "gpu";
  absl::StatusOr<ServerComponents> c = MakeCoreComponents(co);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(c.status().message()).find("--decode-routing"), std::string::npos) << c.status();
}

TEST_F(InferenceTest, StreamMatchesUnaryAndScoreIsConsistent) {
  auto inf = server_.Inference();
  v1::GenerateRequest r = Req("hello");
  r.set_max_tokens(12);
  r.set_version(v1_);
  v1::GenerateResponse unary;
  ASSERT_TRUE(inf->Generate(Ctx(key_).get(), r, &unary).ok());
  auto ctx = Ctx(key_);
  auto reader = inf->GenerateStream(ctx.get(), r);
  v1::GenerateChunk c;
  std::string text;
  v1::GenerateChunk last;
  while (reader->Read(&c)) {
    text += c.text();
    last = c;
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(text, unary.text());
  EXPECT_EQ(last.finish_reason(), unary.finish_reason());
  EXPECT_EQ(last.expert_version(), v1_);
  EXPECT_EQ(last.usage().completion_tokens(), unary.usage().completion_tokens());

  v1::ScoreRequest s;
  s.set_tenant_id("acme");
  s.set_text("add(2,3)=5");
  s.set_return_routing(true);
  v1::ScoreResponse base, over;
  ASSERT_TRUE(inf->Score(Ctx(key_).get(), s, &base).ok());
  EXPECT_EQ(base.num_tokens(), 10);
  EXPECT_LT(base.total_logprob(), 0);
  EXPECT_NEAR(base.perplexity(), std::exp(-base.total_logprob() / 10), 1e-6 * base.perplexity());
  EXPECT_EQ(base.routing().layers_size(), 4);
  s.set_version(v1_);
  ASSERT_TRUE(inf->Score(Ctx(key_).get(), s, &over).ok());
  EXPECT_EQ(over.expert_version(), v1_);
  EXPECT_NE(over.total_logprob(), base.total_logprob());  // the overlay changes the model
}

TEST_F(InferenceTest, BadRequestsNameTheField) {
  auto inf = server_.Inference();
  struct Case {
    std::function<void(v1::GenerateRequest*)> mutate;
    std::string field;
  };
  std::vector<Case> cases = {
      {[](auto* r) { r->set_prompt(""); }, "prompt"},
      {[](auto* r) { r->set_max_tokens(-1); }, "max_tokens"},
      {[](auto* r) { r->set_max_tokens(100000); }, "max_tokens"},
      {[](auto* r) { r->set_temperature(-1); }, "temperature"},
      {[](auto* r) { r->set_top_k(-3); }, "top_k"},
      {[](auto* r) { r->set_top_p(1.5f); }, "top_p"},
      {[](auto* r) { r->add_stop(""); }, "stop[0]"},
      {[](auto* r) { r->set_version(-1); }, "version"},
      {[](auto* r) { r->set_logprobs(true); r->set_top_logprobs(21); }, "top_logprobs"},
      {[](auto* r) { r->set_logprobs(true); r->set_top_logprobs(-1); }, "top_logprobs"},
      {[](auto* r) { r->set_top_logprobs(2); }, "top_logprobs"},  // without logprobs
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r = Req("x");
    c.mutate(&r);
    v1::GenerateResponse out;
    grpc::Status st = inf->Generate(Ctx(key_).get(), r, &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_NE(st.error_message().find(c.field), std::string::npos) << st.error_message();
  }
  v1::ScoreRequest s;
  s.set_tenant_id("acme");
  v1::ScoreResponse out;
  grpc::Status st = inf->Score(Ctx(key_).get(), s, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("text"), std::string::npos);
}

TEST_F(InferenceTest, HotSwapUnderLoadNeverFailsAndNeverServesAStaleVersion) {
  // Events of different threads are ordered by the monotonic clock: the wall clock (absl::Now) may be
  // stepped or slewed between two readings (a VM's clock is), which reorders events milliseconds apart.
  using Clock = std::chrono::steady_clock;
  struct Flip {
    Clock::time_point started, returned;
    int64_t version;
  };
  struct Served {
    Clock::time_point started, finished;
    int64_t version;
  };
  std::mutex mu;
  std::vector<Flip> flips;
  std::vector<Served> served;
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      auto inf = server_.Inference();
      while (!stop.load()) {
        v1::GenerateRequest r = Req(absl::StrCat("q", t));
        r.set_max_tokens(2);
        v1::GenerateResponse out;
        const Clock::time_point start = Clock::now();
        grpc::Status st = inf->Generate(Ctx(key_).get(), r, &out);
        if (!st.ok()) {
          failures.fetch_add(1);
          continue;
        }
        const Clock::time_point finish = Clock::now();
        std::lock_guard<std::mutex> lock(mu);
        served.push_back({start, finish, out.expert_version()});
      }
    });
  }
  auto admin = server_.Admin();
  for (int i = 0; i < 24; ++i) {
    Flip f;
    f.started = Clock::now();
    v1::LiveVersionResponse live;
    grpc::Status st;
    if (i % 3 == 2) {
      v1::RollbackRequest rb;
      rb.set_tenant_id("acme");
      st = admin->Rollback(Ctx(server_.admin_key()).get(), rb, &live);
    } else {
      v1::PromoteRequest p;
      p.set_tenant_id("acme");
      p.set_version(i % 2 == 0 ? v1_ : v2_);
      st = admin->Promote(Ctx(server_.admin_key()).get(), p, &live);
    }
    ASSERT_TRUE(st.ok()) << st.error_message();
    f.returned = Clock::now();
    f.version = live.live_version();
    {
      std::lock_guard<std::mutex> lock(mu);
      flips.push_back(f);
    }
    // A request that starts after the flip returned is served by the new live version: checked here
    // on every flip (whatever the machine's load lets the client threads fit between flips).
    v1::GenerateRequest r = Req("after-flip");
    r.set_max_tokens(1);
    v1::GenerateResponse out;
    grpc::Status gst = server_.Inference()->Generate(Ctx(key_).get(), r, &out);
    ASSERT_TRUE(gst.ok()) << gst.error_message();
    EXPECT_EQ(out.expert_version(), f.version) << "first request after flip " << i;
    std::this_thread::sleep_for(std::chrono::milliseconds(15));
  }
  stop.store(true);
  for (auto& c : clients) c.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_GE(flips.size(), 20u);
  int checked = 0;
  for (const Served& s : served) {
    // Served by the last flip that returned before the request started, or by a later one that began
    // before it finished (a request waits in the queue; the flip after it may take effect first). Never
    // by a version that was already replaced when the request started.
    size_t last = flips.size();
    for (size_t i = 0; i < flips.size(); ++i) {
      if (flips[i].returned < s.started) last = i;
    }
    if (last == flips.size()) continue;
    bool allowed = false;
    for (size_t j = last; j < flips.size() && flips[j].started < s.finished && !allowed; ++j) {
      allowed = flips[j].version == s.version;
    }
    EXPECT_TRUE(allowed) << "request started after flip " << last << " returned was served by version "
                         << s.version;
    ++checked;
  }
  // The clients' requests that fell between flips were checked too (how many depends on load).
  RecordProperty("client_requests_checked", checked);
}

}  // namespace
}  // namespace tessera::services::testing
