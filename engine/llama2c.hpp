#pragma once
// llama2.c checkpoints (karpathy/llama2.c run.c format, "version 0": a 7 x int32 header then f32
// weights; a negative vocab_size means the classifier is stored separately).
#include <filesystem>

#include "engine/error.hpp"
#include "engine/model_weights.hpp"

namespace troupe::engine {

result<model_weights> load_llama2c_model(const std::filesystem::path& path, const load_options& opts);

}  // namespace troupe::engine
