// ExpertTable (see expert_table.h).
#include "core/runtime/expert_table.h"

#include <utility>

namespace tessera::runtime {

ExpertTable::ExpertTable() : current_(std::make_shared<const Snapshot>()) {}

void ExpertTable::Publish(std::shared_ptr<const Snapshot> next) {
  std::shared_ptr<const Snapshot> old;
  {
    std::lock_guard<std::mutex> lock(ptr_mu_);
    old = std::exchange(current_, std::move(next));
  }
  generation_.fetch_add(1);
  // `old` (if this was its last holder) is freed here, outside the readers' lock.
}

std::shared_ptr<const ExpertTable::Snapshot> ExpertTable::Set(const std::string& tenant,
                                                              const LiveEntry& entry) {
  std::lock_guard<std::mutex> lock(write_mu_);
  auto next = std::make_shared<Snapshot>(*Current());
  (*next)[tenant] = entry;
  std::shared_ptr<const Snapshot> published = std::move(next);
  Publish(published);
  return published;
}

LiveEntry ExpertTable::SetIfAbsent(const std::string& tenant, const LiveEntry& entry) {
  std::lock_guard<std::mutex> lock(write_mu_);
  std::shared_ptr<const Snapshot> cur = Current();
  if (auto it = cur->find(tenant); it != cur->end()) return it->second;
  auto next = std::make_shared<Snapshot>(*cur);
  (*next)[tenant] = entry;
  Publish(std::move(next));
  return entry;
}

void ExpertTable::Erase(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(write_mu_);
  std::shared_ptr<const Snapshot> cur = Current();
  if (cur->find(tenant) == cur->end()) return;
  auto next = std::make_shared<Snapshot>(*cur);
  next->erase(tenant);
  Publish(std::move(next));
}

}  // namespace tessera::runtime
