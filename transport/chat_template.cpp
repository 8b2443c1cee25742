#include "transport/chat_template.hpp"

#include <fmt/format.h>

namespace troupe::transport {

namespace {

bool has(std::string_view s, std::string_view marker) { return s.find(marker) != std::string_view::npos; }

// Leading and trailing whitespace off (the Llama templates strip message content).
std::string_view trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// The system messages joined (templates of the [INST] families put them into the first user turn).
std::string system_text(const std::vector<chat_message>& messages) {
  std::string out;
  for (const auto& m : messages) {
    if (m.role != "system") continue;
    if (!out.empty()) out += "\n";
    out += m.content;
  }
  return out;
}

// Llama 2 and Mistral: [INST] user [/INST] assistant </s> per exchange, the system text inside
// the first user turn (Llama 2 in <<SYS>> markers, Mistral before it with a blank line).
std::string render_inst(const std::vector<chat_message>& messages, bool llama2) {
  const std::string system = system_text(messages);
  std::string out;
  bool first_user = true;
  bool first_turn = true;
  for (const auto& m : messages) {
    if (m.role == "user") {
      std::string content = m.content;
      if (first_user && !system.empty()) {
        content = llama2 ? fmt::format("<<SYS>>\n{}\n<</SYS>>\n\n{}", system, content)
                         : fmt::format("{}\n\n{}", system, content);
      }
      if (llama2) content = std::string(trim(content));
      first_user = false;
      // Every turn after the first opens with BOS in the template; the first one's is the tokenizer's.
      out += first_turn || !llama2 ? "" : "<s>";
      out += fmt::format("[INST] {} [/INST]", content);
      first_turn = false;
    } else if (m.role == "assistant") {
      out += llama2 ? fmt::format(" {} </s>", trim(m.content)) : fmt::format("{}</s>", m.content);
      first_turn = false;
    }
  }
  return out;
}

}  // namespace

const char* chat_format_name(chat_format f) {
  switch (f) {
    case chat_format::plain: return "plain";
    case chat_format::chatml: return "chatml";
    case chat_format::llama2: return "llama2";
    case chat_format::llama3: return "llama3";
    case chat_format::zephyr: return "zephyr";
    case chat_format::mistral: return "mistral";
  }
  return "plain";
}

std::optional<chat_format> detect_chat_format(std::string_view jinja) {
  if (has(jinja, "<|im_start|>")) return chat_format::chatml;
  if (has(jinja, "<|start_header_id|>")) return chat_format::llama3;
  if (has(jinja, "[INST]")) return has(jinja, "<<SYS>>") ? chat_format::llama2 : chat_format::mistral;
  // Phi-3 also writes <|user|>, but ends turns with <|end|>: not Zephyr's format.
  if (has(jinja, "<|user|>") && has(jinja, "<|assistant|>") && !has(jinja, "<|end|>")) return chat_format::zephyr;
  return std::nullopt;
}

std::string chat_template::render(const std::vector<chat_message>& messages) const {
  std::string out;
  switch (format_) {
    case chat_format::plain:
      for (const auto& m : messages) {
        const char* role = m.role == "assistant" ? "Assistant" : m.role == "user" ? "User" : "System";
        out += fmt::format("{}: {}\n", role, m.content);
      }
      out += "Assistant:";
      break;
    case chat_format::chatml:
      for (const auto& m : messages) out += fmt::format("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
      out += "<|im_start|>assistant\n";
      break;
    case chat_format::llama3:
      for (const auto& m : messages) {
        out += fmt::format("<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", m.role, trim(m.content));
      }
      out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case chat_format::zephyr:
      for (const auto& m : messages) out += fmt::format("<|{}|>\n{}</s>\n", m.role, m.content);
      out += "<|assistant|>\n";
      break;
    case chat_format::llama2: out = render_inst(messages, true); break;
    case chat_format::mistral: out = render_inst(messages, false); break;
  }
  return out;
}

std::string_view chat_template::stop() const {
  switch (format_) {
    case chat_format::plain: return "\nUser:";
    case chat_format::chatml: return "<|im_end|>";
    case chat_format::llama3: return "<|eot_id|>";
    case chat_format::zephyr:
    case chat_format::llama2:
    case chat_format::mistral: return "</s>";
  }
  return "\nUser:";
}

}  // namespace troupe::transport
