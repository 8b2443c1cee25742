#pragma once
// Synthetic Llama models: deterministic random weights at the shapes of real models, written as
// GGUF files with a SentencePiece-style vocabulary (`troupe model synth`). For benchmarks and
// tests at sizes no real model in ../shared/models has; the text they generate is noise.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.hpp"
#include "engine/model_config.hpp"
#include "engine/tensor.hpp"

namespace troupe::engine {

/// A named model shape: the hyperparameters a synthetic model is written with (the file's
/// general.name is "troupe-synth-<name>").
struct synth_shape {
  std::string name;
  model_config config;
};

/// The known shapes: "tiny", "stories15M", "stories110M".
const std::vector<synth_shape>& synth_shapes();
std::optional<synth_shape> find_synth_shape(std::string_view name);
/// The known shapes' names joined by `separator` ("tiny|stories15M|stories110M").
std::string synth_shape_names(std::string_view separator);

/// Progress of a write: `what` is the step ("blk.3.ffn_up.weight", "writing"), done of total.
using synth_progress = std::function<void(std::string_view what, int64_t done, int64_t total)>;

/// Writes a GGUF "llama" model of the shape with weights drawn from a counter-based generator
/// (the same seed gives the same file). Matrices are stored as `type`; a matrix whose row
/// length is not a whole number of quantization blocks falls back to F16, as llama.cpp's
/// converter does. Norm weights are F32 ones; the output head is a separate tensor.
result<void> write_synth_model(const synth_shape& shape, dtype type, uint64_t seed,
                               const std::filesystem::path& out, const synth_progress& progress = {});

/// The vocabulary a synthetic model carries: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>,
/// then distinct SentencePiece pieces (U+2581 marks a leading space) with decreasing scores.
struct synth_vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;  // 1 normal, 2 unknown, 3 control, 6 byte
};
synth_vocab make_synth_vocab(int vocab_size);

}  // namespace troupe::engine
