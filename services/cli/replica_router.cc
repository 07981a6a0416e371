#include "services/cli/replica_router.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/util/sha256.h"

namespace tessera::cli {

absl::StatusOr<ReplicaRouter> ReplicaRouter::Parse(std::string_view comma_separated) {
  const std::string list(comma_separated);
  std::vector<std::string> replicas;
  std::set<std::string> seen;
  for (const std::string& part : std::vector<std::string>(absl::StrSplit(list, ','))) {
    if (part.empty()) return absl::InvalidArgumentError(absl::StrCat("--server '", list, "': an empty address"));
    if (!seen.insert(part).second) {
      return absl::InvalidArgumentError(absl::StrCat("--server '", list, "': ", part, " twice"));
    }
    replicas.push_back(part);
  }
  return ReplicaRouter(std::move(replicas));
}

uint64_t ReplicaRouter::Weight(std::string_view tenant, std::string_view replica) {
  Sha256 h;
  h.Update(tenant);
  h.Update("\n");
  h.Update(replica);
  const std::array<uint8_t, 32> d = h.Finish();
  uint64_t w = 0;
  for (int i = 0; i < 8; ++i) w = (w << 8) | d[i];
  return w;
}

std::vector<std::string> ReplicaRouter::Order(std::string_view tenant) const {
  std::vector<std::pair<uint64_t, std::string>> weighted;
  for (const std::string& r : replicas_) weighted.emplace_back(Weight(tenant, r), r);
  std::sort(weighted.begin(), weighted.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<std::string> out;
  for (auto& [w, r] : weighted) out.push_back(std::move(r));
  return out;
}

grpc::Status ReplicaRouter::Route(std::string_view tenant,
                                  const std::function<grpc::Status(const std::string& replica)>& attempt) const {
  std::string answers;
  bool any_full = false;
  for (const std::string& replica : Order(tenant)) {
    grpc::Status s = attempt(replica);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE && s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
      return s;
    }
    any_full |= s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    absl::StrAppend(&answers, answers.empty() ? "" : "; ", replica, ": ",
                    s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ? "full" : "unavailable",
                    s.error_message().empty() ? "" : " (", s.error_message(), s.error_message().empty() ? "" : ")");
  }
  if (any_full) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("every replica refused; the request was shed, retry later: ", answers));
  }
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, absl::StrCat("no replica answered: ", answers));
}

}  // namespace tessera::cli
