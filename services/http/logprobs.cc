#include "services/http/logprobs.h"

namespace tessera::services::http {
namespace {

using Json = nlohmann::json;

// Characters as Python's len() counts them in the decoded text: the bytes that start a character.
int64_t CharCount(const std::string& bytes) {
  int64_t n = 0;
  for (unsigned char c : bytes) n += (c & 0xC0) != 0x80;
  return n;
}

Json ByteList(const std::string& bytes) {
  Json out = Json::array();
  for (unsigned char c : bytes) out.push_back(static_cast<int>(c));
  return out;
}

}  // namespace

Json LegacyLogprobs(const std::vector<TokenLogprob>& tokens, int64_t* offset) {
  Json out = {{"tokens", Json::array()}, {"token_logprobs", Json::array()}, {"top_logprobs", Json::array()},
              {"text_offset", Json::array()}};
  for (const TokenLogprob& t : tokens) {
    out["tokens"].push_back(t.token);
    out["token_logprobs"].push_back(t.logprob);
    Json top = Json::object();
    for (const TokenLogprob& alt : t.top) {
      if (!top.contains(alt.token)) top[alt.token] = alt.logprob;  // two ids may print alike: keep the likelier
    }
    if (!top.contains(t.token)) top[t.token] = t.logprob;
    out["top_logprobs"].push_back(std::move(top));
    out["text_offset"].push_back(*offset);
    *offset += CharCount(t.bytes);
  }
  return out;
}

Json ChatLogprobs(const std::vector<TokenLogprob>& tokens) {
  Json content = Json::array();
  for (const TokenLogprob& t : tokens) {
    Json top = Json::array();
    for (const TokenLogprob& alt : t.top) {
      top.push_back({{"token", alt.token}, {"logprob", alt.logprob}, {"bytes", ByteList(alt.bytes)}});
    }
    content.push_back(
        {{"token", t.token}, {"logprob", t.logprob}, {"bytes", ByteList(t.bytes)}, {"top_logprobs", std::move(top)}});
  }
  return Json{{"content", std::move(content)}, {"refusal", nullptr}};
}

}  // namespace tessera::services::http
