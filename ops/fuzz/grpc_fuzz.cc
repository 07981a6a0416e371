// libFuzzer target: every tessera.v1 RPC's request validation, through the real gRPC server of
// fuzz_server.h (over loopback, with a generic stub, so RPCs added to the protos are covered by name).
// Input: line 1 "<Service>/<Method> <key>" (e.g. "Inference/Generate $ACME"; key "-" = none), then the
// request in protobuf text format; for client-streaming RPCs (UploadDataset) further messages follow
// after lines "---". $ADMIN, $ACME, $OTHER, $DATASET and $JOB are replaced by the server's keys and ids.
// A streamed answer is cancelled after its first message (WatchJob of a queued job never ends here).
// DeleteTenant of acme or other, CancelJob of $JOB and DeleteDataset of $DATASET are skipped, so the
// placeholders keep their meaning.
// Checked besides ASan/UBSan: the call ends with a canonical status that is never UNKNOWN, INTERNAL,
// UNIMPLEMENTED or DATA_LOSS, and an error always has a message.
#include <cstddef>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/text_format.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"
#include "ops/fuzz/fuzz_server.h"
#include "tessera/v1/admin.pb.h"
#include "tessera/v1/datasets.pb.h"
#include "tessera/v1/experts.pb.h"
#include "tessera/v1/fine_tuning.pb.h"
#include "tessera/v1/inference.pb.h"

namespace {

namespace pb = google::protobuf;

// One call; it deletes itself when done, after handing `done` the final status and whether an answer
// was read (then CANCELLED is ours).
class GenericCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  using Result = std::pair<grpc::Status, bool>;
  GenericCall(grpc::GenericStub* stub, const std::string& method, const std::string& key,
              std::vector<grpc::ByteBuffer> messages, std::future<Result>* done)
      : messages_(std::move(messages)) {
    *done = done_.get_future();
    if (!key.empty()) ctx_.AddMetadata("authorization", "Bearer " + key);
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    stub->PrepareBidiStreamingCall(&ctx_, method, grpc::StubOptions(), this);
    StartRead(&in_);
    NextWrite();
    StartCall();
  }

  void OnWriteDone(bool ok) override {
    if (ok) NextWrite();
  }
  void OnReadDone(bool ok) override {
    if (ok) {
      read_one_ = true;
      ctx_.TryCancel();  // one answer is enough (and WatchJob would not end)
    }
  }
  void OnDone(const grpc::Status& s) override {
    done_.set_value({s, read_one_});
    delete this;
  }

 private:
  void NextWrite() {
    if (next_ < messages_.size()) {
      StartWrite(&messages_[next_++]);
    } else {
      StartWritesDone();
    }
  }
  grpc::ClientContext ctx_;
  std::vector<grpc::ByteBuffer> messages_;
  size_t next_ = 0;
  grpc::ByteBuffer in_;
  bool read_one_ = false;
  std::promise<Result> done_;
};

grpc::GenericStub& Stub() {
  static grpc::GenericStub* stub = new grpc::GenericStub(
      grpc::CreateChannel(tessera::fuzz::GetFuzzServer().address(), grpc::InsecureChannelCredentials()));
  return *stub;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Link the descriptors of every tessera.v1 file into the generated pool.
  (void)tessera::v1::GenerateRequest::descriptor();
  (void)tessera::v1::CreateJobRequest::descriptor();
  (void)tessera::v1::UploadDatasetRequest::descriptor();
  (void)tessera::v1::GetVersionRequest::descriptor();
  (void)tessera::v1::CreateTenantRequest::descriptor();
  Stub();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const tessera::fuzz::FuzzServer& fs = tessera::fuzz::GetFuzzServer();
  std::string in = fs.Substitute(std::string(reinterpret_cast<const char*>(data), size));
  size_t eol = in.find('\n');
  std::string head = in.substr(0, eol);
  std::string rest = eol == std::string::npos ? "" : in.substr(eol + 1);
  size_t slash = head.find('/'), space = head.find(' ');
  if (slash == std::string::npos) return 0;
  std::string service = head.substr(0, slash);
  std::string method = head.substr(slash + 1, space == std::string::npos ? std::string::npos : space - slash - 1);
  std::string key = space == std::string::npos ? "" : head.substr(space + 1);
  if (key == "-") key.clear();
  // gRPC's client asserts on a metadata value outside printable ASCII: such a key never reaches a server.
  for (char c : key) {
    if (c < 0x20 || c > 0x7e) return 0;
  }

  const pb::ServiceDescriptor* sd = pb::DescriptorPool::generated_pool()->FindServiceByName("tessera.v1." + service);
  if (sd == nullptr) return 0;
  const pb::MethodDescriptor* md = sd->FindMethodByName(method);
  if (md == nullptr) return 0;
  const pb::Message* proto = pb::MessageFactory::generated_factory()->GetPrototype(md->input_type());

  std::vector<grpc::ByteBuffer> messages;
  size_t pos = 0;
  while (true) {
    size_t sep = rest.find("\n---\n", pos);
    std::unique_ptr<pb::Message> msg(proto->New());
    pb::TextFormat::Parser parser;
    if (!parser.ParseFromString(rest.substr(pos, sep == std::string::npos ? std::string::npos : sep - pos), msg.get())) {
      return 0;
    }
    // Keep the tenants, the dataset and the job the inputs name: deleting or cancelling them would make
    // later inputs mean something else (and a crash input would not reproduce on a fresh server).
    auto field = [&msg](const char* name) {
      const pb::FieldDescriptor* f = msg->GetDescriptor()->FindFieldByName(name);
      return f == nullptr || f->type() != pb::FieldDescriptor::TYPE_STRING || f->is_repeated()
                 ? std::string()
                 : msg->GetReflection()->GetString(*msg, f);
    };
    if (method == "DeleteTenant" && (field("tenant_id") == "acme" || field("tenant_id") == "other")) return 0;
    if (method == "CancelJob" && field("job_id") == fs.job_id) return 0;
    if (method == "DeleteDataset" && field("dataset_id") == fs.dataset_id) return 0;
    std::string bytes = msg->SerializeAsString();
    grpc::Slice slice(bytes);
    messages.emplace_back(&slice, 1);
    if (sep == std::string::npos || !md->client_streaming()) break;
    pos = sep + 5;
  }

  std::future<GenericCall::Result> done;
  new GenericCall(&Stub(), "/tessera.v1." + service + "/" + method, key, std::move(messages), &done);
  auto [st, cancelled_by_us] = done.get();
  switch (st.error_code()) {
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::DATA_LOSS:
      std::fprintf(stderr, "grpc_fuzz: %s/%s -> code %d: %s\n", service.c_str(), method.c_str(), st.error_code(),
                   st.error_message().c_str());
      __builtin_trap();
    default:
      break;
  }
  if (!st.ok() && st.error_message().empty() && !(cancelled_by_us && st.error_code() == grpc::StatusCode::CANCELLED)) {
    std::fprintf(stderr, "grpc_fuzz: %s/%s -> code %d without a message\n", service.c_str(), method.c_str(),
                 st.error_code());
    __builtin_trap();
  }
  return 0;
}
