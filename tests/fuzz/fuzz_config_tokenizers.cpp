// Fuzz for the text-like inputs an operator hands troupe: cluster files (TOML, toml11 + our
// reader) and tokenizer files (llama2.c .bin, tokenizer.json), built under AddressSanitizer +
// UBSan (tests/fuzz/config_tokenizers.cmake). Deterministic: a seeded mutator over real inputs.
//
// Cluster files: cluster-config/examples/*.toml and a few written here, truncated at every byte,
// with random byte flips, line deletions/duplications, and every value replaced by values that
// are out of range, of the wrong type or absurd. parse_cluster_text must return a config or an
// error that starts with "file:" (never throw, never crash); a config it returns must pass
// validate() and hold positive limits; check_layers / split_layers_evenly must not crash on it.
//
// Tokenizers: llama2.c tokenizer files built record by record with hostile fields (negative and
// huge lengths, NaN scores, max_token_length lies, cuts anywhere), the real tok512.bin mutated,
// and tokenizer.json files with random JSON nodes replaced. load_tokenizer must return an error
// or a tokenizer whose encode/decode stay inside its vocabulary; check_tokenizer_fits must
// refuse a vocabulary of another size.
//
// Usage: fuzz_config_tokenizers [--seed N] [--iterations N]
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cluster-config/cluster_config.hpp"
#include "engine/tokenizer.hpp"

namespace fs = std::filesystem;

namespace {

int failures = 0;
long cases = 0;

void fail_case(const std::string& where, const std::string& what) {
  if (++failures <= 20) std::fprintf(stderr, "FAIL %s: %s\n", where.c_str(), what.c_str());
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// ---- cluster files ---------------------------------------------------------------------------

void check_cluster_text(const std::string& where, const std::string& text) {
  ++cases;
  auto r = troupe::config::parse_cluster_text(text, "fuzz.toml");
  if (!r) {
    if (r.error().message.rfind("fuzz.toml:", 0) != 0) fail_case(where, "error without file: " + r.error().message);
    return;
  }
  if (auto v = troupe::config::validate(*r); !v) {
    fail_case(where, "parsed, then validate() refused it: " + v.error().message);
  }
  const auto& b = r->batching;
  for (int x : {r->replicas, b.block_size, b.n_blocks, b.max_step_tokens, b.max_running, b.max_waiting,
                b.prefill_chunk, b.decode_steps, b.decode_steps_ms, r->limits.max_new_tokens, r->limits.step_timeout_ms}) {
    if (x < 1) fail_case(where, fmt::format("a limit of {} was accepted", x));
  }
  for (int n_layers : {1, 5, 1 << 20}) {
    auto copy = *r;
    (void)troupe::config::check_layers(copy, n_layers);
    (void)troupe::config::split_layers_evenly(n_layers, int(copy.stages.size()), 1);
  }
}

const char* seed_cluster = R"(replicas = 2

[model]
path = "models/m.gguf"
tokenizer = "tok.bin"

[listen]
host = "127.0.0.1"
port = 0

[batching]
block_size = 8
n_blocks = 64
max_step_tokens = 256
max_running = 32
max_waiting = 16
prefill_chunk = 128
micro_batches = 0
decode_steps = 4
decode_steps_ms = 20

[limits]
max_new_tokens = 64
step_timeout_ms = 1000
ctx_size = 0

[[stages]]
first_layer = 0
last_layer = 3
threads = 1

[[stages]]
first_layer = 3
)";

const std::vector<std::string> hostile_values = {
  "0", "-1", "-9223372036854775808", "9223372036854775807", "99999999999999999999", "1e309", "nan", "inf",
  "\"\"", "\"x\"", "true", "[]", "[1, 2]", "{}", "{ a = 1 }", "1979-05-27T07:32:00Z", "0x7fffffff", "'''\n'''",
  "\"\\u0000\"", "-0", "+1", "1_000", "\"../../etc/passwd\"",
};

void fuzz_cluster(std::mt19937_64& rng, const std::vector<std::string>& seeds, int iterations) {
  for (size_t si = 0; si < seeds.size(); ++si) {
    const std::string& s = seeds[si];
    // Every truncation.
    for (size_t n = 0; n <= s.size(); ++n) check_cluster_text(fmt::format("seed {} cut at {}", si, n), s.substr(0, n));
    // Every value replaced by each hostile value.
    std::vector<std::string> lines;
    std::istringstream in(s);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    for (size_t li = 0; li < lines.size(); ++li) {
      const size_t eq = lines[li].find(" = ");
      if (eq == std::string::npos) continue;
      for (const std::string& v : hostile_values) {
        std::string text;
        for (size_t k = 0; k < lines.size(); ++k) text += (k == li ? lines[k].substr(0, eq + 3) + v : lines[k]) + "\n";
        check_cluster_text(fmt::format("seed {} line {} = {}", si, li + 1, v), text);
      }
    }
  }
  // Random mutations: byte flips, inserted punctuation, line deletions and duplications.
  const std::string punct = "[]{}=\"'#.,\n\\ \t0-";
  for (int it = 0; it < iterations; ++it) {
    std::string t = seeds[rng() % seeds.size()];
    const int n_mut = 1 + int(rng() % 4);
    for (int m = 0; m < n_mut && !t.empty(); ++m) {
      const size_t at = rng() % t.size();
      switch (rng() % 5) {
        case 0: t[at] = char(rng()); break;
        case 1: t.insert(at, 1, punct[rng() % punct.size()]); break;
        case 2: t.erase(at, 1 + rng() % 16); break;
        case 3: {  // duplicate a line
          const size_t b = t.rfind('\n', at) == std::string::npos ? 0 : t.rfind('\n', at) + 1;
          const size_t e = t.find('\n', at);
          t.insert(b, t.substr(b, e == std::string::npos ? std::string::npos : e - b + 1));
          break;
        }
        default: t.insert(at, hostile_values[rng() % hostile_values.size()]); break;
      }
    }
    check_cluster_text(fmt::format("random mutation {}", it), t);
  }
}

// ---- tokenizers ------------------------------------------------------------------------------

void exercise(const std::string& where, const troupe::engine::tokenizer& tok) {
  const int n = tok.vocab_size();
  if (n <= 0) return fail_case(where, fmt::format("loaded with vocab_size {}", n));
  for (const char* text : {"Once upon a time", " \xe2\x96\x81 x\n\t", "\xff\xfe<0x41><s></s>\xf0\x9f\x90\xb6", ""}) {
    for (bool bos : {true, false}) {
      troupe::engine::incremental_decoder dec(tok);
      for (int32_t id : tok.encode(text, bos)) {
        if (id < 0 || id >= n) return fail_case(where, fmt::format("encode gave {} outside [0, {})", id, n));
        (void)dec.push(id);
      }
      (void)dec.flush();
    }
  }
  for (int32_t id = 0; id < std::min(n, 2048); ++id) {
    (void)tok.decode_piece(id > 0 ? id - 1 : -1, id);
    (void)tok.token_text(id);
  }
  if (troupe::engine::check_tokenizer_fits(tok, n + 1, "fuzz")) fail_case(where, "fits a model of another vocabulary");
  if (!troupe::engine::check_tokenizer_fits(tok, n, "fuzz")) fail_case(where, "does not fit its own vocabulary size");
}

void check_tokenizer_file(const std::string& where, const fs::path& model, const fs::path& file) {
  ++cases;
  auto tok = troupe::engine::load_tokenizer(model, file);
  if (!tok) {
    if (tok.error().message.find(file.string()) == std::string::npos &&
        tok.error().message.find(file.parent_path().string()) == std::string::npos) {
      fail_case(where, "error does not name the file: " + tok.error().message);
    }
    return;
  }
  exercise(where, **tok);
}

void put_i32(std::string& s, int32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void put_f32(std::string& s, float v) { s.append(reinterpret_cast<const char*>(&v), 4); }

/// A llama2.c tokenizer file with hostile fields.
std::string random_llama2c(std::mt19937_64& rng) {
  std::string s;
  const int32_t max_len_choices[] = {0, -1, 1, 4, 16, 64, std::numeric_limits<int32_t>::max()};
  put_i32(s, max_len_choices[rng() % 7]);
  const int n = int(rng() % 40);
  for (int i = 0; i < n; ++i) {
    const float scores[] = {0.0f, -1.0f, std::nanf(""), std::numeric_limits<float>::infinity(), -1e30f, 3.5f};
    put_f32(s, scores[rng() % 6]);
    std::string piece;
    switch (rng() % 6) {
      case 0: piece = fmt::format("<0x{:02X}>", unsigned(rng() % 256)); break;
      case 1: piece = "\xe2\x96\x81" + std::string(1, char('a' + rng() % 26)); break;
      case 2: piece = std::string(1 + rng() % 8, char(rng())); break;
      case 3: piece = i == 1 ? "<s>" : i == 2 ? "</s>" : "<unk>"; break;
      default: piece = std::string(1, char('a' + rng() % 26)) + std::string(rng() % 3, 'x'); break;
    }
    int32_t len = int32_t(piece.size());
    if (rng() % 20 == 0) len = -int32_t(rng() % 5) - 1;
    if (rng() % 20 == 0) len = int32_t(rng() % 1000000);
    put_i32(s, len);
    s += piece;
  }
  if (!s.empty() && rng() % 3 == 0) s.resize(rng() % s.size());
  return s;
}

/// Replaces a random node of a JSON document with a hostile value.
void mutate_json(nlohmann::json& j, std::mt19937_64& rng, int depth = 0) {
  const nlohmann::json hostile[] = {nullptr, -1, 0, 1u << 31, "x", nlohmann::json::array(), nlohmann::json::object(),
                                    true, 1.5, "\xff\xfe", nlohmann::json::array({1, "a", nullptr})};
  if ((j.is_object() || j.is_array()) && !j.empty() && depth < 6 && rng() % 4 != 0) {
    auto it = j.begin();
    std::advance(it, long(rng() % j.size()));
    if (rng() % 8 == 0 && j.is_object()) {
      j.erase(it.key());
      return;
    }
    mutate_json(*it, rng, depth + 1);
    return;
  }
  j = hostile[rng() % std::size(hostile)];
}

void fuzz_tokenizers(std::mt19937_64& rng, const fs::path& models, const fs::path& tmp, int iterations) {
  // A llama2.c checkpoint path makes load_tokenizer use the explicit file.
  const fs::path l2c_model = models / "stories260K.bin";
  const fs::path bin = tmp / "tok.bin";
  for (int it = 0; it < iterations; ++it) {
    write_file(bin, random_llama2c(rng));
    check_tokenizer_file(fmt::format("llama2c random {}", it), l2c_model, bin);
  }
  if (const std::string real = read_file(models / "tok512.bin"); !real.empty()) {
    for (int it = 0; it < iterations; ++it) {
      std::string t = real;
      for (int m = 0, n = 1 + int(rng() % 4); m < n; ++m) {
        const size_t at = rng() % std::min<size_t>(t.size(), rng() % 2 ? 64 : t.size());
        t[at] = char(rng());
      }
      if (rng() % 4 == 0) t.resize(rng() % t.size());
      write_file(bin, t);
      check_tokenizer_file(fmt::format("tok512.bin mutation {}", it), l2c_model, bin);
    }
  } else {
    fail_case("setup", "missing " + (models / "tok512.bin").string());
  }
  // tokenizer.json: parsed, one node replaced, written back.
  const std::string tj_text = read_file(models / "TinyStories-656K" / "tokenizer.json");
  if (tj_text.empty()) return fail_case("setup", "missing TinyStories-656K/tokenizer.json");
  const nlohmann::json tj = nlohmann::json::parse(tj_text);
  const fs::path json_path = tmp / "tokenizer.json";
  for (int it = 0; it < iterations / 4; ++it) {
    nlohmann::json j = tj;
    for (int m = 0, n = 1 + int(rng() % 3); m < n; ++m) mutate_json(j, rng);
    write_file(json_path, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    check_tokenizer_file(fmt::format("tokenizer.json mutation {}", it), l2c_model, json_path);
  }
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 1;
  int iterations = 3000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--seed") == 0) seed = std::strtoull(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--iterations") == 0) iterations = std::atoi(argv[i + 1]);
  }
  std::mt19937_64 rng(seed);
  std::vector<std::string> seeds{seed_cluster, "[model]\npath = \"m\"\n[[stages]]\nfirst_layer = 0\n"};
  const fs::path examples = fs::path(TROUPE_SOURCE_DIR) / "cluster-config" / "examples";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(examples, ec)) {
    if (e.path().extension() == ".toml") seeds.push_back(read_file(e.path()));
  }
  if (seeds.size() < 3) fail_case("setup", "no example cluster files in " + examples.string());
  fuzz_cluster(rng, seeds, iterations);

  const fs::path models = TROUPE_MODELS_DIR;
  const fs::path tmp = fs::temp_directory_path() / fmt::format("fuzz_config_tokenizers-{}", ::getpid());
  fs::create_directories(tmp);
  fuzz_tokenizers(rng, models, tmp, iterations);
  fs::remove_all(tmp, ec);

  std::printf("fuzz_config_tokenizers: %ld cases, %d failures (seed %llu)\n", cases, failures,
              static_cast<unsigned long long>(seed));
  return failures == 0 ? 0 : 1;
}
