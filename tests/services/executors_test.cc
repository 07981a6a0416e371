// The server's executors and bounds (issue 19): admin RPCs run on their own executor and return while
// every inference thread is held; streams are bounded per tenant and in total across gRPC and HTTP
// (RESOURCE_EXHAUSTED / 429 beyond); a tenant's waiting requests are capped; a client's cancellation and
// deadline reach the engine. The engine here is a fake whose Generate blocks until the test releases it,
// so "held" is a state the test controls, not a timing.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httplib.h"
#include "tests/services/http/http_client.h"
#include "tests/services/test_server.h"

namespace tessera::services {
namespace {

using testing::Ctx;
using testing::TestServer;
using testing::TestServerOptions;
using namespace std::chrono_literals;

void WaitFor(const std::function<bool()>& cond) {
  for (int i = 0; i < 20000 && !cond(); ++i) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(cond());
}

// Generate blocks until Release() (or until the request is cancelled / past its deadline, which it
// records); ServeLive returns at once.
class BlockingEngine final : public InferenceEngine {
 public:
  BackboneInfo Backbone() const override { return {}; }
  absl::StatusOr<GenerateOutput> Generate(const std::string&, std::optional<int64_t> version,
                                          const GenerateParams& params, const DeltaCallback& on_delta) override {
    std::unique_lock<std::mutex> lock(mu_);
    ++running_;
    cv_.notify_all();
    absl::Status ended;
    while (!released_) {
      cv_.wait_for(lock, 5ms);
      if (tick_ && on_delta) {
        // A token's worth of text while it "decodes"; a caller whose client is gone answers false.
        lock.unlock();
        const bool more = on_delta(".");
        lock.lock();
        if (!more) {
          ended = absl::CancelledError("delta refused");
          break;
        }
      }
      if (params.cancelled && params.cancelled()) {
        ended = absl::CancelledError("cancelled");
        break;
      }
      if (absl::Now() >= params.deadline) {
        ended = absl::DeadlineExceededError("deadline");
        break;
      }
    }
    --running_;
    if (!ended.ok()) {
      ++stopped_;
      cv_.notify_all();
      return ended;
    }
    lock.unlock();
    if (on_delta) on_delta("ok");
    GenerateOutput out;
    out.text = "ok";
    out.version = version.value_or(0);
    out.completion_tokens = 1;
    return out;
  }
  absl::StatusOr<ScoreOutput> Score(const std::string&, std::optional<int64_t>, const TextInput&, bool) override {
    return absl::UnimplementedError("not used");
  }
  absl::Status ServeLive(const std::string&, int64_t) override {
    ++serve_live_calls_;
    return absl::OkStatus();
  }
  void ForgetTenant(const std::string&) override {}
  EngineStatus Status() override { return {}; }

  void set_tick(bool tick) {
    std::lock_guard<std::mutex> lock(mu_);
    tick_ = tick;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  int running() {
    std::lock_guard<std::mutex> lock(mu_);
    return running_;
  }
  int stopped() {
    std::lock_guard<std::mutex> lock(mu_);
    return stopped_;
  }
  bool released() {
    std::lock_guard<std::mutex> lock(mu_);
    return released_;
  }
  int serve_live_calls() const { return serve_live_calls_.load(); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int running_ = 0;
  int stopped_ = 0;
  bool released_ = false;
  bool tick_ = false;  // emit a delta every few ms while held
  std::atomic<int> serve_live_calls_{0};
};

class ExecutorsTest : public ::testing::Test {
 protected:
  void Start(TestServerOptions o) {
    o.make_engine = [this](storage::Registry*) -> absl::StatusOr<std::unique_ptr<InferenceEngine>> {
      auto e = std::make_unique<BlockingEngine>();
      engine_ = e.get();
      return e;
    };
    server_ = std::make_unique<TestServer>(std::move(o));
  }
  void TearDown() override {
    if (engine_ != nullptr) engine_->Release();
    server_.reset();
  }
  v1::GenerateRequest Req(const std::string& tenant) {
    v1::GenerateRequest r;
    r.set_tenant_id(tenant);
    r.set_prompt("hello");
    r.set_max_tokens(4);
    return r;
  }

  std::unique_ptr<TestServer> server_;
  BlockingEngine* engine_ = nullptr;
};

TEST_F(ExecutorsTest, PromoteReturnsWhileEveryInferenceThreadIsHeld) {
  TestServerOptions o;
  o.work_threads = 2;
  Start(o);
  const std::string key = server_->CreateTenant("acme");
  const int64_t version = testing::PublishScaledVersion(server_->registry(), "acme", {{0, 0}}, 1.5f);
  // Two Generates hold both inference threads; two more wait for one.
  std::vector<std::thread> clients;
  std::atomic<int> generated{0};
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&] {
      v1::GenerateResponse resp;
      if (server_->Inference()->Generate(Ctx(key).get(), Req("acme"), &resp).ok()) ++generated;
    });
  }
  WaitFor([&] { return engine_->running() == 2; });
  v1::RuntimeStatus status;
  WaitFor([&] {
    status.Clear();
    return server_->Admin()->GetRuntimeStatus(Ctx(server_->admin_key()).get(), v1::GetRuntimeStatusRequest(), &status).ok() &&
           status.inference_pending_by_tenant().count("acme") && status.inference_pending_by_tenant().at("acme") == 2;
  });

  v1::PromoteRequest promote;
  promote.set_tenant_id("acme");
  promote.set_version(version);
  v1::LiveVersionResponse moved;
  auto ctx = Ctx(server_->admin_key());
  ctx->set_deadline(std::chrono::system_clock::now() + 30s);
  grpc::Status st = server_->Admin()->Promote(ctx.get(), promote, &moved);
  ASSERT_TRUE(st.ok()) << st.error_message();
  // It returned while the inference load was still held: the threads are still in Generate and the
  // engine was never released.
  EXPECT_EQ(engine_->running(), 2);
  EXPECT_FALSE(engine_->released());
  EXPECT_EQ(engine_->serve_live_calls(), 1);
  EXPECT_EQ(generated.load(), 0);
  v1::RollbackRequest rollback;
  rollback.set_tenant_id("acme");
  st = server_->Admin()->Rollback(Ctx(server_->admin_key()).get(), rollback, &moved);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(engine_->running(), 2);

  engine_->Release();
  for (auto& c : clients) c.join();
  EXPECT_EQ(generated.load(), 4);
}

TEST_F(ExecutorsTest, WaitingRequestsPerTenantAreCapped) {
  TestServerOptions o;
  o.work_threads = 1;
  o.max_queued_per_tenant = 2;
  Start(o);
  const std::string acme = server_->CreateTenant("acme");
  const std::string beta = server_->CreateTenant("beta");
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  auto launch = [&](const std::string& key, const std::string& tenant) {
    clients.emplace_back([&, key, tenant] {
      v1::GenerateResponse resp;
      if (server_->Inference()->Generate(Ctx(key).get(), Req(tenant), &resp).ok()) ++ok;
    });
  };
  launch(acme, "acme");
  WaitFor([&] { return engine_->running() == 1; });
  launch(acme, "acme");
  launch(acme, "acme");
  v1::RuntimeStatus status;
  WaitFor([&] {
    status.Clear();
    return server_->Admin()->GetRuntimeStatus(Ctx(server_->admin_key()).get(), v1::GetRuntimeStatusRequest(), &status).ok() &&
           status.inference_pending_by_tenant().count("acme") && status.inference_pending_by_tenant().at("acme") == 2;
  });
  v1::GenerateResponse resp;
  grpc::Status over = server_->Inference()->Generate(Ctx(acme).get(), Req("acme"), &resp);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(over.error_message().find("--max-queued-per-tenant"), std::string::npos) << over.error_message();
  launch(beta, "beta");  // another tenant still gets in line
  WaitFor([&] {
    status.Clear();
    return server_->Admin()->GetRuntimeStatus(Ctx(server_->admin_key()).get(), v1::GetRuntimeStatusRequest(), &status).ok() &&
           status.inference_pending_by_tenant().count("beta") == 1;
  });
  engine_->Release();
  for (auto& c : clients) c.join();
  EXPECT_EQ(ok.load(), 4);
}

TEST_F(ExecutorsTest, StreamsAreBoundedPerTenantAndInTotalAcrossGrpcAndHttp) {
  TestServerOptions o;
  o.max_streams = 3;
  o.max_streams_per_tenant = 2;
  o.http = true;
  Start(o);
  const std::string acme = server_->CreateTenant("acme");
  const std::string beta = server_->CreateTenant("beta");
  struct Open {
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<grpc::ClientReader<v1::GenerateChunk>> reader;
  };
  auto open = [&](const std::string& key, const std::string& tenant) {
    Open s;
    s.ctx = Ctx(key);
    s.reader = server_->Inference()->GenerateStream(s.ctx.get(), Req(tenant));
    return s;
  };
  // Refused streams end at once with RESOURCE_EXHAUSTED naming the limit's flag.
  auto expect_refused = [&](const std::string& key, const std::string& tenant, const char* flag) {
    Open s = open(key, tenant);
    v1::GenerateChunk c;
    EXPECT_FALSE(s.reader->Read(&c));
    grpc::Status st = s.reader->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    EXPECT_NE(st.error_message().find(flag), std::string::npos) << st.error_message();
  };
  std::vector<Open> held;
  held.push_back(open(acme, "acme"));
  held.push_back(open(acme, "acme"));
  WaitFor([&] { return engine_->running() == 2; });
  expect_refused(acme, "acme", "--max-streams-per-tenant");
  // WatchJob counts against the same limit (refused before the job is even looked up).
  {
    v1::WatchJobRequest w;
    w.set_tenant_id("acme");
    w.set_job_id("job-none");
    auto ctx = Ctx(acme);
    auto reader = server_->FineTuning()->WatchJob(ctx.get(), w);
    v1::JobEvent e;
    EXPECT_FALSE(reader->Read(&e));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // And an HTTP SSE completion: 429 before anything is streamed.
  testing::HttpReply http = testing::ApiClient(server_->server().http_port(), acme)
                                .Post("/v1/completions", {{"model", "acme"}, {"prompt", "x"}, {"stream", true}});
  EXPECT_EQ(http.status, 429) << http.body;
  EXPECT_NE(http.body.find("--max-streams-per-tenant"), std::string::npos) << http.body;

  held.push_back(open(beta, "beta"));
  WaitFor([&] { return engine_->running() == 3; });
  expect_refused(beta, "beta", "--max-streams ");  // the server's total
  v1::RuntimeStatus status;
  ASSERT_TRUE(server_->Admin()->GetRuntimeStatus(Ctx(server_->admin_key()).get(), v1::GetRuntimeStatusRequest(), &status).ok());
  EXPECT_EQ(status.open_streams(), 3);
  EXPECT_EQ(status.open_streams_by_tenant().at("acme"), 2);
  EXPECT_EQ(status.open_streams_by_tenant().at("beta"), 1);

  engine_->Release();
  for (Open& s : held) {
    v1::GenerateChunk c;
    while (s.reader->Read(&c)) {
    }
    EXPECT_TRUE(s.reader->Finish().ok());
  }
  // Ended streams give their places back.
  ASSERT_TRUE(server_->Admin()->GetRuntimeStatus(Ctx(server_->admin_key()).get(), v1::GetRuntimeStatusRequest(), &status).ok());
  EXPECT_EQ(status.open_streams(), 0);
  Open again = open(acme, "acme");
  v1::GenerateChunk c;
  int chunks = 0;
  while (again.reader->Read(&c)) ++chunks;
  EXPECT_EQ(chunks, 2);  // the text and the final chunk
  EXPECT_TRUE(again.reader->Finish().ok());
}

TEST_F(ExecutorsTest, ClientDeadlineAndCancellationReachTheEngine) {
  Start(TestServerOptions{});
  const std::string key = server_->CreateTenant("acme");
  // Unary Generate with a short deadline: the client sees DEADLINE_EXCEEDED and the engine's request
  // ends (it would otherwise wait for Release forever). 3 s, not less: the call must reach the server
  // (which hands the engine the deadline) before it passes, also on a loaded machine.
  {
    auto ctx = Ctx(key);
    ctx->set_deadline(std::chrono::system_clock::now() + 3s);
    v1::GenerateResponse resp;
    grpc::Status st = server_->Inference()->Generate(ctx.get(), Req("acme"), &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    WaitFor([&] { return engine_->stopped() == 1; });
  }
  // A stream the client cancels.
  {
    auto ctx = Ctx(key);
    auto reader = server_->Inference()->GenerateStream(ctx.get(), Req("acme"));
    WaitFor([&] { return engine_->running() == 1; });
    ctx->TryCancel();
    WaitFor([&] { return engine_->stopped() == 2; });
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_EQ(engine_->running(), 0);
  EXPECT_FALSE(engine_->released());
}

// An HTTP SSE client that disconnects mid-stream: the next delta's write fails and the generation
// ends (the engine sees its delta refused) though nothing released it.
TEST_F(ExecutorsTest, HttpStreamClientDisconnectEndsTheGeneration) {
  TestServerOptions o;
  o.http = true;
  Start(o);
  const std::string key = server_->CreateTenant("acme");
  engine_->set_tick(true);
  httplib::Client client("127.0.0.1", server_->server().http_port());
  client.set_read_timeout(30, 0);
  httplib::Headers headers = {{"Authorization", "Bearer " + key}};
  std::string received;
  const std::string body = R"({"model": "acme", "prompt": "x", "stream": true})";
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = headers;
  req.headers.emplace("Content-Type", "application/json");
  req.body = body;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    received.append(data, n);
    return received.find("data: ") == std::string::npos;  // the first event: hang up
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  client.send(req, res, err);
  EXPECT_NE(received.find("data: "), std::string::npos) << received;
  client.stop();
  WaitFor([&] { return engine_->stopped() == 1; });
  EXPECT_EQ(engine_->running(), 0);
  EXPECT_FALSE(engine_->released());
  // Its stream place is free again.
  v1::RuntimeStatus status;
  WaitFor([&] {
    status.Clear();
    return server_->Admin()->GetRuntimeStatus(Ctx(server_->admin_key()).get(), v1::GetRuntimeStatusRequest(), &status).ok() &&
           status.open_streams() == 0;
  });
}

// A non-streamed HTTP completion writes nothing until the generation ends; a client that closes its
// connection before that is noticed by watching the connection (services/http/connection_watch.h): the
// engine's request is cancelled though nothing released it.
TEST_F(ExecutorsTest, HttpNonStreamedClientDisconnectEndsTheGeneration) {
  TestServerOptions o;
  o.http = true;
  Start(o);
  const std::string key = server_->CreateTenant("acme");
  for (const std::string path : {"/v1/completions", "/v1/chat/completions"}) {
    SCOPED_TRACE(path);
    const int stopped_before = engine_->stopped();
    const std::string body = path == "/v1/completions"
                                 ? R"({"model": "acme", "prompt": "x", "max_tokens": 100})"
                                 : R"({"model": "acme", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100})";
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server_->server().http_port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const std::string req = "POST " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key +
                            "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                            "\r\n\r\n" + body;
    ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
    WaitFor([&] { return engine_->running() == 1; });
    ::close(fd);
    WaitFor([&] { return engine_->stopped() == stopped_before + 1; });
    EXPECT_EQ(engine_->running(), 0);
  }
  EXPECT_FALSE(engine_->released());
}

}  // namespace
}  // namespace tessera::services
