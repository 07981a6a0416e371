#include "services/cli/cli_common.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "google/protobuf/util/json_util.h"

namespace tessera::cli {

std::optional<CliError> Args::Parse(int argc, char** argv, const std::set<std::string>& bool_flags,
                                    Args* out) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      for (++i; i < argc; ++i) out->positional_.push_back(argv[i]);
      break;
    }
    if (a.size() > 2 && a.rfind("--", 0) == 0) {
      size_t eq = a.find('=');
      std::string name = a.substr(0, eq);
      if (bool_flags.count(name)) {
        if (eq != std::string::npos) return UsageError(name + " takes no value");
        out->flags_.emplace(name, "true");
      } else if (eq != std::string::npos) {
        out->flags_.emplace(name, a.substr(eq + 1));
      } else {
        if (i + 1 >= argc) return UsageError(name + " needs a value");
        out->flags_.emplace(name, argv[++i]);
      }
    } else if (a == "-h") {
      out->flags_.emplace("--help", "true");
    } else {
      out->positional_.push_back(a);
    }
  }
  return std::nullopt;
}

std::string Args::Get(const std::string& flag, const std::string& fallback) const {
  auto it = flags_.find(flag);
  return it == flags_.end() ? fallback : it->second;
}

std::vector<std::string> Args::GetAll(const std::string& flag) const {
  std::vector<std::string> out;
  auto [b, e] = flags_.equal_range(flag);
  for (auto it = b; it != e; ++it) out.push_back(it->second);
  return out;
}

std::optional<CliError> Args::OnlyFlags(const std::set<std::string>& allowed) const {
  for (const auto& [name, value] : flags_) {
    if (!allowed.count(name) && !kGlobalFlags.count(name)) {
      return UsageError("unknown option " + name + " for this command (see --help)");
    }
  }
  return std::nullopt;
}

std::optional<CliError> Args::GetInt(const std::string& flag, int64_t* out) const {
  if (!Has(flag)) return std::nullopt;
  if (!absl::SimpleAtoi(Get(flag), out)) return UsageError(flag + " needs an integer, got \"" + Get(flag) + "\"");
  return std::nullopt;
}

std::optional<CliError> Args::GetDouble(const std::string& flag, double* out) const {
  if (!Has(flag)) return std::nullopt;
  if (!absl::SimpleAtod(Get(flag), out)) return UsageError(flag + " needs a number, got \"" + Get(flag) + "\"");
  return std::nullopt;
}

namespace {

std::optional<CliError> ReadPemFlag(const Args& args, const std::string& flag, std::string* out) {
  std::ifstream in(args.Get(flag), std::ios::binary);
  if (!in) return UsageError("cannot read " + flag + " " + args.Get(flag));
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (out->find("-----BEGIN ") == std::string::npos) {
    return UsageError(flag + " " + args.Get(flag) + " is not a PEM file");
  }
  return std::nullopt;
}

}  // namespace

std::optional<CliError> MakeChannel(const Args& args, std::shared_ptr<grpc::Channel>* out) {
  return MakeChannelTo(args, args.Get("--server", "127.0.0.1:7070"), out);
}

std::optional<CliError> MakeChannelTo(const Args& args, const std::string& server, std::shared_ptr<grpc::Channel>* out) {
  if (!args.Has("--tls-ca") && !args.Has("--tls-cert") && !args.Has("--tls-key")) {
    *out = grpc::CreateChannel(server, grpc::InsecureChannelCredentials());
    return std::nullopt;
  }
  if (args.Has("--tls-cert") != args.Has("--tls-key")) {
    return UsageError("--tls-cert and --tls-key go together (a client certificate and its private key)");
  }
  grpc::SslCredentialsOptions tls;
  if (args.Has("--tls-ca")) {
    if (auto e = ReadPemFlag(args, "--tls-ca", &tls.pem_root_certs)) return e;
  }
  if (args.Has("--tls-cert")) {
    if (auto e = ReadPemFlag(args, "--tls-cert", &tls.pem_cert_chain)) return e;
    if (auto e = ReadPemFlag(args, "--tls-key", &tls.pem_private_key)) return e;
  }
  *out = grpc::CreateChannel(server, grpc::SslCredentials(tls));
  return std::nullopt;
}

std::unique_ptr<grpc::ClientContext> MakeContext(const std::string& key, int deadline_seconds) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->AddMetadata("authorization", "Bearer " + key);
  if (deadline_seconds > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(deadline_seconds));
  }
  return ctx;
}

std::optional<CliError> LoadKey(const Args& args, const char* env_var, std::string* key) {
  if (args.Has("--key-file")) {
    std::ifstream in(args.Get("--key-file"));
    if (!in) return UsageError("cannot read --key-file " + args.Get("--key-file"));
    std::getline(in, *key);
    while (!key->empty() && (key->back() == '\r' || key->back() == ' ')) key->pop_back();
    if (key->empty()) return UsageError("--key-file " + args.Get("--key-file") + " is empty");
    return std::nullopt;
  }
  const char* v = std::getenv(env_var);
  if (v == nullptr || *v == '\0') {
    return UsageError(std::string("no API key: set ") + env_var + " or pass --key-file FILE");
  }
  *key = v;
  return std::nullopt;
}

CliError RpcError(const grpc::Status& status) {
  std::string code(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())));
  std::string msg = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE && msg.find("connect") != std::string::npos) {
    msg = "cannot reach the server (" + msg + "); is tessera-server running? (--server HOST:PORT)";
  }
  for (char& c : msg) {
    if (c == '\n') c = ' ';
  }
  return CliError{1, code + ": " + msg};
}

CliError UsageError(const std::string& message) { return CliError{2, message}; }

CliError UnknownCommand(const std::string& cmd, const std::string& sub) {
  if (cmd.empty()) return UsageError("missing command (see --help)");
  return UsageError("unknown command \"" + cmd + (sub.empty() ? "" : " " + sub) + "\" (see --help)");
}

void PrintJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.always_print_enums_as_ints = false;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  std::printf("%s\n", out.c_str());
}

std::string FormatTime(int64_t seconds) {
  if (seconds == 0) return "-";
  time_t t = static_cast<time_t>(seconds);
  tm tm_utc;
  gmtime_r(&t, &tm_utc);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%SZ", &tm_utc);
  return buf;
}

}  // namespace tessera::cli
