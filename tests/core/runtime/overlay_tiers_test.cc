// Overlay tiers (core/runtime/overlay_cache.h) and loads off the serving path (runtime.h): tier moves
// device -> host -> disk and back, LRU order per tier, size-aware admission, budgets never exceeded, a
// cold tenant's blocked load not stalling a hot tenant's decoding, and outputs equal to the
// single-request reference whichever tier an overlay came from, also while SetLive swaps versions.
//
// Determinism: nothing here depends on thread scheduling or speed. The cache's moves happen inside
// Acquire on the calling thread (demotion copies included), so after it returns the tiers are in a
// known state; the runtime tests hold a load on a latch the test releases, and wait for states
// (WaitFor with a generous deadline), never for time.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/core/runtime/runtime_test_util.h"

namespace tessera::runtime {
namespace {

using namespace std::chrono_literals;
using testing::MemorySource;
using testing::RefOutput;
using testing::World;
using testing::WaitFor;

constexpr int64_t kCapacity = 128;


GenerateParams Params(const std::string& prompt, int max_tokens) {
  GenerateParams p;
  p.prompt = prompt;
  p.max_tokens = max_tokens;
  return p;
}

// World plus tenants "t0".."t5", each with one version of 4 slots (equal bytes), different weights.
struct TierWorld : World {
  TierWorld() {
    for (int i = 0; i < 6; ++i) {
      Add(absl::StrCat("t", i), 1, testing::SlotsFor(config, {i % 8, (i + 3) % 8}), 100 + i);
    }
    slot_bytes = versions.at({"t0", 1}).overlay->bytes() / 4;
  }
  int64_t small() const { return 4 * slot_bytes; }
  int64_t slot_bytes = 0;
};

std::vector<std::string> Tenants(const std::vector<ResidentOverlay>& tier) {
  std::vector<std::string> out;
  for (const ResidentOverlay& r : tier) out.push_back(r.tenant);
  return out;
}

void ExpectWithinBudgets(const OverlayCacheStats& s) {
  EXPECT_LE(s.resident_bytes, s.capacity_bytes);
  EXPECT_LE(s.host_bytes, s.host_capacity_bytes);
  int64_t device = 0, host = 0;
  for (const auto& r : s.resident) device += r.bytes;
  for (const auto& r : s.host) host += r.bytes;
  EXPECT_EQ(device, s.resident_bytes);
  EXPECT_EQ(host, s.host_bytes);
}

// Every tensor of `got` is bit for bit the reference's.
void ExpectSameWeights(Backend* be, const ExpertOverlay& got, const ExpertOverlay& want) {
  ASSERT_EQ(got.SlotIds(), want.SlotIds());
  EXPECT_EQ(got.digest(), want.digest());
  for (const auto& [slot, w] : want.slots()) {
    const ExpertWeights* g = got.Find(slot);
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(be->ToHostF32(g->gate).value(), be->ToHostF32(w.gate).value()) << slot.ToString();
    EXPECT_EQ(be->ToHostF32(g->up).value(), be->ToHostF32(w.up).value()) << slot.ToString();
    EXPECT_EQ(be->ToHostF32(g->down).value(), be->ToHostF32(w.down).value()) << slot.ToString();
  }
}

TEST(OverlayTiersTest, DemotionPromotionAndLruOrderPerTier) {
  TierWorld w;
  std::mutex device_mu;
  // Two overlays on the device, two on the host.
  OverlayCache cache(w.config, w.be.get(), &w.source, 2 * w.small(), &device_mu, DType::kF32, nullptr,
                     2 * w.small());
  auto acquire = [&](const std::string& t) {
    auto o = cache.Acquire(t, 1);
    ASSERT_TRUE(o.ok()) << o.status();
    ExpectSameWeights(w.be.get(), **o, *w.versions.at({t, 1}).overlay);
    ExpectWithinBudgets(cache.Stats());
  };
  acquire("t0");
  acquire("t1");
  OverlayCacheStats s = cache.Stats();
  EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t1", "t0"}));
  EXPECT_TRUE(s.host.empty());
  acquire("t2");  // t0 (least recently used) is demoted to the host
  s = cache.Stats();
  EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t2", "t1"}));
  EXPECT_EQ(Tenants(s.host), (std::vector<std::string>{"t0"}));
  EXPECT_EQ(s.demotions, 1);
  acquire("t3");
  acquire("t4");  // t2 demoted; the host is full, so its LRU (t0) drops to disk
  s = cache.Stats();
  EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t4", "t3"}));
  EXPECT_EQ(Tenants(s.host), (std::vector<std::string>{"t2", "t1"}));
  EXPECT_EQ(s.demotions, 3);
  EXPECT_EQ(s.host_evictions, 1);
  EXPECT_EQ(s.loads, 5);
  EXPECT_EQ(w.source.loads(), 5);
  // A device hit moves t3 to the front: t4 is now the device's LRU.
  acquire("t3");
  // t1 from the host: a promotion (no disk read; t1 leaves the host, tiers are exclusive), and t4
  // (the device's LRU) is demoted into the place t1 left.
  acquire("t1");
  s = cache.Stats();
  EXPECT_EQ(w.source.loads(), 5);
  EXPECT_EQ(s.promotions, 1);
  EXPECT_EQ(s.host_hits, 1);
  EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t1", "t3"}));
  EXPECT_EQ(Tenants(s.host), (std::vector<std::string>{"t4", "t2"}));
  EXPECT_EQ(s.host_evictions, 1);
  // t0 was dropped from the host: back from disk; t3 demoted, t2 (the host's LRU) dropped.
  acquire("t0");
  s = cache.Stats();
  EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t0", "t1"}));
  EXPECT_EQ(Tenants(s.host), (std::vector<std::string>{"t3", "t4"}));
  EXPECT_EQ(s.host_evictions, 2);
  EXPECT_EQ(w.source.loads(), 6);
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.misses, 7);
  EXPECT_EQ(s.host_hits + s.host_misses, s.misses);
  EXPECT_EQ(s.loads_in_flight, 0);
  EXPECT_EQ(s.held_bytes, 0);
}

TEST(OverlayTiersTest, LiveVersionsLeaveLast) {
  TierWorld w;
  std::mutex device_mu;
  OverlayCache cache(w.config, w.be.get(), &w.source, 2 * w.small(), &device_mu, DType::kF32, nullptr,
                     2 * w.small());
  cache.MarkLive("t0", 1);
  ASSERT_TRUE(cache.Acquire("t0", 1).ok());
  ASSERT_TRUE(cache.Acquire("t1", 1).ok());
  ASSERT_TRUE(cache.Acquire("t2", 1).ok());  // t0 is older but live: t1 leaves the device
  OverlayCacheStats s = cache.Stats();
  EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t2", "t0"}));
  EXPECT_EQ(Tenants(s.host), (std::vector<std::string>{"t1"}));
}

// Marking a version live (or no longer live) after it is in a tier changes its place in that tier's
// eviction order at once: a non-live version leaves before a less recently used live one.
TEST(OverlayTiersTest, MarkLiveReordersVersionsAlreadyInATier) {
  TierWorld w;
  std::mutex device_mu;
  OverlayCache cache(w.config, w.be.get(), &w.source, 2 * w.small(), &device_mu, DType::kF32, nullptr,
                     2 * w.small());
  ASSERT_TRUE(cache.Acquire("t2", 1).ok());
  ASSERT_TRUE(cache.Acquire("t0", 1).ok());  // device: t0, t2 (t2 least recently used)
  cache.MarkLive("t2", 1);
  ASSERT_TRUE(cache.Acquire("t3", 1).ok());  // t0 leaves although t2 is older: t2 is live
  OverlayCacheStats s = cache.Stats();
  EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t3", "t2"}));
  EXPECT_FALSE(s.resident.front().live);
  EXPECT_TRUE(s.resident.back().live);
  EXPECT_EQ(Tenants(s.host), (std::vector<std::string>{"t0"}));
  ASSERT_TRUE(cache.Acquire("t1", 1).ok());  // t3 leaves the device; host: t3, t0
  cache.MarkLive("t0", 1);                   // on the host tier now
  cache.MarkLive("t2", 0);
  EXPECT_TRUE(cache.Stats().host.back().live);
  ASSERT_TRUE(cache.Acquire("t4", 1).ok());  // device: t2 (no longer live) leaves, to the host, where
                                             // t3 leaves rather than the older, live t0
  s = cache.Stats();
  EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t4", "t1"}));
  EXPECT_EQ(Tenants(s.host), (std::vector<std::string>{"t2", "t0"}));
}

TEST(OverlayTiersTest, SizeAwareAdmission) {
  TierWorld w;
  w.Add("big", 1, testing::SlotsFor(w.config, {0, 1, 2, 3, 4}), 77);  // 10 slots
  const int64_t big = w.versions.at({"big", 1}).overlay->bytes();
  ASSERT_EQ(big, 10 * w.slot_bytes);
  std::mutex device_mu;
  {
    // Device: room for two small ones (8 slots), not for big; host: 12 slots.
    OverlayCache cache(w.config, w.be.get(), &w.source, 2 * w.small(), &device_mu, DType::kF32, nullptr,
                       12 * w.slot_bytes);
    ASSERT_TRUE(cache.Acquire("t0", 1).ok());
    ASSERT_TRUE(cache.Acquire("t1", 1).ok());
    {
      auto b = cache.Acquire("big", 1);
      ASSERT_TRUE(b.ok());
      ExpectSameWeights(w.be.get(), **b, *w.versions.at({"big", 1}).overlay);
      OverlayCacheStats s = cache.Stats();
      // Not admitted to the device (it would not fit even alone): the small ones stay, big is served
      // (held by the caller) and goes on to the host tier.
      EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t1", "t0"}));
      EXPECT_EQ(Tenants(s.host), (std::vector<std::string>{"big"}));
      EXPECT_EQ(s.held_bytes, big);
      EXPECT_EQ(s.not_admitted, 1);
      EXPECT_EQ(s.evictions, 0);
      ExpectWithinBudgets(s);
    }
    EXPECT_EQ(cache.Stats().held_bytes, 0);
    // Next use: promoted from the host (no disk read), served, and back on the host.
    const int loads = w.source.loads();
    ASSERT_TRUE(cache.Acquire("big", 1).ok());
    OverlayCacheStats s = cache.Stats();
    EXPECT_EQ(w.source.loads(), loads);
    EXPECT_EQ(s.promotions, 1);
    EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t1", "t0"}));
    EXPECT_EQ(Tenants(s.host), (std::vector<std::string>{"big"}));
    ExpectWithinBudgets(s);
  }
  {
    // Host of 8 slots: big fits no tier; every use reads the disk, nothing else is displaced.
    OverlayCache cache(w.config, w.be.get(), &w.source, 2 * w.small(), &device_mu, DType::kF32, nullptr,
                       2 * w.small());
    ASSERT_TRUE(cache.Acquire("t0", 1).ok());
    ASSERT_TRUE(cache.Acquire("t1", 1).ok());
    ASSERT_TRUE(cache.Acquire("t2", 1).ok());  // t0 to the host
    const int loads = w.source.loads();
    ASSERT_TRUE(cache.Acquire("big", 1).ok());
    ASSERT_TRUE(cache.Acquire("big", 1).ok());
    OverlayCacheStats s = cache.Stats();
    EXPECT_EQ(w.source.loads(), loads + 2);
    EXPECT_EQ(s.not_admitted, 4);  // device and host, twice
    EXPECT_EQ(Tenants(s.resident), (std::vector<std::string>{"t2", "t1"}));
    EXPECT_EQ(Tenants(s.host), (std::vector<std::string>{"t0"}));
    ExpectWithinBudgets(s);
  }
}

TEST(OverlayTiersTest, ForgetTenantClearsBothTiers) {
  TierWorld w;
  std::mutex device_mu;
  OverlayCache cache(w.config, w.be.get(), &w.source, w.small(), &device_mu, DType::kF32, nullptr,
                     2 * w.small());
  ASSERT_TRUE(cache.Acquire("t0", 1).ok());
  ASSERT_TRUE(cache.Acquire("t1", 1).ok());  // t0 on the host
  cache.ForgetTenant("t0");
  cache.ForgetTenant("t1");
  OverlayCacheStats s = cache.Stats();
  EXPECT_TRUE(s.resident.empty());
  EXPECT_TRUE(s.host.empty());
  EXPECT_EQ(s.resident_bytes + s.host_bytes, 0);
}

// A VersionSource whose loads of one tenant block until the test releases them.
class LatchSource : public VersionSource {
 public:
  LatchSource(MemorySource* inner, std::string blocked) : inner_(inner), blocked_(std::move(blocked)) {}
  absl::StatusOr<int64_t> LiveVersion(const std::string& tenant) override { return inner_->LiveVersion(tenant); }
  absl::StatusOr<VersionBlob> LoadVersion(const std::string& tenant, int64_t version) override {
    if (tenant == blocked_) {
      std::unique_lock<std::mutex> lock(mu_);
      ++entered_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return released_; });
    }
    return inner_->LoadVersion(tenant, version);
  }
  void WaitEntered(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    ASSERT_TRUE(cv_.wait_for(lock, 60s, [&] { return entered_ >= n; }));
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  MemorySource* inner_;
  const std::string blocked_;
  std::mutex mu_;
  std::condition_variable cv_;
  int entered_ = 0;
  bool released_ = false;
};

// Releases the latch however the test ends (the runtime's shutdown waits for its loaders).
struct ReleaseOnExit {
  LatchSource* s;
  ~ReleaseOnExit() { s->Release(); }
};

RuntimeOptions TierOptions(const TierWorld& w, int64_t device_overlays, int64_t host_overlays) {
  RuntimeOptions o;
  o.max_batch = 4;
  o.kv_capacity = kCapacity;
  o.overlay_cache_bytes = device_overlays * w.small();
  o.overlay_host_bytes = host_overlays * w.small();
  return o;
}

TEST(OverlayTiersRuntimeTest, BlockedColdLoadDoesNotStallOtherTenants) {
  TierWorld w;
  LatchSource source(&w.source, "t5");
  auto rt = Runtime::Create(w.model.get(), &w.tokenizer, &source, TierOptions(w, 2, 2)).value();
  ReleaseOnExit release{&source};
  ASSERT_TRUE(rt->SetLive("t0", 1).ok());  // hot: resident
  const GenerateParams cold_p = Params("cold tenant", 12);
  std::atomic<bool> cold_done{false};
  absl::StatusOr<GenerateResult> cold = absl::UnknownError("not run");
  std::thread t([&] {
    cold = rt->Generate("t5", 1, cold_p);
    cold_done.store(true);
  });
  source.WaitEntered(1);  // the cold load is in flight and held
  WaitFor([&] { return rt->Status().requests_waiting_for_overlay == 1; });
  // The hot tenant (and a base-model request, and a second cold tenant loading beside the held one)
  // decode to completion while the cold load is held.
  for (int i = 0; i < 3; ++i) {
    GenerateParams p = Params(absl::StrCat("hot request ", i), 10);
    auto hot = rt->Generate("t0", std::nullopt, p);
    ASSERT_TRUE(hot.ok()) << hot.status();
    EXPECT_EQ(hot->tokens, w.Ref("t0", 1, p, kCapacity).tokens);
  }
  auto base = rt->Generate("delta", std::nullopt, Params("base", 6));
  ASSERT_TRUE(base.ok()) << base.status();
  GenerateParams other_p = Params("another cold one", 6);
  auto other = rt->Generate("t1", 1, other_p);  // the second loader thread
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->tokens, w.Ref("t1", 1, other_p, kCapacity).tokens);
  EXPECT_FALSE(cold_done.load());
  RuntimeStatus s = rt->Status();
  EXPECT_EQ(s.requests_waiting_for_overlay, 1);
  EXPECT_EQ(s.overlay_loads_in_flight, 1);
  EXPECT_EQ(s.pending_requests, 0);
  source.Release();
  t.join();
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_EQ(cold->version, 1);
  EXPECT_EQ(cold->sha256, w.versions.at({"t5", 1}).blob.sha256);
  RefOutput ref = w.Ref("t5", 1, cold_p, kCapacity);
  EXPECT_EQ(cold->tokens, ref.tokens);
  EXPECT_EQ(cold->text, ref.text);
  s = rt->Status();
  EXPECT_EQ(s.requests_waiting_for_overlay, 0);
  EXPECT_EQ(s.overlay_loads_in_flight, 0);
}

TEST(OverlayTiersRuntimeTest, CancelWhileWaitingForTheLoad) {
  TierWorld w;
  LatchSource source(&w.source, "t5");
  auto rt = Runtime::Create(w.model.get(), &w.tokenizer, &source, TierOptions(w, 2, 2)).value();
  ReleaseOnExit release{&source};
  std::atomic<bool> cancel{false};
  absl::StatusOr<GenerateResult> cold = absl::UnknownError("not run");
  std::thread t([&] {
    GenerateParams p = Params("cancelled while loading", 8);
    p.cancelled = [&] { return cancel.load(); };
    cold = rt->Generate("t5", 1, p);
  });
  source.WaitEntered(1);
  WaitFor([&] { return rt->Status().requests_waiting_for_overlay == 1; });
  cancel.store(true);
  t.join();
  EXPECT_EQ(cold.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(rt->Status().requests_waiting_for_overlay, 0);
  source.Release();
  // The load completes into the device tier; the next request finds it there.
  WaitFor([&] { return rt->Status().overlay_loads_in_flight == 0; });
  GenerateParams p = Params("after", 6);
  auto again = rt->Generate("t5", 1, p);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->tokens, w.Ref("t5", 1, p, kCapacity).tokens);
}

TEST(OverlayTiersRuntimeTest, MissingVersionFailsThroughTheLoader) {
  TierWorld w;
  auto rt = Runtime::Create(w.model.get(), &w.tokenizer, &w.source, TierOptions(w, 2, 2)).value();
  auto r = rt->Generate("t0", 9, Params("no such version", 4));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(rt->Status().requests_waiting_for_overlay, 0);
}

TEST(OverlayTiersRuntimeTest, PromotedOverlayServesTheSameTokens) {
  TierWorld w;
  auto rt = Runtime::Create(w.model.get(), &w.tokenizer, &w.source, TierOptions(w, 1, 2)).value();
  const GenerateParams p = Params("same tokens from every tier", 12);
  const RefOutput ref0 = w.Ref("t0", 1, p, kCapacity);
  auto first = rt->Generate("t0", 1, p);  // disk
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(rt->Generate("t1", 1, p).ok());  // t0 demoted
  RuntimeStatus s = rt->Status();
  ASSERT_EQ(s.host_resident.size(), 1u);
  EXPECT_EQ(s.host_resident[0].tenant, "t0");
  const int loads = w.source.loads();
  auto promoted = rt->Generate("t0", 1, p);  // host -> device
  ASSERT_TRUE(promoted.ok());
  EXPECT_EQ(w.source.loads(), loads);
  s = rt->Status();
  EXPECT_EQ(s.overlay_promotions, 1);
  EXPECT_EQ(s.overlay_demotions, 2);
  EXPECT_EQ(first->tokens, ref0.tokens);
  EXPECT_EQ(promoted->tokens, ref0.tokens);
  EXPECT_EQ(promoted->text, ref0.text);
  EXPECT_EQ(promoted->sha256, w.versions.at({"t0", 1}).blob.sha256);
}

// Many tenants, a device tier of two overlays and a host tier of two, concurrent requests and SetLive
// swaps: every result is the reference output of the version it reports, and the budgets hold
// throughout (checked by a thread polling Status while the work runs).
TEST(OverlayTiersRuntimeTest, ConcurrentTenantsAndSwapsStayCorrectAndWithinBudgets) {
  TierWorld w;
  for (int i = 0; i < 3; ++i) {
    w.Add(absl::StrCat("t", i), 2, testing::SlotsFor(w.config, {(i + 5) % 8, (i + 6) % 8}), 200 + i);
  }
  for (int i = 0; i < 6; ++i) w.source.SetLive(absl::StrCat("t", i), 1);
  RuntimeOptions o = TierOptions(w, 2, 2);
  o.overlay_loader_threads = 2;
  auto rt = Runtime::Create(w.model.get(), &w.tokenizer, &w.source, o).value();
  std::atomic<bool> stop{false};
  std::atomic<int> violations{0};
  std::thread checker([&] {
    while (!stop.load()) {
      RuntimeStatus s = rt->Status();
      if (s.resident_bytes > s.resident_bytes_limit || s.overlay_host_bytes > s.overlay_host_bytes_limit) {
        violations.fetch_add(1);
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  std::thread swapper([&] {
    for (int round = 0; round < 6; ++round) {
      for (int i = 0; i < 3; ++i) {
        EXPECT_TRUE(rt->SetLive(absl::StrCat("t", i), 1 + (round + i) % 2).ok());
      }
    }
  });
  struct Got {
    std::string tenant;
    GenerateParams params;
    absl::StatusOr<GenerateResult> result = absl::UnknownError("not run");
  };
  std::vector<Got> got(18);
  std::vector<std::thread> clients;
  for (int c = 0; c < 3; ++c) {
    clients.emplace_back([&, c] {
      for (int k = c; k < static_cast<int>(got.size()); k += 3) {
        got[k].tenant = absl::StrCat("t", k % 6);
        got[k].params = Params(absl::StrCat("request ", k), 4 + k % 5);
        got[k].result = rt->Generate(got[k].tenant, std::nullopt, got[k].params);
      }
    });
  }
  for (auto& t : clients) t.join();
  swapper.join();
  stop.store(true);
  checker.join();
  EXPECT_EQ(violations.load(), 0);
  for (const Got& g : got) {
    ASSERT_TRUE(g.result.ok()) << g.tenant << ": " << g.result.status();
    const int64_t v = g.result->version;
    ASSERT_TRUE(w.versions.count({g.tenant, v})) << g.tenant << " v" << v;
    EXPECT_EQ(g.result->sha256, w.versions.at({g.tenant, v}).blob.sha256);
    EXPECT_EQ(g.result->tokens, w.Ref(g.tenant, v, g.params, kCapacity).tokens) << g.tenant << " v" << v;
  }
  RuntimeStatus s = rt->Status();
  EXPECT_LE(s.resident_bytes, s.resident_bytes_limit);
  EXPECT_LE(s.overlay_host_bytes, s.overlay_host_bytes_limit);
  EXPECT_EQ(s.requests_waiting_for_overlay, 0);
  EXPECT_EQ(s.overlay_loads_in_flight, 0);
  EXPECT_GT(s.overlay_demotions, 0);  // 9 versions through a device tier of 2: moves happened
}

}  // namespace
}  // namespace tessera::runtime
