// probe_devices: CPU always; GPUs only when the CUDA backend is built and a driver and GPU exist.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <string>

#include "engine/device.hpp"

using namespace troupe::engine;

BOOST_AUTO_TEST_SUITE(device)

BOOST_AUTO_TEST_CASE(probe_names_a_gpu_or_says_why_there_is_none) {
  const device_info d = probe_devices();
#ifdef TROUPE_HAVE_CUDA
  BOOST_TEST(d.cuda_built);
#else
  BOOST_TEST(!d.cuda_built);
  BOOST_TEST(d.note == "built without CUDA");
#endif
  BOOST_TEST(d.n_gpus >= 0);
  if (d.n_gpus == 0) {
    BOOST_TEST(!d.note.empty());  // e.g. "CUDA driver version is insufficient ...", "no CUDA devices"
  } else {
    BOOST_TEST(!d.gpu_name.empty());
  }
  // On a machine that has GPUs, TROUPE_EXPECT_GPUS=1 makes their absence a failure.
  if (const char* want = std::getenv("TROUPE_EXPECT_GPUS"); want != nullptr && std::string(want) == "1") {
    BOOST_TEST(d.n_gpus >= 1, "no GPU found: " << d.note);
  }
  BOOST_TEST_MESSAGE("devices: cuda_built=" << d.cuda_built << " n_gpus=" << d.n_gpus << " gpu='" << d.gpu_name
                                            << "' note='" << d.note << "'");
}

BOOST_AUTO_TEST_SUITE_END()
