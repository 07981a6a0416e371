// FairQueue: the admission policies' order (FIFO; deficit round-robin with costs and weights), no
// starvation, Peek/Pop agreement and removal. Orders are asserted exactly: they follow from the DRR
// rules in fair_queue.h, not from timing.
#include "core/runtime/fair_queue.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace tessera::runtime {
namespace {

FairQueueOptions Fair(int64_t quantum, std::map<std::string, int64_t> weights = {}) {
  FairQueueOptions o;
  o.policy = AdmissionPolicy::kFair;
  o.quantum = quantum;
  o.weights = std::move(weights);
  return o;
}

std::vector<std::string> Drain(FairQueue<std::string>& q) {
  std::vector<std::string> out;
  while (!q.empty()) out.push_back(q.Pop());
  return out;
}

TEST(FairQueueTest, FifoIsArrivalOrderAcrossTenants) {
  FairQueueOptions o;
  o.policy = AdmissionPolicy::kFifo;
  FairQueue<std::string> q(o);
  q.Push("a", 1, "a1");
  q.Push("a", 1, "a2");
  q.Push("b", 100, "b1");
  q.Push("a", 1, "a3");
  q.Push("c", 1, "c1");
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"a1", "a2", "b1", "a3", "c1"}));
}

TEST(FairQueueTest, EqualCostsAlternateBetweenTenants) {
  // Quantum = one item's cost: one item per turn.
  FairQueue<std::string> q(Fair(10));
  for (int i = 1; i <= 5; ++i) q.Push("flood", 10, "f" + std::to_string(i));
  q.Push("steady", 10, "s1");
  q.Push("steady", 10, "s2");
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"f1", "s1", "f2", "s2", "f3", "f4", "f5"}));
}

TEST(FairQueueTest, LateArrivalWaitsOneTurnNotTheBacklog) {
  // The flooding tenant queued 100 items before the steady one sent its first: under FIFO it would be
  // 101st; under DRR it is served after at most the flooder's current turn.
  FairQueue<std::string> q(Fair(10));
  for (int i = 0; i < 100; ++i) q.Push("flood", 10, "f");
  EXPECT_EQ(q.Pop(), "f");
  q.Push("steady", 10, "s");
  EXPECT_EQ(q.Pop(), "s");
  EXPECT_EQ(q.size(), 99u);
}

TEST(FairQueueTest, CostsAreSharedNotItemCounts) {
  // "big" sends items of cost 30, "small" of cost 10, quantum 30: per round each tenant gets 30 of cost,
  // i.e. one big item for three small ones.
  FairQueue<std::string> q(Fair(30));
  for (int i = 0; i < 3; ++i) q.Push("big", 30, "B");
  for (int i = 0; i < 9; ++i) q.Push("small", 10, "s");
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"B", "s", "s", "s", "B", "s", "s", "s", "B", "s", "s", "s"}));
}

TEST(FairQueueTest, WeightsScaleTheShare) {
  // Weight 3 vs 1 with equal costs: three of "gold" per one of "free" while both are backlogged.
  FairQueue<std::string> q(Fair(10, {{"gold", 3}}));
  for (int i = 0; i < 6; ++i) q.Push("gold", 10, "g");
  for (int i = 0; i < 4; ++i) q.Push("free", 10, "f");
  EXPECT_EQ(q.Weight("gold"), 3);
  EXPECT_EQ(q.Weight("free"), 1);
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"g", "g", "g", "f", "g", "g", "g", "f", "f", "f"}));
}

TEST(FairQueueTest, LongRunShareFollowsWeightsAndCosts) {
  // Three backlogged tenants, weights 1:2:4, mixed costs: over the first 7000 units of cost served, each
  // tenant's served cost is within quantum * weight + max cost of its weighted share.
  constexpr int64_t kQuantum = 50;
  FairQueue<std::string> q(Fair(kQuantum, {{"w2", 2}, {"w4", 4}}));
  const std::map<std::string, int64_t> weight = {{"w1", 1}, {"w2", 2}, {"w4", 4}};
  std::map<std::string, int64_t> cost_of_next = {{"w1", 0}, {"w2", 0}, {"w4", 0}};
  int64_t seq = 0;
  auto cost = [](int64_t i) { return 10 + (i * 37) % 90; };  // 10..99
  for (int i = 0; i < 400; ++i) {
    for (const auto& [t, w] : weight) q.Push(t, cost(seq), t + ":" + std::to_string(cost(seq))), ++seq;
  }
  std::map<std::string, int64_t> served;
  int64_t total = 0;
  while (total < 7000) {
    std::string item = q.Pop();
    const std::string t = item.substr(0, 2);
    const int64_t c = std::stoll(item.substr(3));
    served[t] += c;
    total += c;
  }
  for (const auto& [t, w] : weight) {
    const double share = static_cast<double>(total) * static_cast<double>(w) / 7.0;
    EXPECT_NEAR(static_cast<double>(served[t]), share, static_cast<double>(kQuantum * 4 + 99)) << t;
  }
}

TEST(FairQueueTest, NoStarvationOfAnExpensiveItem) {
  // An item costing 25 quanta among a stream of cheap ones: its tenant gains a quantum per turn, so it
  // is served after 25 rounds, whatever keeps arriving from the others.
  FairQueue<std::string> q(Fair(4));
  q.Push("whale", 100, "W");
  int popped_before = 0;
  for (int round = 0; round < 1000; ++round) {
    q.Push("minnow", 4, "m");
    q.Push("krill", 4, "k");
    std::string item = q.Pop();
    if (item == "W") break;
    ++popped_before;
  }
  EXPECT_GT(popped_before, 0);
  EXPECT_LE(popped_before, 2 * 25);
  EXPECT_EQ(q.size("whale"), 0u);
}

TEST(FairQueueTest, PeekAgreesWithPopAndDoesNotAdvance) {
  FairQueue<std::string> q(Fair(10));
  q.Push("a", 25, "a1");
  q.Push("b", 10, "b1");
  q.Push("a", 5, "a2");
  std::vector<std::string> order;
  while (!q.empty()) {
    const std::string peeked = *q.Peek();
    const std::string tenant = q.PeekTenant();
    EXPECT_EQ(*q.Peek(), peeked);  // a second Peek sees the same
    std::string popped = q.Pop();
    EXPECT_EQ(popped, peeked);
    EXPECT_EQ(popped.substr(0, 1), tenant);
    order.push_back(popped);
  }
  // a1 costs 25 = 3 turns of a (10 + 10 + 10), b1 one turn: b1 goes first.
  EXPECT_EQ(order, (std::vector<std::string>{"b1", "a1", "a2"}));
  EXPECT_EQ(q.Peek(), nullptr);
}

TEST(FairQueueTest, RemoveIfTakesItemsOutAndResetsEmptyTenants) {
  FairQueue<std::string> q(Fair(10));
  q.Push("a", 10, "a1");
  q.Push("b", 10, "b1");
  q.Push("a", 10, "a2-cancelled");
  q.Push("b", 10, "b2-cancelled");
  q.Push("c", 10, "c1-cancelled");
  std::vector<std::string> removed;
  q.RemoveIf([](const std::string& s) { return s.find("cancelled") != std::string::npos; }, &removed);
  EXPECT_EQ(removed.size(), 3u);
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.size("c"), 0u);
  EXPECT_EQ(q.Depths(), (std::map<std::string, int64_t>{{"a", 1}, {"b", 1}}));
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"a1", "b1"}));
}

TEST(FairQueueTest, IdleTenantBanksNoCredit) {
  // "a" is served alone for a while (its deficit does not grow beyond one turn's), then "b" arrives:
  // they alternate at once instead of "a" spending saved-up credit.
  FairQueue<std::string> q(Fair(10));
  for (int i = 0; i < 5; ++i) {
    q.Push("a", 10, "a");
    EXPECT_EQ(q.Pop(), "a");
  }
  q.Push("b", 10, "b");
  q.Push("b", 10, "b");
  q.Push("a", 10, "a");
  q.Push("a", 10, "a");
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"b", "a", "b", "a"}));
}

}  // namespace
}  // namespace tessera::runtime
