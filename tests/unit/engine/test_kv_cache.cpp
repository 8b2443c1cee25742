#include <boost/test/unit_test.hpp>

#include <vector>

#include "engine/kv_cache.hpp"

using namespace troupe::engine;

BOOST_AUTO_TEST_SUITE(kv_cache)

BOOST_AUTO_TEST_CASE(blocks_for_rounds_positions_up_to_whole_blocks) {
  BOOST_TEST(blocks_for(0, 16) == 0);
  BOOST_TEST(blocks_for(1, 16) == 1);
  BOOST_TEST(blocks_for(16, 16) == 1);
  BOOST_TEST(blocks_for(17, 16) == 2);
}

BOOST_AUTO_TEST_CASE(allocator_hands_out_low_blocks_first_until_empty) {
  block_allocator alloc(3);
  BOOST_TEST(alloc.n_total() == 3);
  BOOST_TEST(alloc.n_free() == 3);
  BOOST_TEST(*alloc.allocate() == 0);
  BOOST_TEST(*alloc.allocate() == 1);
  BOOST_TEST(*alloc.allocate() == 2);
  BOOST_TEST(alloc.n_free() == 0);
  BOOST_TEST(!alloc.allocate().has_value());
  alloc.release(1);
  BOOST_TEST(alloc.n_free() == 1);
  BOOST_TEST(*alloc.allocate() == 1);
}

BOOST_AUTO_TEST_CASE(table_grows_to_cover_positions_or_stays_unchanged) {
  block_allocator alloc(4);
  block_table t;
  BOOST_TEST(t.reserve(20, 8, alloc));  // 3 blocks
  BOOST_TEST((t.blocks == std::vector<int32_t>{0, 1, 2}));
  BOOST_TEST(t.reserve(24, 8, alloc));  // still 3
  BOOST_TEST(t.blocks.size() == 3u);
  BOOST_TEST(!t.reserve(40, 8, alloc));  // needs 5, only 1 more left
  BOOST_TEST((t.blocks == std::vector<int32_t>{0, 1, 2}));
  BOOST_TEST(alloc.n_free() == 1);
}

BOOST_AUTO_TEST_CASE(released_table_comes_back_first_block_first) {
  block_allocator alloc(6);
  block_table a, b;
  BOOST_REQUIRE(a.reserve(3, 1, alloc));  // 0 1 2
  BOOST_REQUIRE(b.reserve(2, 1, alloc));  // 3 4
  a.release(alloc);
  BOOST_TEST(a.blocks.empty());
  BOOST_TEST(alloc.n_free() == 4);
  block_table c;
  BOOST_REQUIRE(c.reserve(4, 1, alloc));
  BOOST_TEST((c.blocks == std::vector<int32_t>{0, 1, 2, 5}));
}

BOOST_AUTO_TEST_SUITE_END()
