#pragma once
// Chat prompts for /v1/chat/completions: the messages rendered the way the model was trained to
// read them. Where the model file carries a Jinja chat template (GGUF tokenizer.chat_template),
// its family is recognised by its markers and rendered by a small formatter here (no Jinja
// engine): ChatML, Llama 2, Llama 3, Zephyr, Mistral. Otherwise, or for a template of no known
// family, the plain template. The formats (docs/http-api.md, "Chat templates"):
//   plain    System: {s}\nUser: {u}\nAssistant: {a}\n ... Assistant:
//   chatml   <|im_start|>{role}\n{content}<|im_end|>\n ... <|im_start|>assistant\n
//   llama2   [INST] <<SYS>>\n{s}\n<</SYS>>\n\n{u1} [/INST] {a1} </s><s>[INST] {u2} [/INST]
//   llama3   <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|> ...
//            <|start_header_id|>assistant<|end_header_id|>\n\n
//   zephyr   <|{role}|>\n{content}</s>\n ... <|assistant|>\n
//   mistral  [INST] {s}\n\n{u1} [/INST]{a1}</s>[INST] {u2} [/INST]
// The prompt's first BOS is the tokenizer's (encode adds it), so renderings start without one.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::transport {

struct chat_message {
  std::string role;  // system, user, assistant (developer is read as system)
  std::string content;
};

enum class chat_format { plain, chatml, llama2, llama3, zephyr, mistral };
const char* chat_format_name(chat_format f);

/// The family of a Jinja chat template, by its markers; nullopt for none of them.
std::optional<chat_format> detect_chat_format(std::string_view jinja);

class chat_template {
 public:
  chat_template() = default;  // plain
  explicit chat_template(chat_format f) : format_(f) {}

  chat_format format() const { return format_; }
  /// The messages, then the opening of the assistant's turn for the model to continue.
  std::string render(const std::vector<chat_message>& messages) const;
  /// Where the assistant's reply ends (the end-of-turn marker, or the plain template's next
  /// "User:" turn): added to the request's stop strings.
  std::string_view stop() const;

 private:
  chat_format format_ = chat_format::plain;
};

}  // namespace troupe::transport
