// Runtime tests on a real (small, random) MoE model: batched serving equals single-request
// generation, continuous batching, the overlay cache, queue limits, cancellation, stop strings, EOS,
// Score, errors and shutdown.
#include "core/runtime/runtime.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <thread>

#include "core/backend/profiling_backend.h"
#include "tests/core/runtime/runtime_test_util.h"

namespace tessera::runtime {
namespace {

using testing::RefOutput;
using testing::World;
using testing::WaitFor;
using namespace std::chrono_literals;

constexpr int64_t kCapacity = 96;

struct Job {
  std::string tenant;
  std::optional<int64_t> version;  // as passed to Generate
  int64_t served = 0;              // the version expected to serve it
  GenerateParams params;
};

GenerateParams Params(std::string prompt, int max_tokens, float temperature = 0, uint64_t seed = 0) {
  GenerateParams p;
  p.prompt = std::move(prompt);
  p.max_tokens = max_tokens;
  p.temperature = temperature;
  p.seed = seed;
  if (temperature > 0) {
    p.top_k = 40;
    p.top_p = 0.95f;
  }
  p.return_routing = true;
  return p;
}


// Runs every job on its own thread against `rt` and returns the results in job order.
std::vector<absl::StatusOr<GenerateResult>> RunConcurrently(Runtime& rt, const std::vector<Job>& jobs,
                                                            bool paused_start) {
  std::vector<absl::StatusOr<GenerateResult>> results(jobs.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < jobs.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = rt.Generate(jobs[i].tenant, jobs[i].version, jobs[i].params); });
  }
  if (paused_start) {
    WaitFor([&] { return rt.Status().pending_requests == static_cast<int64_t>(jobs.size()); });
    rt.Resume();
  }
  for (auto& t : threads) t.join();
  return results;
}

void ExpectMatchesReference(const World& w, const Job& job, const absl::StatusOr<GenerateResult>& got) {
  ASSERT_TRUE(got.ok()) << got.status();
  RefOutput want = w.Ref(job.tenant, job.served, job.params, kCapacity);
  EXPECT_EQ(got->version, job.served) << job.tenant;
  EXPECT_EQ(got->tokens, want.tokens) << job.tenant << " prompt '" << job.params.prompt << "'";
  EXPECT_EQ(got->text, want.text);
  EXPECT_EQ(got->finish_reason, want.finish);
  EXPECT_EQ(got->completion_tokens, static_cast<int>(want.tokens.size()));
  EXPECT_EQ(got->prompt_tokens, static_cast<int>(job.params.prompt.size()) + 1);
  // Routing: identical counts per (layer, expert) and overlay slots; the entropy is a float sum whose
  // last bits follow BLAS summation order (which depends on the batch's shape).
  std::vector<LayerRouting> want_routing = SummarizeRouting(want.routing);
  ASSERT_EQ(got->routing.size(), want_routing.size());
  for (size_t l = 0; l < want_routing.size(); ++l) {
    EXPECT_EQ(got->routing[l].expert_tokens, want_routing[l].expert_tokens) << "layer " << l;
    EXPECT_EQ(got->routing[l].overlay_experts, want_routing[l].overlay_experts) << "layer " << l;
    EXPECT_NEAR(got->routing[l].entropy, want_routing[l].entropy, 1e-6 * want_routing[l].entropy);
  }
}

RuntimeOptions Options(int max_batch = 8) {
  RuntimeOptions o;
  o.max_batch = max_batch;
  o.kv_capacity = kCapacity;
  o.max_queue = 64;
  return o;
}

// Four tenants (three overlays and the base) in one batch of 8.
std::vector<Job> MixedJobs(float temperature) {
  std::vector<Job> jobs;
  const char* prompts[] = {"hello world", "the quick brown fox", "abc", "tessera serves experts"};
  int i = 0;
  for (const char* tenant : {"acme", "beta", "gamma", "delta"}) {
    const int64_t v = std::string(tenant) == "delta" ? 0 : 1;
    for (int k = 0; k < 2; ++k, ++i) {
      jobs.push_back({tenant, v, v, Params(prompts[(i + k) % 4], 10 + 3 * i, temperature, 100 + i)});
    }
  }
  return jobs;
}

TEST(RuntimeTest, MixedTenantBatchEqualsSingleRequestsGreedy) {
  World w;
  RuntimeOptions o = Options();
  o.start_paused = true;
  auto rt = w.MakeRuntime(o);
  std::vector<Job> jobs = MixedJobs(0.0f);
  auto results = RunConcurrently(*rt, jobs, /*paused_start=*/true);
  for (size_t i = 0; i < jobs.size(); ++i) ExpectMatchesReference(w, jobs[i], results[i]);
  // All eight ran in one step (and the tenants' outputs differ, so overlays were really applied).
  EXPECT_EQ(rt->Status().max_batch_seen, 8);
  EXPECT_NE(results[0]->text, results[6]->text);
}

// Decode steps grouped on the device (RuntimeOptions::decode_routing): the same tokens and routing as the
// host-planned single requests, with decode-only steps actually taken.
TEST(RuntimeTest, DeviceDecodeRoutingEqualsSingleRequests) {
  World w;
  RuntimeOptions o = Options();
  o.start_paused = true;
  o.decode_routing = MoeRouting::kOnDevice;
  std::atomic<int64_t> decode_only_steps{0};
  o.on_step = [&](const StepInfo& info) {
    if (info.prefill_sequences == 0 && info.ok) decode_only_steps.fetch_add(1);
  };
  // The same model over a ProfilingBackend, whose op table shows which grouping each step used.
  ProfilingBackend counted(w.be.get());
  counted.set_enabled(true);
  auto model = Model::Create(w.config, w.model->weights(), &counted).value();
  auto rt = Runtime::Create(model.get(), &w.tokenizer, &w.source, o).value();
  std::vector<Job> jobs = MixedJobs(0.0f);
  auto results = RunConcurrently(*rt, jobs, /*paused_start=*/true);
  for (size_t i = 0; i < jobs.size(); ++i) ExpectMatchesReference(w, jobs[i], results[i]);
  EXPECT_GT(decode_only_steps.load(), 5);
  const auto ops = counted.Table();
  const int64_t layers = w.config.num_layers;
  ASSERT_TRUE(ops.count("MoeSortAssignments")) << "decode steps did not route on the device";
  EXPECT_EQ(ops.at("MoeSortAssignments").calls, decode_only_steps.load() * layers);
  EXPECT_EQ(ops.at("GroupedMatmulByOffsets").calls, 3 * decode_only_steps.load() * layers);
  ASSERT_TRUE(ops.count("GroupedMatmul")) << "prefill steps should use the host plan";
}

TEST(RuntimeTest, MixedTenantBatchEqualsSingleRequestsSeededSampling) {
  World w;
  RuntimeOptions o = Options();
  o.start_paused = true;
  auto rt = w.MakeRuntime(o);
  std::vector<Job> jobs = MixedJobs(0.9f);
  auto results = RunConcurrently(*rt, jobs, /*paused_start=*/true);
  for (size_t i = 0; i < jobs.size(); ++i) ExpectMatchesReference(w, jobs[i], results[i]);
  EXPECT_EQ(rt->Status().max_batch_seen, 8);
  // Same request and seed again, alone: the same tokens.
  auto again = rt->Generate(jobs[3].tenant, jobs[3].version, jobs[3].params);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tokens, results[3]->tokens);
}

TEST(RuntimeTest, RequestsJoinAndLeaveBetweenSteps) {
  World w;
  // Fewer slots than requests, three waves arriving while others decode (the scheduler is paused
  // after steps 3 and 8 so each wave arrives at a known step), different lengths: requests leave at
  // different steps and waiting ones take their slots.
  RuntimeOptions o = Options(4);
  o.start_paused = true;
  std::atomic<Runtime*> self{nullptr};
  // Status().steps counts a step before on_step runs: the test waits for `paused_at` (stored after
  // Pause()) so that its Resume() can never come before the hook's Pause().
  std::atomic<int64_t> paused_at{0};
  o.on_step = [&](const StepInfo& info) {
    if (info.step == 3 || info.step == 8) {
      self.load()->Pause();
      paused_at.store(info.step);
    }
  };
  auto rt = w.MakeRuntime(o);
  self.store(rt.get());
  std::vector<Job> jobs;
  const char* tenants[] = {"acme", "beta", "delta", "gamma"};
  for (int i = 0; i < 10; ++i) {
    const std::string t = tenants[i % 4];
    const int64_t v = t == "delta" ? 0 : 1;
    jobs.push_back({t, v, v, Params(absl::StrCat("prompt number ", i, " ", std::string(i * 3, 'x')), 4 + 7 * (i % 4),
                                    i % 2 == 0 ? 0.0f : 0.7f, 7 + i)});
  }
  std::vector<absl::StatusOr<GenerateResult>> results(jobs.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  auto wave = [&](size_t begin, size_t end, int64_t resume_after_steps) {
    WaitFor([&] { return paused_at.load() == resume_after_steps; });
    ASSERT_EQ(rt->Status().steps, resume_after_steps);
    const int64_t waiting = rt->Status().pending_requests;  // earlier arrivals still without a slot
    for (size_t i = begin; i < end; ++i) {
      threads.emplace_back([&, i] { results[i] = rt->Generate(jobs[i].tenant, jobs[i].version, jobs[i].params); });
    }
    WaitFor([&] { return rt->Status().pending_requests == waiting + static_cast<int64_t>(end - begin); });
    rt->Resume();
  };
  wave(0, 4, 0);
  wave(4, 7, 3);
  wave(7, 10, 8);
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < jobs.size(); ++i) ExpectMatchesReference(w, jobs[i], results[i]);
  RuntimeStatus s = rt->Status();
  EXPECT_EQ(s.max_batch_seen, 4);
  EXPECT_EQ(s.active_requests, 0);
  int64_t tokens = 0;
  for (auto& r : results) tokens += r->completion_tokens;
  EXPECT_EQ(s.tokens_generated, tokens);
  // A request is in one step per token it samples (an EOS is sampled but not counted as a token).
  EXPECT_GE(s.batched_sequences, tokens);
  EXPECT_LE(s.batched_sequences, tokens + static_cast<int64_t>(jobs.size()));
  EXPECT_LT(s.steps, tokens / 2);
}

// Out of device memory in a step that admits a prompt beside decoding requests: only the new prompt fails
// (RESOURCE_EXHAUSTED), and the decoding requests finish with exactly the output they would have had.
// The model runs on a backend capped at kLimit bytes: the KV pool and short steps fit, a 90-token
// prefill does not (both checked below, so the test cannot pass vacuously).
TEST(RuntimeTest, OutOfMemoryPrefillFailsOnlyTheNewPrompt) {
  World w;
  constexpr int64_t kLimit = 524288;  // 512 KiB: passes from ~400 KB to ~650 KB here
  BackendOptions bo;
  bo.memory_limit_bytes = kLimit;
  std::unique_ptr<Backend> limited = MakeBackend("cpu", bo).value();
  std::unique_ptr<Model> model = Model::Create(w.config, w.model->weights(), limited.get()).value();
  RuntimeOptions o = Options(4);
  o.overlay_cache_bytes = 0;  // base-model requests only: no overlay slabs to preallocate
  o.start_paused = true;
  std::atomic<Runtime*> self{nullptr};
  std::mutex mu;
  std::vector<StepInfo> steps;
  std::atomic<bool> paused{false};  // set after Pause(): a Resume() after seeing it cannot precede it
  o.on_step = [&](const StepInfo& info) {
    {
      std::lock_guard<std::mutex> lock(mu);
      steps.push_back(info);
    }
    if (info.step == 3) {
      self.load()->Pause();
      paused.store(true);
    }
  };
  std::unique_ptr<Runtime> rt = Runtime::Create(model.get(), &w.tokenizer, &w.source, o).value();
  self.store(rt.get());
  std::vector<Job> shorts;
  for (int i = 0; i < 3; ++i) shorts.push_back({"delta", 0, 0, Params(absl::StrCat("short ", i), 20, 0.7f, 5 + i)});
  const Job long_job{"delta", 0, 0, Params(std::string(89, 'x'), 4)};
  std::vector<absl::StatusOr<GenerateResult>> results(shorts.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < shorts.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = rt->Generate(shorts[i].tenant, shorts[i].version, shorts[i].params); });
  }
  WaitFor([&] { return rt->Status().pending_requests == 3; });
  rt->Resume();
  WaitFor([&] { return paused.load(); });  // the shorts are decoding; the scheduler paused after step 3
  absl::StatusOr<GenerateResult> long_result = absl::UnknownError("not run");
  threads.emplace_back([&] { long_result = rt->Generate(long_job.tenant, long_job.version, long_job.params); });
  WaitFor([&] { return rt->Status().pending_requests == 1; });
  rt->Resume();
  for (auto& t : threads) t.join();

  EXPECT_EQ(long_result.status().code(), absl::StatusCode::kResourceExhausted) << long_result.status();
  EXPECT_NE(long_result.status().message().find("memory limit"), std::string::npos) << long_result.status();
  for (size_t i = 0; i < shorts.size(); ++i) ExpectMatchesReference(w, shorts[i], results[i]);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_GE(steps.size(), 5u);
  EXPECT_TRUE(steps[0].ok);  // the shorts' own prefill fit
  // Step 4 is the one that admitted the long prompt beside the three decoding shorts, and it failed.
  EXPECT_EQ(steps[3].sequences, 4);
  EXPECT_EQ(steps[3].prefill_sequences, 1);
  EXPECT_FALSE(steps[3].ok);
  for (size_t i = 4; i < steps.size(); ++i) EXPECT_TRUE(steps[i].ok) << "step " << steps[i].step;
}

TEST(RuntimeTest, LiveVersionFollowsSourceThenSetLive) {
  World w;
  w.source.SetLive("acme", 2);
  auto rt = w.MakeRuntime(Options());
  GenerateParams p = Params("live?", 8);
  auto first = rt->Generate("acme", std::nullopt, p);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->version, 2);
  EXPECT_EQ(first->sha256, w.versions.at({"acme", 2}).blob.sha256);
  EXPECT_EQ(first->text, w.Ref("acme", 2, p, kCapacity).text);
  // The runtime serves its own table now: a registry change without SetLive does not leak in.
  w.source.SetLive("acme", 1);
  EXPECT_EQ(rt->Generate("acme", std::nullopt, p)->version, 2);
  ASSERT_TRUE(rt->SetLive("acme", 1).ok());
  auto after = rt->Generate("acme", std::nullopt, p);
  EXPECT_EQ(after->version, 1);
  EXPECT_EQ(after->text, w.Ref("acme", 1, p, kCapacity).text);
  ASSERT_TRUE(rt->SetLive("acme", 0).ok());
  EXPECT_EQ(rt->Generate("acme", std::nullopt, p)->version, 0);
  EXPECT_EQ(rt->Generate("acme", std::nullopt, p)->sha256, "");
  // Pinning ignores the live pointer.
  EXPECT_EQ(rt->Generate("acme", 2, p)->version, 2);
  EXPECT_EQ(rt->Status().live.at("acme"), 0);
}

TEST(RuntimeTest, Errors) {
  World w;
  auto rt = w.MakeRuntime(Options());
  GenerateParams p = Params("x", 4);
  EXPECT_EQ(rt->Generate("nobody", std::nullopt, p).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(rt->Generate("acme", 9, p).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(rt->Generate("", std::nullopt, p).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rt->Generate("acme", -1, p).status().code(), absl::StatusCode::kInvalidArgument);
  GenerateParams bad = p;
  bad.max_tokens = 0;
  auto s = rt->Generate("acme", 1, bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("max_tokens"), std::string::npos);
  bad = p;
  bad.top_p = 0;
  s = rt->Generate("acme", 1, bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("top_p"), std::string::npos);
  // BOS + 96 bytes = 97 tokens > capacity 96; BOS + 95 fits (and then stops at the full context).
  bad = p;
  bad.prompt = std::string(kCapacity, 'a');
  s = rt->Generate("acme", 1, bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("prompt"), std::string::npos);
  bad.prompt.pop_back();
  auto full = rt->Generate("acme", 1, bad);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->completion_tokens, 1);
  EXPECT_EQ(full->finish_reason, FinishReason::kLength);
  // SetLive to a missing version fails and changes nothing.
  ASSERT_TRUE(rt->SetLive("acme", 2).ok());
  EXPECT_EQ(rt->SetLive("acme", 7).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(rt->Generate("acme", std::nullopt, p)->version, 2);
  // Bad options name the field.
  RuntimeOptions o = Options();
  o.kv_capacity = 100000;
  auto bad_rt = Runtime::Create(w.model.get(), &w.tokenizer, &w.source, o);
  ASSERT_FALSE(bad_rt.ok());
  EXPECT_NE(bad_rt.status().message().find("kv_capacity"), std::string::npos);
}

// Loads are background work: a loader thread runs at nice +10 over the process (runtime.cc), so on a
// saturated CPU it yields to the scheduler's steps.
TEST(RuntimeTest, LoaderThreadsRunAtALowerPriority) {
  World w;
  errno = 0;
  const int process_nice = getpriority(PRIO_PROCESS, 0);
  ASSERT_EQ(errno, 0);
  std::atomic<int> loader_nice{-100};
  w.source.before_load = [&] { loader_nice = getpriority(PRIO_PROCESS, 0); };  // on the loader thread
  auto rt = w.MakeRuntime(Options());
  ASSERT_TRUE(rt->Generate("acme", 1, Params("nice", 2)).ok());
  EXPECT_EQ(w.source.loads(), 1);
  EXPECT_EQ(loader_nice.load(), std::min(process_nice + 10, 19));
  EXPECT_EQ(getpriority(PRIO_PROCESS, 0), process_nice);  // the caller's own priority is untouched
}

TEST(RuntimeTest, LruEvictionByBytesAndReloadOnDemand) {
  World w;
  const int64_t acme1 = w.versions.at({"acme", 1}).overlay->bytes();
  ASSERT_EQ(acme1, w.versions.at({"acme", 2}).overlay->bytes());
  ASSERT_EQ(acme1, w.versions.at({"beta", 1}).overlay->bytes());
  RuntimeOptions o = Options();
  o.overlay_cache_bytes = acme1 * 2 + acme1 / 2;  // room for two versions
  auto rt = w.MakeRuntime(o);
  GenerateParams p = Params("lru", 3);
  auto resident = [&] {
    std::vector<std::pair<std::string, int64_t>> out;
    for (const ResidentOverlay& r : rt->Status().resident) out.push_back({r.tenant, r.version});
    return out;
  };
  using V = std::vector<std::pair<std::string, int64_t>>;
  ASSERT_TRUE(rt->Generate("acme", 1, p).ok());
  ASSERT_TRUE(rt->Generate("acme", 2, p).ok());
  EXPECT_EQ(resident(), (V{{"acme", 2}, {"acme", 1}}));
  EXPECT_EQ(w.source.loads(), 2);
  ASSERT_TRUE(rt->Generate("acme", 1, p).ok());  // hit: acme/1 becomes most recent
  EXPECT_EQ(w.source.loads(), 2);
  ASSERT_TRUE(rt->Generate("beta", 1, p).ok());  // evicts the least recently used: acme/2
  EXPECT_EQ(resident(), (V{{"beta", 1}, {"acme", 1}}));
  RuntimeStatus s = rt->Status();
  // Nobody holds acme/2 once its demotion to the host tier has copied it. That copy runs on the thread
  // that loaded beta/1, after it handed beta/1 to the request (OverlayCache::Acquire), so it may still be
  // running when Generate returns (seen once under a loaded ctest -j2): wait for it, bounded.
  for (int i = 0; i < 500 && s.held_bytes != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    s = rt->Status();
  }
  EXPECT_EQ(s.resident_bytes, 2 * acme1);
  EXPECT_LE(s.resident_bytes, s.resident_bytes_limit);
  EXPECT_EQ(s.held_bytes, 0);  // nobody holds acme/2: freed
  EXPECT_EQ(s.resident[0].sha256, w.versions.at({"beta", 1}).blob.sha256);
  // Reload on demand, with the same output as before.
  auto again = rt->Generate("acme", 2, p);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(w.source.loads(), 4);
  EXPECT_EQ(again->text, w.Ref("acme", 2, p, kCapacity).text);
  // Live versions are evicted after non-live ones: make beta/1 live, then load gamma/1: acme/1 (older
  // than acme/2 and not live) goes, beta/1 stays although it is the least recently used.
  EXPECT_EQ(resident(), (V{{"acme", 2}, {"beta", 1}}));
  ASSERT_TRUE(rt->SetLive("beta", 1).ok());
  ASSERT_TRUE(rt->Generate("acme", 2, p).ok());
  ASSERT_TRUE(rt->Generate("gamma", 1, p).ok());
  EXPECT_EQ(resident(), (V{{"gamma", 1}, {"beta", 1}}));
  EXPECT_TRUE(rt->Status().resident[1].live);
}

TEST(RuntimeTest, PinnedOverlayHeldByRequestSurvivesEviction) {
  World w;
  const int64_t bytes = w.versions.at({"acme", 1}).overlay->bytes();
  RuntimeOptions o = Options();
  o.overlay_cache_bytes = bytes;  // one version at a time
  o.start_paused = true;
  auto rt = w.MakeRuntime(o);
  GenerateParams p = Params("held while evicted", 20);
  absl::StatusOr<GenerateResult> held = absl::UnknownError("not run");
  std::thread t([&] { held = rt->Generate("acme", 1, p); });
  WaitFor([&] { return rt->Status().pending_requests == 1; });  // acquired acme/1, queued
  // Score (outside the batch) loads beta/1: acme/1 is evicted but the queued request still holds it.
  ASSERT_TRUE(rt->Score("beta", 1, "evict", false).ok());
  RuntimeStatus s = rt->Status();
  ASSERT_EQ(s.resident.size(), 1u);
  EXPECT_EQ(s.resident[0].tenant, "beta");
  EXPECT_EQ(s.held_bytes, bytes);
  // Asking for acme/1 again re-admits the held copy instead of loading a second one.
  const int loads = w.source.loads();
  ASSERT_TRUE(rt->Score("acme", 1, "readmit", false).ok());
  EXPECT_EQ(w.source.loads(), loads);
  ASSERT_TRUE(rt->Score("beta", 1, "evict again", false).ok());
  EXPECT_EQ(rt->Status().held_bytes, bytes);
  rt->Resume();
  t.join();
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(held->version, 1);
  EXPECT_EQ(held->text, w.Ref("acme", 1, p, kCapacity).text);
  // The last holder drops it. Waited for, not read once: a fresh clone's ctest -j2 once read it still held
  // just after Generate returned (some holder lets go after the caller is woken; which one is not known).
  WaitFor([&] { return rt->Status().held_bytes == 0; });
}

TEST(RuntimeTest, QueueFullIsUnavailable) {
  World w;
  RuntimeOptions o = Options();
  o.max_queue = 2;
  o.start_paused = true;
  auto rt = w.MakeRuntime(o);
  GenerateParams p = Params("queue", 3);
  std::vector<absl::StatusOr<GenerateResult>> r(2, absl::UnknownError("not run"));
  std::thread a([&] { r[0] = rt->Generate("acme", 1, p); });
  std::thread b([&] { r[1] = rt->Generate("delta", std::nullopt, p); });
  WaitFor([&] { return rt->Status().pending_requests == 2; });
  auto over = rt->Generate("beta", 1, p);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kUnavailable);
  rt->Resume();
  a.join();
  b.join();
  EXPECT_TRUE(r[0].ok() && r[1].ok());
  EXPECT_TRUE(rt->Generate("beta", 1, p).ok());
}

// The scheduler is held after each request's first step (its prompt, which samples the first token), so
// the callback's refusal is seen before a second step however the threads are scheduled.
TEST(RuntimeTest, CancellationFromCallbackFreesTheSlot) {
  World w;
  RuntimeOptions o = Options(1);  // one slot: a leaked KV cache would stall every later request
  o.kv_capacity = w.config.max_position_embeddings;
  std::atomic<Runtime*> self{nullptr};
  std::atomic<bool> hold{true};
  std::atomic<int> holds{0};  // counted after Pause(): a Resume() after seeing it cannot precede it
  o.on_step = [&](const StepInfo& info) {
    if (hold.load() && info.prefill_sequences > 0) {
      self.load()->Pause();
      holds.fetch_add(1);
    }
  };
  auto rt = w.MakeRuntime(o);
  self.store(rt.get());
  GenerateParams p = Params("cancel me", 240);
  // The first token is one ASCII byte, so the first step hands the caller a delta (a partial UTF-8
  // character would be held back and the held scheduler would never produce one).
  const RefOutput ref = w.Ref("acme", 1, p, o.kv_capacity);
  ASSERT_FALSE(ref.text.empty());
  ASSERT_LT(static_cast<unsigned char>(ref.text[0]), 0x80);
  for (int i = 0; i < 3; ++i) {
    int calls = 0;
    auto r = rt->Generate("acme", 1, p, [&](std::string_view) {
      ++calls;
      return false;
    });
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(calls, 1);
    WaitFor([&] { return holds.load() == i + 1; });
    rt->Resume();  // the request is marked cancelled: the scheduler drops it before another step
  }
  WaitFor([&] { return rt->Status().active_requests == 0 && rt->Status().pending_requests == 0; });
  // The cancelled requests left the batch after their first token instead of running to max_tokens.
  EXPECT_EQ(rt->Status().tokens_generated, 3);
  hold.store(false);
  p.max_tokens = 12;
  auto ok = rt->Generate("acme", 1, p);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->text, w.Ref("acme", 1, p, kCapacity).text);
}

TEST(RuntimeTest, StopStringsAndStreaming) {
  World w;
  auto rt = w.MakeRuntime(Options());
  GenerateParams p = Params("stop strings", 30);
  RefOutput full = w.Ref("gamma", 1, p, kCapacity);
  ASSERT_GE(full.text.size(), 12u);
  const std::string stop = full.text.substr(8, 3);
  const std::string want = full.text.substr(0, full.text.find(stop));
  p.stop = {"never-appears", stop};
  std::string streamed;
  int deltas = 0;
  auto r = rt->Generate("gamma", 1, p, [&](std::string_view d) {
    streamed += d;
    ++deltas;
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->finish_reason, FinishReason::kStop);
  EXPECT_EQ(r->text, want);
  EXPECT_EQ(streamed, want);  // the stop string (or a prefix of it) was never emitted
  EXPECT_GE(deltas, 1);
  EXPECT_EQ(r->text, w.Ref("gamma", 1, p, kCapacity).text);
  // Without a stop: streamed == text.
  p.stop.clear();
  streamed.clear();
  auto plain = rt->Generate("gamma", 1, p, [&](std::string_view d) {
    streamed += d;
    return true;
  });
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(streamed, plain->text);
  EXPECT_EQ(plain->text, full.text);
}

TEST(RuntimeTest, EosEndsGeneration) {
  World w;
  auto rt = w.MakeRuntime(Options());
  // Near-uniform random logits: sampling hits EOS within a few dozen tokens for some seed.
  bool found = false;
  for (uint64_t seed = 0; seed < 60 && !found; ++seed) {
    GenerateParams p = Params("eos", 40, 1.0f, seed);
    p.top_k = 0;
    p.top_p = 1;
    RefOutput ref = w.Ref("beta", 1, p, kCapacity);
    if (ref.finish != FinishReason::kEos) continue;
    found = true;
    auto r = rt->Generate("beta", 1, p);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->finish_reason, FinishReason::kEos);
    EXPECT_EQ(r->tokens, ref.tokens);
    EXPECT_EQ(r->text, ref.text);
    EXPECT_LT(r->completion_tokens, 40);
  }
  EXPECT_TRUE(found);
}

TEST(RuntimeTest, ScoreMatchesModelScoreTokens) {
  World w;
  auto rt = w.MakeRuntime(Options());
  const std::string text = "score this text, please";
  ByteTokenizer tok;
  std::vector<int32_t> ids = tok.Encode(text);
  ids.insert(ids.begin(), tok.bos_id());
  for (int64_t v : {0, 1, 2}) {
    SequenceInput in{ids, w.Overlay("acme", v), nullptr};
    std::vector<RoutingStats> routing;
    auto lp = w.model->ScoreTokens(absl::MakeConstSpan(&in, 1), &routing);
    ASSERT_TRUE(lp.ok());
    double total = 0;
    for (float x : (*lp)[0]) total += x;
    auto got = rt->Score("acme", v, text, true);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->version, v);
    EXPECT_EQ(got->num_tokens, static_cast<int64_t>(text.size()));
    EXPECT_DOUBLE_EQ(got->total_logprob, total);
    EXPECT_NEAR(got->perplexity, std::exp(-total / text.size()), 1e-9 * got->perplexity);
    ASSERT_EQ(got->routing.size(), static_cast<size_t>(w.config.num_layers));
    int64_t routed = 0;
    for (int64_t n : got->routing[0].expert_tokens) routed += n;
    EXPECT_EQ(routed, static_cast<int64_t>(ids.size()) * w.config.top_k);
    EXPECT_EQ(got->routing[1].expert_tokens, SummarizeRouting(routing[0])[1].expert_tokens);
    EXPECT_EQ(got->routing[0].overlay_experts.empty(), v == 0);
  }
  EXPECT_EQ(rt->Score("acme", 1, "", false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rt->Score("acme", 5, "x", false).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(rt->Score("acme", 1, std::string(200, 'z'), false).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RuntimeTest, ShutdownFailsQueuedRequests) {
  World w;
  RuntimeOptions o = Options();
  o.start_paused = true;
  auto rt = w.MakeRuntime(o);
  absl::StatusOr<GenerateResult> r = absl::UnknownError("not run");
  std::thread t([&] { r = rt->Generate("acme", 1, Params("bye", 5)); });
  WaitFor([&] { return rt->Status().pending_requests == 1; });
  rt->Shutdown();
  t.join();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(rt->Generate("acme", 1, Params("late", 5)).status().code(), absl::StatusCode::kUnavailable);
  rt->Shutdown();  // idempotent
}

TEST(RuntimeTest, ForgetTenantDropsItsState) {
  World w;
  auto rt = w.MakeRuntime(Options());
  ASSERT_TRUE(rt->SetLive("acme", 1).ok());
  ASSERT_EQ(rt->Status().resident.size(), 1u);
  rt->ForgetTenant("acme");
  EXPECT_TRUE(rt->Status().resident.empty());
  EXPECT_EQ(rt->Status().live.count("acme"), 0u);
  // Re-created with different content under the same version number: the new content serves.
  w.Add("acme", 1, testing::SlotsFor(w.config, {5, 6}), 99);
  GenerateParams p = Params("recreated", 6);
  auto r = rt->Generate("acme", 1, p);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->sha256, w.versions.at({"acme", 1}).blob.sha256);
  EXPECT_EQ(r->text, w.Ref("acme", 1, p, kCapacity).text);
}

TEST(OverlayCacheTest, ConcurrentMissesShareOneLoad) {
  World w;
  std::mutex device_mu;
  OverlayCache cache(w.config, w.be.get(), &w.source, int64_t{1} << 30, &device_mu);
  std::atomic<int> entered{0};
  w.source.before_load = [&] {
    entered.fetch_add(1);
    std::this_thread::sleep_for(50ms);  // keep the load in flight while the others arrive
  };
  std::vector<std::shared_ptr<const ExpertOverlay>> got(6);
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] { got[i] = cache.Acquire("acme", 1).value(); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(w.source.loads(), 1);
  for (int i = 1; i < 6; ++i) EXPECT_EQ(got[i].get(), got[0].get());
  EXPECT_EQ(got[0]->digest(), w.versions.at({"acme", 1}).blob.sha256);
  OverlayCacheStats s = cache.Stats();
  EXPECT_EQ(s.loads, 1);
  EXPECT_EQ(s.resident_bytes, got[0]->bytes());
}

TEST(OverlayCacheTest, OversizedBadAndMissingVersions) {
  World w;
  std::mutex device_mu;
  OverlayCache cache(w.config, w.be.get(), &w.source, /*capacity_bytes=*/1000, &device_mu);
  // Larger than the whole budget: served, then not kept resident (held by the caller only).
  auto big = cache.Acquire("acme", 1);
  ASSERT_TRUE(big.ok());
  OverlayCacheStats s = cache.Stats();
  EXPECT_TRUE(s.resident.empty());
  EXPECT_EQ(s.resident_bytes, 0);
  EXPECT_EQ(s.held_bytes, (*big)->bytes());
  big->reset();
  EXPECT_EQ(cache.Stats().held_bytes, 0);
  // A blob that is not a safetensors file: the reader's DATA_LOSS; failures are not cached.
  w.source.Put("acme", 3, VersionBlob{"definitely not safetensors", "abc"});
  const int loads = w.source.loads();
  EXPECT_EQ(cache.Acquire("acme", 3).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(cache.Acquire("acme", 3).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(w.source.loads(), loads + 2);
  // An overlay of another model's shape: INVALID_ARGUMENT naming the tensor.
  ModelConfig other = w.config;
  other.expert_dim = 16;
  w.source.Put("acme", 5, testing::MakeVersion(other, w.be.get(), {{0, 0}}, 5).blob);
  auto wrong = cache.Acquire("acme", 5);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("experts.0"), std::string::npos) << wrong.status();
  EXPECT_EQ(cache.Acquire("acme", 4).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache.Acquire("acme", 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ExpertTableTest, SnapshotsAreImmutableAndSetIfAbsentKeepsTheWinner) {
  ExpertTable table;
  auto before = table.Current();
  EXPECT_TRUE(before->empty());
  table.Set("acme", {2, "sha2"});
  EXPECT_TRUE(before->empty());  // a reader's snapshot never changes
  EXPECT_EQ(table.Current()->at("acme"), (LiveEntry{2, "sha2"}));
  EXPECT_EQ(table.SetIfAbsent("acme", {1, "sha1"}), (LiveEntry{2, "sha2"}));
  EXPECT_EQ(table.SetIfAbsent("beta", {1, "b1"}), (LiveEntry{1, "b1"}));
  table.Erase("acme");
  EXPECT_EQ(table.Current()->count("acme"), 0u);
  EXPECT_EQ(table.generation(), 4u);
}

TEST(RuntimeTest, SharedDeviceMutexAndStepHook) {
  World w;
  std::mutex device_mu;
  std::vector<StepInfo> steps;
  RuntimeOptions o = Options();
  o.device_mutex = &device_mu;
  o.on_step = [&](const StepInfo& info) { steps.push_back(info); };
  auto rt = w.MakeRuntime(o);
  GenerateParams p = Params("hook", 5);
  auto r = rt->Generate("beta", 1, p);
  ASSERT_TRUE(r.ok());
  rt->Shutdown();  // joins the scheduler: `steps` is complete
  const size_t n = static_cast<size_t>(r->completion_tokens) + (r->finish_reason == FinishReason::kEos ? 1 : 0);
  ASSERT_EQ(steps.size(), n);
  EXPECT_EQ(steps[0].prefill_sequences, 1);
  EXPECT_EQ(steps[0].tokens, r->prompt_tokens);
  for (size_t i = 1; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i].step, static_cast<int64_t>(i) + 1);
    EXPECT_EQ(steps[i].tokens, 1);
    EXPECT_TRUE(steps[i].ok);
  }
  // While someone else holds the device, the runtime cannot step (nor Score).
  auto rt2 = w.MakeRuntime(o);
  std::unique_lock<std::mutex> hold(device_mu);
  absl::StatusOr<GenerateResult> blocked = absl::UnknownError("not run");
  std::thread t([&] { blocked = rt2->Generate("beta", 1, p); });
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(rt2->Status().steps, 0);
  hold.unlock();
  t.join();
  ASSERT_TRUE(blocked.ok());
  EXPECT_EQ(blocked->text, r->text);
}

}  // namespace
}  // namespace tessera::runtime
