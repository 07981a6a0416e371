// ReplicaRouter: client-side tenant-affinity routing over inference replicas (issue 21: "consistent
// hashing ... client-side, with fallback, and load shedding when all replicas are full").
//
// Rendezvous (highest-random-weight) hashing: a replica's weight for a tenant is the first 8 bytes of
// sha256(tenant + "\n" + replica address), big-endian; the tenant's order is the replicas by
// descending weight. Every client computes the same order with no coordination, so a tenant's traffic
// lands on one replica, where its overlays stay warm (each replica loads the overlays of ~1/N of the
// tenants instead of all of them); adding or removing a replica moves only the tenants whose first
// choice it is. The rule is simple to reproduce in any language (ops/scale_out_proof.py does).
//
// Route tries the order: a replica that answers UNAVAILABLE (down, draining, not ready) or
// RESOURCE_EXHAUSTED (its queue is full) is skipped for the next; any other answer, success or error,
// is the caller's. When every replica refused, the request is shed at once -- RESOURCE_EXHAUSTED when
// any replica was full (retry later), else UNAVAILABLE -- with each replica's answer in the message,
// rather than queued somewhere.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/support/status.h"

namespace tessera::cli {

class ReplicaRouter {
 public:
  // "HOST:PORT[,HOST:PORT...]"; INVALID_ARGUMENT for an empty entry or a duplicate.
  static absl::StatusOr<ReplicaRouter> Parse(std::string_view comma_separated);
  explicit ReplicaRouter(std::vector<std::string> replicas) : replicas_(std::move(replicas)) {}

  static uint64_t Weight(std::string_view tenant, std::string_view replica);
  std::vector<std::string> Order(std::string_view tenant) const;
  const std::vector<std::string>& replicas() const { return replicas_; }

  grpc::Status Route(std::string_view tenant,
                     const std::function<grpc::Status(const std::string& replica)>& attempt) const;

 private:
  std::vector<std::string> replicas_;
};

}  // namespace tessera::cli
