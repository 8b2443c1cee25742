#include "app/args.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
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

bool arg_parser::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
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
  const std::string s = str(name);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0 || v < min || v > max) {
    error_ = "option --" + name + ": '" + s + "' is not an integer in [" + std::to_string(min) + ", " +
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
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0 || v < min || v > max) {
      error_ = "option --" + name + ": '" + item + "' is not an integer in [" + std::to_string(min) + ", " +
               std::to_string(max) + "]";
      return std::nullopt;
    }
    out.push_back(v);
  }
  if (out.empty()) {
    error_ = "option --" + name + " needs at least one value";
    return std::nullopt;
  }
  return out;
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

}  // namespace troupe::app
