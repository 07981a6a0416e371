#include "services/inference_service.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/util/utf8_sanitize.h"

namespace tessera::services {
namespace {

constexpr size_t kMaxPromptBytes = 64 << 10;
constexpr int kMaxMessages = 256;
constexpr int kMaxStops = 16;
constexpr int kMaxTopLogprobs = 20;  // OpenAI's chat limit
constexpr int kDefaultMaxTokens = 64;

absl::Status EngineAvailable(const ServiceEnv& env) {
  if (env.engine == nullptr) return InferenceUnavailable(env);
  return absl::OkStatus();
}

// Exactly one of the raw text field (`text_field` names it in errors) or `messages`; the whole input is
// bounded by kMaxPromptBytes. Roles and contents are checked by the chat template when it renders.
absl::StatusOr<TextInput> InputFromProto(const std::string& text, const char* text_field,
                                         const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages) {
  TextInput in;
  if (!text.empty() && !messages.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("give either ", text_field, " or messages, not both"));
  }
  if (text.empty() && messages.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(text_field, " or messages is required"));
  }
  if (messages.size() > kMaxMessages) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages: at most ", kMaxMessages, " messages, got ", messages.size()));
  }
  size_t bytes = text.size();
  for (int i = 0; i < messages.size(); ++i) {
    if (messages[i].role().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("messages[", i, "].role is required"));
    }
    bytes += messages[i].role().size() + messages[i].content().size();
    in.messages.push_back({messages[i].role(), messages[i].content()});
  }
  if (bytes > kMaxPromptBytes) {
    return absl::InvalidArgumentError(absl::StrCat(messages.empty() ? text_field : "messages", ": at most ",
                                                   kMaxPromptBytes, " bytes, got ", bytes));
  }
  in.text = text;
  return in;
}

absl::StatusOr<GenerateParams> ParamsFromProto(const ServiceEnv& env, const v1::GenerateRequest& r) {
  GenerateParams p;
  absl::StatusOr<TextInput> input = InputFromProto(r.prompt(), "prompt", r.messages());
  if (!input.ok()) return input.status();
  p.input = *std::move(input);
  if (r.max_tokens() < 0 || r.max_tokens() > env.max_generate_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens: must be in [0, ", env.max_generate_tokens,
                                                   "] (0 = default ", kDefaultMaxTokens, "), got ",
                                                   r.max_tokens()));
  }
  p.max_tokens = r.max_tokens() == 0 ? kDefaultMaxTokens : r.max_tokens();
  if (!std::isfinite(r.temperature()) || r.temperature() < 0 || r.temperature() > 10) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature: must be in [0, 10] (0 = greedy), got ", r.temperature()));
  }
  p.temperature = r.temperature();
  if (r.top_k() < 0) return absl::InvalidArgumentError(absl::StrCat("top_k: must be >= 0, got ", r.top_k()));
  p.top_k = r.top_k();
  if (!std::isfinite(r.top_p()) || r.top_p() < 0 || r.top_p() > 1) {
    return absl::InvalidArgumentError(absl::StrCat("top_p: must be in [0, 1], got ", r.top_p()));
  }
  p.top_p = r.top_p() == 0 ? 1.0f : r.top_p();
  p.seed = r.seed();
  if (r.stop_size() > kMaxStops) {
    return absl::InvalidArgumentError(absl::StrCat("stop: at most ", kMaxStops, " strings, got ", r.stop_size()));
  }
  for (int i = 0; i < r.stop_size(); ++i) {
    if (r.stop(i).empty()) return absl::InvalidArgumentError(absl::StrCat("stop[", i, "]: must not be empty"));
    p.stop.push_back(r.stop(i));
  }
  p.return_routing = r.return_routing();
  if (r.top_logprobs() < 0 || r.top_logprobs() > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs: must be in [0, ", kMaxTopLogprobs, "], got ", r.top_logprobs()));
  }
  if (r.top_logprobs() > 0 && !r.logprobs()) {
    return absl::InvalidArgumentError("top_logprobs: requires logprobs to be true");
  }
  p.logprobs = r.logprobs();
  p.top_logprobs = r.top_logprobs();
  return p;
}

void LogprobsToProto(const std::vector<TokenLogprob>& in,
                     google::protobuf::RepeatedPtrField<v1::TokenLogprob>* out) {
  for (const TokenLogprob& t : in) {
    v1::TokenLogprob* p = out->Add();
    p->set_token_id(t.id);
    p->set_token(t.token);
    p->set_token_bytes(t.bytes);
    p->set_logprob(t.logprob);
    if (!t.top.empty()) LogprobsToProto(t.top, p->mutable_top_logprobs());
  }
}

absl::StatusOr<std::optional<int64_t>> VersionFromProto(bool has, int64_t v) {
  if (!has) return std::optional<int64_t>();
  if (v < 0) return absl::InvalidArgumentError(absl::StrCat("version: must be >= 0 (0 = base), got ", v));
  return std::optional<int64_t>(v);
}

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return v1::LENGTH;
    case FinishReason::kStop: return v1::STOP;
    case FinishReason::kEos: return v1::EOS;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void RoutingToProto(const std::vector<LayerRoutingStats>& in, v1::Routing* out) {
  for (const LayerRoutingStats& l : in) {
    v1::LayerRouting* p = out->add_layers();
    p->set_layer(l.layer);
    for (int64_t n : l.expert_tokens) p->add_expert_tokens(n);
    for (int e : l.overlay_experts) p->add_overlay_experts(e);
    p->set_entropy(l.entropy);
  }
}

}  // namespace

absl::StatusOr<RateTicket> AdmitInference(const ServiceEnv& env, const std::string& tenant, const TextInput& input,
                                          int64_t max_tokens) {
  if (env.rate_limiter == nullptr) return RateTicket{tenant, 0};
  int64_t bytes = static_cast<int64_t>(input.text.size());
  for (const ChatMessage& m : input.messages) bytes += static_cast<int64_t>(m.role.size() + m.content.size());
  return env.rate_limiter->Admit(tenant, RateLimiter::Estimate(bytes, max_tokens));
}

void SettleInference(const ServiceEnv& env, const RateTicket& ticket, const absl::Status& s, int64_t tokens) {
  if (env.rate_limiter != nullptr) env.rate_limiter->Settle(ticket, s, tokens);
}

void RecordGeneration(const ServiceEnv& env, const std::string& tenant, const GenerateOutput& out) {
  env.metrics->Add("tessera_generated_tokens_total", {{"tenant", tenant}}, out.completion_tokens);
  env.metrics->Add("tessera_prompt_tokens_total", {{"tenant", tenant}}, out.prompt_tokens);
  for (const LayerRoutingStats& l : out.routing) {
    for (size_t e = 0; e < l.expert_tokens.size(); ++e) {
      if (l.expert_tokens[e] == 0) continue;
      env.metrics->Add("tessera_expert_routed_tokens_total",
                       {{"tenant", tenant}, {"layer", std::to_string(l.layer)}, {"expert", std::to_string(e)}},
                       static_cast<double>(l.expert_tokens[e]));
    }
  }
}

namespace {

// The deadline the client set (none: InfiniteFuture), for the runtime to stop at.
absl::Time DeadlineOf(const grpc::CallbackServerContext& ctx) {
  const std::chrono::system_clock::time_point d = ctx.deadline();
  if (d >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

}  // namespace

// Authorizes on the callback thread (a registry lookup, as the quick RPCs do) so that the work is queued
// under the caller's real tenant, never under a tenant id it merely claims.
grpc::ServerUnaryReactor* InferenceService::Generate(grpc::CallbackServerContext* ctx,
                                                     const v1::GenerateRequest* req,
                                                     v1::GenerateResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Inference/Generate", absl::Now(), bad);
  }
  const ServiceEnv& env = env_;
  absl::StatusOr<storage::Principal> p = env.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeInference);
  if (!p.ok()) return FinishUnary(env, ctx, "Inference/Generate", absl::Now(), p.status());
  return RunOnPool(env_, ctx, "Inference/Generate", [&env, ctx, req, resp]() -> absl::Status {
    absl::StatusOr<GenerateParams> params = ParamsFromProto(env, *req);
    if (!params.ok()) return params.status();
    absl::StatusOr<std::optional<int64_t>> version = VersionFromProto(req->has_version(), req->version());
    if (!version.ok()) return version.status();
    if (absl::Status s = EngineAvailable(env); !s.ok()) return s;
    // A client that cancels or whose deadline passes stops the generation (it leaves the batch).
    params->cancelled = [ctx] { return ctx->IsCancelled(); };
    params->deadline = DeadlineOf(*ctx);
    absl::StatusOr<RateTicket> ticket = AdmitInference(env, req->tenant_id(), params->input, params->max_tokens);
    if (!ticket.ok()) return ticket.status();
    absl::StatusOr<GenerateOutput> out = env.engine->Generate(
        req->tenant_id(), *version, *params, [ctx](std::string_view) { return !ctx->IsCancelled(); });
    SettleInference(env, *ticket, out.status(), out.ok() ? out->prompt_tokens + out->completion_tokens : 0);
    if (!out.ok()) return out.status();
    resp->set_text(Utf8Sanitize(out->text));
    resp->set_finish_reason(ToProto(out->finish_reason));
    resp->set_expert_version(out->version);
    resp->mutable_usage()->set_prompt_tokens(out->prompt_tokens);
    resp->mutable_usage()->set_completion_tokens(out->completion_tokens);
    if (params->return_routing) RoutingToProto(out->routing, resp->mutable_routing());
    LogprobsToProto(out->logprobs, resp->mutable_logprobs());
    RecordGeneration(env, req->tenant_id(), *out);
    return absl::OkStatus();
  }, env.pool, req->tenant_id());
}

grpc::ServerWriteReactor<v1::GenerateChunk>* InferenceService::GenerateStream(
    grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req) {
  const ServiceEnv& env = env_;
  constexpr char kMethod[] = "Inference/GenerateStream";
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) return new RejectedWriter<v1::GenerateChunk>(env, kMethod, bad);
  absl::StatusOr<storage::Principal> p = env.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeInference);
  if (!p.ok()) return new RejectedWriter<v1::GenerateChunk>(env, kMethod, p.status());
  // Bounded before a thread is made for it (stream_limiter.h).
  absl::StatusOr<std::shared_ptr<StreamSlot>> acquired = AcquireStreamSlot(env, req->tenant_id(), "GenerateStream");
  if (!acquired.ok()) return new RejectedWriter<v1::GenerateChunk>(env, kMethod, acquired.status());
  std::shared_ptr<StreamSlot> slot = *std::move(acquired);
  return new ThreadedWriter<v1::GenerateChunk>(
      env_, kMethod,
      [&env, ctx, req, slot](ThreadedWriter<v1::GenerateChunk>* w) -> absl::Status {
        absl::StatusOr<GenerateParams> params = ParamsFromProto(env, *req);
        if (!params.ok()) return params.status();
        absl::StatusOr<std::optional<int64_t>> version = VersionFromProto(req->has_version(), req->version());
        if (!version.ok()) return version.status();
        if (absl::Status s = EngineAvailable(env); !s.ok()) return s;
        absl::StatusOr<RateTicket> ticket = AdmitInference(env, req->tenant_id(), params->input, params->max_tokens);
        if (!ticket.ok()) {
          AddRetryAfterTrailer(*ctx, ticket.status());  // before the body's status finishes the stream
          return ticket.status();
        }
        // Logprobs arrive just before the delta that carries their text (inference_engine.h); those
        // left after the last delta go in the last chunk.
        std::vector<TokenLogprob> pending;
        if (params->logprobs) {
          params->on_logprobs = [&pending](std::vector<TokenLogprob> lp) {
            pending.insert(pending.end(), std::make_move_iterator(lp.begin()), std::make_move_iterator(lp.end()));
          };
        }
        params->cancelled = [w] { return w->cancelled(); };
        params->deadline = DeadlineOf(*ctx);
        // Deltas arrive before the engine knows the version only in name: it is fixed at admission, so
        // the final chunk's expert_version is the one that served every delta.
        absl::StatusOr<GenerateOutput> out = env.engine->Generate(
            req->tenant_id(), *version, *params, [w, &pending](std::string_view delta) {
              if (delta.empty()) return !w->cancelled();
              v1::GenerateChunk chunk;
              chunk.set_text(Utf8Sanitize(delta));
              LogprobsToProto(pending, chunk.mutable_logprobs());
              pending.clear();
              return w->Write(chunk);
            });
        SettleInference(env, *ticket, out.status(), out.ok() ? out->prompt_tokens + out->completion_tokens : 0);
        if (!out.ok()) return out.status();
        v1::GenerateChunk last;
        LogprobsToProto(pending, last.mutable_logprobs());
        last.set_finish_reason(ToProto(out->finish_reason));
        last.set_expert_version(out->version);
        last.mutable_usage()->set_prompt_tokens(out->prompt_tokens);
        last.mutable_usage()->set_completion_tokens(out->completion_tokens);
        if (params->return_routing) RoutingToProto(out->routing, last.mutable_routing());
        RecordGeneration(env, req->tenant_id(), *out);
        if (!w->Write(last)) return absl::CancelledError("the client went away");
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* InferenceService::Score(grpc::CallbackServerContext* ctx,
                                                  const v1::ScoreRequest* req, v1::ScoreResponse* resp) {
  if (absl::Status bad = RequestUtf8Status(*req); !bad.ok()) {
    return FinishUnary(env_, ctx, "Inference/Score", absl::Now(), bad);
  }
  const ServiceEnv& env = env_;
  absl::StatusOr<storage::Principal> p = env.auth->AuthorizeTenant(*ctx, req->tenant_id(), storage::kScopeInference);
  if (!p.ok()) return FinishUnary(env, ctx, "Inference/Score", absl::Now(), p.status());
  return RunOnPool(env_, ctx, "Inference/Score", [&env, req, resp]() -> absl::Status {
    absl::StatusOr<TextInput> input = InputFromProto(req->text(), "text", req->messages());
    if (!input.ok()) return input.status();
    absl::StatusOr<std::optional<int64_t>> version = VersionFromProto(req->has_version(), req->version());
    if (!version.ok()) return version.status();
    if (absl::Status s = EngineAvailable(env); !s.ok()) return s;
    absl::StatusOr<RateTicket> ticket = AdmitInference(env, req->tenant_id(), *input, 0);
    if (!ticket.ok()) return ticket.status();
    absl::StatusOr<ScoreOutput> out =
        env.engine->Score(req->tenant_id(), *version, *input, req->return_routing());
    SettleInference(env, *ticket, out.status(), out.ok() ? out->num_tokens : 0);
    if (!out.ok()) return out.status();
    resp->set_total_logprob(out->total_logprob);
    resp->set_num_tokens(out->num_tokens);
    resp->set_perplexity(out->perplexity);
    resp->set_expert_version(out->version);
    if (req->return_routing()) RoutingToProto(out->routing, resp->mutable_routing());
    return absl::OkStatus();
  }, env.pool, req->tenant_id());
}

}  // namespace tessera::services
