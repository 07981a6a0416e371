// BlobBackend: the content-addressed blob operations the registry and the services need, whoever
// holds the bytes (issue 21, roles).
//
// Two implementations:
// - storage::BlobStore (storage/blob_store.h): the files in data_dir/blobs of a process that OWNS the
//   blobs (tessera-server --role all or control). Only that process garbage-collects them, backs them
//   up and serves them to others (services/blob_service.h).
// - services::RemoteBlobStore (services/remote_blob_store.h): an inference replica or trainer whose
//   blobs live on the control plane; reads go through a local verified cache, writes are uploaded.
//
// Contract (both): blobs are immutable and named by the lowercase sha256 hex of their bytes (64
// characters; anything else is INVALID_ARGUMENT). Get never returns bytes that do not hash to the
// digest (DATA_LOSS instead). Put returns only once the blob is durable where it is owned, so a row
// naming it may then be committed (blob first, row second). Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::storage {

class BlobBackend {
 public:
  virtual ~BlobBackend() = default;

  // Stores `bytes` durably and returns their digest. Idempotent; refreshes the blob's last-Put time
  // (the garbage collector's grace period counts from it).
  virtual absl::StatusOr<std::string> Put(std::string_view bytes) = 0;
  // The verified bytes: NOT_FOUND if absent, DATA_LOSS if they do not hash to `digest`.
  virtual absl::StatusOr<std::string> Get(std::string_view digest) const = 0;
  // OK when the bytes are there and hash to `digest`; NOT_FOUND or DATA_LOSS otherwise.
  virtual absl::Status Verify(std::string_view digest) const = 0;
  // Whether the owner holds the blob (the remote store asks the control plane, not its cache: the
  // registry relies on this inside publish transactions).
  virtual absl::StatusOr<bool> Exists(std::string_view digest) const = 0;
  // Size in bytes as the owner holds it; NOT_FOUND if absent.
  virtual absl::StatusOr<int64_t> Size(std::string_view digest) const = 0;
  // A local file with the blob's bytes, for readers that parse a file in place (safetensors headers).
  // The local store returns where the blob lives whether or not it exists (opening it then fails); the
  // remote store fetches it (verified) into its cache first, so NOT_FOUND if the owner lacks it.
  virtual absl::StatusOr<std::string> Path(std::string_view digest) const = 0;
};

}  // namespace tessera::storage
