// RemoteBlobStore: see remote_blob_store.h for the contract.
#include "services/remote_blob_store.h"

#include "absl/strings/str_cat.h"
#include "services/log.h"

namespace tessera::services {

absl::StatusOr<std::unique_ptr<RemoteBlobStore>> RemoteBlobStore::Create(std::unique_ptr<BlobClient> client,
                                                                         const std::string& cache_dir) {
  if (client == nullptr) return absl::InvalidArgumentError("RemoteBlobStore needs a BlobClient");
  absl::StatusOr<std::unique_ptr<storage::BlobStore>> cache = storage::BlobStore::Create(cache_dir);
  if (!cache.ok()) return cache.status();
  return std::unique_ptr<RemoteBlobStore>(new RemoteBlobStore(std::move(client), *std::move(cache)));
}

absl::StatusOr<std::string> RemoteBlobStore::Fetch(std::string_view digest) const {
  absl::StatusOr<std::string> bytes = client_->Get(digest);  // verified: sha256 and size
  if (!bytes.ok()) return bytes.status();
  ++fetches_;
  absl::StatusOr<std::string> cached = cache_->Put(*bytes);
  if (!cached.ok() || *cached != digest) {
    LogWarn("blob cache: could not keep a fetched blob (it will be fetched again)",
            {{"digest", std::string(digest)}, {"cache", cache_->root()},
             {"error", cached.ok() ? std::string("digest mismatch") : std::string(cached.status().message())}});
  }
  return bytes;
}

absl::StatusOr<std::string> RemoteBlobStore::Get(std::string_view digest) const {
  absl::StatusOr<std::string> local = cache_->Get(digest);  // re-hashes the cached file
  if (local.ok()) {
    ++cache_hits_;
    return local;
  }
  if (absl::IsDataLoss(local.status())) {
    // Damaged on this disk after it was verified: drop it and fetch a good copy.
    LogWarn("blob cache: cached copy is corrupt; refetching", {{"digest", std::string(digest)},
                                                               {"error", std::string(local.status().message())}});
    ++corrupt_dropped_;
    if (absl::Status s = cache_->Delete(digest); !s.ok()) return s;
  } else if (!absl::IsNotFound(local.status())) {
    return local.status();  // malformed digest, or the cache dir unreadable
  }
  return Fetch(digest);
}

absl::Status RemoteBlobStore::Verify(std::string_view digest) const {
  absl::Status local = cache_->Verify(digest);
  if (local.ok()) {
    ++cache_hits_;
    return local;
  }
  if (!absl::IsNotFound(local) && !absl::IsDataLoss(local)) return local;
  return Get(digest).status();  // drops a corrupt copy, fetches, verifies
}

absl::StatusOr<bool> RemoteBlobStore::Exists(std::string_view digest) const {
  absl::StatusOr<std::optional<int64_t>> st = client_->Stat(digest);
  if (!st.ok()) return st.status();
  return st->has_value();
}

absl::StatusOr<int64_t> RemoteBlobStore::Size(std::string_view digest) const {
  absl::StatusOr<std::optional<int64_t>> st = client_->Stat(digest);
  if (!st.ok()) return st.status();
  if (!st->has_value()) {
    return absl::NotFoundError(absl::StrCat("blob ", std::string(digest), " not found on the control plane ",
                                            client_->target()));
  }
  return **st;
}

absl::StatusOr<std::string> RemoteBlobStore::Path(std::string_view digest) const {
  absl::StatusOr<bool> cached = cache_->Exists(digest);
  if (!cached.ok()) return cached.status();
  if (*cached) {
    ++cache_hits_;
  } else if (absl::StatusOr<std::string> bytes = Fetch(digest); !bytes.ok()) {
    return bytes.status();
  }
  return cache_->Path(digest);
}

absl::StatusOr<std::string> RemoteBlobStore::Put(std::string_view bytes) {
  absl::StatusOr<std::string> digest = client_->Put(bytes);  // durable on the control plane when OK
  if (!digest.ok()) return digest.status();
  ++uploads_;
  absl::StatusOr<std::string> cached = cache_->Put(bytes);
  if (!cached.ok()) {
    LogWarn("blob cache: could not keep a local copy of an uploaded blob",
            {{"digest", *digest}, {"cache", cache_->root()}, {"error", std::string(cached.status().message())}});
  }
  return digest;
}

RemoteBlobStore::Stats RemoteBlobStore::stats() const {
  Stats s;
  s.cache_hits = cache_hits_.load();
  s.fetches = fetches_.load();
  s.corrupt_dropped = corrupt_dropped_.load();
  s.uploads = uploads_.load();
  return s;
}

}  // namespace tessera::services
