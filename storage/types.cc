// Names, validation and the job state machine for storage/types.h.
#include "storage/types.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "storage/sv.h"

namespace tessera::storage {

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status ValidateTenantId(std::string_view id) {
  bool ok = id.size() >= 2 && id.size() <= 63 && id[0] >= 'a' && id[0] <= 'z';
  for (size_t i = 1; ok && i < id.size(); ++i) {
    const char c = id[i];
    ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "tenant_id '", Sv(id.substr(0, 80)), "' is invalid: must match [a-z][a-z0-9-]{1,62}"));
}

std::string_view RoleName(Role role) { return role == Role::kAdmin ? "ADMIN" : "TENANT"; }

std::string_view ScopeName(Scope scope) {
  switch (scope) {
    case kScopeInference:
      return "inference";
    case kScopeFineTune:
      return "fine-tune";
    case kScopeRead:
      return "read";
  }
  return "unknown";
}

std::string ScopesToString(uint32_t scopes) {
  std::string out;
  for (Scope s : {kScopeInference, kScopeFineTune, kScopeRead}) {
    if ((scopes & s) == 0) continue;
    if (!out.empty()) out += ",";
    out += std::string(ScopeName(s));
  }
  return out;
}

absl::StatusOr<uint32_t> ParseScopes(std::string_view names) {
  uint32_t out = 0;
  size_t pos = 0;
  while (pos <= names.size()) {
    size_t comma = names.find(',', pos);
    if (comma == std::string_view::npos) comma = names.size();
    std::string_view name = names.substr(pos, comma - pos);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    pos = comma + 1;
    if (name.empty()) continue;
    bool known = false;
    for (Scope s : {kScopeInference, kScopeFineTune, kScopeRead}) {
      if (ScopeName(s) == name) {
        out |= s;
        known = true;
      }
    }
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat("scopes: unknown scope '", Sv(name.substr(0, 40)),
                                                     "' (known: inference, fine-tune, read)"));
    }
  }
  if (out == 0) return absl::InvalidArgumentError("scopes: at least one of inference, fine-tune, read is required");
  return out;
}

std::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "QUEUED";
    case JobState::kRunning:
      return "RUNNING";
    case JobState::kSucceeded:
      return "SUCCEEDED";
    case JobState::kFailed:
      return "FAILED";
    case JobState::kCancelled:
      return "CANCELLED";
  }
  return "UNKNOWN";
}

absl::StatusOr<JobState> ParseJobState(std::string_view name) {
  for (JobState s : {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed,
                     JobState::kCancelled}) {
    if (JobStateName(s) == name) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown job state '", Sv(name), "'"));
}

bool IsTerminal(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

absl::Status CheckJobTransition(JobState from, JobState to) {
  bool allowed = false;
  switch (from) {
    case JobState::kQueued:
      allowed = to == JobState::kRunning || to == JobState::kCancelled || to == JobState::kFailed;
      break;
    case JobState::kRunning:
      allowed = to == JobState::kSucceeded || to == JobState::kFailed ||
                to == JobState::kCancelled || to == JobState::kQueued;
      break;
    case JobState::kSucceeded:
    case JobState::kFailed:
    case JobState::kCancelled:
      allowed = false;
      break;
  }
  if (allowed) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("job state cannot change from ",
                                                    Sv(JobStateName(from)), " to ", Sv(JobStateName(to))));
}

std::string_view ChangeKindName(ChangeKind kind) {
  switch (kind) {
    case ChangeKind::kPublish:
      return "publish";
    case ChangeKind::kPromote:
      return "promote";
    case ChangeKind::kRollback:
      return "rollback";
  }
  return "unknown";
}

}  // namespace tessera::storage
