// A non-streamed completion whose client disconnects is dropped by the runtime mid-generation
// (services/http/connection_watch.h), on a real server (random:tiny, the real runtime) over a real TCP
// connection (plain, and HTTPS) that the client closes before any response byte.
//
// No timing: the runtime's on_step hook holds the scheduler after the first step of the request (one
// token of max_tokens generated); the test closes the connection, waits (generous deadline) until the
// handler has answered CANCELLED (the RPC metric), releases the scheduler and waits until the batch is
// empty. Then the runtime has generated exactly the tokens of that first step: the request left the
// batch before its next step instead of decoding to max_tokens. Without the watch the handler would
// only return after max_tokens and the wait for CANCELLED would fail.
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/server.h"
#include "tests/services/http/http_client.h"
#include "tests/services/test_pki.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// Polls `cond` for up to 120 s (a state the server reaches, not a duration being measured).
bool WaitFor(const std::function<bool()>& cond) {
  for (auto deadline = std::chrono::steady_clock::now() + 120s; std::chrono::steady_clock::now() < deadline;) {
    if (cond()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return cond();
}

// Blocks the scheduler thread after each step while held (RuntimeOptions::on_step).
struct StepGate {
  std::mutex mu;
  std::condition_variable cv;
  bool hold = false;
  int64_t held = 0;  // steps that stopped here

  void OnStep() {
    std::unique_lock<std::mutex> lock(mu);
    if (!hold) return;
    ++held;
    cv.notify_all();
    cv.wait(lock, [&] { return !hold; });
  }
  void Hold() {
    std::lock_guard<std::mutex> lock(mu);
    hold = true;
  }
  bool WaitHeld() {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, 120s, [&] { return held > 0; });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu);
    hold = false;
    held = 0;
    cv.notify_all();
  }
};

// A client on a raw socket (over TLS when `tls`): sends one POST and later closes without reading the
// response.
class RawClient {
 public:
  RawClient(int port, bool tls, const std::string& path, const std::string& key, const std::string& body) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    const std::string req = "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key +
                            "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                            "\r\n\r\n" + body;
    if (!connected_) return;
    if (!tls) {
      sent_ = ::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size());
      return;
    }
    // The handshake without verifying the server (what is tested is the close, not the trust).
    ctx_ = SSL_CTX_new(TLS_client_method());
    ssl_ = ctx_ != nullptr ? SSL_new(ctx_) : nullptr;
    sent_ = ssl_ != nullptr && SSL_set_fd(ssl_, fd_) == 1 && SSL_connect(ssl_) == 1 &&
            SSL_write(ssl_, req.data(), static_cast<int>(req.size())) == static_cast<int>(req.size());
  }
  ~RawClient() { Close(); }
  bool sent() const { return sent_; }
  void Close() {
    if (ssl_ != nullptr) SSL_free(ssl_);  // no close_notify: the connection just closes
    if (ctx_ != nullptr) SSL_CTX_free(ctx_);
    ssl_ = nullptr;
    ctx_ = nullptr;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool connected_ = false;
  bool sent_ = false;
};

double CancelledCount(TesseraServer& server, const std::string& method) {
  for (const auto& [labels, value] : server.metrics().Series(kRequestsMetric)) {
    bool match_method = false, match_code = false;
    for (const auto& [k, v] : labels) {
      match_method |= k == "method" && v == method;
      match_code |= k == "code" && v == "CANCELLED";
    }
    if (match_method && match_code) return value;
  }
  return 0;
}

class ConnectionWatchTest : public ::testing::Test {
 protected:
  void SetUp() override { gate_ = std::make_shared<StepGate>(); }
  // A server with the gate; HTTPS when `pki` is given.
  void Start(const Pki* pki = nullptr) {
    TestServerOptions o = WithModel();
    o.http = true;
    o.runtime_on_step = [gate = gate_](const runtime::StepInfo&) { gate->OnStep(); };
    if (pki != nullptr) {
      o.tls_cert = pki->Path("server.pem");
      o.tls_key = pki->Path("server.key");
      o.tls_ca_for_clients = pki->Path("ca.pem");
      tls_ = true;
    }
    server_ = std::make_unique<TestServer>(o);
    key_ = server_->CreateTenant("acme");
  }
  void TearDown() override {
    gate_->Release();
    server_.reset();
  }
  EngineStatus Status() { return server_->server().env().engine->Status(); }

  // Sends `body` to `path`, lets the runtime run the request's first step, closes the connection and
  // checks that the request was dropped right there.
  void ExpectDroppedAfterFirstStep(const std::string& path, const json& body) {
    const int max_tokens = body["max_tokens"].get<int>();
    const std::string method = "HTTP POST " + path;
    const double cancelled_before = CancelledCount(server_->server(), method);
    const double tokens_before = Status().tokens_generated;
    gate_->Hold();
    RawClient client(server_->server().http_port(), tls_, path, key_, body.dump());
    ASSERT_TRUE(client.sent());
    ASSERT_TRUE(gate_->WaitHeld()) << "the request never ran a step";
    EngineStatus held = Status();
    EXPECT_EQ(held.active_requests, 1);
    const double tokens_first_step = held.tokens_generated - tokens_before;
    EXPECT_GE(tokens_first_step, 1);
    client.Close();
    // The handler notices while the scheduler is still held: its Generate returns CANCELLED (499).
    EXPECT_TRUE(WaitFor([&] { return CancelledCount(server_->server(), method) == cancelled_before + 1; }))
        << "the handler did not see its client leave";
    gate_->Release();
    EXPECT_TRUE(WaitFor([&] {
      EngineStatus s = Status();
      return s.active_requests == 0 && s.pending_requests == 0;
    }));
    const double generated = Status().tokens_generated - tokens_before;
    EXPECT_EQ(generated, tokens_first_step) << "the request decoded on after its client left";
    EXPECT_LT(generated, max_tokens);
  }

  std::shared_ptr<StepGate> gate_;
  std::unique_ptr<TestServer> server_;
  std::string key_;
  bool tls_ = false;
};

TEST_F(ConnectionWatchTest, CompletionOfAClientThatLeavesIsDroppedMidGeneration) {
  Start();
  ExpectDroppedAfterFirstStep("/v1/completions",
                              {{"model", "acme"}, {"prompt", "add(2,3)="}, {"max_tokens", 200}, {"temperature", 0}});
}

TEST_F(ConnectionWatchTest, ChatCompletionOfAClientThatLeavesIsDroppedMidGeneration) {
  Start();
  ExpectDroppedAfterFirstStep("/v1/chat/completions", {{"model", "acme"},
                                                       {"messages", {{{"role", "user"}, {"content", "add(2,3)="}}}},
                                                       {"max_tokens", 200},
                                                       {"temperature", 0}});
}

// A client that stays gets its whole completion: the watch does not mistake an open, quiet connection
// (the request fully read, nothing more coming) for a closed one.
// Over HTTPS the watch takes the socket from httplib's SSL object.
TEST_F(ConnectionWatchTest, HttpsCompletionOfAClientThatLeavesIsDroppedMidGeneration) {
  Pki pki;
  Start(&pki);
  ExpectDroppedAfterFirstStep("/v1/completions",
                              {{"model", "acme"}, {"prompt", "add(2,3)="}, {"max_tokens", 200}, {"temperature", 0}});
}

TEST_F(ConnectionWatchTest, ClientThatWaitsGetsTheWholeCompletion) {
  Start();
  ApiClient client(server_->server().http_port(), key_);
  HttpReply r = client.Post("/v1/completions",
                            {{"model", "acme"}, {"prompt", "add(2,3)="}, {"max_tokens", 40}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(CancelledCount(server_->server(), "HTTP POST /v1/completions"), 0);
  const int completion = r.json["usage"]["completion_tokens"].get<int>();
  EXPECT_GT(completion, 0);
  if (r.json["choices"][0]["finish_reason"] == "length") EXPECT_EQ(completion, 40);
}

}  // namespace
}  // namespace tessera::services::testing
