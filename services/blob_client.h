// BlobClient: the calling side of tessera.internal.v1.Blobs (services/blob_service.h) -- how an
// inference replica or trainer reads and writes blobs on the control plane (issue 21, roles).
// Most code wants services/remote_blob_store.h (a storage::BlobBackend with a local verified cache)
// rather than this raw client.
//
// Every call carries `authorization: Bearer <admin key>` (an ADMIN API key of the control plane's
// registry) and a deadline (Options::timeout). Contract:
// - Get returns only bytes that hash to the digest and match the announced size, checked here whatever
//   the server sent (DATA_LOSS otherwise); NOT_FOUND for an unknown digest.
// - Put sends the digest and size first and the bytes in chunks; it returns once the control plane has
//   verified and fsync'ed the blob. Idempotent.
// - Stat: size if stored, nullopt if not.
// Errors keep the server's canonical code (UNAUTHENTICATED / PERMISSION_DENIED for a bad or non-admin
// key, UNAVAILABLE when the control plane cannot be reached), prefixed with the control plane's address.
// Thread-safe (one channel, per-call contexts).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "tessera/internal/v1/blobs.grpc.pb.h"

namespace tessera::services {

struct BlobClientOptions {
  int64_t chunk_bytes = 1 << 20;               // Put's chunk size
  absl::Duration timeout = absl::Minutes(10);  // per call (a large blob over a slow link)
};

class BlobClient {
 public:
  using Options = BlobClientOptions;
  // What this client did (for tests and metrics): RPCs started, and bytes of the successful ones.
  struct Counts {
    int64_t gets = 0;
    int64_t get_bytes = 0;  // verified bytes received
    int64_t puts = 0;
    int64_t put_bytes = 0;  // bytes the control plane stored
    int64_t stats = 0;
  };

  // `channel`: to the control plane's gRPC port (whatever credentials it needs: TLS or insecure);
  // `admin_key`: an ADMIN API key secret. `target` only names the control plane in error messages.
  static absl::StatusOr<std::unique_ptr<BlobClient>> Create(std::shared_ptr<grpc::Channel> channel,
                                                            std::string target, std::string admin_key,
                                                            Options options);
  static absl::StatusOr<std::unique_ptr<BlobClient>> Create(std::shared_ptr<grpc::Channel> channel,
                                                            std::string target, std::string admin_key) {
    return Create(std::move(channel), std::move(target), std::move(admin_key), Options());
  }
  // Convenience: a channel to HOST:PORT with `credentials` (null: insecure, for loopback).
  static absl::StatusOr<std::unique_ptr<BlobClient>> Connect(
      const std::string& target, std::string admin_key,
      std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr, Options options = Options());

  absl::StatusOr<std::string> Get(std::string_view digest);
  absl::StatusOr<std::string> Put(std::string_view bytes);  // returns the digest
  absl::StatusOr<std::optional<int64_t>> Stat(std::string_view digest);

  Counts counts() const;
  const std::string& target() const { return target_; }

 private:
  BlobClient(std::shared_ptr<grpc::Channel> channel, std::string target, std::string admin_key, Options options);
  void Prepare(grpc::ClientContext* ctx) const;
  absl::Status Error(std::string_view what, std::string_view digest, const grpc::Status& s) const;

  std::unique_ptr<internal::v1::Blobs::Stub> stub_;
  std::string target_;
  std::string admin_key_;
  Options options_;
  std::atomic<int64_t> gets_{0}, get_bytes_{0}, puts_{0}, put_bytes_{0}, stats_{0};
};

}  // namespace tessera::services
