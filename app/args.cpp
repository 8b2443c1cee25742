#include "app/args.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

namespace troupe::app {

arg_parser::arg_parser(std::string usage, std::string description)
    : usage_(std::move(usage)), description_(std::move(description)) {}

arg_parser& arg_parser::option(const std::string& name, const std::string& value_name,
                               const std::string& help, const std::string& default_value, bool required) {
  order_.push_back(name);
  specs_[name] = spec{value_name, help, default_value, false, required};
  return *this;
}

arg_parser& arg_parser::flag(const std::string& name, const std::string& help) {
  order_.push_back(name);
  specs_[name] = spec{"", help, "", true, false};
  return *this;
}

arg_parser& arg_parser::alias(const std::string& short_name, const std::string& name) {
  aliases_[short_name] = name;
  return *this;
}

bool arg_parser::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const auto al = aliases_.find(argv[i]);
    const std::string a = al != aliases_.end() ? "--" + al->second : std::string(argv[i]);
    if (a == "--help" || a == "-h") {
      help_ = true;
      return false;
    }
    if (a.rfind("--", 0) != 0) {
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = specs_.find(name);
    if (it == specs_.end()) {
      error_ = "unknown option --" + name + " (see --help)";
      return false;
    }
    if (it->second.is_flag) {
      if (inline_value) {
        error_ = "option --" + name + " takes no value";
        return false;
      }
      values_[name] = "1";
      continue;
    }
    if (inline_value) {
      values_[name] = *inline_value;
    } else if (i + 1 < argc) {
      values_[name] = argv[++i];
    } else {
      error_ = "option --" + name + " needs a value (" + it->second.value_name + ")";
      return false;
    }
  }
  for (const auto& [name, s] : specs_) {
    if (s.required && !values_.contains(name)) {
      error_ = "missing required option --" + name + " (see --help)";
      return false;
    }
  }
  return true;
}

std::string arg_parser::help() const {
  std::ostringstream o;
  o << "usage: " << usage_ << "\n\n" << description_ << "\n\noptions:\n";
  for (const auto& name : order_) {
    const auto& s = specs_.at(name);
    std::string left = "  --" + name + (s.is_flag ? "" : " " + s.value_name);
    if (left.size() < 30) left.resize(30, ' ');
    else left += "\n" + std::string(30, ' ');
    o << left << s.help;
    if (s.required) o << " (required)";
    if (!s.default_value.empty()) o << " [default: " << s.default_value << "]";
    o << "\n";
  }
  o << "  --help                      show this help\n";
  return o.str();
}

bool arg_parser::has(const std::string& name) const {
  if (values_.contains(name)) return true;
  auto it = specs_.find(name);
  return it != specs_.end() && !it->second.default_value.empty();
}

bool arg_parser::flag_set(const std::string& name) const { return values_.contains(name); }

std::string arg_parser::str(const std::string& name) const {
  if (auto it = values_.find(name); it != values_.end()) return it->second;
  if (auto it = specs_.find(name); it != specs_.end()) return it->second.default_value;
  return {};
}

std::optional<long long> arg_parser::integer(const std::string& name, long long min, long long max) {
  return integer_in(name, str(name), min, max);
}

std::optional<long long> arg_parser::integer_in(const std::string& name, const std::string& text, long long min,
                                                long long max) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < min || v > max) {
    error_ = "option --" + name + ": '" + text + "' is not an integer in [" + std::to_string(min) + ", " +
             std::to_string(max) + "]";
    return std::nullopt;
  }
  return v;
}

std::optional<double> arg_parser::number(const std::string& name, double min, double max) {
  const std::string s = str(name);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno != 0 || !(v >= min && v <= max)) {
    std::ostringstream o;
    o << "option --" << name << ": '" << s << "' is not a number in [" << min << ", " << max << "]";
    error_ = o.str();
    return std::nullopt;
  }
  return v;
}

std::optional<std::vector<long long>> arg_parser::integer_list(const std::string& name, long long min,
                                                               long long max) {
  std::vector<long long> out;
  std::stringstream ss(str(name));
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto v = integer_in(name, item, min, max);
    if (!v) return std::nullopt;
    out.push_back(*v);
  }
  if (out.empty()) {
    error_ = "option --" + name + " needs at least one value";
    return std::nullopt;
  }
  return out;
}

std::vector<std::string> arg_parser::string_list(const std::string& name) const {
  std::vector<std::string> out;
  const std::string list = str(name);
  for (size_t p = 0; p <= list.size();) {
    const size_t q = std::min(list.find(',', p), list.size());
    out.push_back(list.substr(p, q - p));
    p = q + 1;
  }
  return out;
}

int arg_parser::usage_error() const {
  std::fprintf(stderr, "troupe: %s\n", error_.c_str());
  return 2;
}

int arg_parser::handle(int argc, char** argv) {
  if (parse(argc, argv)) return -1;
  if (help_) {
    std::fputs(help().c_str(), stdout);
    return 0;
  }
  std::fprintf(stderr, "troupe: %s\n", error_.c_str());
  return 2;
}

int fail_with(const std::string& message) {
  std::fprintf(stderr, "troupe: %s\n", message.c_str());
  return 1;
}

// ---- option groups ---------------------------------------------------------------------------

arg_parser& add_model_options(arg_parser& args, bool model_required) {
  return args.option("model", "PATH", "model: a .gguf file, a Hugging Face directory, or a llama2.c .bin", "",
                     model_required)
      .option("tokenizer", "PATH", "tokenizer file (needed for llama2.c checkpoints)");
}

arg_parser& add_sampling_options(arg_parser& args, const std::string& seed_help, const std::string& seed_default) {
  return args.option("temperature", "T", "sampling temperature; 0 = greedy", "0")
      .option("top-k", "K", "keep the K most likely tokens; 0 = all", "0")
      .option("top-p", "P", "nucleus sampling mass", "1.0")
      .option("repetition-penalty", "R", "penalty for tokens already in the context; 1 = off", "1.0")
      .option("seed", "S", seed_help, seed_default);
}

std::optional<engine::sampling_params> read_sampling_options(arg_parser& args) {
  auto temperature = args.number("temperature", 0, 100);
  auto top_k = args.integer("top-k", 0, std::numeric_limits<int32_t>::max());
  auto top_p = args.number("top-p", 0, 1);
  auto rep = args.number("repetition-penalty", 0, 100);
  std::optional<long long> seed = 0;
  if (args.has("seed")) seed = args.integer("seed", 0, std::numeric_limits<long long>::max());
  if (!temperature || !top_k || !top_p || !rep || !seed) return std::nullopt;
  engine::sampling_params p;
  p.temperature = float(*temperature);
  p.top_k = int(*top_k);
  p.top_p = float(*top_p);
  p.repetition_penalty = float(*rep);
  p.seed = uint64_t(*seed);
  return p;
}

arg_parser& add_server_options(arg_parser& args) {
  return args.option("host", "H", "server address", "127.0.0.1")
      .option("port", "P", "server port", "", true)
      .option("api-key", "KEY", "API key for the server");
}

std::optional<transport::client_options> read_server_options(arg_parser& args, std::string client_name) {
  auto port = args.integer("port", 1, 65535);
  if (!port) return std::nullopt;
  transport::client_options co;
  co.host = args.str("host");
  co.port = uint16_t(*port);
  if (args.given("api-key")) co.api_key = args.str("api-key");
  co.client_name = std::move(client_name);
  return co;
}

arg_parser& add_length_options(arg_parser& args, const std::string& per, const std::string& gen_help) {
  return args.option("prompt-len", "L", "prompt tokens per " + per, "128").option("gen-len", "G", gen_help, "128");
}

std::optional<length_options> read_length_options(arg_parser& args) {
  auto prompt_len = args.integer("prompt-len", 1, 1 << 20);
  auto gen_len = args.integer("gen-len", 1, 1 << 20);
  if (!prompt_len || !gen_len) return std::nullopt;
  return length_options{int(*prompt_len), int(*gen_len)};
}

}  // namespace troupe::app
