// What grpcurl relies on, checked at the wire level with a generic stub (no .proto files): the
// standard grpc.health.v1.Health service answers SERVING, and server reflection lists every
// tessera.v1 service.
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

grpc::ByteBuffer Bytes(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

std::string ToString(const grpc::ByteBuffer& b) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(b.Dump(&slices).ok());
  std::string out;
  for (const grpc::Slice& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

TEST(WireTest, HealthServiceAnswersServing) {
  TestServer server;
  grpc::GenericStub stub(server.channel());
  // HealthCheckRequest{service: ""} is the empty message; HealthCheckResponse{status: SERVING(1)} is
  // field 1, varint 1.
  for (const std::string& service : {std::string(), std::string("tessera.v1.FineTuning")}) {
    grpc::ClientContext ctx;
    std::string req;
    if (!service.empty()) req = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
    grpc::ByteBuffer request = Bytes(req), response;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                   [&](grpc::Status s) {
                     std::lock_guard<std::mutex> lock(mu);
                     status = s;
                     done = true;
                     cv.notify_all();
                   });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    ASSERT_TRUE(status.ok()) << service << ": " << status.error_message();
    EXPECT_EQ(ToString(response), std::string("\x08\x01", 2)) << service;
  }
}

TEST(WireTest, ReflectionListsTheTesseraServices) {
  TestServer server;
  grpc::GenericStub stub(server.channel());
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  auto call = stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  // ServerReflectionRequest{list_services: "*"}: field 7, length-delimited.
  call->Write(Bytes(std::string("\x3a\x01*", 3)), reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  std::string bytes = ToString(response);
  for (const char* name : {"tessera.v1.Admin", "tessera.v1.Datasets", "tessera.v1.Experts", "tessera.v1.FineTuning",
                           "tessera.v1.Inference", "grpc.health.v1.Health"}) {
    EXPECT_NE(bytes.find(name), std::string::npos) << name;
  }
  call->WritesDone(reinterpret_cast<void*>(4));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(5)) {
  }
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace tessera::services::testing
