#pragma once
// A small, strict command-line parser: --name VALUE, --name=VALUE and --flag; unknown options and
// bad values are errors that name the option; --help prints the generated help.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampling.hpp"
#include "transport/client.hpp"

namespace troupe::app {

class arg_parser {
 public:
  arg_parser(std::string usage, std::string description);

  /// An option with a value. default_value empty and required=false: optional, no default.
  arg_parser& option(const std::string& name, const std::string& value_name, const std::string& help,
                     const std::string& default_value = "", bool required = false);
  /// A boolean flag.
  arg_parser& flag(const std::string& name, const std::string& help);
  /// A short spelling of an option: alias("-n", "max-tokens") reads "-n 5" as "--max-tokens 5".
  arg_parser& alias(const std::string& short_name, const std::string& name);

  /// Parses argv[1..argc). Returns false and sets error() on a bad command line, and when --help
  /// is given (handle() tells the two apart).
  bool parse(int argc, char** argv);
  const std::string& error() const { return error_; }
  std::string help() const;

  bool has(const std::string& name) const;  // given on the command line or has a default
  bool given(const std::string& name) const { return values_.contains(name); }
  bool flag_set(const std::string& name) const;
  std::string str(const std::string& name) const;
  /// Typed getters: nullopt + error() when the text is not a number in range.
  std::optional<long long> integer(const std::string& name, long long min, long long max);
  std::optional<double> number(const std::string& name, double min, double max);
  /// Comma-separated integers ("1,8,32").
  std::optional<std::vector<long long>> integer_list(const std::string& name, long long min, long long max);
  /// Comma-separated words ("f32,q8_0"); empty items are kept.
  std::vector<std::string> string_list(const std::string& name) const;
  std::vector<std::string> positional() const { return positional_; }

  /// Standard handling: on --help prints help to stdout and returns 0; on error prints
  /// "troupe: <error>" to stderr and returns 2; returns -1 when the caller should go on.
  int handle(int argc, char** argv);
  /// Prints "troupe: <error()>" to stderr and returns 2 (a bad command line).
  int usage_error() const;

 private:
  /// `text` (the value of --name, or one item of its list) as an integer in [min, max].
  std::optional<long long> integer_in(const std::string& name, const std::string& text, long long min,
                                      long long max);
  struct spec {
    std::string value_name, help, default_value;
    bool is_flag = false;
    bool required = false;
  };
  std::string usage_, description_;
  std::vector<std::string> order_;
  std::map<std::string, spec> specs_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::string> aliases_;  // "-n" -> "max-tokens"
  std::vector<std::string> positional_;
  std::string error_;
  bool help_ = false;
};

/// Prints "troupe: <message>" to stderr and returns 1 (the command failed).
int fail_with(const std::string& message);

// ---- option groups several commands share: each option, its help and its checks, once ----------

/// --model PATH and --tokenizer PATH (generate, serve).
arg_parser& add_model_options(arg_parser& args, bool model_required);

/// --temperature, --top-k, --top-p, --repetition-penalty and --seed (generate, client).
/// seed_default: the seed when --seed is not given ("" for none: args.has("seed") is then false);
/// seed_help says what the seed is for.
arg_parser& add_sampling_options(arg_parser& args, const std::string& seed_help, const std::string& seed_default);
/// The values (seed 0 when there is none); nullopt (and args.error()) when one is out of range.
std::optional<engine::sampling_params> read_sampling_options(arg_parser& args);

/// --host, --port and --api-key of the server to connect to (client, bench serve).
arg_parser& add_server_options(arg_parser& args);
/// Fills host, port and api_key; nullopt (and args.error()) when the port is out of range.
std::optional<transport::client_options> read_server_options(arg_parser& args, std::string client_name);

/// --prompt-len and --gen-len of a benchmark's requests (bench engine, bench serve); `per` names
/// what they apply to ("sequence", "request"), gen_help says what the generated length means.
arg_parser& add_length_options(arg_parser& args, const std::string& per, const std::string& gen_help);
struct length_options {
  int prompt_len = 0;
  int gen_len = 0;
};
/// nullopt (and args.error()) when a length is out of range.
std::optional<length_options> read_length_options(arg_parser& args);

}  // namespace troupe::app
