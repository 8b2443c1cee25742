#pragma once
// A small, strict command-line parser: --name VALUE, --name=VALUE and --flag; unknown options and
// bad values are errors that name the option; --help prints the generated help.
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace troupe::app {

class arg_parser {
 public:
  arg_parser(std::string usage, std::string description);

  /// An option with a value. default_value empty and required=false: optional, no default.
  arg_parser& option(const std::string& name, const std::string& value_name, const std::string& help,
                     const std::string& default_value = "", bool required = false);
  /// A boolean flag.
  arg_parser& flag(const std::string& name, const std::string& help);

  /// Parses argv[1..argc). Returns false and sets error() on a bad command line. When --help is
  /// given, returns false with help_requested() true.
  bool parse(int argc, char** argv);
  const std::string& error() const { return error_; }
  bool help_requested() const { return help_; }
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
  std::vector<std::string> positional() const { return positional_; }

  /// Standard handling: on --help prints help to stdout and returns 0; on error prints
  /// "troupe: <error>" to stderr and returns 2; returns -1 when the caller should go on.
  int handle(int argc, char** argv);

 private:
  struct spec {
    std::string value_name, help, default_value;
    bool is_flag = false;
    bool required = false;
  };
  std::string usage_, description_;
  std::vector<std::string> order_;
  std::map<std::string, spec> specs_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  std::string error_;
  bool help_ = false;
};

}  // namespace troupe::app
