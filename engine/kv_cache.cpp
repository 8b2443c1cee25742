#include "engine/kv_cache.hpp"

#include <sys/mman.h>

#include <new>

#include "engine/error.hpp"

namespace troupe::engine {

kv_cache::kv_cache(int n_layers, int n_kv_heads, int head_dim, int block_size, int n_blocks)
    : n_layers_(n_layers), kv_dim_(n_kv_heads * head_dim), block_size_(block_size), n_blocks_(n_blocks),
      k_(size_t(n_layers) * n_blocks * block_size * n_kv_heads * head_dim),
      v_(k_.size()) {
  TROUPE_ASSERT(n_layers > 0 && block_size > 0 && n_blocks > 0 && kv_dim_ > 0);
}

kv_cache::buffer::buffer(size_t n_values) : n_(n_values) {
  constexpr size_t huge = size_t(2) << 20;
  bytes_ = (n_values * sizeof(uint16_t) + huge - 1) / huge * huge;
  void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  madvise(p, bytes_, MADV_HUGEPAGE);  // advice only: without THP this is ordinary memory
  data_ = static_cast<uint16_t*>(p);
}

kv_cache::buffer::~buffer() { munmap(data_, bytes_); }

block_allocator::block_allocator(int n_blocks) : n_total_(n_blocks) {
  free_.reserve(n_blocks);
  for (int i = n_blocks - 1; i >= 0; --i) free_.push_back(i);  // hand out 0, 1, 2, ... first
}

std::optional<int32_t> block_allocator::allocate() {
  if (free_.empty()) return std::nullopt;
  const int32_t b = free_.back();
  free_.pop_back();
  return b;
}

void block_allocator::release(int32_t block) {
  TROUPE_ASSERT(block >= 0 && block < n_total_);
  free_.push_back(block);
}

bool block_table::reserve(int n_positions, int block_size, block_allocator& alloc) {
  const int need = blocks_for(n_positions, block_size) - int(blocks.size());
  if (need <= 0) return true;
  if (alloc.n_free() < need) return false;
  for (int i = 0; i < need; ++i) blocks.push_back(*alloc.allocate());
  return true;
}

void block_table::release(block_allocator& alloc) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) alloc.release(*it);
  blocks.clear();
}

}  // namespace troupe::engine
