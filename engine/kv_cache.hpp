#pragma once
// Paged KV cache: fixed-size blocks of `block_size` positions; a sequence's block table maps its
// logical block i (positions [i*block_size, (i+1)*block_size)) to a physical block. Block
// accounting (who owns which block) is the caller's, with block_allocator and block_table: the
// SCHEDULER's batch_policy in the server.
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace troupe::engine {

class kv_cache {
 public:
  /// n_layers: layers this stage runs (local indices 0..n_layers-1).
  kv_cache(int n_layers, int n_kv_heads, int head_dim, int block_size, int n_blocks);

  int n_layers() const { return n_layers_; }
  int kv_dim() const { return kv_dim_; }
  int block_size() const { return block_size_; }
  int n_blocks() const { return n_blocks_; }
  size_t size_bytes() const { return 2 * k_.size() * sizeof(uint16_t); }

  /// Row of kv_dim f16 values (IEEE half, as uint16_t) for (local layer, physical block, slot
  /// within block). The cache holds keys and values as f16, as llama.cpp's default cache does:
  /// the forward pass rounds k and v to f16 anyway, so f16 storage loses nothing and halves the
  /// memory and the bytes attention reads. kernels::to_f16 writes a row.
  uint16_t* k(int layer, int block, int slot) { return k_.data() + index(layer, block, slot); }
  uint16_t* v(int layer, int block, int slot) { return v_.data() + index(layer, block, slot); }
  const uint16_t* k(int layer, int block, int slot) const { return k_.data() + index(layer, block, slot); }
  const uint16_t* v(int layer, int block, int slot) const { return v_.data() + index(layer, block, slot); }

 private:
  size_t index(int layer, int block, int slot) const {
    return ((size_t(layer) * n_blocks_ + block) * block_size_ + slot) * kv_dim_;
  }
  // Zeroed anonymous memory in 2 MiB pages where the kernel allows (attention walks the whole
  // cache every step; with 4 KiB pages most of that time went to TLB misses). Pages are touched
  // only when a block is first written, so RSS shows what the cache holds.
  class buffer {
   public:
    explicit buffer(size_t n_values);
    ~buffer();
    buffer(const buffer&) = delete;
    buffer& operator=(const buffer&) = delete;
    uint16_t* data() const { return data_; }
    size_t size() const { return n_; }

   private:
    uint16_t* data_ = nullptr;
    size_t n_ = 0, bytes_ = 0;
  };

  int n_layers_, kv_dim_, block_size_, n_blocks_;
  buffer k_, v_;
};

/// Free list of physical blocks: a stack that hands out 0, 1, 2, ... first.
class block_allocator {
 public:
  explicit block_allocator(int n_blocks);
  std::optional<int32_t> allocate();
  void release(int32_t block);
  int n_free() const { return int(free_.size()); }
  int n_total() const { return n_total_; }

 private:
  int n_total_;
  std::vector<int32_t> free_;
};

/// Blocks needed to hold n_positions positions.
constexpr int blocks_for(int n_positions, int block_size) {
  return (n_positions + block_size - 1) / block_size;
}

/// A sequence's block table, grown on demand.
struct block_table {
  std::vector<int32_t> blocks;
  /// Grows the table to cover n_positions; false (table unchanged) when blocks run out.
  bool reserve(int n_positions, int block_size, block_allocator& alloc);
  /// Returns every block, the table's first block on top (the next one handed out).
  void release(block_allocator& alloc);
};

}  // namespace troupe::engine
