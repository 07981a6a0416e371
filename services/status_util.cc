#include "services/status_util.h"

#include <limits>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "proto/request_parse.h"

namespace tessera::services {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share the canonical numbering (0..16).
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(status.code())),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(static_cast<int>(status.error_code())),
                      status.error_message());
}

absl::Status RequestUtf8Status(const google::protobuf::Message& request) {
  std::string path = proto::Utf8ErrorPath(request);
  if (path.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(path + ": must be valid UTF-8");
}

void SetTimestamp(int64_t unix_micros, google::protobuf::Timestamp* out) {
  if (unix_micros == 0) {
    out->Clear();
    return;
  }
  out->set_seconds(unix_micros / 1000000);
  out->set_nanos(static_cast<int32_t>((unix_micros % 1000000) * 1000));
}

int64_t TimestampMicros(const google::protobuf::Timestamp& ts) {
  // Saturates: a client's Timestamp may hold any int64 seconds (the product would overflow).
  constexpr int64_t kMaxSeconds = std::numeric_limits<int64_t>::max() / 1000000 - 1;
  if (ts.seconds() > kMaxSeconds) return std::numeric_limits<int64_t>::max();
  if (ts.seconds() < -kMaxSeconds) return std::numeric_limits<int64_t>::min();
  return ts.seconds() * 1000000 + ts.nanos() / 1000;
}

absl::Status WithRetryAfter(absl::Status status, int64_t seconds) {
  status.SetPayload(kRetryAfterPayload, absl::Cord(std::to_string(seconds)));
  return status;
}

std::optional<int64_t> RetryAfterSeconds(const absl::Status& status) {
  auto p = status.GetPayload(kRetryAfterPayload);  // absl::optional (not std:: in this Abseil)
  int64_t seconds = 0;
  if (!p.has_value() || !absl::SimpleAtoi(std::string(*p), &seconds)) return std::nullopt;
  return seconds;
}

void AddRetryAfterTrailer(grpc::ServerContextBase& ctx, const absl::Status& status) {
  if (std::optional<int64_t> s = RetryAfterSeconds(status)) ctx.AddTrailingMetadata(kRetryAfterMetadata, std::to_string(*s));
}

}  // namespace tessera::services
