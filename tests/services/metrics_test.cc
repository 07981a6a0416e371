// Observability: the Prometheus endpoint over HTTP (per-RPC request counts by code, latency
// histograms, jobs by state, queue depth), 404 for other paths, and the JobSpec JSON round trip the
// registry stores.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "core/model/config.h"
#include "core/model/kv_cache.h"
#include "gtest/gtest.h"
#include "services/job_spec.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

std::string HttpGet(int port, const std::string& path, const std::string& headers = "") {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  std::string req = "GET " + path + " HTTP/1.0\r\n" + headers + "\r\n";
  EXPECT_EQ(send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = recv(fd, buf, sizeof(buf), 0)) > 0;) out.append(buf, n);
  close(fd);
  return out;
}

TEST(MetricsTest, PrometheusEndpointReportsRpcsAndJobs) {
  TestServerOptions o;
  o.metrics = true;
  TestServer server(o);
  ASSERT_GT(server.server().metrics_port(), 0);
  std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(4), &ds).ok());
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  v1::Job job;
  ASSERT_TRUE(server.FineTuning()->CreateJob(Ctx(key).get(), req, &job).ok());
  v1::GetJobRequest g;
  g.set_tenant_id("acme");
  g.set_job_id("job_missing");
  EXPECT_FALSE(server.FineTuning()->GetJob(Ctx(key).get(), g, &job).ok());

  std::string page = HttpGet(server.server().metrics_port(), "/metrics");
  EXPECT_EQ(page.rfind("HTTP/1.0 200 OK", 0), 0u) << page.substr(0, 100);
  EXPECT_NE(page.find("text/plain; version=0.0.4"), std::string::npos);
  for (const std::string& line : {
           std::string("tessera_rpc_requests_total{method=\"Admin/CreateTenant\",code=\"OK\"} 1"),
           std::string("tessera_rpc_requests_total{method=\"Datasets/UploadDataset\",code=\"OK\"} 1"),
           std::string("tessera_rpc_requests_total{method=\"FineTuning/GetJob\",code=\"NOT_FOUND\"} 1"),
           std::string("tessera_rpc_latency_seconds_count{method=\"FineTuning/CreateJob\"} 1"),
           std::string("tessera_rpc_latency_seconds_bucket{method=\"FineTuning/CreateJob\",le=\"+Inf\"} 1"),
           std::string("tessera_jobs{state=\"QUEUED\"} 1"),
           std::string("tessera_job_queue_depth 1"),
           std::string("tessera_up 1"),
           std::string("# TYPE tessera_rpc_latency_seconds histogram"),
       }) {
    EXPECT_NE(page.find(line), std::string::npos) << "missing: " << line << "\n" << page;
  }
  std::string other = HttpGet(server.server().metrics_port(), "/secret");
  EXPECT_EQ(other.rfind("HTTP/1.0 404", 0), 0u);
}

TEST(MetricsTest, EndpointAcceptsAnAdminBearerKey) {
  TestServerOptions o;
  o.metrics = true;
  TestServer server(o);
  std::string tenant_key = server.CreateTenant("acme");
  int port = server.server().metrics_port();
  std::string admin = HttpGet(port, "/metrics", "Authorization: Bearer " + server.admin_key() + "\r\n");
  EXPECT_EQ(admin.rfind("HTTP/1.0 200 OK", 0), 0u) << admin.substr(0, 100);
  EXPECT_NE(admin.find("tessera_up 1"), std::string::npos);
  std::string lower = HttpGet(port, "/metrics", "authorization: bearer " + server.admin_key() + "\r\n");
  EXPECT_EQ(lower.rfind("HTTP/1.0 200 OK", 0), 0u) << "header name and scheme are case-insensitive";
  std::string tenant = HttpGet(port, "/metrics", "Authorization: Bearer " + tenant_key + "\r\n");
  EXPECT_EQ(tenant.rfind("HTTP/1.0 403", 0), 0u) << tenant.substr(0, 100);
  EXPECT_EQ(tenant.find("tessera_up"), std::string::npos);
  std::string bad = HttpGet(port, "/metrics", "Authorization: Bearer tsk_nope\r\n");
  EXPECT_EQ(bad.rfind("HTTP/1.0 401", 0), 0u) << bad.substr(0, 100);
  std::string malformed = HttpGet(port, "/metrics", "Authorization: Basic abc\r\n");
  EXPECT_EQ(malformed.rfind("HTTP/1.0 401", 0), 0u);
  EXPECT_EQ(HttpGet(port, "/metrics").rfind("HTTP/1.0 200 OK", 0), 0u) << "no header: served as before";
}

TEST(MetricsTest, InferenceReportsTokensBatchesAndExpertUtilizationPerTenant) {
  TestServerOptions o = WithModel();
  o.metrics = true;
  TestServer server(o);
  std::string key = server.CreateTenant("acme");
  v1::GenerateRequest r;
  r.set_tenant_id("acme");
  r.set_prompt("hello");
  r.set_max_tokens(4);
  v1::GenerateResponse out;
  ASSERT_TRUE(server.Inference()->Generate(Ctx(key).get(), r, &out).ok());
  EXPECT_EQ(out.routing().layers_size(), 0);  // routing only when asked for
  std::string page = HttpGet(server.server().metrics_port(), "/metrics");
  for (const std::string& needle : {
           std::string("tessera_generated_tokens_total{tenant=\"acme\"} ") +
               std::to_string(out.usage().completion_tokens()),
           std::string("tessera_expert_routed_tokens_total{tenant=\"acme\",layer=\"0\",expert=\""),
           std::string("tessera_runtime_steps_total "),
           std::string("tessera_runtime_max_batch_size 1"),
           std::string("tessera_overlay_pool_slabs{state=\"in_use\"} 0"),  // acme has no version yet
           std::string("tessera_overlay_pool_overflow_slots_total 0"),
           // Overlay tiers: acme has no version, so nothing was acquired; the budgets are the defaults.
           std::string("tessera_overlay_tier_bytes{tier=\"device\",state=\"limit\"} 268435456"),
           std::string("tessera_overlay_tier_bytes{tier=\"host\",state=\"limit\"} 1073741824"),
           std::string("tessera_overlay_tier_bytes{tier=\"host\",state=\"used\"} 0"),
           std::string("tessera_overlay_tier_misses_total{tier=\"device\"} 0"),
           std::string("tessera_overlay_loads_in_flight 0"),
           std::string("tessera_overlay_waiting_requests 0"),
       }) {
    EXPECT_NE(page.find(needle), std::string::npos) << "missing: " << needle << "\n" << page;
  }
  // The pool holds --expert-cache-bytes (default 256 MiB) of slots plus one per batch slot.
  const size_t at = page.find("tessera_overlay_pool_slabs{state=\"total\"} ");
  ASSERT_NE(at, std::string::npos) << page;
  EXPECT_GT(std::stod(page.substr(at + std::string("tessera_overlay_pool_slabs{state=\"total\"} ").size())), 16.0);
}

// The prefix cache through the server: --prefix-cache-bytes turns it on, a repeated prompt hits, and the
// counters appear in /metrics and GetRuntimeStatus (fields 20-22).
TEST(MetricsTest, PrefixCacheHitsMissesAndBytes) {
  TestServerOptions o = WithModel();
  o.metrics = true;
  o.prefix_cache_bytes = 8 << 20;
  TestServer server(o);
  std::string key = server.CreateTenant("acme");
  v1::GenerateRequest r;
  r.set_tenant_id("acme");
  r.set_prompt("A system prompt of a few blocks, shared by every question that follows it. Q: hi");
  r.set_max_tokens(4);
  v1::GenerateResponse first, second;
  ASSERT_TRUE(server.Inference()->Generate(Ctx(key).get(), r, &first).ok());
  ASSERT_TRUE(server.Inference()->Generate(Ctx(key).get(), r, &second).ok());
  EXPECT_EQ(first.text(), second.text());
  v1::RuntimeStatus status;
  ASSERT_TRUE(server.Admin()->GetRuntimeStatus(Ctx(server.admin_key()).get(), {}, &status).ok());
  const int64_t prompt_blocks = first.usage().prompt_tokens() / 16;
  ASSERT_GT(prompt_blocks, 2);
  EXPECT_EQ(status.prefix_cache().block_tokens(), 16);
  EXPECT_EQ(status.prefix_cache().miss_blocks(), prompt_blocks);  // the first request computed them all
  EXPECT_EQ(status.prefix_cache().hit_blocks(), prompt_blocks);   // the second restored them all
  EXPECT_GT(status.prefix_cache_bytes(), 0);
  EXPECT_GT(status.prefix_cache_bytes_limit(), 0);
  EXPECT_LE(status.prefix_cache_bytes_limit(), 8 << 20);
  std::string page = HttpGet(server.server().metrics_port(), "/metrics");
  for (const std::string& needle : {
           "tessera_prefix_cache_hits_total " + std::to_string(prompt_blocks),
           "tessera_prefix_cache_misses_total " + std::to_string(prompt_blocks),
           std::string("tessera_prefix_cache_evictions_total 0"),
           std::string("tessera_prefix_cache_bytes{state=\"used\"} "),
           // Every request finished: no running sequence reads the cached blocks.
           std::string("tessera_prefix_cache_bytes{state=\"shared\"} 0\n"),
           std::string("tessera_prefix_cache_hit_tokens_total "),
       }) {
    EXPECT_NE(page.find(needle), std::string::npos) << "missing: " << needle << "\n" << page;
  }
}

// Paged KV through the server: a pool of one full context (--kv-memory-bytes, --max-context 64) and
// four concurrent requests that each grow to ~60 positions. Every request succeeds with the text it has
// alone (greedy), the pool runs out on the way (preemptions counted), and /metrics shows the pool
// whole again afterwards.
TEST(MetricsTest, PagedKvPoolPreemptsUnderPressureAndReportsIt) {
  TestServerOptions o = WithModel();
  o.metrics = true;
  o.max_context = 64;
  o.kv_memory_bytes = 64 * KvCache::BytesPerPosition(ModelConfig::BuiltinTiny(), DType::kF32);
  TestServer server(o);
  std::string key = server.CreateTenant("acme");
  auto request = [](int i) {
    v1::GenerateRequest r;
    r.set_tenant_id("acme");
    r.set_prompt(std::string("question ") + static_cast<char>('a' + i));
    r.set_max_tokens(50);
    return r;
  };
  std::vector<v1::GenerateResponse> together(4);
  std::vector<grpc::Status> status(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { status[i] = server.Inference()->Generate(Ctx(key).get(), request(i), &together[i]); });
  }
  for (auto& t : threads) t.join();
  std::string page = HttpGet(server.server().metrics_port(), "/metrics");
  const std::string counter = "\ntessera_kv_preemptions_total ";  // the sample, not its # HELP line
  const size_t at = page.find(counter);
  ASSERT_NE(at, std::string::npos) << page;
  EXPECT_GT(std::stod(page.substr(at + counter.size())), 0.0) << "the pool never ran out: nothing was tested";
  for (const std::string& needle : {std::string("tessera_kv_block_tokens 16"),
                                    std::string("tessera_kv_blocks{state=\"free\"} 4"),
                                    std::string("tessera_kv_blocks{state=\"used\"} 0"),
                                    std::string("tessera_kv_preempted_requests 0")}) {
    EXPECT_NE(page.find(needle), std::string::npos) << "missing: " << needle << "\n" << page;
  }
  int64_t positions = 0;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(status[i].ok()) << i << ": " << status[i].error_message();
    positions += together[i].usage().prompt_tokens() + together[i].usage().completion_tokens();
    v1::GenerateResponse alone;
    ASSERT_TRUE(server.Inference()->Generate(Ctx(key).get(), request(i), &alone).ok());
    EXPECT_EQ(together[i].text(), alone.text()) << i;
  }
  EXPECT_GT(positions, 64);
}

TEST(JobSpecTest, JsonRoundTripAndDefaults) {
  BackboneInfo b;
  b.num_layers = 4;
  b.num_experts = 16;
  b.max_seq_len = 256;
  JobRequest r;
  r.training_dataset_id = "ds_x";
  r.selection = JobRequest::Selection::kExplicit;
  r.slots = {{3, 1}, {0, 2}};
  r.learning_rate = 0.02;
  absl::StatusOr<JobSpec> s = ValidateAndFill(r, b, /*live_version=*/5);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->base_version, 5);  // default: the live version
  EXPECT_EQ(s->seq_len, 128);
  EXPECT_EQ(s->slots.front().layer, 0);  // sorted
  absl::StatusOr<JobSpec> back = JobSpec::FromJson(s->ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), s->ToJson());
  EXPECT_FALSE(back->auto_select);
  EXPECT_EQ(back->learning_rate, 0.02);
  r.seq_len = 512;  // beyond this backbone's context
  EXPECT_EQ(ValidateAndFill(r, b, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(JobSpec::FromJson("not json").ok());
}

}  // namespace
}  // namespace tessera::services::testing
