// ExpertTable (see expert_table.h).
#include "core/runtime/expert_table.h"

namespace tessera::runtime {

ExpertTable::ExpertTable() : current_(std::make_shared<const Snapshot>()) {}

std::shared_ptr<const ExpertTable::Snapshot> ExpertTable::Set(const std::string& tenant,
                                                              const LiveEntry& entry) {
  std::lock_guard<std::mutex> lock(write_mu_);
  auto next = std::make_shared<Snapshot>(*current_.load(std::memory_order_acquire));
  (*next)[tenant] = entry;
  std::shared_ptr<const Snapshot> published = std::move(next);
  current_.store(published, std::memory_order_release);
  generation_.fetch_add(1);
  return published;
}

LiveEntry ExpertTable::SetIfAbsent(const std::string& tenant, const LiveEntry& entry) {
  std::lock_guard<std::mutex> lock(write_mu_);
  std::shared_ptr<const Snapshot> cur = current_.load(std::memory_order_acquire);
  if (auto it = cur->find(tenant); it != cur->end()) return it->second;
  auto next = std::make_shared<Snapshot>(*cur);
  (*next)[tenant] = entry;
  current_.store(std::shared_ptr<const Snapshot>(std::move(next)), std::memory_order_release);
  generation_.fetch_add(1);
  return entry;
}

void ExpertTable::Erase(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(write_mu_);
  std::shared_ptr<const Snapshot> cur = current_.load(std::memory_order_acquire);
  if (cur->find(tenant) == cur->end()) return;
  auto next = std::make_shared<Snapshot>(*cur);
  next->erase(tenant);
  current_.store(std::shared_ptr<const Snapshot>(std::move(next)), std::memory_order_release);
  generation_.fetch_add(1);
}

}  // namespace tessera::runtime
