// The one main() of every Boost.Test executable: a run in which a test was skipped (a real model
// file missing, see test_support.hpp needs_models) and nothing failed exits with skip_exit_code,
// which CTest reports as "Skipped" rather than "Passed".
#define BOOST_TEST_MODULE troupe
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>

#include "tests/test_support.hpp"

int main(int argc, char* argv[]) {
  const int rc = boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
  const int skipped = troupe::test::n_skipped();
  if (rc == 0 && skipped > 0) {
    std::fprintf(stderr, "SKIP: %d test case(s) or suite(s) not run: model files missing\n", skipped);
    return troupe::test::skip_exit_code;
  }
  return rc;
}
