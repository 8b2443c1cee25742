// Chat templates: each family recognised by its markers, and rendered as its published template
// does (expected strings written out by hand from those templates).
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "transport/chat_template.hpp"
#include "transport/openai_api.hpp"

using namespace troupe::transport;

namespace {

const std::vector<chat_message> conversation = {
  {"system", "You are kind."}, {"user", "Hi!"}, {"assistant", "Hello."}, {"user", "Tell a story."}};

// Excerpts of the templates shipped in model files (tokenizer.chat_template).
constexpr const char* chatml_jinja =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
  "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
constexpr const char* llama2_jinja =
  "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{% endif %}"
  "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
  "'\\n<</SYS>>\\n\\n' + message['content'] %}{% endif %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}";
constexpr const char* llama3_jinja =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
  "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% endfor %}";
constexpr const char* zephyr_jinja =
  "{% for message in messages %}\\n{% if message['role'] == 'user' %}\\n{{ '<|user|>\\n' + message['content'] + "
  "eos_token }}\\n{% elif message['role'] == 'assistant' %}\\n{{ '<|assistant|>\\n'  + message['content'] + "
  "eos_token }}\\n{% endif %}{% endfor %}";
constexpr const char* mistral_jinja =
  "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] "
  "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}";
constexpr const char* phi3_jinja =
  "{% for message in messages %}{% if message['role'] == 'user' %}{{'<|user|>' + '\\n' + message['content'] + "
  "'<|end|>' + '\\n' + '<|assistant|>' + '\\n'}}{% endif %}{% endfor %}";

}  // namespace

BOOST_AUTO_TEST_SUITE(chat_template)

BOOST_AUTO_TEST_CASE(families_are_recognised_by_their_markers) {
  BOOST_TEST((detect_chat_format(chatml_jinja) == chat_format::chatml));
  BOOST_TEST((detect_chat_format(llama2_jinja) == chat_format::llama2));
  BOOST_TEST((detect_chat_format(llama3_jinja) == chat_format::llama3));
  BOOST_TEST((detect_chat_format(zephyr_jinja) == chat_format::zephyr));
  BOOST_TEST((detect_chat_format(mistral_jinja) == chat_format::mistral));
  BOOST_TEST(!detect_chat_format(phi3_jinja).has_value());  // <|user|> but <|end|>: not Zephyr
  BOOST_TEST(!detect_chat_format("{{ messages[0]['content'] }}").has_value());
  BOOST_TEST(!detect_chat_format("").has_value());
}

BOOST_AUTO_TEST_CASE(plain_writes_role_lines_and_stops_at_the_next_user_turn) {
  const troupe::transport::chat_template t;
  BOOST_TEST(t.render(conversation) ==
             "System: You are kind.\nUser: Hi!\nAssistant: Hello.\nUser: Tell a story.\nAssistant:");
  BOOST_TEST(t.stop() == "\nUser:");
}

BOOST_AUTO_TEST_CASE(chatml_wraps_each_message_in_im_start_and_im_end) {
  const troupe::transport::chat_template t(chat_format::chatml);
  BOOST_TEST(t.render(conversation) ==
             "<|im_start|>system\nYou are kind.<|im_end|>\n"
             "<|im_start|>user\nHi!<|im_end|>\n"
             "<|im_start|>assistant\nHello.<|im_end|>\n"
             "<|im_start|>user\nTell a story.<|im_end|>\n"
             "<|im_start|>assistant\n");
  BOOST_TEST(t.stop() == "<|im_end|>");
}

BOOST_AUTO_TEST_CASE(llama2_puts_the_system_prompt_in_sys_markers_inside_the_first_inst) {
  const troupe::transport::chat_template t(chat_format::llama2);
  BOOST_TEST(t.render(conversation) ==
             "[INST] <<SYS>>\nYou are kind.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] Tell a story. [/INST]");
  BOOST_TEST(t.render({{"user", "  Hi!  "}}) == "[INST] Hi! [/INST]");  // content stripped
  BOOST_TEST(t.stop() == "</s>");
}

BOOST_AUTO_TEST_CASE(llama3_gives_each_message_a_header_and_eot) {
  const troupe::transport::chat_template t(chat_format::llama3);
  BOOST_TEST(t.render(conversation) ==
             "<|start_header_id|>system<|end_header_id|>\n\nYou are kind.<|eot_id|>"
             "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
             "<|start_header_id|>user<|end_header_id|>\n\nTell a story.<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\n");
  BOOST_TEST(t.stop() == "<|eot_id|>");
}

BOOST_AUTO_TEST_CASE(zephyr_tags_roles_and_ends_messages_with_eos) {
  const troupe::transport::chat_template t(chat_format::zephyr);
  BOOST_TEST(t.render(conversation) ==
             "<|system|>\nYou are kind.</s>\n"
             "<|user|>\nHi!</s>\n"
             "<|assistant|>\nHello.</s>\n"
             "<|user|>\nTell a story.</s>\n"
             "<|assistant|>\n");
  BOOST_TEST(t.stop() == "</s>");
}

BOOST_AUTO_TEST_CASE(mistral_uses_inst_without_sys_markers_and_no_space_before_replies) {
  const troupe::transport::chat_template t(chat_format::mistral);
  BOOST_TEST(t.render(conversation) ==
             "[INST] You are kind.\n\nHi! [/INST]Hello.</s>[INST] Tell a story. [/INST]");
  BOOST_TEST(t.render({{"user", "Hi!"}}) == "[INST] Hi! [/INST]");
  BOOST_TEST(t.stop() == "</s>");
}

BOOST_AUTO_TEST_CASE(chat_requests_are_rendered_with_the_servers_template) {
  const troupe::transport::chat_template t(chat_format::chatml);
  auto r = parse_chat_request(R"({"model":"m","messages":[{"role":"user","content":"Hi!"}],"stop":"END"})",
                              protocol_limits{}, t);
  BOOST_REQUIRE(r);
  BOOST_TEST(r->gen.prompt == "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  BOOST_TEST(r->gen.stop == (std::vector<std::string>{"END", "<|im_end|>"}));
}

BOOST_AUTO_TEST_SUITE_END()
