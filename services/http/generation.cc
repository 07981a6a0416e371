#include "services/http/generation.h"

#include <limits>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/util/utf8_sanitize.h"
#include "services/http/connection_watch.h"
#include "services/http/errors.h"
#include "services/http/json_fields.h"
#include "services/http/sse.h"
#include "services/inference_service.h"

namespace tessera::services::http {
namespace {

constexpr int64_t kDefaultCompletionTokens = 16;  // OpenAI's default for /v1/completions
constexpr int64_t kDefaultChatTokens = 64;        // Tessera's gRPC default (OpenAI's is "the context")
constexpr int kMaxStops = 16;
constexpr int64_t kMaxLegacyLogprobs = 5;  // OpenAI's limits
constexpr int64_t kMaxTopLogprobs = 20;

uint64_t RandomU64() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng();
}

std::string RandomId(const char* prefix) {
  static constexpr char kAlphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += kAlphabet[RandomU64() % 62];
  return id;
}

absl::Status Unsupported(const char* param, const char* what) {
  return FieldError(param, std::string(what) + " is not supported by this server");
}

absl::Status ReadStop(const Json& body, std::vector<std::string>* out) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    if (it->get<std::string>().empty()) return FieldError("stop", "must not be an empty string");
    out->push_back(it->get<std::string>());
    return absl::OkStatus();
  }
  if (!it->is_array()) return FieldError("stop", std::string("must be a string or an array of strings, got ") + JsonTypeName(*it));
  if (it->size() > kMaxStops) return FieldError("stop", absl::StrCat("at most ", kMaxStops, " strings, got ", it->size()));
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& s = (*it)[i];
    std::string path = absl::StrCat("stop[", i, "]");
    if (!s.is_string()) return FieldError(path, std::string("must be a string, got ") + JsonTypeName(s));
    if (s.get<std::string>().empty()) return FieldError(path, "must not be empty");
    out->push_back(s.get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

const char* FinishReasonName(FinishReason r) { return r == FinishReason::kLength ? "length" : "stop"; }

absl::StatusOr<CompletionRequest> ReadCompletionRequest(const Call& call, const Json& body, Endpoint endpoint) {
  CompletionRequest out;
  absl::StatusOr<std::optional<std::string>> model = GetString(body, "model");
  if (!model.ok()) return model.status();
  if (!*model || (*model)->empty()) return FieldError("model", "you must provide a model parameter");
  out.model_name = **model;

  GenerateParams& p = out.params;
  std::optional<int64_t> max_tokens;
  if (endpoint == Endpoint::kChat) {
    absl::StatusOr<std::optional<int64_t>> m = GetInt(body, "max_completion_tokens");
    if (!m.ok()) return m.status();
    max_tokens = *m;
  }
  const char* max_name = max_tokens ? "max_completion_tokens" : "max_tokens";
  if (!max_tokens) {
    absl::StatusOr<std::optional<int64_t>> m = GetInt(body, "max_tokens");
    if (!m.ok()) return m.status();
    max_tokens = *m;
  }
  int64_t limit = call.env.max_generate_tokens;
  int64_t n_tokens = max_tokens.value_or(endpoint == Endpoint::kChat ? kDefaultChatTokens : kDefaultCompletionTokens);
  if (n_tokens < 1 || n_tokens > limit) {
    return FieldError(max_name, absl::StrCat("must be in [1, ", limit, "], got ", n_tokens));
  }
  p.max_tokens = static_cast<int>(n_tokens);

  absl::StatusOr<std::optional<double>> temperature = GetNumber(body, "temperature");
  if (!temperature.ok()) return temperature.status();
  double t = temperature->value_or(1.0);
  if (!(t >= 0 && t <= 2)) return FieldError("temperature", absl::StrCat("must be in [0, 2], got ", t));
  p.temperature = static_cast<float>(t);

  absl::StatusOr<std::optional<double>> top_p = GetNumber(body, "top_p");
  if (!top_p.ok()) return top_p.status();
  double tp = top_p->value_or(1.0);
  if (!(tp >= 0 && tp <= 1)) return FieldError("top_p", absl::StrCat("must be in [0, 1], got ", tp));
  if (tp == 0) p.temperature = 0;  // only the most likely token: greedy
  p.top_p = tp == 0 ? 1.0f : static_cast<float>(tp);

  absl::StatusOr<std::optional<int64_t>> top_k = GetInt(body, "top_k");
  if (!top_k.ok()) return top_k.status();
  if (top_k->value_or(0) < 0 || top_k->value_or(0) > std::numeric_limits<int32_t>::max()) {
    return FieldError("top_k", absl::StrCat("must be in [0, 2^31 - 1] (0 = no top-k cut), got ", **top_k));
  }
  p.top_k = static_cast<int>(top_k->value_or(0));

  absl::StatusOr<std::optional<int64_t>> seed = GetInt(body, "seed");
  if (!seed.ok()) return seed.status();
  p.seed = *seed ? static_cast<uint64_t>(**seed) : RandomU64();
  // Routing statistics feed the expert-utilization metrics (and the console's heat map); counting a
  // token's top-k choices is negligible next to the forward pass.
  p.return_routing = true;

  if (absl::Status s = ReadStop(body, &p.stop); !s.ok()) return s;

  for (const char* key : {"n", "best_of"}) {
    absl::StatusOr<std::optional<int64_t>> n = GetInt(body, key);
    if (!n.ok()) return n.status();
    if (n->value_or(1) != 1) return FieldError(key, absl::StrCat("only 1 is supported, got ", **n));
  }
  for (const char* key : {"frequency_penalty", "presence_penalty"}) {
    absl::StatusOr<std::optional<double>> v = GetNumber(body, key);
    if (!v.ok()) return v.status();
    if (v->value_or(0) != 0) return Unsupported(key, "a non-zero penalty");
  }
  if (auto it = body.find("logit_bias"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return FieldError("logit_bias", std::string("must be an object, got ") + JsonTypeName(*it));
    if (!it->empty()) return Unsupported("logit_bias", "logit_bias");
  }
  if (endpoint == Endpoint::kCompletions) {
    absl::StatusOr<std::optional<int64_t>> lp = GetInt(body, "logprobs");
    if (!lp.ok()) return lp.status();
    if (*lp) {
      if (**lp < 0 || **lp > kMaxLegacyLogprobs) {
        return FieldError("logprobs", absl::StrCat("must be in [0, ", kMaxLegacyLogprobs, "], got ", **lp));
      }
      p.logprobs = true;
      p.top_logprobs = static_cast<int>(**lp);
    }
    absl::StatusOr<std::optional<bool>> echo = GetBool(body, "echo");
    if (!echo.ok()) return echo.status();
    if (echo->value_or(false)) return Unsupported("echo", "echo");
    absl::StatusOr<std::optional<std::string>> suffix = GetString(body, "suffix");
    if (!suffix.ok()) return suffix.status();
    if (*suffix && !(*suffix)->empty()) return Unsupported("suffix", "suffix (insertion)");
  } else {
    absl::StatusOr<std::optional<bool>> lp = GetBool(body, "logprobs");
    if (!lp.ok()) return lp.status();
    absl::StatusOr<std::optional<int64_t>> top = GetInt(body, "top_logprobs");
    if (!top.ok()) return top.status();
    if (*top) {
      if (**top < 0 || **top > kMaxTopLogprobs) {
        return FieldError("top_logprobs", absl::StrCat("must be in [0, ", kMaxTopLogprobs, "], got ", **top));
      }
      if (!lp->value_or(false)) return FieldError("top_logprobs", "requires logprobs to be true");
    }
    p.logprobs = lp->value_or(false);
    p.top_logprobs = static_cast<int>(top->value_or(0));
  }

  absl::StatusOr<std::optional<bool>> stream = GetBool(body, "stream");
  if (!stream.ok()) return stream.status();
  out.stream = stream->value_or(false);
  absl::StatusOr<std::optional<Json>> options = GetObject(body, "stream_options");
  if (!options.ok()) return options.status();
  if (*options) {
    absl::StatusOr<std::optional<bool>> usage = GetBool(**options, "include_usage", "stream_options.include_usage");
    if (!usage.ok()) return usage.status();
    if (!out.stream && usage->has_value()) {
      return FieldError("stream_options", "only allowed when stream is true");
    }
    out.include_usage = usage->value_or(false);
  }

  absl::StatusOr<ModelRef> ref = ResolveModel(call.env, call.principal, out.model_name);
  if (!ref.ok()) return ref.status();
  out.model = *std::move(ref);
  return out;
}

absl::Status ServeCompletion(Call& call, CompletionRequest request, const ResponseShape& shape) {
  const ServiceEnv* env = &call.env;
  if (env->engine == nullptr) return InferenceUnavailable(*env);
  std::string id = RandomId(shape.id_prefix);
  int64_t created = absl::ToUnixSeconds(absl::Now());
  call.res.set_header(kExpertVersionHeader, std::to_string(request.model.version));
  std::string fingerprint = absl::StrCat("tessera-", request.model.tenant, "-v", request.model.version);
  auto usage_json = [](const GenerateOutput& out) {
    return Json{{"prompt_tokens", out.prompt_tokens},
                {"completion_tokens", out.completion_tokens},
                {"total_tokens", out.prompt_tokens + out.completion_tokens}};
  };

  const bool want_logprobs = request.params.logprobs;
  auto logprobs_json = [want_logprobs, shape](const std::vector<TokenLogprob>& tokens, int64_t* offset) {
    return want_logprobs ? shape.logprobs(tokens, offset) : Json(nullptr);
  };
  // The tenant's requests/s and tokens/min: a refusal is a 429 with Retry-After (router.cc).
  absl::StatusOr<RateTicket> ticket =
      AdmitInference(*env, request.model.tenant, request.params.input, request.params.max_tokens);
  if (!ticket.ok()) return ticket.status();
  auto tokens_of = [](const absl::StatusOr<GenerateOutput>& out) {
    return out.ok() ? out->prompt_tokens + out->completion_tokens : 0;
  };

  if (!request.stream) {
    int64_t offset = 0;
    auto logprobs_json_at = [&](const std::vector<TokenLogprob>& t) { return logprobs_json(t, &offset); };
    // Nothing is written before the generation ends, so a client that goes away is noticed by watching
    // its connection: the runtime polls this while the request waits or decodes and drops it
    // (connection_watch.h). The handler then answers 499 to nobody.
    GenerateParams params = request.params;
    if (std::optional<ConnectionWatch> watch = ConnectionWatch::ForRequest(call.req)) {
      params.cancelled = [watch = *watch, outer = std::move(params.cancelled)] {
        return watch.Closed() || (outer && outer());
      };
    }
    absl::StatusOr<GenerateOutput> out = env->engine->Generate(request.model.tenant, request.model.version,
                                                               params, [](std::string_view) { return true; });
    SettleInference(*env, *ticket, out.status(), tokens_of(out));
    if (!out.ok()) return out.status();
    RecordGeneration(*env, request.model.tenant, *out);
    Json body = {{"id", id},
                 {"object", shape.object},
                 {"created", created},
                 {"model", request.model_name},
                 {"system_fingerprint", fingerprint},
                 {"choices", Json::array({shape.choice(Utf8Sanitize(out->text), FinishReasonName(out->finish_reason),
                                                       logprobs_json_at(out->logprobs))})},
                 {"usage", usage_json(*out)}};
    SendJson(call.res, body);
    return absl::OkStatus();
  }

  auto base_chunk = [=](Json choices) {
    Json c = {{"id", id}, {"object", shape.chunk_object}, {"created", created}, {"model", request.model_name},
              {"system_fingerprint", fingerprint}, {"choices", std::move(choices)}};
    if (request.include_usage) c["usage"] = nullptr;
    return c;
  };
  // A stream holds this HTTP worker until it ends: bounded per tenant and in total like gRPC's streams
  // (over the limit: 429 before anything is streamed). The slot lives as long as the provider.
  absl::StatusOr<std::shared_ptr<StreamSlot>> acquired = AcquireStreamSlot(*env, request.model.tenant, "SSE stream");
  if (!acquired.ok()) {
    SettleInference(*env, *ticket, acquired.status(), 0);  // refused: the rate quotas are refunded
    return acquired.status();
  }
  std::shared_ptr<StreamSlot> slot = *std::move(acquired);
  // Runs on the connection's thread once the headers are out; everything it uses is captured by value.
  // A client that disconnects fails the next delta's write, which cancels the generation (it leaves the
  // batch).
  call.res.set_chunked_content_provider(
      kEventStreamType, [env, request, shape, base_chunk, usage_json, logprobs_json, slot, ticket = *ticket,
                         tokens_of](size_t, httplib::DataSink& sink) {
        SseWriter sse(sink);
        bool first = true;
        // Logprobs come just before the delta that carries their text (inference_engine.h); what is left
        // after the last delta goes with the finish_reason.
        std::vector<TokenLogprob> pending;
        int64_t offset = 0;
        GenerateParams params = request.params;
        if (params.logprobs) {
          params.on_logprobs = [&pending](std::vector<TokenLogprob> lp) {
            pending.insert(pending.end(), std::make_move_iterator(lp.begin()), std::make_move_iterator(lp.end()));
          };
        }
        absl::StatusOr<GenerateOutput> out = env->engine->Generate(
            request.model.tenant, request.model.version, params, [&](std::string_view delta) {
              if (delta.empty()) return !sink.is_writable || sink.is_writable();
              Json lp = logprobs_json(pending, &offset);
              pending.clear();
              bool ok = sse.Send(base_chunk(Json::array({shape.chunk(Utf8Sanitize(delta), nullptr, first, std::move(lp))})));
              first = false;
              return ok;
            });
        SettleInference(*env, ticket, out.status(), tokens_of(out));
        if (!out.ok()) {
          if (out.status().code() != absl::StatusCode::kCancelled) sse.Send(ErrorObject(out.status()));
          sink.done();
          if (slot) slot->Release();
          return true;
        }
        RecordGeneration(*env, request.model.tenant, *out);
        sse.Send(base_chunk(Json::array(
            {shape.chunk("", FinishReasonName(out->finish_reason), first,
                         pending.empty() ? Json(nullptr) : logprobs_json(pending, &offset))})));
        if (request.include_usage) {
          Json last = base_chunk(Json::array());
          last["usage"] = usage_json(*out);
          sse.Send(last);
        }
        sse.Done();
        if (slot) slot->Release();
        return true;
      });
  call.res.set_header("Cache-Control", "no-cache");
  return absl::OkStatus();
}

}  // namespace tessera::services::http
