// The FineTuning service and the scheduler: request validation naming each field, idempotency,
// pagination, cancel, WatchJob (replay + live + end), a real training run on random:tiny with
// auto-promotion, and durability across restarts (a queued job survives; a job RUNNING under a dead
// worker is requeued and finishes).
#include <thread>

#include "core/data/tasks.h"
#include "core/io/safetensors.h"
#include "core/train/auto_hparams.h"
#include "gtest/gtest.h"
#include "tests/services/checkpoint_gate.h"
#include "tests/services/test_server.h"

namespace tessera::services::testing {
namespace {

v1::CreateJobRequest BaseRequest(const std::string& dataset_id) {
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(dataset_id);
  req.mutable_hyperparameters()->set_max_steps(4);
  req.mutable_hyperparameters()->set_batch_size(4);
  req.mutable_hyperparameters()->set_seq_len(32);
  return req;
}

std::vector<v1::JobEvent> WatchAll(TestServer& server, const std::string& key, const std::string& job_id,
                                   grpc::Status* status, int64_t after_seq = 0) {
  auto stub = server.FineTuning();
  auto ctx = Ctx(key);
  v1::WatchJobRequest req;
  req.set_tenant_id("acme");
  req.set_job_id(job_id);
  req.set_after_seq(after_seq);
  auto reader = stub->WatchJob(ctx.get(), req);
  std::vector<v1::JobEvent> events;
  v1::JobEvent e;
  while (reader->Read(&e)) events.push_back(e);
  *status = reader->Finish();
  return events;
}

// The job as GetJob reports it now (tenant "acme").
v1::Job GetJob(TestServer& server, const std::string& key, const std::string& job_id) {
  v1::GetJobRequest g;
  g.set_tenant_id("acme");
  g.set_job_id(job_id);
  v1::Job job;
  const grpc::Status s = server.FineTuning()->GetJob(Ctx(key).get(), g, &job);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return job;
}

// Creates the job, follows WatchJob until it ends, and returns the job as GetJob reports it then.
v1::Job RunJob(TestServer& server, const std::string& key, const v1::CreateJobRequest& req) {
  v1::Job job;
  const grpc::Status created = server.FineTuning()->CreateJob(Ctx(key).get(), req, &job);
  EXPECT_TRUE(created.ok()) << created.error_message();
  grpc::Status st;
  const std::vector<v1::JobEvent> events = WatchAll(server, key, job.job_id(), &st);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_FALSE(events.empty());
  return GetJob(server, key, job.job_id());
}


// A job that sets no hyperparameters gets the auto rule's values for its dataset and the backbone
// (random:tiny: builtin:tiny's shape), and records them on the Job, in a WatchJob event and in the
// version's metadata; it keeps its best validation checkpoint.
TEST(JobsAutoTest, JobWithoutHyperparametersRecordsTheChosenValues) {
  TestServerOptions o;
  o.training = true;
  TestServer server(o);
  std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(24), &ds).ok());
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  v1::Job created;
  ASSERT_TRUE(server.FineTuning()->CreateJob(Ctx(key).get(), req, &created).ok());

  const train::ResolvedHparams want =
      train::ResolveHparams({ds.num_examples(), ds.num_tokens()}, {192, 4, 16, 4}, {});
  const v1::ResolvedHyperparameters& r = created.resolved_hyperparameters();
  EXPECT_EQ(r.hyperparameters().max_steps(), want.max_steps);
  EXPECT_EQ(r.hyperparameters().batch_size(), want.batch_size);
  EXPECT_DOUBLE_EQ(r.hyperparameters().learning_rate(), want.learning_rate);
  EXPECT_EQ(r.hyperparameters().warmup_steps(), want.warmup_steps);
  EXPECT_DOUBLE_EQ(r.relevance_threshold(), want.relevance_threshold);
  EXPECT_EQ(r.max_experts(), want.max_experts);
  EXPECT_EQ(r.eval_every(), want.eval_every);
  EXPECT_EQ(r.early_stopping_patience(), want.early_stopping_patience);
  EXPECT_TRUE(r.keep_best());
  EXPECT_EQ(r.auto_fields_size(), 6);
  // The accepted request shows the same values.
  EXPECT_EQ(created.hyperparameters().max_steps(), want.max_steps);
  EXPECT_EQ(created.expert_selection().auto_().max_experts(), want.max_experts);
  EXPECT_EQ(created.progress().max_steps(), want.max_steps);

  grpc::Status st;
  const std::vector<v1::JobEvent> events = WatchAll(server, key, created.job_id(), &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  const v1::Job job = GetJob(server, key, created.job_id());
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  EXPECT_EQ(job.resolved_hyperparameters().hyperparameters().max_steps(), want.max_steps);
  bool logged = false, best = false;
  for (const v1::JobEvent& e : events) {
    logged |= e.log().find(absl::StrCat("hyperparameters: max_steps=", want.max_steps, " (auto) batch_size=",
                                        want.batch_size, " (auto)")) != std::string::npos;
    best |= e.log().find("the version is the best validation checkpoint: step ") != std::string::npos;
  }
  EXPECT_TRUE(logged);
  EXPECT_TRUE(best);
  EXPECT_LE(job.progress().step(), want.max_steps);

  ASSERT_TRUE(job.has_result_version());
  absl::StatusOr<storage::ExpertVersion> v = server.registry().GetVersion("acme", job.result_version());
  ASSERT_TRUE(v.ok()) << v.status();
  absl::StatusOr<std::string> blob = server.registry().blobs().Get(v->sha256);
  ASSERT_TRUE(blob.ok()) << blob.status();
  auto file = io::SafetensorsFile::FromBytes(*blob);
  ASSERT_TRUE(file.ok()) << file.status();
  const auto& meta = (*file)->metadata();
  ASSERT_EQ(meta.count("hyperparameters"), 1u);
  absl::StatusOr<JobSpec> spec = JobSpec::FromJson(meta.at("hyperparameters"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->max_steps, want.max_steps);
  EXPECT_EQ(spec->auto_fields.size(), 6u);
  ASSERT_EQ(meta.count("best_step"), 1u);
  EXPECT_EQ(meta.count("stopped_early"), 1u);
}


// The dataset's completion length reaches the rule: 400 examples whose completions are 31 bytes (32 loss
// tokens with EOS on the byte-level tiny tokenizer) get 3x the epochs of short completions, the same
// data with 3-byte completions does not.
TEST(JobsAutoTest, LongCompletionsGetMoreSteps) {
  TestServer server(WithModel());
  std::string key = server.CreateTenant("acme");
  std::string long_jsonl, short_jsonl;
  for (int i = 0; i < 400; ++i) {
    const std::string p = absl::StrCat("{\"prompt\": \"item", 1000 + i, "=\", \"completion\": \"");
    long_jsonl += absl::StrCat(p, "abcdefghijklmnopqrstuvwxyz", 10000 + i, "\"}\n");
    short_jsonl += absl::StrCat(p, i % 1000 + 100, "\"}\n");
  }
  auto steps = [&](const std::string& jsonl, const std::string& name) -> int64_t {
    v1::Dataset ds;
    EXPECT_TRUE(server.Upload(key, "acme", name, jsonl, &ds).ok());
    v1::CreateJobRequest req;
    req.set_tenant_id("acme");
    req.set_training_dataset_id(ds.dataset_id());
    v1::Job created;
    grpc::Status st = server.FineTuning()->CreateJob(Ctx(key).get(), req, &created);
    EXPECT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(created.resolved_hyperparameters().hyperparameters().batch_size(), 8);  // pow2_floor(400/32)
    return created.resolved_hyperparameters().hyperparameters().max_steps();
  };
  EXPECT_EQ(steps(long_jsonl, "long"), 36 * 400 / 8);   // 32 loss tokens: 12 * min(32/8, 3) epochs
  EXPECT_EQ(steps(short_jsonl, "short"), 12 * 400 / 8);  // 4 loss tokens: 12 epochs
}

// The suite's multi-turn chat task in the OpenAI {"messages": [...]} form is a dataset the server
// accepts (rendered with the backbone's chat template) and trains on with the auto defaults.
TEST(JobsAutoTest, ChatTaskAsMessagesTrainsWithTheDefaults) {
  TestServerOptions o;
  o.training = true;
  TestServer server(o);
  std::string key = server.CreateTenant("acme");
  absl::StatusOr<data::Task> task = data::Task::Create("chat_recall", 7);
  ASSERT_TRUE(task.ok());
  v1::Dataset ds;
  grpc::Status up = server.Upload(key, "acme", "chat", data::MessagesJsonl(task->Generate(1, 12)), &ds);
  ASSERT_TRUE(up.ok()) << up.error_message();
  EXPECT_EQ(ds.num_examples(), 12);
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  req.mutable_hyperparameters()->set_max_steps(3);  // the auto rule's other values, a short run
  const v1::Job job = RunJob(server, key, req);
  EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  EXPECT_EQ(job.progress().step(), 3);
  EXPECT_EQ(job.resolved_hyperparameters().auto_fields_size(), 5);  // all but max_steps
}

TEST(JobsTest, CreateJobValidatesEveryField) {
  TestServer server;
  std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(8), &ds).ok());
  auto ft = server.FineTuning();
  struct Case {
    std::function<void(v1::CreateJobRequest*)> mutate;
    grpc::StatusCode code;
    std::string field;
  };
  std::vector<Case> cases = {
      {[](auto* r) { r->set_training_dataset_id(""); }, grpc::StatusCode::INVALID_ARGUMENT, "training_dataset_id"},
      {[](auto* r) { r->set_training_dataset_id("ds_nope"); }, grpc::StatusCode::NOT_FOUND, "training_dataset_id"},
      {[](auto* r) { r->set_validation_dataset_id("ds_nope"); }, grpc::StatusCode::NOT_FOUND, "validation_dataset_id"},
      {[](auto* r) { r->mutable_hyperparameters()->set_max_steps(0); }, grpc::StatusCode::INVALID_ARGUMENT,
       "hyperparameters.max_steps"},
      {[](auto* r) { r->mutable_hyperparameters()->set_batch_size(-1); }, grpc::StatusCode::INVALID_ARGUMENT,
       "hyperparameters.batch_size"},
      {[](auto* r) { r->mutable_hyperparameters()->set_seq_len(100000); }, grpc::StatusCode::INVALID_ARGUMENT,
       "hyperparameters.seq_len"},
      {[](auto* r) { r->mutable_hyperparameters()->set_learning_rate(0); }, grpc::StatusCode::INVALID_ARGUMENT,
       "hyperparameters.learning_rate"},
      {[](auto* r) { r->mutable_hyperparameters()->set_warmup_steps(5); }, grpc::StatusCode::INVALID_ARGUMENT,
       "hyperparameters.warmup_steps"},
      {[](auto* r) { r->mutable_hyperparameters()->set_weight_decay(2); }, grpc::StatusCode::INVALID_ARGUMENT,
       "hyperparameters.weight_decay"},
      {[](auto* r) { r->mutable_expert_selection()->mutable_auto_()->set_relevance_threshold(1.5); },
       grpc::StatusCode::INVALID_ARGUMENT, "expert_selection.auto.relevance_threshold"},
      {[](auto* r) { r->mutable_expert_selection()->mutable_auto_()->set_max_experts(-2); },
       grpc::StatusCode::INVALID_ARGUMENT, "expert_selection.auto.max_experts"},
      {[](auto* r) { r->mutable_expert_selection()->mutable_explicit_(); }, grpc::StatusCode::INVALID_ARGUMENT,
       "expert_selection.explicit.slots"},
      {[](auto* r) {
         auto* s = r->mutable_expert_selection()->mutable_explicit_()->add_slots();
         s->set_layer(9);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "slots[0].layer"},
      {[](auto* r) {
         auto* e = r->mutable_expert_selection()->mutable_explicit_();
         e->add_slots()->set_expert(3);
         e->add_slots()->set_expert(3);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "slots[1]"},
      {[](auto* r) { r->set_base_version(3); }, grpc::StatusCode::NOT_FOUND, "base_version"},
      {[](auto* r) { r->set_base_version(-3); }, grpc::StatusCode::INVALID_ARGUMENT, "base_version"},
      {[](auto* r) { r->set_idempotency_key("has space"); }, grpc::StatusCode::INVALID_ARGUMENT, "idempotency_key"},
      {[](auto* r) { r->set_suffix("has space"); }, grpc::StatusCode::INVALID_ARGUMENT, "suffix"},
      {[](auto* r) { r->set_suffix(std::string(65, 'a')); }, grpc::StatusCode::INVALID_ARGUMENT, "suffix: at most 64"},
      {[](auto* r) { r->set_suffix("caf\xc3\xa9"); }, grpc::StatusCode::INVALID_ARGUMENT, "suffix"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    v1::CreateJobRequest req = BaseRequest(ds.dataset_id());
    cases[i].mutate(&req);
    v1::Job job;
    grpc::Status st = ft->CreateJob(Ctx(key).get(), req, &job);
    EXPECT_EQ(st.error_code(), cases[i].code) << "case " << i << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(cases[i].field), std::string::npos)
        << "case " << i << ": " << st.error_message();
  }
  v1::ListJobsRequest l;
  l.set_tenant_id("acme");
  v1::ListJobsResponse list;
  ASSERT_TRUE(ft->ListJobs(Ctx(key).get(), l, &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);  // nothing was queued by a bad request
}

TEST(JobsTest, CreateGetListCancelIdempotency) {
  TestServer server;
  std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(8), &ds).ok());
  auto ft = server.FineTuning();

  v1::CreateJobRequest req = BaseRequest(ds.dataset_id());
  req.set_idempotency_key("run-1");
  req.set_suffix("support_v2-" + std::string(53, 'x'));  // 64 characters: the longest allowed
  req.mutable_expert_selection()->mutable_explicit_()->add_slots()->set_expert(5);
  v1::Job a, b;
  ASSERT_TRUE(ft->CreateJob(Ctx(key).get(), req, &a).ok());
  EXPECT_EQ(a.state(), v1::QUEUED);
  EXPECT_EQ(a.suffix(), req.suffix());
  {
    v1::GetJobRequest g;
    g.set_tenant_id("acme");
    g.set_job_id(a.job_id());
    v1::Job stored;
    ASSERT_TRUE(ft->GetJob(Ctx(key).get(), g, &stored).ok());
    EXPECT_EQ(stored.suffix(), req.suffix());  // stored in the registry, not echoed
  }
  EXPECT_EQ(a.job_id().rfind("job_", 0), 0u);
  EXPECT_EQ(a.hyperparameters().max_steps(), 4);
  // Unset fields are chosen by the auto rule; the explicit ones are kept and drive it (batch 4).
  EXPECT_DOUBLE_EQ(a.hyperparameters().learning_rate(), 1.5e-3);  // 3e-3 * sqrt(4 / 16)
  EXPECT_EQ(a.resolved_hyperparameters().hyperparameters().max_steps(), 4);
  EXPECT_EQ(std::vector<std::string>(a.resolved_hyperparameters().auto_fields().begin(),
                                     a.resolved_hyperparameters().auto_fields().end()),
            (std::vector<std::string>{"learning_rate", "warmup_steps"}));
  EXPECT_EQ(a.resolved_hyperparameters().early_stopping_patience(), 0);  // explicit max_steps: run them all
  EXPECT_TRUE(a.resolved_hyperparameters().keep_best());
  EXPECT_TRUE(a.expert_selection().has_explicit_());
  EXPECT_EQ(a.progress().max_steps(), 4);
  EXPECT_EQ(a.base_version(), 0);
  ASSERT_TRUE(ft->CreateJob(Ctx(key).get(), req, &b).ok());
  EXPECT_EQ(a.job_id(), b.job_id());

  // Pagination: 5 jobs, pages of 2, newest first, no duplicates.
  for (int i = 0; i < 4; ++i) {
    v1::CreateJobRequest r = BaseRequest(ds.dataset_id());
    v1::Job j;
    ASSERT_TRUE(ft->CreateJob(Ctx(key).get(), r, &j).ok());
  }
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    v1::ListJobsRequest l;
    l.set_tenant_id("acme");
    l.set_page_size(2);
    l.set_page_token(token);
    v1::ListJobsResponse page;
    ASSERT_TRUE(ft->ListJobs(Ctx(key).get(), l, &page).ok());
    for (const v1::Job& j : page.jobs()) seen.push_back(j.job_id());
    token = page.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen.back(), a.job_id());  // the oldest comes last
  v1::ListJobsRequest bad;
  bad.set_tenant_id("acme");
  bad.set_page_token("%%%garbage");
  v1::ListJobsResponse page;
  EXPECT_EQ(ft->ListJobs(Ctx(key).get(), bad, &page).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::GetJobRequest g;
  g.set_tenant_id("acme");
  g.set_job_id(a.job_id());
  v1::Job got;
  ASSERT_TRUE(ft->GetJob(Ctx(key).get(), g, &got).ok());
  EXPECT_EQ(got.idempotency_key(), "run-1");
  g.set_job_id("job_missing");
  EXPECT_EQ(ft->GetJob(Ctx(key).get(), g, &got).error_code(), grpc::StatusCode::NOT_FOUND);

  v1::CancelJobRequest c;
  c.set_tenant_id("acme");
  c.set_job_id(a.job_id());
  ASSERT_TRUE(ft->CancelJob(Ctx(key).get(), c, &got).ok());
  EXPECT_EQ(got.state(), v1::CANCELLED);
  EXPECT_TRUE(got.has_finished_at());
  grpc::Status st = ft->CancelJob(Ctx(key).get(), c, &got);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(st.error_message().find("CANCELLED"), std::string::npos) << st.error_message();

  // WatchJob on a finished job replays its events and ends.
  std::vector<v1::JobEvent> events = WatchAll(server, key, a.job_id(), &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].seq(), 1);
  EXPECT_EQ(events[0].state().state(), v1::QUEUED);
  EXPECT_EQ(events[1].state().state(), v1::CANCELLED);
  events = WatchAll(server, key, a.job_id(), &st, /*after_seq=*/1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].seq(), 2);
}

TEST(JobsTest, WatchStreamsLiveEventsUntilTheJobEnds) {
  TestServer server;
  std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(8), &ds).ok());
  v1::Job job;
  ASSERT_TRUE(server.FineTuning()->CreateJob(Ctx(key).get(), BaseRequest(ds.dataset_id()), &job).ok());
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ASSERT_TRUE(server.registry().AppendJobEvent(job.job_id(), "log", "{\"message\":\"hello\"}").ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    v1::CancelJobRequest c;
    c.set_tenant_id("acme");
    c.set_job_id(job.job_id());
    v1::Job j;
    EXPECT_TRUE(server.FineTuning()->CancelJob(Ctx(key).get(), c, &j).ok());
  });
  grpc::Status st;
  std::vector<v1::JobEvent> events = WatchAll(server, key, job.job_id(), &st);
  canceller.join();
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[1].log(), "hello");
  EXPECT_EQ(events[2].state().state(), v1::CANCELLED);
}

// The whole path (selection, training, evaluation, publishing, promotion, serving) with the backbone in
// f32 and in bf16 (bf16 overlays and KV caches, training through f32 master copies).
class JobsDtypeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(JobsDtypeTest, TrainingRunPublishesAndAutoPromotes) {
  TestServerOptions o;
  o.training = true;
  o.model = true;
  o.dtype = GetParam();
  TestServer server(o);
  std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(32), &ds).ok());
  v1::CreateJobRequest req = BaseRequest(ds.dataset_id());
  req.mutable_hyperparameters()->set_max_steps(6);
  req.mutable_hyperparameters()->set_learning_rate(0.01);
  req.mutable_hyperparameters()->set_warmup_steps(1);
  req.mutable_expert_selection()->mutable_auto_()->set_max_experts(2);
  req.set_auto_promote(true);
  v1::Job job;
  ASSERT_TRUE(server.FineTuning()->CreateJob(Ctx(key).get(), req, &job).ok());
  grpc::Status st;
  std::vector<v1::JobEvent> events = WatchAll(server, key, job.job_id(), &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_FALSE(events.empty());
  int progress = 0, selection = 0, version_events = 0, evals = 0;
  for (const v1::JobEvent& e : events) {
    progress += e.has_progress();
    selection += e.has_selection();
    version_events += e.has_version();
    evals += e.has_eval();
  }
  EXPECT_EQ(progress, 6);
  EXPECT_EQ(selection, 1);
  EXPECT_GE(evals, 1);
  EXPECT_EQ(version_events, 1);
  EXPECT_EQ(events.back().state().state(), v1::SUCCEEDED) << events.back().state().message();

  job = GetJob(server, key, job.job_id());
  EXPECT_EQ(job.state(), v1::SUCCEEDED);
  ASSERT_TRUE(job.has_result_version());
  EXPECT_EQ(job.result_version(), 1);
  EXPECT_EQ(job.progress().step(), 6);
  EXPECT_GE(job.selected_slots_size(), 1);
  EXPECT_LE(job.selected_slots_size(), 2);

  v1::GetVersionRequest vreq;
  vreq.set_tenant_id("acme");
  vreq.set_version(1);
  v1::ExpertVersion v;
  ASSERT_TRUE(server.Experts()->GetVersion(Ctx(key).get(), vreq, &v).ok());
  EXPECT_EQ(v.job_id(), job.job_id());
  EXPECT_EQ(v.slots_size(), job.selected_slots_size());
  EXPECT_GT(v.metrics().base_val_loss(), 0);
  // Promoted iff validation loss beat the live (base) version's on the same data.
  EXPECT_EQ(job.promoted(), v.metrics().val_loss() < v.metrics().base_val_loss());
  EXPECT_EQ(v.live(), job.promoted());
  if (job.promoted()) {
    v1::GenerateRequest gen;
    gen.set_tenant_id("acme");
    gen.set_prompt("add(1,2)=");
    gen.set_max_tokens(3);
    v1::GenerateResponse out;
    ASSERT_TRUE(server.Inference()->Generate(Ctx(key).get(), gen, &out).ok());
    EXPECT_EQ(out.expert_version(), 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, JobsDtypeTest, ::testing::Values("f32", "bf16"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// A job that needs more device memory than --train-memory-limit-bytes fails with the out-of-memory
// error (the same path a real device OOM takes), and the server keeps serving; a job with room succeeds.
TEST(JobsTest, JobOverItsMemoryLimitFailsAndServingContinues) {
  for (const int64_t limit : {int64_t{256} << 10, int64_t{512} << 20}) {
    SCOPED_TRACE("limit " + std::to_string(limit));
    TestServerOptions o;
    o.training = true;
    o.model = true;
    o.train_memory_limit_bytes = limit;
    TestServer server(o);
    std::string key = server.CreateTenant("acme");
    v1::Dataset ds;
    ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(32), &ds).ok());
    v1::CreateJobRequest req = BaseRequest(ds.dataset_id());
    req.mutable_hyperparameters()->set_max_steps(2);
    const v1::Job job = RunJob(server, key, req);
    if (limit < (int64_t{1} << 20)) {
      EXPECT_EQ(job.state(), v1::FAILED);
      EXPECT_EQ(job.error().rfind("out of memory: ", 0), 0u) << job.error();
      EXPECT_NE(job.error().find("memory limit of " + std::to_string(limit) + " bytes"), std::string::npos)
          << job.error();
    } else {
      EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.error();
    }
    v1::GenerateRequest gen;
    gen.set_tenant_id("acme");
    gen.set_prompt("add(1,2)=");
    gen.set_max_tokens(3);
    v1::GenerateResponse out;
    const grpc::Status served = server.Inference()->Generate(Ctx(key).get(), gen, &out);
    EXPECT_TRUE(served.ok()) << served.error_message();
    EXPECT_EQ(out.usage().completion_tokens(), 3);
  }
}

TEST(JobsTest, QueuedJobSurvivesRestartAndRunningJobOfDeadWorkerIsRequeued) {
  TestServerOptions o;
  o.training = false;  // jobs queue but are not run
  o.job_lease = absl::Seconds(1);
  auto server = std::make_unique<TestServer>(o);
  std::string key = server->CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server->Upload(key, "acme", "d", AdditionJsonl(16), &ds).ok());
  v1::Job queued, running;
  ASSERT_TRUE(server->FineTuning()->CreateJob(Ctx(key).get(), BaseRequest(ds.dataset_id()), &queued).ok());
  ASSERT_TRUE(server->FineTuning()->CreateJob(Ctx(key).get(), BaseRequest(ds.dataset_id()), &running).ok());
  // A worker that claims one job and dies (never heartbeats): the oldest is claimed first.
  absl::StatusOr<std::optional<storage::Job>> claimed =
      server->registry().ClaimNextJob("dead-worker", absl::Milliseconds(500));
  ASSERT_TRUE(claimed.ok() && claimed->has_value());
  std::string dead_job = (*claimed)->job_id;
  std::string other_job = dead_job == queued.job_id() ? running.job_id() : queued.job_id();

  // Restart without running jobs: nothing is lost.
  server->Restart();
  v1::GetJobRequest g;
  g.set_tenant_id("acme");
  g.set_job_id(other_job);
  v1::Job got;
  ASSERT_TRUE(server->FineTuning()->GetJob(Ctx(key).get(), g, &got).ok());
  EXPECT_EQ(got.state(), v1::QUEUED);
  std::string data_dir = server->data_dir();

  // Restart with the scheduler: the dead worker's job is requeued (lease expired) and both finish.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  o.training = true;
  o.data_dir = data_dir;
  // The live worker's own lease is generous: a loaded machine must not expire it mid-run (only the
  // dead worker's 500 ms lease is meant to expire here).
  o.job_lease = absl::Seconds(30);
  server->Stop();
  TestServer live(o);
  for (const std::string& id : {other_job, dead_job}) {
    g.set_job_id(id);
    grpc::Status st;
    std::vector<v1::JobEvent> events = WatchAll(live, key, id, &st);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_TRUE(live.FineTuning()->GetJob(Ctx(key).get(), g, &got).ok());
    EXPECT_EQ(got.state(), v1::SUCCEEDED) << id << ": " << got.error();
    if (id == dead_job) {
      EXPECT_EQ(got.attempts(), 2);
    }
  }
}

}  // namespace
}  // namespace tessera::services::testing

namespace tessera::services::testing {
namespace {

TEST(JobsRestartTest, RunningJobResumesFromItsCheckpointAfterAGracefulRestart) {
  CheckpointGate gate;  // holds the job at its first checkpoint (step 15) until the restart stops it
  TestServerOptions o;
  o.training = true;
  o.wrap_runner = gate.Wrapper();
  auto server = std::make_unique<TestServer>(o);
  std::string key = server->CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server->Upload(key, "acme", "d", AdditionJsonl(32), &ds).ok());
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  req.mutable_hyperparameters()->set_max_steps(60);  // checkpoints every 15 steps
  req.mutable_hyperparameters()->set_batch_size(4);
  req.mutable_hyperparameters()->set_seq_len(32);
  req.mutable_expert_selection()->mutable_explicit_()->add_slots()->set_expert(2);
  v1::Job job;
  ASSERT_TRUE(server->FineTuning()->CreateJob(Ctx(key).get(), req, &job).ok());
  // Once a checkpoint exists (the job is held there), restart mid-run.
  ASSERT_TRUE(gate.WaitHeld(absl::Seconds(300))) << "the job never reached its first checkpoint";
  {
    absl::StatusOr<storage::Job> j = server->registry().GetJob("acme", job.job_id());
    ASSERT_TRUE(j.ok());
    ASSERT_EQ(j->state, storage::JobState::kRunning);
    ASSERT_FALSE(j->checkpoint.empty());
  }
  server->Restart();
  grpc::Status st;
  std::vector<v1::JobEvent> events = WatchAll(*server, key, job.job_id(), &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  v1::GetJobRequest g;
  g.set_tenant_id("acme");
  g.set_job_id(job.job_id());
  ASSERT_TRUE(server->FineTuning()->GetJob(Ctx(key).get(), g, &job).ok());
  EXPECT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  EXPECT_EQ(job.attempts(), 2);
  EXPECT_EQ(job.progress().step(), 60);
  bool resumed = false;
  int64_t first_step_after_resume = 0;
  for (const v1::JobEvent& e : events) {
    if (e.log().find("resumed from the checkpoint at step") != std::string::npos) resumed = true;
    if (resumed && e.has_progress() && first_step_after_resume == 0) first_step_after_resume = e.progress().step();
  }
  EXPECT_TRUE(resumed);
  EXPECT_GT(first_step_after_resume, 15);  // continued, not restarted from step 1
}

}  // namespace
}  // namespace tessera::services::testing

namespace tessera::services::testing {
namespace {

TEST(JobsCancelTest, CancellingARunningJobStopsItAndFreesTheWorker) {
  TestServerOptions o;
  o.training = true;
  o.job_heartbeat = absl::Milliseconds(200);
  TestServer server(o);
  std::string key = server.CreateTenant("acme");
  v1::Dataset ds;
  ASSERT_TRUE(server.Upload(key, "acme", "d", AdditionJsonl(16), &ds).ok());
  v1::CreateJobRequest req;
  req.set_tenant_id("acme");
  req.set_training_dataset_id(ds.dataset_id());
  req.mutable_hyperparameters()->set_max_steps(100000);
  req.mutable_hyperparameters()->set_batch_size(2);
  req.mutable_hyperparameters()->set_seq_len(16);
  req.mutable_expert_selection()->mutable_explicit_()->add_slots()->set_expert(1);
  v1::Job long_job;
  ASSERT_TRUE(server.FineTuning()->CreateJob(Ctx(key).get(), req, &long_job).ok());
  absl::Time deadline = absl::Now() + absl::Seconds(300);
  for (;;) {
    absl::StatusOr<storage::Job> j = server.registry().GetJob("acme", long_job.job_id());
    ASSERT_TRUE(j.ok());
    if (j->progress.step >= 2) break;
    ASSERT_LT(absl::Now(), deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  v1::CancelJobRequest c;
  c.set_tenant_id("acme");
  c.set_job_id(long_job.job_id());
  v1::Job cancelled;
  ASSERT_TRUE(server.FineTuning()->CancelJob(Ctx(key).get(), c, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::CANCELLED);

  // The single worker slot frees up: a short job queued now runs to completion.
  req.mutable_hyperparameters()->set_max_steps(2);
  const v1::Job short_job = RunJob(server, key, req);
  EXPECT_EQ(short_job.state(), v1::SUCCEEDED);
  const v1::Job after = GetJob(server, key, long_job.job_id());
  EXPECT_EQ(after.state(), v1::CANCELLED);
  EXPECT_FALSE(after.has_result_version());
  absl::StatusOr<std::vector<storage::ExpertVersion>> versions = server.registry().ListVersions("acme");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 1u);  // only the short job's
  EXPECT_EQ((*versions)[0].job_id, short_job.job_id());
}

}  // namespace
}  // namespace tessera::services::testing
