// tessera.internal.v1.Blobs (proto/tessera/internal/v1/blobs.proto): the control plane serves its blob
// store to the inference replicas and trainers of the same deployment (issue 21, roles), which have
// their own data dirs. Registered by TesseraServer on the gRPC port when this process owns the blobs
// (role all or control); clients are services/blob_client.h and services/remote_blob_store.h.
//
// Authorization: ADMIN API keys only (bearer metadata, as every tessera.v1 call): a missing/unknown key
// is UNAUTHENTICATED, a TENANT key PERMISSION_DENIED -- blobs are not tenant-scoped, so a tenant key
// could otherwise read another tenant's overlay by digest.
//
// Get streams the stored file in chunks (1 MiB), re-hashing as it reads: a stored copy that does not
// hash to its name ends the stream with DATA_LOSS (the client verifies too). Put buffers the upload
// (at most Options::max_blob_bytes), checks its size and sha256 against the first chunk's, and only then
// stores it with BlobStore::Put (temp file, fsync, rename, fsync dir): a mismatch is DATA_LOSS and
// stores nothing. Stat answers exists + size. Every call is recorded in tessera_rpc_requests_total
// {method="Blobs/Get"|"Blobs/Put"|"Blobs/Stat"}.
#pragma once

#include <cstdint>

#include "services/service_env.h"
#include "storage/blob_store.h"
#include "tessera/internal/v1/blobs.grpc.pb.h"

namespace tessera::services {

class BlobService final : public internal::v1::Blobs::CallbackService {
 public:
  struct Options {
    int64_t chunk_bytes = 1 << 20;        // Get's chunk size (under gRPC's 4 MiB default message limit)
    int64_t max_blob_bytes = int64_t{4} << 30;  // Put: larger uploads are RESOURCE_EXHAUSTED
  };
  // `store` is the blob store this process owns (data_dir/blobs); not owned here.
  BlobService(const ServiceEnv& env, storage::BlobStore* store, Options options);
  BlobService(const ServiceEnv& env, storage::BlobStore* store) : BlobService(env, store, Options()) {}

  grpc::ServerWriteReactor<internal::v1::BlobChunk>* Get(grpc::CallbackServerContext* ctx,
                                                         const internal::v1::GetBlobRequest* req) override;
  grpc::ServerReadReactor<internal::v1::BlobChunk>* Put(grpc::CallbackServerContext* ctx,
                                                        internal::v1::PutBlobResponse* resp) override;
  grpc::ServerUnaryReactor* Stat(grpc::CallbackServerContext* ctx, const internal::v1::StatBlobRequest* req,
                                 internal::v1::StatBlobResponse* resp) override;

 private:
  const ServiceEnv& env_;
  storage::BlobStore* store_;
  Options options_;
};

}  // namespace tessera::services
