#include "services/datasets_service.h"

#include "absl/strings/str_cat.h"
#include "services/audit.h"
#include "services/convert.h"
#include "services/log.h"

namespace tessera::services {
namespace {

constexpr size_t kMaxNameBytes = 256;

absl::Status ValidateName(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("name is required (first message)");
  if (name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("name: at most ", kMaxNameBytes, " bytes, got ",
                                                   name.size()));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) return absl::InvalidArgumentError("name: control characters are not allowed");
  }
  return absl::OkStatus();
}

// Reads the stream chunk by chunk (enforcing the size limit as it grows), then validates and stores the
// whole upload on the work pool.
class UploadReactor : public grpc::ServerReadReactor<v1::UploadDatasetRequest> {
 public:
  UploadReactor(const ServiceEnv& env, grpc::CallbackServerContext* ctx, v1::Dataset* response)
      : env_(env), ctx_(ctx), response_(response), start_(absl::Now()) {
    if (absl::Status s = RequireControlPlane(env_, "dataset.create"); !s.ok()) {
      Done(s);
      return;
    }
    absl::StatusOr<storage::Principal> p = env_.auth->Authenticate(*ctx_);
    if (!p.ok()) {
      Done(p.status());
      return;
    }
    principal_ = *p;
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      if (ctx_->IsCancelled()) {
        Done(absl::CancelledError("the client cancelled the upload"));
        return;
      }
      if (first_) {
        Done(absl::InvalidArgumentError("empty upload: the first message must carry tenant_id and name"));
        return;
      }
      if (data_.empty()) {
        // Named here rather than left to the JSONL validator ("0 examples"): the client sent no bytes.
        Done(absl::InvalidArgumentError(
            "chunk: the upload is empty (no message carried any bytes); a dataset needs at least 1 example"));
        return;
      }
      env_.pool->Submit([this] { Done(Store()); });
      return;
    }
    if (absl::Status s = RequestUtf8Status(req_); !s.ok()) {
      Done(s);
      return;
    }
    if (first_) {
      first_ = false;
      tenant_id_ = req_.tenant_id();
      absl::Status s = Authenticator::CheckTenantScope(principal_, tenant_id_);
      if (s.ok()) s = Authenticator::CheckKeyScope(principal_, storage::kScopeFineTune);
      if (!s.ok()) {
        if (s.code() != absl::StatusCode::kInvalidArgument) {
          AuditRefused(env_, principal_, Mutation{"dataset.create", tenant_id_, "tenant/" + tenant_id_}, s);
        }
        Done(s);
        return;
      }
      name_ = req_.name();
      if (absl::Status s = ValidateName(name_); !s.ok()) {
        Done(s);
        return;
      }
      format_ = req_.format().empty() ? "jsonl" : req_.format();
      if (format_ != "jsonl") {
        Done(absl::InvalidArgumentError(
            absl::StrCat("format: unsupported \"", format_, "\" (supported: jsonl)")));
        return;
      }
    } else if ((!req_.tenant_id().empty() && req_.tenant_id() != tenant_id_) ||
               (!req_.name().empty() && req_.name() != name_)) {
      Done(absl::InvalidArgumentError(
          "tenant_id and name belong in the first message only (later messages differ)"));
      return;
    }
    if (static_cast<int64_t>(data_.size() + req_.chunk().size()) > env_.max_dataset_bytes) {
      Done(absl::ResourceExhaustedError(absl::StrCat(
          "dataset exceeds the server's size limit of ", env_.max_dataset_bytes, " bytes")));
      return;
    }
    data_ += req_.chunk();
    req_.Clear();
    StartRead(&req_);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status Store() {
    absl::StatusOr<storage::Dataset> d =
        StoreDataset(env_, tenant_id_, name_, format_, data_, Actor(principal_));
    AuditRefused(env_, principal_, Mutation{"dataset.create", tenant_id_, "tenant/" + tenant_id_}, d.status());
    if (!d.ok()) return d.status();
    ToProto(*d, response_);
    return absl::OkStatus();
  }
  void Done(const absl::Status& s) {
    RecordCall(env_, "Datasets/UploadDataset", start_, s);
    Finish(ToGrpcStatus(s));
  }

  const ServiceEnv& env_;
  grpc::CallbackServerContext* ctx_;
  v1::Dataset* response_;
  absl::Time start_;
  storage::Principal principal_;
  v1::UploadDatasetRequest req_;
  bool first_ = true;
  std::string tenant_id_, name_, format_;
  std::string data_;
};

}  // namespace

absl::StatusOr<storage::Dataset> StoreDataset(const ServiceEnv& env, const std::string& tenant_id,
                                              const std::string& name, const std::string& format,
                                              std::string_view bytes, const std::string& actor) {
  // The tenant must exist before we spend time validating (ADMIN keys may name any tenant).
  if (absl::StatusOr<storage::Tenant> t = env.registry->GetTenant(tenant_id); !t.ok()) return t.status();
  if (!env.validate_dataset) {
    return absl::UnavailableError("this server has no dataset validator (no tokenizer loaded)");
  }
  absl::StatusOr<DatasetStats> stats = env.validate_dataset(bytes);
  if (!stats.ok()) return stats.status();
  absl::StatusOr<std::string> digest = env.registry->blobs().Put(bytes);
  if (!digest.ok()) return digest.status();
  storage::NewDataset nd;
  nd.tenant_id = tenant_id;
  nd.name = name;
  nd.format = format;
  nd.blob_digest = *digest;
  nd.num_examples = stats->num_examples;
  nd.num_tokens = stats->num_tokens;
  nd.num_loss_tokens = stats->num_loss_tokens;
  absl::StatusOr<storage::Dataset> d = env.registry->CreateDataset(nd, actor);
  if (d.ok()) {
    LogInfo("dataset stored", {{"tenant_id", tenant_id}, {"dataset_id", d->dataset_id},
                               {"examples", d->num_examples}, {"tokens", d->num_tokens},
                               {"bytes", d->size_bytes}});
  }
  return d;
}

grpc::ServerReadReactor<v1::UploadDatasetRequest>* DatasetsService::UploadDataset(
    grpc::CallbackServerContext* ctx, v1::Dataset* response) {
  return new UploadReactor(env_, ctx, response);
}

grpc::ServerUnaryReactor* DatasetsService::GetDataset(grpc::CallbackServerContext* ctx,
                                                      const v1::GetDatasetRequest* req, v1::Dataset* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Datasets/GetDataset", absl::Now(), bad);
  }
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeRead);
    if (!p.ok()) return p.status();
    if (req->dataset_id().empty()) return absl::InvalidArgumentError("dataset_id is required");
    absl::StatusOr<storage::Dataset> d = env_.registry->GetDataset(req->tenant_id(), req->dataset_id());
    if (!d.ok()) return d.status();
    ToProto(*d, resp);
    return absl::OkStatus();
  };
  return FinishUnary(env_, ctx, "Datasets/GetDataset", start, run());
}

grpc::ServerUnaryReactor* DatasetsService::ListDatasets(grpc::CallbackServerContext* ctx,
                                                        const v1::ListDatasetsRequest* req,
                                                        v1::ListDatasetsResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Datasets/ListDatasets", absl::Now(), bad);
  }
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    absl::StatusOr<storage::Principal> p = env_.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeRead);
    if (!p.ok()) return p.status();
    absl::StatusOr<storage::Tenant> t = env_.registry->GetTenant(req->tenant_id());
    if (!t.ok()) return t.status();
    absl::StatusOr<std::vector<storage::Dataset>> ds = env_.registry->ListDatasets(req->tenant_id());
    if (!ds.ok()) return ds.status();
    for (const storage::Dataset& d : *ds) ToProto(d, resp->add_datasets());
    return absl::OkStatus();
  };
  return FinishUnary(env_, ctx, "Datasets/ListDatasets", start, run());
}

grpc::ServerUnaryReactor* DatasetsService::DeleteDataset(grpc::CallbackServerContext* ctx,
                                                         const v1::DeleteDatasetRequest* req,
                                                         v1::DeleteDatasetResponse*) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Datasets/DeleteDataset", absl::Now(), bad);
  }
  absl::Time start = absl::Now();
  auto run = [&]() -> absl::Status {
    Mutation m{"dataset.delete", req->tenant_id(), "dataset/" + req->dataset_id()};
    absl::StatusOr<storage::Principal> p = AuthorizeTenantMutation(env_, *ctx, storage::kScopeFineTune, m);
    if (!p.ok()) return p.status();
    absl::Status s = req->dataset_id().empty() ? absl::InvalidArgumentError("dataset_id is required")
                                               : env_.registry->DeleteDataset(req->tenant_id(), req->dataset_id(), Actor(*p));
    AuditRefused(env_, *p, m, s);
    return s;
  };
  return FinishUnary(env_, ctx, "Datasets/DeleteDataset", start, run());
}

}  // namespace tessera::services
