// Loader fuzz: every real model file in TROUPE_MODELS_DIR, truncated at ~200 points and with
// ~300 random 1-4 byte flips (mostly in the header region), loaded through engine::load_model and
// engine::load_tokenizer. Built with AddressSanitizer + UBSan (tests/fuzz/loaders.cmake); the
// loaders must return errors, never crash, never read outside the file, and whatever loads must
// hold views that lie inside the file and agree with its config. Truncations must be errors.
//
// mmap is wrapped at link time (-Wl,--wrap=mmap,--wrap=munmap): a read-only file mapping is
// followed by an inaccessible page and the zero fill after the end of the file is poisoned, so
// ASan reports a read even one byte past the end of a file, which a plain mapping would hide.
//
// Usage: fuzz_loaders [--seed N] [--only SUBSTRING] [--verbose] [--load PATH [TOKENIZER]]
// [--check-harness FILE]
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/gguf.hpp"
#include "engine/mapped_file.hpp"
#include "engine/model_weights.hpp"
#include "engine/tokenizer.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define TROUPE_FUZZ_HAVE_SANITIZER 1
#define TROUPE_FUZZ_HAVE_ASAN 1
#endif

namespace fs = std::filesystem;
using namespace troupe::engine;

/// A run that fuzzed only some targets (model files missing): CTest's SKIP_RETURN_CODE.
constexpr int skip_exit_code = 77;

// ---- mmap with the bytes past the end of the file poisoned (see the header comment) ---------

extern "C" {
void* __real_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t offset);
int __real_munmap(void* addr, size_t len);
}

namespace {
std::mutex guarded_maps_mutex;
std::map<void*, size_t>& guarded_maps() {  // start -> bytes reserved (file pages + guard page)
  static std::map<void*, size_t> maps;
  return maps;
}
size_t page_size() { return size_t(::sysconf(_SC_PAGESIZE)); }
}  // namespace

/// A read-only mapping of a whole file is placed in a reservation one page longer, whose last page
/// stays PROT_NONE; the zero fill between the end of the file and the end of its last page is
/// poisoned for ASan. A read past the end of the file is then reported at once.
extern "C" void* __wrap_mmap(void* addr, size_t len, int prot, int flags, int fd, off_t offset) {
  if (addr != nullptr || fd < 0 || offset != 0 || prot != PROT_READ || len == 0) {
    return __real_mmap(addr, len, prot, flags, fd, offset);
  }
  const size_t page = page_size();
  const size_t file_pages = (len + page - 1) / page * page;
  const size_t total = file_pages + page;
  void* base = __real_mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return MAP_FAILED;
  if (__real_mmap(base, len, prot, flags | MAP_FIXED, fd, 0) == MAP_FAILED) {
    const int e = errno;
    __real_munmap(base, total);
    errno = e;
    return MAP_FAILED;
  }
#ifdef TROUPE_FUZZ_HAVE_ASAN
  ASAN_POISON_MEMORY_REGION(static_cast<char*>(base) + len, file_pages - len);
#endif
  std::lock_guard lock(guarded_maps_mutex);
  guarded_maps()[base] = total;
  return base;
}

extern "C" int __wrap_munmap(void* addr, size_t len) {
  size_t total = 0;
  {
    std::lock_guard lock(guarded_maps_mutex);
    if (auto it = guarded_maps().find(addr); it != guarded_maps().end()) {
      total = it->second;
      guarded_maps().erase(it);
    }
  }
  if (total == 0) return __real_munmap(addr, len);
#ifdef TROUPE_FUZZ_HAVE_ASAN
  ASAN_UNPOISON_MEMORY_REGION(addr, total - page_size());  // the next mapping here starts clean
#endif
  return __real_munmap(addr, total);
}

// ---- sanitizer defaults and the crash report --------------------------------------------------

extern "C" const char* __asan_default_options() {
  return "handle_abort=1:detect_leaks=1:allocator_may_return_null=1:print_summary=1";
}
extern "C" const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }

namespace {

// What is being loaded right now, printed if a sanitizer (or an abort) ends the process.
char current_case[2048] = "(none)";

void set_current_case(const std::string& s) {
  std::snprintf(current_case, sizeof(current_case), "%s", s.c_str());
}

void on_death() {
  std::fprintf(
      stderr,
      "\nfuzz_loaders: the process died while loading:\n  %s\n"
      "The corrupted input was left in place; reproduce with: fuzz_loaders --load <loaded path>\n",
      current_case);
}

// ---- what a loaded model must satisfy ------------------------------------------------------

struct checker {
  std::vector<std::string> failures;

  void fail_case(const std::string& where, const std::string& what) {
    failures.push_back(fmt::format("{}: {}", where, what));
  }

  static bool inside_storage(const model_weights& m, const std::byte* lo, uint64_t n) {
    for (const auto& f : m.files) {
      if (f && lo >= f->data() && uint64_t(lo - f->data()) <= f->size() &&
          n <= f->size() - uint64_t(lo - f->data())) {
        return true;
      }
    }
    for (const auto& b : m.owned) {
      if (lo >= b.data() && uint64_t(lo - b.data()) <= b.size() &&
          n <= b.size() - uint64_t(lo - b.data())) {
        return true;
      }
    }
    return false;
  }

  /// A view of the expected shape that lies wholly inside the model's files or owned buffers.
  std::string check_view(const model_weights& m, const weight& w, const char* name, int64_t rows,
                         int64_t cols, bool must_be_f32) {
    if (w.empty()) return fmt::format("{} is missing", name);
    if (w.rows != rows || w.cols != cols) {
      return fmt::format("{} is [{}][{}], config implies [{}][{}]", name, w.rows, w.cols, rows,
                         cols);
    }
    if (must_be_f32 && w.type != dtype::f32)
      return fmt::format("{} is {}, not f32", name, int(w.type));
    const auto rb = row_bytes(w.type, w.cols);
    if (!rb) return fmt::format("{}: {} columns are not whole blocks", name, w.cols);
    uint64_t n = 0;
    if (__builtin_mul_overflow(uint64_t(w.rows), uint64_t(*rb), &n))
      return fmt::format("{}: size overflows", name);
    if (!inside_storage(m, w.data, n))
      return fmt::format("{}: {} bytes do not lie inside the model's storage", name, n);
    const uintptr_t align = w.type == dtype::f32 ? 4 : 2;
    if (reinterpret_cast<uintptr_t>(w.data) % align != 0)
      return fmt::format("{} is misaligned", name);
    return {};
  }

  void check_model(const std::string& where, const model_weights& m) {
    const model_config& c = m.config;
    if (c.dim <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.hidden_dim <= 0 ||
        c.vocab_size <= 0 || c.n_layers <= 0 || c.n_heads % c.n_kv_heads != 0 ||
        c.head_dim % 2 != 0) {
      fail_case(
          where,
          fmt::format(
              "implausible config dim={} heads={} kv_heads={} head_dim={} hidden={} vocab={} "
              "layers={}",
              c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim, c.vocab_size, c.n_layers));
      return;
    }
    if (c.bos_id < 0 || c.bos_id >= c.vocab_size || c.eos_id < 0 || c.eos_id >= c.vocab_size) {
      fail_case(where, fmt::format("bos {} / eos {} outside the vocabulary of {}", c.bos_id,
                                   c.eos_id, c.vocab_size));
    }
    if (m.first_layer < 0 || m.first_layer >= m.last_layer || m.last_layer > c.n_layers ||
        int(m.layers.size()) != m.last_layer - m.first_layer) {
      fail_case(where, fmt::format("layers [{}, {}) with {} layer entries of {}", m.first_layer,
                                   m.last_layer, m.layers.size(), c.n_layers));
      return;
    }
    const int64_t dim = c.dim, q_dim = int64_t(c.n_heads) * c.head_dim, kv_dim = c.kv_dim();
    std::vector<std::string> bad;
    const auto view = [&](const weight& w, const std::string& name, int64_t rows, int64_t cols,
                          bool f32) {
      auto e = check_view(m, w, name.c_str(), rows, cols, f32);
      if (!e.empty()) bad.push_back(std::move(e));
    };
    if (m.is_first()) view(m.token_embedding, "token_embedding", c.vocab_size, dim, false);
    for (size_t i = 0; i < m.layers.size(); ++i) {
      const layer_weights& l = m.layers[i];
      const std::string p = fmt::format("layer {} ", m.first_layer + int(i));
      view(l.attn_norm, p + "attn_norm", 1, dim, true);
      view(l.wq, p + "wq", q_dim, dim, false);
      view(l.wk, p + "wk", kv_dim, dim, false);
      view(l.wv, p + "wv", kv_dim, dim, false);
      view(l.wo, p + "wo", dim, q_dim, false);
      view(l.ffn_norm, p + "ffn_norm", 1, dim, true);
      view(l.w_gate, p + "w_gate", c.hidden_dim, dim, false);
      view(l.w_down, p + "w_down", dim, c.hidden_dim, false);
      view(l.w_up, p + "w_up", c.hidden_dim, dim, false);
    }
    if (m.is_last()) {
      view(m.final_norm, "final_norm", 1, dim, true);
      view(m.output, "output", c.vocab_size, dim, false);
    }
    for (auto& b : bad) fail_case(where, b);
  }

  /// Uses a tokenizer that loaded from corrupt input: nothing it returns may be out of range.
  void exercise_tokenizer(const std::string& where, const tokenizer& tok) {
    const int n = tok.vocab_size();
    if (n <= 0) {
      fail_case(where, fmt::format("tokenizer loaded with vocab_size {}", n));
      return;
    }
    static const char* texts[] = {
        "Once upon a time, there was a little dog named Spot.",
        " \xe2\x96\x81leading  spaces\tand\nnewlines ",
        "bytes: \xff\xfe\x80 <0x41> <s></s> 123 \xf0\x9f\x90\xb6",
        "",
    };
    for (const char* text : texts) {
      for (bool bos : {true, false}) {
        const auto ids = tok.encode(text, bos);
        incremental_decoder dec(tok);
        for (int32_t id : ids) {
          if (id < 0 || id >= n) {
            fail_case(where,
                      fmt::format("encode gave token {} outside the vocabulary of {}", id, n));
            return;
          }
          (void)dec.push(id);
        }
        (void)dec.flush();
      }
    }
    int32_t prev = -1;
    for (int32_t id = 0; id < std::min(n, 4096); ++id) {
      (void)tok.decode_piece(prev, id);
      (void)tok.token_text(id);
      prev = id;
    }
  }
};

// ---- targets and their variants -----------------------------------------------------------

enum class load_kind {
  model,            // load_model(load_path) (+ load_tokenizer(load_path) when with_tokenizer)
  tokenizer_file,   // load_tokenizer(tokenizer_model, work file)
  tokenizer_model,  // load_tokenizer(load_path): the tokenizer inside a model directory
};

struct target {
  std::string name;
  fs::path source;     // pristine file
  fs::path work;       // the copy that gets corrupted in place
  fs::path load_path;  // the file or directory handed to the loader
  load_kind kind = load_kind::model;
  bool with_tokenizer = false;
  fs::path tokenizer_model;      // for tokenizer_file
  uint64_t must_fail_below = 0;  // a truncation to fewer bytes must be an error
  uint64_t header_bytes = 0;     // where most flips go
  bool text = false;             // JSON: replace bytes with printable ASCII instead of XOR-ing them
  int n_truncations = 200;
  int n_flips = 300;
};

struct outcome {
  bool loaded = false;
  errc code{};                  // when not loaded
  std::string error;            // when not loaded
  bool tokenizer_loaded = true;
  errc tokenizer_code{};        // when a model's own tokenizer did not load
  std::string tokenizer_error;  // when a model's own tokenizer did not load
};

/// An error that says the loader read the bytes and refused them. Any other code (io_error: the
/// copy could not be opened or mapped; invalid_argument: the harness asked for something wrong)
/// means the loader never judged the input, so it must not count as a rejected variant.
bool rejects_the_bytes(errc c) {
  return c == errc::bad_format || c == errc::truncated || c == errc::unsupported;
}

bool starts_with_gguf_magic(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

class fuzzer {
 public:
  fuzzer(uint64_t seed, bool verbose) : seed_(seed), verbose_(verbose) {}

  /// Loads the target's current state and checks what comes back.
  outcome run_one(const target& t, const std::string& what) {
    const std::string where = fmt::format("{} [{}]", t.name, what);
    set_current_case(fmt::format("{} (loading {}, corrupted file {})", where, t.load_path.string(),
                                 t.work.string()));
    ++loads_;
    const size_t failures_before = check_.failures.size();
    outcome o;
    switch (t.kind) {
      case load_kind::model: {
        auto m = load_model(t.load_path);
        o.loaded = m.has_value();
        if (!m) {
          o.code = m.error().code;
          o.error = m.error().message;
        } else {
          check_.check_model(where, *m);
          // The last stage alone maps the head through the same checks.
          const int n = m->config.n_layers;
          if (n > 1 && check_.failures.size() == failures_before) {
            auto tail = load_model(t.load_path, load_options{layer_range{n - 1, -1}});
            if (!tail)
              check_.fail_case(
                  where, "full load worked, last layer alone failed: " + tail.error().message);
            else
              check_.check_model(where + " last layer", *tail);
          }
        }
        if (t.with_tokenizer) {
          auto tok = load_tokenizer(t.load_path);
          o.tokenizer_loaded = tok.has_value();
          if (tok) {
            check_.exercise_tokenizer(where + " tokenizer", **tok);
          } else {
            o.tokenizer_code = tok.error().code;
            o.tokenizer_error = tok.error().message;
          }
        }
        break;
      }
      case load_kind::tokenizer_file:
      case load_kind::tokenizer_model: {
        auto tok = t.kind == load_kind::tokenizer_file ? load_tokenizer(t.tokenizer_model, t.work)
                                                       : load_tokenizer(t.load_path);
        o.loaded = tok.has_value();
        if (!tok) {
          o.code = tok.error().code;
          o.error = tok.error().message;
        } else
          check_.exercise_tokenizer(where, **tok);
        break;
      }
    }
    set_current_case("(between cases)");
    // A refusal must come from the loader judging the bytes (see rejects_the_bytes).
    if (!o.loaded && !rejects_the_bytes(o.code)) {
      check_.fail_case(where, fmt::format("error code {} means the loader did not judge the input: {}",
                                          errc_name(o.code), o.error));
    }
    // One exception: a GGUF cut below its 4 magic bytes is no longer recognisable as GGUF, so
    // load_tokenizer takes it for a llama2.c checkpoint, which has no vocabulary of its own and
    // needs an explicit tokenizer (invalid_argument): format detection did judge the bytes.
    const bool lost_gguf_magic = o.tokenizer_code == errc::invalid_argument && t.source.extension() == ".gguf" &&
                                 !starts_with_gguf_magic(t.work);
    if (!o.tokenizer_loaded && !rejects_the_bytes(o.tokenizer_code) && !lost_gguf_magic) {
      check_.fail_case(where, fmt::format("tokenizer error code {} means it did not judge the input: {}",
                                          errc_name(o.tokenizer_code), o.tokenizer_error));
    }
    if (verbose_) {
      std::printf("    %s: %s%s%s\n", where.c_str(), o.loaded ? "loaded" : o.error.c_str(),
                  o.tokenizer_error.empty() ? "" : "; tokenizer: ", o.tokenizer_error.c_str());
    }
    return o;
  }

  /// Baseline, truncations, flips. The pristine file must load (and its own tokenizer too): a loader
  /// that refuses it ("not implemented", unsupported, ...) fails the run instead of being skipped.
  void fuzz(const target& t) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<char> pristine = read_all(t.source);
    std::error_code ec;
    fs::copy_file(t.source, t.work, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      check_.fail_case(t.name, "cannot copy: " + ec.message());
      return;
    }
    fs::permissions(t.work, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add,
                    ec);

    const auto base = run_one(t, "pristine");
    if (!base.loaded) {
      check_.fail_case(t.name, "the pristine file does not load: " + base.error);
      return;
    }
    if (!base.tokenizer_loaded) {
      check_.fail_case(t.name, "the pristine file's tokenizer does not load: " + base.tokenizer_error);
      return;
    }
    std::mt19937_64 rng(seed_ ^ std::hash<std::string>{}(t.name));
    const uint64_t size = pristine.size();
    const int fd = ::open(t.work.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      check_.fail_case(t.name, "cannot open the work copy");
      return;
    }
    int n_errors = 0, n_loaded = 0;

    // Truncations, longest first (each one only shrinks the file): every length below 16, then
    // points spread over the header region and over the whole file.
    std::set<uint64_t> cuts;
    for (uint64_t n = 0; n < std::min<uint64_t>(16, size); ++n) cuts.insert(n);
    const uint64_t head = std::max<uint64_t>(1, std::min(t.header_bytes, size));
    for (int i = 0; i < t.n_truncations; ++i) cuts.insert(rng() % (i % 2 == 0 ? head : size));
    if (t.must_fail_below > 0) cuts.insert(t.must_fail_below - 1);
    for (auto it = cuts.rbegin(); it != cuts.rend(); ++it) {
      if (::ftruncate(fd, off_t(*it)) != 0) continue;
      const auto o = run_one(t, fmt::format("truncated to {} of {} bytes", *it, size));
      (o.loaded ? n_loaded : n_errors)++;
      if (o.loaded && *it < t.must_fail_below) {
        check_.fail_case(
            t.name, fmt::format("truncated to {} of {} bytes (needs {}) and it still loaded", *it,
                                size, t.must_fail_below));
      }
    }
    restore(fd, pristine);

    // Flips: 1-4 bytes each, 3 in 4 inside the header region (at most the first 64 KiB).
    for (int i = 0; i < t.n_flips; ++i) {
      const int k = 1 + int(rng() % 4);
      std::vector<std::pair<uint64_t, uint8_t>> flips;  // offset, xor mask
      for (int j = 0; j < k; ++j) {
        const uint64_t span = rng() % 4 != 0 ? head : std::min<uint64_t>(size, 64 * 1024);
        uint64_t off = rng() % span;
        uint8_t mask = uint8_t(1 + rng() % 255);
        if (t.text) {  // JSON: a digit for a digit, a letter for a letter: values change, syntax
                       // holds
          const auto is_alnum = [](char ch) {
            return std::isalnum(static_cast<unsigned char>(ch)) != 0;
          };
          for (int step = 0; step < 64 && off + 1 < size && !is_alnum(pristine[off]); ++step) ++off;
          const char old_c = pristine[off];
          const char new_c = std::isdigit(static_cast<unsigned char>(old_c))
                                 ? char('0' + rng() % 10)
                             : is_alnum(old_c) ? char('a' + rng() % 26)
                                               : char(0x20 + rng() % 95);
          mask = uint8_t(uint8_t(old_c) ^ uint8_t(new_c));
          if (mask == 0) mask = 0x01;
        }
        flips.emplace_back(off, mask);
      }
      std::string what = "flipped";
      for (const auto& [off, mask] : flips) {
        const char b = char(uint8_t(pristine[off]) ^ mask);
        if (::pwrite(fd, &b, 1, off_t(off)) != 1) check_.fail_case(t.name, "pwrite failed");
        what += fmt::format(" @{}^0x{:02x}", off, mask);
      }
      const auto o = run_one(t, what);
      (o.loaded ? n_loaded : n_errors)++;
      for (const auto& f : flips) {
        if (::pwrite(fd, &pristine[f.first], 1, off_t(f.first)) != 1)
          check_.fail_case(t.name, "pwrite failed");
      }
    }
    ::close(fd);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("  %-40s %4d variants: %4d errors, %4d loaded, %.1f s\n", t.name.c_str(),
                n_errors + n_loaded, n_errors, n_loaded, seconds);
    std::fflush(stdout);
  }

  const std::vector<std::string>& failures() const { return check_.failures; }
  checker& check() { return check_; }
  int loads() const { return loads_; }

 private:
  static std::vector<char> read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  void restore(int fd, const std::vector<char>& bytes) {
    if (::ftruncate(fd, 0) != 0 ||
        ::pwrite(fd, bytes.data(), bytes.size(), 0) != ssize_t(bytes.size())) {
      check_.fail_case("restore", "cannot rewrite the work copy");
    }
  }

  uint64_t seed_;
  bool verbose_;
  checker check_;
  int loads_ = 0;
};

/// End of the last tensor's data: a GGUF cut anywhere before it must fail.
uint64_t gguf_data_end(const fs::path& p) {
  auto f = gguf::file::open(p);
  if (!f) return 0;
  uint64_t end = f->data_offset();
  for (const auto& t : f->tensors())
    end = std::max(end, f->data_offset() + t.offset + t.size_bytes);
  return end;
}

/// Offset of the last '}' of a JSON file: every shorter prefix is invalid JSON.
uint64_t json_end(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  const std::string s{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const auto at = s.rfind('}');
  return at == std::string::npos ? 0 : at + 1;
}

uint64_t file_size_or_zero(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : n;
}

uint64_t safetensors_header_end(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  return in ? 8 + n : 64;
}

}  // namespace

int main(int argc, char** argv) {
#ifdef TROUPE_FUZZ_HAVE_SANITIZER
  __sanitizer_set_death_callback(on_death);
#endif
  const char* env = std::getenv("TROUPE_MODELS_DIR");
  const fs::path models = env != nullptr ? fs::path(env) : fs::path(TROUPE_MODELS_DIR);
  uint64_t seed = 20240611;
  std::string only;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--verbose") {
      verbose = true;
    } else if (a == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (a == "--check-harness" && i + 1 < argc) {
      // Reads one byte past the end of a mapped file: ASan must report it (a CTest checks that).
      // A relative FILE is taken from the models directory.
      const fs::path file = fs::path(argv[i + 1]).is_relative() ? models / argv[i + 1] : fs::path(argv[i + 1]);
      if (std::error_code ec; !fs::exists(file, ec)) {
        std::fprintf(stderr, "SKIP: %s missing (set TROUPE_MODELS_DIR to the real models)\n", file.c_str());
        return skip_exit_code;
      }
      auto f = mapped_file::open(file);
      if (!f) return 2;
      const volatile std::byte* end = (*f)->data() + (*f)->size();
      std::printf("read past the end: %d (not caught)\n", int(std::to_integer<int>(*end)));
      return 0;
    } else if (a == "--load" && i + 1 < argc) {  // reproduce one case
      fuzzer f(seed, verbose);
      target t;
      t.name = "replay";
      t.source = t.work = t.load_path = argv[i + 1];
      if (i + 2 < argc) {
        t.kind = load_kind::tokenizer_file;
        t.tokenizer_model = argv[i + 1];
        t.work = argv[i + 2];
      } else {
        t.with_tokenizer = true;
      }
      const auto o = f.run_one(t, "replay");
      std::printf("%s\n", o.loaded ? "loaded" : ("error: " + o.error).c_str());
      if (!o.tokenizer_error.empty())
        std::printf("tokenizer error: %s\n", o.tokenizer_error.c_str());
      for (const auto& s : f.failures()) std::printf("FAIL %s\n", s.c_str());
      return f.failures().empty() ? 0 : 1;
    } else {
      std::fprintf(stderr,
                   "usage: fuzz_loaders [--seed N] [--only SUBSTRING] [--verbose] [--load PATH "
                   "[TOKENIZER]]\n");
      return 2;
    }
  }

  const fs::path tmp =
      fs::temp_directory_path() / fmt::format("troupe-fuzz-loaders-{}", ::getpid());
  fs::create_directories(tmp);

  // The HF directory is copied whole: its files are corrupted one at a time.
  const fs::path hf_src = models / "TinyStories-656K";
  const fs::path hf_dir = tmp / "TinyStories-656K";
  fs::create_directories(hf_dir);
  std::error_code hf_ec;
  for (const auto& e : fs::directory_iterator(hf_src, hf_ec)) {
    fs::copy_file(e.path(), hf_dir / e.path().filename(), fs::copy_options::overwrite_existing);
    fs::permissions(hf_dir / e.path().filename(), fs::perms::owner_write, fs::perm_options::add);
  }

  std::vector<target> targets;
  const auto add = [&](std::string name, fs::path source, fs::path work, fs::path load_path,
                       load_kind kind, uint64_t must_fail_below, uint64_t header_bytes) -> target& {
    target t;
    t.name = std::move(name);
    t.source = std::move(source);
    t.work = std::move(work);
    t.load_path = std::move(load_path);
    t.kind = kind;
    t.must_fail_below = must_fail_below;
    t.header_bytes = header_bytes;
    return targets.emplace_back(std::move(t));
  };
  // GGUF (the tokenizer is inside): a cut before the end of the last tensor's data must fail.
  for (const char* rel : {"TinyStories-656K-Q8_0.gguf", "derived/stories260K.gguf",
                          "derived/TinyStories-656K-F32.gguf"}) {
    const fs::path src = models / rel;
    add(rel, src, tmp / src.filename(), tmp / src.filename(), load_kind::model, gguf_data_end(src),
        64 * 1024)
        .with_tokenizer = true;
  }
  // llama2.c checkpoints: the header is 28 bytes; every byte of a shared-classifier file is needed.
  for (const char* rel : {"stories260K.bin", "derived/TinyStories-656K.llama2c.bin"}) {
    const fs::path src = models / rel;
    add(rel, src, tmp / src.filename(), tmp / src.filename(), load_kind::model,
        file_size_or_zero(src), 28);
  }
  // The HF directory, one file at a time.
  const fs::path st = hf_src / "model.safetensors";
  add("TinyStories-656K/model.safetensors", st, hf_dir / "model.safetensors", hf_dir,
      load_kind::model, file_size_or_zero(st), safetensors_header_end(st));
  const fs::path cfg = hf_src / "config.json";
  target& c = add("TinyStories-656K/config.json", cfg, hf_dir / "config.json", hf_dir,
                  load_kind::model, json_end(cfg), file_size_or_zero(cfg));
  c.with_tokenizer =
      true;  // the HF tokenizer reads BOS/EOS from config.json (and is slow under ASan)
  c.text = true;
  c.n_truncations = 80;
  c.n_flips = 200;
  const fs::path tj = hf_src / "tokenizer.json";
  add("TinyStories-656K/tokenizer.json", tj, hf_dir / "tokenizer.json", hf_dir,
      load_kind::tokenizer_model, json_end(tj), 64 * 1024)
      .text = true;
  // llama2.c tokenizer files, given explicitly next to a checkpoint; a shorter file may be valid.
  for (const char* rel : {"tok512.bin", "derived/tok2048-656K.bin"}) {
    const fs::path src = models / rel;
    add(rel, src, tmp / src.filename(), {}, load_kind::tokenizer_file, 0, 4096).tokenizer_model =
        models / "stories260K.bin";
  }

  std::printf("fuzz_loaders: seed %llu, models in %s\n", (unsigned long long)seed,
              models.string().c_str());
  fuzzer f(seed, verbose);
  int n_run = 0, n_missing = 0;
  for (const auto& t : targets) {
    if (!only.empty() && t.name.find(only) == std::string::npos) continue;
    std::error_code ec;
    if (!fs::exists(t.source, ec) || (t.kind == load_kind::tokenizer_file && !fs::exists(t.tokenizer_model, ec))) {
      std::fprintf(stderr, "SKIP: %s missing (set TROUPE_MODELS_DIR to the real models)\n", t.source.c_str());
      ++n_missing;
      continue;
    }
    f.fuzz(t);
    ++n_run;
  }
  if (n_run == 0 && n_missing == 0) f.check().fail_case("targets", "--only " + only + " matches no target");

  std::error_code ec;
  fs::remove_all(tmp, ec);
  std::printf("fuzz_loaders: %d loads, %zu failures\n", f.loads(), f.failures().size());
  for (size_t i = 0; i < f.failures().size() && i < 50; ++i)
    std::printf("FAIL %s\n", f.failures()[i].c_str());
  if (!f.failures().empty()) return 1;
  if (n_missing > 0) {
    std::fprintf(stderr, "SKIP: %d of %d targets not fuzzed: model files missing\n", n_missing, n_run + n_missing);
    return skip_exit_code;
  }
  return 0;
}
