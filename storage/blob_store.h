// Content-addressed blob store: immutable files named by the sha256 of their bytes.
//
// Layout: <root>/<first 2 hex>/<64 hex digest>; temporaries in <root>/tmp/.
// Durability contract of Put: bytes -> temp file -> fsync(file) -> rename into place -> fsync(dir),
// so after Put returns the blob survives a crash, and a crash during Put leaves at most a stray temp file
// (removed by CollectTemps / the registry's garbage collector), never a partial blob under a digest name.
// Reads verify the digest (mismatch -> DATA_LOSS). Safe for concurrent use by threads and processes:
// files are never modified in place, and two writers of the same content race harmlessly on rename.
// The storage::BlobBackend (storage/blob_backend.h) of the process that owns the blobs; the deletion,
// listing and temp-file methods below are the owner's alone (garbage collection, backup).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/blob_backend.h"

namespace tessera::storage {

class BlobStore final : public BlobBackend {
 public:
  // Creates `root_dir` (and parents) if missing.
  static absl::StatusOr<std::unique_ptr<BlobStore>> Create(const std::string& root_dir);

  // Stores `bytes`, returns their lowercase sha256 hex digest. Idempotent: if the blob exists it is not
  // rewritten, but its mtime is refreshed (the garbage collector's grace period counts from the last Put).
  absl::StatusOr<std::string> Put(std::string_view bytes) override;
  // Stores the contents of an existing file (streamed, not loaded whole into memory).
  absl::StatusOr<std::string> PutFile(const std::string& path);

  // Returns the bytes; NOT_FOUND if absent, DATA_LOSS if the content does not hash to `digest`,
  // INVALID_ARGUMENT if `digest` is not 64 lowercase hex characters.
  absl::StatusOr<std::string> Get(std::string_view digest) const override;
  // Re-hashes the stored file (streamed): OK, NOT_FOUND or DATA_LOSS.
  absl::Status Verify(std::string_view digest) const override;

  // Where the blob lives (whether or not it exists). INVALID_ARGUMENT for a malformed digest.
  absl::StatusOr<std::string> Path(std::string_view digest) const override;
  absl::StatusOr<bool> Exists(std::string_view digest) const override;
  absl::StatusOr<int64_t> Size(std::string_view digest) const override;  // NOT_FOUND if absent
  // Last Put (mtime) of the blob; NOT_FOUND if absent.
  absl::StatusOr<absl::Time> LastWritten(std::string_view digest) const;

  // Removes the blob; OK if it was already absent.
  absl::Status Delete(std::string_view digest);
  // All digests present, in no particular order.
  absl::StatusOr<std::vector<std::string>> ListDigests() const;
  // Deletes temp files older than `min_age` (left by crashed writers). Returns how many were removed.
  absl::StatusOr<int64_t> CollectTemps(absl::Duration min_age);

  static bool IsValidDigest(std::string_view digest);
  const std::string& root() const { return root_; }

 private:
  explicit BlobStore(std::string root) : root_(std::move(root)) {}
  absl::StatusOr<std::string> Commit(const std::string& tmp_path, const std::string& digest);
  std::string root_;
};

}  // namespace tessera::storage
