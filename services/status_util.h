// Conversions at the gRPC boundary: absl::Status <-> grpc::Status (canonical codes map 1:1, the message
// is kept verbatim) and unix microseconds <-> google.protobuf.Timestamp.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace tessera::services {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// INVALID_ARGUMENT "<field>: must be valid UTF-8" when gRPC parsed `request` with invalid UTF-8 in a
// string field (proto/request_parse.h: the text was sanitized, so the request must not be acted on);
// OK otherwise. Every handler checks it before anything else.
absl::Status RequestUtf8Status(const google::protobuf::Message& request);

// 0 ("not set" in storage) leaves the timestamp cleared.
void SetTimestamp(int64_t unix_micros, google::protobuf::Timestamp* out);
int64_t TimestampMicros(const google::protobuf::Timestamp& ts);

// Retry-after hints (quota refusals, services/rate_limiter.h): seconds a client should wait before
// retrying, carried on the absl::Status as a payload; gRPC answers send them as trailing metadata
// `retry-after` (AddRetryAfterTrailer; FinishUnary and RunOnPool do it), HTTP as `Retry-After`.
inline constexpr char kRetryAfterPayload[] = "type.tessera.dev/retry-after";
inline constexpr char kRetryAfterMetadata[] = "retry-after";
absl::Status WithRetryAfter(absl::Status status, int64_t seconds);
std::optional<int64_t> RetryAfterSeconds(const absl::Status& status);
void AddRetryAfterTrailer(grpc::ServerContextBase& ctx, const absl::Status& status);

}  // namespace tessera::services
