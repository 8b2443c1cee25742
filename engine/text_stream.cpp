#include "engine/text_stream.hpp"

#include <algorithm>

namespace troupe::engine {

text_stream::text_stream(const tokenizer& tok, int32_t prev, std::vector<std::string> stop_strings)
    : dec_(tok, prev), stops_(std::move(stop_strings)) {}

text_stream::output text_stream::push(int32_t id) {
  output out;
  if (stopped_) return out;
  held_ += dec_.push(id);
  // 1. A complete stop string: release the text before the earliest one and stop.
  size_t first = std::string::npos;
  for (size_t i = 0; i < stops_.size(); ++i) {
    if (stops_[i].empty()) continue;  // an empty stop string never matches
    if (const size_t at = held_.find(stops_[i]); at < first) {
      first = at;
      out.stop_index = i;
    }
  }
  if (first != std::string::npos) {
    out.text = held_.substr(0, first);
    out.stopped = stopped_ = true;
    held_.clear();
    return out;
  }
  // 2. Hold back the longest tail that is a prefix of some stop string; release the rest.
  size_t keep = 0;
  for (const auto& s : stops_) {
    if (s.empty()) continue;
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  out.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string text_stream::finish() {
  if (stopped_) return {};
  std::string out = std::move(held_) + dec_.flush();
  held_.clear();
  return out;
}

}  // namespace troupe::engine
