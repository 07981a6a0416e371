// BlobClient: see blob_client.h for the contract.
#include "services/blob_client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/util/sha256.h"
#include "services/status_util.h"
#include "storage/blob_store.h"

namespace tessera::services {
namespace {

namespace pb = ::tessera::internal::v1;

absl::Status CheckDigest(std::string_view digest) {
  if (storage::BlobStore::IsValidDigest(digest)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("blob digest must be 64 lowercase hex characters, got '",
                                                 std::string(digest.substr(0, 80)), "'"));
}

}  // namespace

BlobClient::BlobClient(std::shared_ptr<grpc::Channel> channel, std::string target, std::string admin_key,
                       Options options)
    : stub_(pb::Blobs::NewStub(channel)),
      target_(std::move(target)),
      admin_key_(std::move(admin_key)),
      options_(options) {}

absl::StatusOr<std::unique_ptr<BlobClient>> BlobClient::Create(std::shared_ptr<grpc::Channel> channel,
                                                               std::string target, std::string admin_key,
                                                               Options options) {
  if (channel == nullptr) return absl::InvalidArgumentError("BlobClient needs a channel to the control plane");
  if (admin_key.empty()) {
    return absl::InvalidArgumentError("BlobClient needs the control plane's ADMIN API key (--control-plane-key-file)");
  }
  if (options.chunk_bytes <= 0 || options.chunk_bytes > (4 << 20) - 1024) {
    return absl::InvalidArgumentError("BlobClient chunk_bytes: must be in (0, 4 MiB) (gRPC's message limit)");
  }
  return std::unique_ptr<BlobClient>(
      new BlobClient(std::move(channel), std::move(target), std::move(admin_key), options));
}

absl::StatusOr<std::unique_ptr<BlobClient>> BlobClient::Connect(
    const std::string& target, std::string admin_key, std::shared_ptr<grpc::ChannelCredentials> credentials,
    Options options) {
  if (target.empty()) return absl::InvalidArgumentError("--control-plane: HOST:PORT is required");
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  return Create(grpc::CreateChannel(target, credentials), target, std::move(admin_key), options);
}

void BlobClient::Prepare(grpc::ClientContext* ctx) const {
  ctx->AddMetadata("authorization", "Bearer " + admin_key_);
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(absl::ToInt64Milliseconds(options_.timeout)));
}

absl::Status BlobClient::Error(std::string_view what, std::string_view digest, const grpc::Status& s) const {
  absl::Status st = FromGrpcStatus(s);
  return absl::Status(st.code(), absl::StrCat("control plane ", target_, ": blob ", std::string(what), " ",
                                              std::string(digest),
                                              ": ", st.message()));
}

absl::StatusOr<std::string> BlobClient::Get(std::string_view digest) {
  if (absl::Status s = CheckDigest(digest); !s.ok()) return s;
  ++gets_;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  pb::GetBlobRequest req;
  req.set_digest(std::string(digest));
  std::unique_ptr<grpc::ClientReader<pb::BlobChunk>> reader = stub_->Get(&ctx, req);
  pb::BlobChunk c;
  std::string bytes;
  Sha256 sha;
  int64_t total = -1;
  absl::Status bad;
  while (reader->Read(&c)) {
    if (!bad.ok()) continue;  // drain, then report our own finding unless the server has a worse one
    if (total < 0) {
      total = c.total_size();
      if (c.digest() != digest || total < 0) {
        bad = absl::DataLossError(absl::StrCat("control plane ", target_, ": Get ", std::string(digest),
                                               " answered for digest '", c.digest(), "' size ", total));
        continue;
      }
      bytes.reserve(static_cast<size_t>(total));
    }
    if (c.offset() != static_cast<int64_t>(bytes.size()) ||
        static_cast<int64_t>(bytes.size() + c.data().size()) > total) {
      bad = absl::DataLossError(absl::StrCat("control plane ", target_, ": blob ", std::string(digest),
                                             ": chunk at offset ", c.offset(), " of ", c.data().size(),
                                             " bytes does not continue ", bytes.size(), " of ", total));
      continue;
    }
    sha.Update(c.data());
    bytes += c.data();
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return Error("get", digest, s);
  if (!bad.ok()) return bad;
  if (total < 0 || static_cast<int64_t>(bytes.size()) != total) {
    return absl::DataLossError(absl::StrCat("control plane ", target_, ": blob ", std::string(digest),
                                            ": stream ended after ", bytes.size(), " of ", total, " bytes"));
  }
  const std::string actual = sha.FinishHex();
  if (actual != digest) {
    return absl::DataLossError(absl::StrCat("control plane ", target_, ": blob ", std::string(digest),
                                            " arrived corrupt: its ", bytes.size(), " bytes hash to ", actual));
  }
  get_bytes_ += static_cast<int64_t>(bytes.size());
  return bytes;
}

absl::StatusOr<std::string> BlobClient::Put(std::string_view bytes) {
  const std::string digest = Sha256Hex(bytes);
  ++puts_;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  pb::PutBlobResponse resp;
  std::unique_ptr<grpc::ClientWriter<pb::BlobChunk>> writer = stub_->Put(&ctx, &resp);
  int64_t offset = 0;
  const int64_t size = static_cast<int64_t>(bytes.size());
  do {
    const int64_t n = std::min<int64_t>(options_.chunk_bytes, size - offset);
    pb::BlobChunk c;
    if (offset == 0) {
      c.set_digest(digest);
      c.set_total_size(size);
    }
    c.set_offset(offset);
    c.set_data(bytes.data() + offset, static_cast<size_t>(n));
    offset += n;
    if (!writer->Write(c)) break;  // the server ended the call early: Finish says why
  } while (offset < size);
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) return Error("put", digest, s);
  if (resp.digest() != digest || resp.size_bytes() != size) {
    return absl::DataLossError(absl::StrCat("control plane ", target_, ": put of blob ", digest, " (", size,
                                            " bytes) answered digest '", resp.digest(), "' size ", resp.size_bytes()));
  }
  put_bytes_ += size;
  return digest;
}

absl::StatusOr<std::optional<int64_t>> BlobClient::Stat(std::string_view digest) {
  if (absl::Status s = CheckDigest(digest); !s.ok()) return s;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  pb::StatBlobRequest req;
  req.set_digest(std::string(digest));
  pb::StatBlobResponse resp;
  ++stats_;
  grpc::Status s = stub_->Stat(&ctx, req, &resp);
  if (!s.ok()) return Error("stat", digest, s);
  if (!resp.exists()) return std::optional<int64_t>();
  return std::optional<int64_t>(resp.size_bytes());
}

BlobClient::Counts BlobClient::counts() const {
  Counts c;
  c.gets = gets_.load();
  c.get_bytes = get_bytes_.load();
  c.puts = puts_.load();
  c.put_bytes = put_bytes_.load();
  c.stats = stats_.load();
  return c;
}

}  // namespace tessera::services
