// Placeholder until the tokenizers land.
#include "engine/tokenizer.hpp"

namespace troupe::engine {
result<std::unique_ptr<tokenizer>> load_tokenizer(const std::filesystem::path& model_path,
                                                  const std::filesystem::path&) {
  return fail(errc::unsupported, "{}: tokenizers not implemented yet", model_path.string());
}
std::string incremental_decoder::push(int32_t) { return {}; }
std::string incremental_decoder::flush() { return {}; }
}  // namespace troupe::engine
