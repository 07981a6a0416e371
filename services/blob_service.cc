// BlobService: see blob_service.h for the contract.
#include "services/blob_service.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/util/sha256.h"
#include "core/util/status_macros.h"
#include "services/log.h"

namespace tessera::services {
namespace {

namespace pb = ::tessera::internal::v1;

absl::Status CheckDigest(const std::string& digest) {
  if (storage::BlobStore::IsValidDigest(digest)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("digest: must be 64 lowercase hex characters (sha256), got '", digest.substr(0, 80), "'"));
}

// Reads the stored file chunk by chunk, hashing as it goes; the last check catches a corrupt copy.
absl::Status StreamBlob(storage::BlobStore& store, const std::string& digest, int64_t chunk_bytes,
                        ThreadedWriter<pb::BlobChunk>* w) {
  absl::StatusOr<std::string> path = store.Path(digest);
  if (!path.ok()) return path.status();
  const int fd = ::open(path->c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("blob ", digest, " not found"));
    return absl::InternalError(absl::StrCat("open ", *path, ": ", strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status s = absl::InternalError(absl::StrCat("fstat ", *path, ": ", strerror(errno)));
    ::close(fd);
    return s;
  }
  Sha256 sha;
  std::string buf(static_cast<size_t>(chunk_bytes), '\0');
  int64_t offset = 0;
  absl::Status s;
  bool first = true;
  while (s.ok()) {
    // Fill a whole chunk (read may return less) so chunk boundaries do not depend on the kernel.
    size_t have = 0;
    while (have < buf.size()) {
      const ssize_t r = ::read(fd, buf.data() + have, buf.size() - have);
      if (r < 0) {
        if (errno == EINTR) continue;
        s = absl::DataLossError(absl::StrCat("reading blob ", digest, ": ", strerror(errno)));
        break;
      }
      if (r == 0) break;
      have += static_cast<size_t>(r);
    }
    if (!s.ok()) break;
    if (have == 0 && !first) break;
    pb::BlobChunk c;
    if (first) {
      c.set_digest(digest);
      c.set_total_size(static_cast<int64_t>(st.st_size));
    }
    c.set_offset(offset);
    c.set_data(buf.data(), have);
    sha.Update(buf.data(), have);
    offset += static_cast<int64_t>(have);
    first = false;
    if (!w->Write(c)) {
      s = absl::CancelledError("the client went away");
      break;
    }
    if (have < buf.size()) break;  // end of file
  }
  ::close(fd);
  if (!s.ok()) return s;
  const std::string actual = sha.FinishHex();
  if (actual != digest || offset != static_cast<int64_t>(st.st_size)) {
    return absl::DataLossError(absl::StrCat("blob ", digest, " is corrupt on the control plane: ", offset,
                                            " bytes hashing to ", actual));
  }
  return absl::OkStatus();
}

// Put: buffers the chunks (checking order and size as they come), then verifies and stores on the
// work pool (fsync must not block a gRPC callback thread).
class PutReactor : public grpc::ServerReadReactor<pb::BlobChunk> {
 public:
  PutReactor(const ServiceEnv& env, storage::BlobStore* store, int64_t max_bytes,
             grpc::CallbackServerContext* ctx, pb::PutBlobResponse* resp)
      : env_(env), store_(store), max_bytes_(max_bytes), ctx_(ctx), resp_(resp), start_(absl::Now()) {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeAdmin(*ctx_);
    if (!p.ok()) {
      Done(p.status());
      return;
    }
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      if (ctx_->IsCancelled()) {
        Done(absl::CancelledError("the client cancelled the upload"));
      } else if (first_) {
        Done(absl::InvalidArgumentError("empty upload: the first chunk must carry digest and total_size"));
      } else {
        env_.pool->Submit([this] { Done(Store()); });
      }
      return;
    }
    if (absl::Status s = Accept(); !s.ok()) {
      Done(s);
      return;
    }
    chunk_.Clear();
    StartRead(&chunk_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Accept() {
    if (first_) {
      first_ = false;
      digest_ = chunk_.digest();
      RETURN_IF_ERROR(CheckDigest(digest_));
      total_ = chunk_.total_size();
      if (total_ < 0) return absl::InvalidArgumentError("total_size: must be >= 0");
      if (total_ > max_bytes_) {
        return absl::ResourceExhaustedError(absl::StrCat("blob of ", total_, " bytes exceeds the control plane's limit of ",
                                                         max_bytes_, " bytes"));
      }
      data_.reserve(static_cast<size_t>(total_));
    } else if (!chunk_.digest().empty() && chunk_.digest() != digest_) {
      return absl::InvalidArgumentError("digest: belongs in the first chunk only (a later chunk names another)");
    }
    if (chunk_.offset() != static_cast<int64_t>(data_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("offset: expected ", data_.size(), ", got ", chunk_.offset(),
                                                     " (chunks must arrive in order without gaps)"));
    }
    if (static_cast<int64_t>(data_.size() + chunk_.data().size()) > total_) {
      return absl::InvalidArgumentError(absl::StrCat("upload is longer than total_size ", total_));
    }
    sha_.Update(chunk_.data());
    data_ += chunk_.data();
    return absl::OkStatus();
  }

  absl::Status Store() {
    if (static_cast<int64_t>(data_.size()) != total_) {
      return absl::DataLossError(absl::StrCat("upload ended after ", data_.size(), " of ", total_, " bytes"));
    }
    const std::string actual = sha_.FinishHex();
    if (actual != digest_) {
      return absl::DataLossError(absl::StrCat("upload does not match its digest: ", data_.size(),
                                              " bytes hash to ", actual, ", the first chunk named ", digest_,
                                              " (nothing stored)"));
    }
    absl::StatusOr<std::string> stored = store_->Put(data_);
    if (!stored.ok()) return stored.status();
    if (*stored != digest_) return absl::InternalError("blob store returned another digest than the one verified");
    resp_->set_digest(*stored);
    resp_->set_size_bytes(total_);
    return absl::OkStatus();
  }

  void Done(const absl::Status& s) {
    RecordCall(env_, "Blobs/Put", start_, s);
    Finish(ToGrpcStatus(s));
  }

  const ServiceEnv& env_;
  storage::BlobStore* store_;
  int64_t max_bytes_;
  grpc::CallbackServerContext* ctx_;
  pb::PutBlobResponse* resp_;
  absl::Time start_;
  pb::BlobChunk chunk_;
  bool first_ = true;
  std::string digest_;
  int64_t total_ = 0;
  std::string data_;
  Sha256 sha_;
};

}  // namespace

BlobService::BlobService(const ServiceEnv& env, storage::BlobStore* store, Options options)
    : env_(env), store_(store), options_(options) {
  if (options_.chunk_bytes <= 0) options_.chunk_bytes = 1 << 20;
}

grpc::ServerWriteReactor<pb::BlobChunk>* BlobService::Get(grpc::CallbackServerContext* ctx,
                                                          const pb::GetBlobRequest* req) {
  const ServiceEnv& env = env_;
  storage::BlobStore* store = store_;
  const int64_t chunk_bytes = options_.chunk_bytes;
  std::string digest = req->digest();
  return new ThreadedWriter<pb::BlobChunk>(
      env_, "Blobs/Get",
      [&env, ctx, store, chunk_bytes, digest = std::move(digest)](ThreadedWriter<pb::BlobChunk>* w) -> absl::Status {
        absl::StatusOr<storage::Principal> p = env.auth->AuthorizeAdmin(*ctx);
        if (!p.ok()) return p.status();
        RETURN_IF_ERROR(CheckDigest(digest));
        return StreamBlob(*store, digest, chunk_bytes, w);
      });
}

grpc::ServerReadReactor<pb::BlobChunk>* BlobService::Put(grpc::CallbackServerContext* ctx,
                                                         pb::PutBlobResponse* resp) {
  return new PutReactor(env_, store_, options_.max_blob_bytes, ctx, resp);
}

grpc::ServerUnaryReactor* BlobService::Stat(grpc::CallbackServerContext* ctx, const pb::StatBlobRequest* req,
                                            pb::StatBlobResponse* resp) {
  const absl::Time start = absl::Now();
  absl::Status s = [&]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeAdmin(*ctx);
    if (!p.ok()) return p.status();
    RETURN_IF_ERROR(CheckDigest(req->digest()));
    absl::StatusOr<int64_t> size = store_->Size(req->digest());
    if (absl::IsNotFound(size.status())) {
      resp->set_exists(false);
      return absl::OkStatus();
    }
    if (!size.ok()) return size.status();
    resp->set_exists(true);
    resp->set_size_bytes(*size);
    return absl::OkStatus();
  }();
  return FinishUnary(env_, ctx, "Blobs/Stat", start, s);
}

}  // namespace tessera::services
