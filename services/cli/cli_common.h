// Shared plumbing of the tessera and tessera-admin command-line tools: argument parsing, the
// authenticated channel, output (human text or --json) and the error convention (one line on stderr,
// non-zero exit: 2 for usage errors, 1 for failed calls).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"

namespace tessera::cli {

// Thrown-free error carrier: commands return CliError to main, which prints it.
struct CliError {
  int exit_code = 1;
  std::string message;
};

class Args {
 public:
  // Splits argv into positionals and --flags. `bool_flags` take no value; every other flag takes one
  // (as "--flag value" or "--flag=value"); `repeatable` flags may appear several times.
  static std::optional<CliError> Parse(int argc, char** argv, const std::set<std::string>& bool_flags,
                                       Args* out);

  const std::vector<std::string>& positional() const { return positional_; }
  bool Has(const std::string& flag) const { return flags_.count(flag) > 0; }
  std::string Get(const std::string& flag, const std::string& fallback = "") const;
  std::vector<std::string> GetAll(const std::string& flag) const;
  // Returns an error naming the first flag outside `allowed` (global flags are always allowed).
  std::optional<CliError> OnlyFlags(const std::set<std::string>& allowed) const;
  std::optional<CliError> GetInt(const std::string& flag, int64_t* out) const;     // if present
  std::optional<CliError> GetDouble(const std::string& flag, double* out) const;  // if present

 private:
  std::vector<std::string> positional_;
  std::multimap<std::string, std::string> flags_;
};

inline const std::set<std::string> kGlobalFlags = {"--server", "--json", "--quiet", "--help", "--key-file",
                                                   "--tenant", "--tls-ca", "--tls-cert", "--tls-key"};

// A channel to --server (default 127.0.0.1:7070): TLS when --tls-ca PEM (the CA that signed the
// server's certificate) or --tls-cert/--tls-key (a client certificate for mutual TLS; without --tls-ca
// the system's roots verify the server) are given, else plaintext. A usage error names an unreadable
// file or a certificate without its key.
std::optional<CliError> MakeChannel(const Args& args, std::shared_ptr<grpc::Channel>* out);
// The same (TLS flags included) to `server` instead of --server's value.
std::optional<CliError> MakeChannelTo(const Args& args, const std::string& server, std::shared_ptr<grpc::Channel>* out);
// A client context carrying `authorization: Bearer <key>` and a deadline (seconds; 0 = none).
std::unique_ptr<grpc::ClientContext> MakeContext(const std::string& key, int deadline_seconds = 60);

// The key from `env_var`, else from --key-file (first line), else an error naming both.
std::optional<CliError> LoadKey(const Args& args, const char* env_var, std::string* key);

// "CODE: message" for a failed call (code name as in the API, e.g. NOT_FOUND).
CliError RpcError(const grpc::Status& status);
CliError UsageError(const std::string& message);
// The usage error for a missing or unrecognised COMMAND [SUBCOMMAND].
CliError UnknownCommand(const std::string& cmd, const std::string& sub);

// The message as JSON (proto field names, defaults included) on stdout.
void PrintJson(const google::protobuf::Message& m);
std::string FormatTime(int64_t seconds);  // "2026-11-23 06:00:00Z"; "-" for 0

}  // namespace tessera::cli
