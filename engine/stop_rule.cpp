#include "engine/stop_rule.hpp"

#include <algorithm>
#include <array>
#include <string_view>

namespace troupe::engine {

namespace {

// Token texts that end generation wherever they appear in a vocabulary (llama.cpp's list of
// end-of-generation tokens, less the chat-template ones that need a template to mean anything).
constexpr std::array<std::string_view, 6> end_of_generation_texts = {
  "<|end_story|>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
};

bool is_marker(const std::string& text) { return text.size() >= 3 && text.front() == '<' && text.back() == '>'; }

}  // namespace

bool stop_rule::ends(int32_t id) const { return std::find(end_ids.begin(), end_ids.end(), id) != end_ids.end(); }

stop_rule make_stop_rule(const model_config& model, const tokenizer& tok) {
  stop_rule r;
  auto add_id = [&](int32_t id) {
    if (id >= 0 && id < model.vocab_size && !r.ends(id)) r.end_ids.push_back(id);
  };
  auto add_text = [&](const std::string& text) {
    if (is_marker(text) && std::find(r.end_texts.begin(), r.end_texts.end(), text) == r.end_texts.end()) {
      r.end_texts.push_back(text);
    }
  };
  add_id(model.eos_id);
  add_id(tok.eos_id());
  for (const std::string& t : implicit_stop_strings(tok)) add_text(t);
  if (model.eos_id >= 0 && model.eos_id < tok.vocab_size()) add_text(tok.token_text(model.eos_id));
  // Other end-of-generation tokens the vocabulary holds.
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    const std::string text = tok.token_text(id);
    if (text.size() < 5 || text.front() != '<') continue;  // cheap filter: every listed text is longer
    if (std::find(end_of_generation_texts.begin(), end_of_generation_texts.end(), text) !=
        end_of_generation_texts.end()) {
      add_id(id);
      add_text(text);
    }
  }
  return r;
}

std::vector<std::string> implicit_stop_strings(const tokenizer& tok) {
  const int32_t eos = tok.eos_id();
  if (eos < 0 || eos >= tok.vocab_size()) return {};
  std::string text = tok.token_text(eos);
  if (is_marker(text)) return {std::move(text)};
  return {};
}

}  // namespace troupe::engine
