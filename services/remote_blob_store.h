// RemoteBlobStore: a storage::BlobBackend (storage/blob_backend.h) for processes that do NOT own the
// blobs -- inference replicas and trainers (tessera-server --role inference|trainer, issue 21) -- over
// the control plane's tessera.internal.v1.Blobs service (services/blob_client.h).
//
// Reads: the local cache (a storage::BlobStore in `cache_dir`, e.g. data_dir/blob-cache) first; Get
// re-hashes the cached file, and a cached copy that no longer matches its digest is deleted and fetched
// again. A miss fetches from the control plane; the bytes are verified (sha256 and size) BEFORE they
// are cached, so corrupt or mismatched data is DATA_LOSS and never enters the cache. Cached files are
// immutable and may be deleted at any time (they are fetched again); nothing here prunes the cache
// (it holds what this process used; the control plane's GC does not reach it).
// Writes: Put uploads to the control plane (which verifies and fsyncs before answering) and then keeps
// a local copy in the cache (a failure to cache is logged, not returned: the owner has the blob).
// Exists/Size ask the control plane (the registry checks them inside publish transactions: the owner's
// answer is the one that counts). Errors keep their canonical codes; the control plane unreachable is
// UNAVAILABLE.
//
// Garbage collection, backup and restore of blobs happen only on the process that owns them (role all
// or control, storage::BlobStore); this class has no deletion API on purpose.
//
// How a replica/trainer wires it (TesseraServer::Start, --role inference|trainer): a BlobClient on its
// channel to --control-plane (services/control_plane_client.h) with the --control-plane-key-file key,
// caching in DATA_DIR/blob-cache, becomes the registry's Options::blob_backend, so every
// registry->blobs() user reads and writes through it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/blob_client.h"
#include "storage/blob_backend.h"
#include "storage/blob_store.h"

namespace tessera::services {

class RemoteBlobStore final : public storage::BlobBackend {
 public:
  struct Stats {
    int64_t cache_hits = 0;     // Get/Path/Verify answered from the cache
    int64_t fetches = 0;        // blobs fetched (verified) from the control plane
    int64_t corrupt_dropped = 0;  // cached copies that failed verification and were deleted
    int64_t uploads = 0;        // successful Puts
  };

  // Creates `cache_dir` if needed.
  static absl::StatusOr<std::unique_ptr<RemoteBlobStore>> Create(std::unique_ptr<BlobClient> client,
                                                                 const std::string& cache_dir);

  absl::StatusOr<std::string> Put(std::string_view bytes) override;
  absl::StatusOr<std::string> Get(std::string_view digest) const override;
  absl::Status Verify(std::string_view digest) const override;
  absl::StatusOr<bool> Exists(std::string_view digest) const override;
  absl::StatusOr<int64_t> Size(std::string_view digest) const override;
  // The cached file (fetched and verified first when absent; an existing cached file is not re-hashed
  // here: Get and Verify are the verified reads).
  absl::StatusOr<std::string> Path(std::string_view digest) const override;

  Stats stats() const;
  BlobClient& client() { return *client_; }
  storage::BlobStore& cache() { return *cache_; }

 private:
  RemoteBlobStore(std::unique_ptr<BlobClient> client, std::unique_ptr<storage::BlobStore> cache)
      : client_(std::move(client)), cache_(std::move(cache)) {}
  // Fetches from the control plane (verified) and caches.
  absl::StatusOr<std::string> Fetch(std::string_view digest) const;

  std::unique_ptr<BlobClient> client_;
  std::unique_ptr<storage::BlobStore> cache_;
  mutable std::atomic<int64_t> cache_hits_{0}, fetches_{0}, corrupt_dropped_{0}, uploads_{0};
};

}  // namespace tessera::services
