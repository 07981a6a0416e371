// Hot swap under load: client threads generate for a tenant while its live version flips between two
// versions >= 20 times. No request fails; every request that starts after a SetLive returned is
// served by (reports, and produces exactly the text of) the version that SetLive made live; requests
// in flight finish on the version they started with.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/runtime/runtime.h"
#include "tests/core/runtime/runtime_test_util.h"

namespace tessera::runtime {
namespace {

using testing::World;
using testing::WaitFor;
using namespace std::chrono_literals;

constexpr int64_t kCapacity = 96;

GenerateParams Greedy(std::string prompt, int max_tokens) {
  GenerateParams p;
  p.prompt = std::move(prompt);
  p.max_tokens = max_tokens;
  return p;
}

RuntimeOptions Options() {
  RuntimeOptions o;
  o.max_batch = 8;
  o.kv_capacity = kCapacity;
  o.max_queue = 64;
  return o;
}


TEST(HotSwapTest, FlipsUnderLoadNeverFailAndServeTheNewVersion) {
  World w;
  RuntimeOptions ro = Options();
  ro.start_paused = true;  // resumed once several clients wait, so requests surely share a batch
  auto rt = w.MakeRuntime(ro);
  const std::vector<std::string> prompts = {"swap one", "second prompt", "x", "hot swap under load"};
  // Reference texts per (version, prompt); the two versions must be told apart by their text.
  std::map<std::pair<int64_t, size_t>, std::string> ref;
  for (int64_t v : {1, 2}) {
    for (size_t i = 0; i < prompts.size(); ++i) ref[{v, i}] = w.Ref("acme", v, Greedy(prompts[i], 6), kCapacity).text;
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string& a = ref[{1, i}];
    const std::string& b = ref[{2, i}];
    ASSERT_NE(a, b) << prompts[i];
  }
  const std::string beta_ref = w.Ref("beta", 1, Greedy("bystander", 6), kCapacity).text;

  constexpr int kFlips = 24;
  auto version_after = [](int flip) -> int64_t { return flip % 2 == 0 ? 1 : 2; };  // flip 0 = initial
  ASSERT_TRUE(rt->SetLive("acme", version_after(0)).ok());
  ASSERT_TRUE(rt->SetLive("beta", 1).ok());
  std::atomic<int> started{0}, returned{0};  // flips begun / flips whose SetLive returned
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, requests{0}, exact{0}, pinned{0};
  std::mutex msg_mu;
  std::vector<std::string> messages;
  auto fail = [&](std::string m) {
    failures.fetch_add(1);
    std::lock_guard<std::mutex> lock(msg_mu);
    if (messages.size() < 10) messages.push_back(std::move(m));
  };

  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      for (int n = 0; !stop.load() || n < 3; ++n) {
        const size_t pi = (c + n) % prompts.size();
        const int k = returned.load();
        auto r = rt->Generate("acme", std::nullopt, Greedy(prompts[pi], 6));
        const int s = started.load();
        requests.fetch_add(1);
        if (!r.ok()) {
          fail(r.status().ToString());
          continue;
        }
        // Started after flip k returned, finished before flip s+1 began: served by a version made
        // live by one of the flips k..s; exactly flip k's when no flip began meanwhile.
        bool allowed = false;
        for (int j = k; j <= s; ++j) allowed = allowed || r->version == version_after(j);
        if (!allowed) fail(absl::StrCat("version ", r->version, " after flip ", k, " (flips begun: ", s, ")"));
        if (s == k) {
          exact.fetch_add(1);
          if (r->version != version_after(k)) fail(absl::StrCat("stale version ", r->version, " after flip ", k));
        }
        if (r->version != 1 && r->version != 2) {
          fail(absl::StrCat("unexpected version ", r->version));
        } else if (r->text != ref[{r->version, pi}]) {
          fail(absl::StrCat("text of version ", r->version, " differs from its reference"));
        }
      }
    });
  }
  // A client pinning versions and one for another tenant: flips of acme change neither.
  clients.emplace_back([&] {
    for (int n = 0; !stop.load() || n < 3; ++n) {
      const int64_t v = 1 + n % 2;
      auto r = rt->Generate("acme", v, Greedy(prompts[0], 6));
      pinned.fetch_add(1);
      if (!r.ok() || r->version != v || r->text != ref[{v, 0}]) fail("pinned request not served by its pin");
    }
  });
  clients.emplace_back([&] {
    for (int n = 0; !stop.load() || n < 3; ++n) {
      auto r = rt->Generate("beta", std::nullopt, Greedy("bystander", 6));
      if (!r.ok() || r->version != 1 || r->text != beta_ref) fail("beta changed during acme's flips");
    }
  });

  WaitFor([&] { return rt->Status().pending_requests >= 2; });
  rt->Resume();
  for (int flip = 1; flip <= kFlips; ++flip) {
    // Before each flip, wait until at least two requests ran entirely between the previous flip's
    // return and this one: those must be served by exactly the previous flip's version.
    const int exact_before = exact.load();
    WaitFor([&] { return exact.load() >= exact_before + 2 || failures.load() > 0; });
    started.store(flip);
    absl::Status s = rt->SetLive("acme", version_after(flip));
    if (!s.ok()) fail(s.ToString());
    returned.store(flip);
  }
  const int exact_before = exact.load();
  WaitFor([&] { return exact.load() >= exact_before + 2 || failures.load() > 0; });
  stop.store(true);
  for (auto& t : clients) t.join();

  for (const std::string& m : messages) ADD_FAILURE() << m;
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(requests.load(), 8 * 3);
  EXPECT_GE(exact.load(), 2 * (kFlips + 1));
  EXPECT_GT(pinned.load(), 0);
  RuntimeStatus st = rt->Status();
  EXPECT_EQ(st.live.at("acme"), version_after(kFlips));
  EXPECT_GE(st.max_batch_seen, 2);
  // Flipping between resident versions never reloaded them.
  EXPECT_EQ(w.source.loads(), 3);
}

TEST(HotSwapTest, InFlightRequestFinishesOnItsVersion) {
  World w;
  RuntimeOptions o = Options();
  std::atomic<Runtime*> self{nullptr};
  // Stop the scheduler right after the long request's 5th step: it is then mid-generation. `held` is
  // set after Pause() (Status().steps counts the step before its tokens and the hook), so the test's
  // checks and its Resume() come after the hook.
  std::atomic<bool> held{false};
  o.on_step = [&](const StepInfo& info) {
    if (info.step == 5) {
      self.load()->Pause();
      held.store(true);
    }
  };
  o.start_paused = true;
  auto rt = w.MakeRuntime(o);
  self.store(rt.get());
  ASSERT_TRUE(rt->SetLive("acme", 1).ok());
  GenerateParams longp = Greedy("a long one", 60);
  GenerateParams shortp = Greedy("after the swap", 8);
  const auto long_ref = w.Ref("acme", 1, longp, kCapacity);
  ASSERT_GT(long_ref.tokens.size(), 5u);
  absl::StatusOr<GenerateResult> old_run = absl::UnknownError("not run");
  absl::StatusOr<GenerateResult> new_run = absl::UnknownError("not run");
  std::thread t([&] { old_run = rt->Generate("acme", std::nullopt, longp); });
  std::thread u;
  WaitFor([&] { return rt->Status().pending_requests == 1; });
  rt->Resume();
  WaitFor([&] { return held.load(); });
  EXPECT_EQ(rt->Status().steps, 5);
  EXPECT_EQ(rt->Status().active_requests, 1);
  EXPECT_EQ(rt->Status().tokens_generated, 5);
  // SetLive loads version 2 (not resident yet) off the serving path and returns once published.
  const int loads = w.source.loads();
  EXPECT_TRUE(rt->SetLive("acme", 2).ok());
  EXPECT_EQ(w.source.loads(), loads + 1);
  u = std::thread([&] { new_run = rt->Generate("acme", std::nullopt, shortp); });
  WaitFor([&] { return rt->Status().pending_requests == 1; });
  EXPECT_EQ(w.source.loads(), loads + 1);  // the new request found version 2 resident
  rt->Resume();
  t.join();
  u.join();
  ASSERT_TRUE(old_run.ok() && new_run.ok());
  EXPECT_EQ(old_run->version, 1);
  EXPECT_EQ(old_run->text, long_ref.text);
  EXPECT_EQ(new_run->version, 2);
  EXPECT_EQ(new_run->text, w.Ref("acme", 2, shortp, kCapacity).text);
  EXPECT_GE(rt->Status().max_batch_seen, 2);  // the new request joined the running one
}

}  // namespace
}  // namespace tessera::runtime
