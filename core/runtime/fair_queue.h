// FairQueue<T>: the waiting room in front of a shared resource (the continuous batch's slots, the
// inference work pool's threads), with per-tenant FIFO queues and one of two policies:
//
//   kFifo: arrival order across all tenants (what the runtime did before; kept for comparison).
//   kFair: deficit round-robin over the tenants that have something waiting (Shreedhar & Varghese,
//          "Efficient fair queuing using deficit round robin", 1996). Tenants with waiting items form
//          a ring. When a tenant's turn starts its deficit grows by quantum * weight; it is served
//          (front item popped, deficit -= the item's cost) while its deficit covers its front item's
//          cost; then the turn passes to the next tenant. A tenant whose queue empties leaves the ring
//          and its deficit resets to 0 (no banking of credit while idle).
//
// Why deficit round-robin rather than weighted round-robin: items have different costs (a request's
// cost is the positions it may occupy, prompt + max_tokens), and DRR shares the *cost* by weight --
// over any busy period each backlogged tenant i receives cost within quantum * w_i + max_cost of
// (total served) * w_i / sum(w) -- whereas WRR counts items, so a tenant sending long requests would get
// more of the batch than one sending short ones. DRR is O(1) amortized per pop (no per-item
// timestamps, unlike WFQ), and starvation-free: every backlogged tenant gets a turn each round, and its
// deficit grows by at least `quantum` per turn, so any item is served within
// ceil(cost / (quantum * weight)) rounds of reaching the front of its tenant's queue.
//
// Peek() advances the ring to the tenant that will be served (adding quanta to the tenants it passes,
// exactly as Pop would), so a Peek followed by Pop returns the same item and repeated Peeks change
// nothing. Not thread-safe: the owner locks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tessera::runtime {

enum class AdmissionPolicy { kFifo, kFair };

// "fifo" / "fair".
inline const char* AdmissionPolicyName(AdmissionPolicy p) { return p == AdmissionPolicy::kFifo ? "fifo" : "fair"; }

struct FairQueueOptions {
  AdmissionPolicy policy = AdmissionPolicy::kFair;
  int64_t quantum = 64;                     // cost credited per turn to a weight-1 tenant (>= 1)
  std::map<std::string, int64_t> weights;   // tenant -> weight (>= 1); absent: default_weight
  int64_t default_weight = 1;
};

template <typename T>
class FairQueue {
 public:
  explicit FairQueue(FairQueueOptions options = {}) : options_(std::move(options)) {
    options_.quantum = std::max<int64_t>(1, options_.quantum);
    options_.default_weight = std::max<int64_t>(1, options_.default_weight);
  }

  // Appends `item` to `tenant`'s queue; `cost` >= 1 (smaller is taken as 1).
  void Push(const std::string& tenant, int64_t cost, T item) {
    Tenant& t = tenants_[tenant];
    if (t.items.empty()) ring_.push_back(tenant);
    t.items.push_back(Entry{next_seq_++, std::max<int64_t>(1, cost), std::move(item)});
    ++size_;
  }

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  size_t size(const std::string& tenant) const {
    auto it = tenants_.find(tenant);
    return it == tenants_.end() ? 0 : it->second.items.size();
  }
  // Waiting items per tenant (tenants with none are absent).
  std::map<std::string, int64_t> Depths() const {
    std::map<std::string, int64_t> out;
    for (const auto& [name, t] : tenants_) {
      if (!t.items.empty()) out[name] = static_cast<int64_t>(t.items.size());
    }
    return out;
  }
  int64_t Weight(const std::string& tenant) const {
    auto it = options_.weights.find(tenant);
    return it == options_.weights.end() ? options_.default_weight : std::max<int64_t>(1, it->second);
  }

  // The item Pop() returns next; null when empty.
  T* Peek() {
    if (size_ == 0) return nullptr;
    return &Select()->items.front().item;
  }
  // The tenant of the item Pop() returns next (precondition: !empty()).
  const std::string& PeekTenant() {
    Select();
    return ring_.front();
  }

  // Removes and returns the next item (precondition: !empty()).
  T Pop() {
    Tenant* t = Select();
    Entry e = std::move(t->items.front());
    t->items.pop_front();
    --size_;
    if (options_.policy == AdmissionPolicy::kFair) t->deficit -= e.cost;
    if (t->items.empty()) {
      // Leaves the ring; an idle tenant keeps no credit (and no entry, so tenants seen once cost nothing).
      tenants_.erase(ring_.front());
      ring_.pop_front();
    }
    return std::move(e.item);
  }

  // Removes every item `pred` accepts (e.g. cancelled requests), in queue order, into `out`.
  void RemoveIf(const std::function<bool(const T&)>& pred, std::vector<T>* out) {
    if (size_ == 0) return;
    for (auto tenant = tenants_.begin(); tenant != tenants_.end();) {
      std::deque<Entry>& items = tenant->second.items;
      for (auto it = items.begin(); it != items.end();) {
        if (pred(it->item)) {
          out->push_back(std::move(it->item));
          it = items.erase(it);
          --size_;
        } else {
          ++it;
        }
      }
      if (items.empty()) {
        ring_.erase(std::find(ring_.begin(), ring_.end(), tenant->first));
        tenant = tenants_.erase(tenant);
      } else {
        ++tenant;
      }
    }
  }

 private:
  struct Entry {
    uint64_t seq;
    int64_t cost;
    T item;
  };
  struct Tenant {
    std::deque<Entry> items;
    int64_t deficit = 0;
    bool turn_started = false;
  };

  // Rotates the ring until its front tenant is the one to serve and returns it (size_ > 0).
  Tenant* Select() {
    if (options_.policy == AdmissionPolicy::kFifo) {
      // The tenant whose front item arrived first goes to the front of the ring.
      auto best = ring_.begin();
      for (auto it = ring_.begin(); it != ring_.end(); ++it) {
        if (tenants_[*it].items.front().seq < tenants_[*best].items.front().seq) best = it;
      }
      if (best != ring_.begin()) std::iter_swap(ring_.begin(), best);
      return &tenants_[ring_.front()];
    }
    for (;;) {
      Tenant& t = tenants_[ring_.front()];
      if (!t.turn_started) {
        t.turn_started = true;
        t.deficit += options_.quantum * Weight(ring_.front());
      }
      if (t.deficit >= t.items.front().cost) return &t;
      // Its turn is over: the next tenant's starts.
      t.turn_started = false;
      ring_.push_back(std::move(ring_.front()));
      ring_.pop_front();
    }
  }

  FairQueueOptions options_;
  std::map<std::string, Tenant> tenants_;
  std::deque<std::string> ring_;  // tenants with waiting items; front = the one whose turn it is
  size_t size_ = 0;
  uint64_t next_seq_ = 0;
};

}  // namespace tessera::runtime
