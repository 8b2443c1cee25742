# libFuzzer target for the client-protocol frame decoder and message decoders (transport/).
#
# libFuzzer needs clang (-fsanitize=fuzzer); the rest of the project builds with g++, so the
# fuzzer is compiled by a custom command invoking clang++ directly on the few sources it needs.
# clang 14 with libstdc++ 12 has no std::expected: transport/error.hpp then uses its own small
# stand-in (result<T>), so the same sources compile under both compilers. fmt is used header-only
# and msgpack-c is header-only, so nothing built by g++ is linked in.
#
# Tests: unit.fuzz.frame runs the fuzzer for 20 s from a seed corpus of valid frames
# (written by fuzz_frame_corpus, a small g++ program built against troupe::transport).

find_program(TROUPE_CLANGXX NAMES clang++ clang++-16 clang++-15 clang++-14)
if(NOT TROUPE_CLANGXX)
  message(STATUS "fuzz_frame: clang++ not found, libFuzzer target and unit.fuzz.frame skipped")
  return()
endif()

# clang without its libFuzzer runtime (libclang-common-*-dev) cannot link a fuzzer: probe once.
if(NOT DEFINED TROUPE_CLANG_LIBFUZZER)
  set(probe_dir ${CMAKE_CURRENT_BINARY_DIR}/fuzz_frame_probe)
  file(WRITE ${probe_dir}/probe.cpp
    "#include <cstddef>\n#include <cstdint>\n"
    "extern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(
    COMMAND ${TROUPE_CLANGXX} -fsanitize=fuzzer,address,undefined probe.cpp -o probe
    WORKING_DIRECTORY ${probe_dir} RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_QUIET)
  if(probe_rc EQUAL 0)
    set(TROUPE_CLANG_LIBFUZZER ON CACHE INTERNAL "clang++ can link libFuzzer targets")
  else()
    set(TROUPE_CLANG_LIBFUZZER OFF CACHE INTERNAL "clang++ can link libFuzzer targets")
  endif()
endif()
if(NOT TROUPE_CLANG_LIBFUZZER)
  message(STATUS "fuzz_frame: ${TROUPE_CLANGXX} cannot link -fsanitize=fuzzer, target and unit.fuzz.frame skipped")
  return()
endif()
message(STATUS "fuzz_frame: libFuzzer target with ${TROUPE_CLANGXX}")

set(fuzz_frame_sources
  ${CMAKE_SOURCE_DIR}/transport/error.cpp
  ${CMAKE_SOURCE_DIR}/transport/frame.cpp
  ${CMAKE_SOURCE_DIR}/transport/client_protocol.cpp
  ${CMAKE_SOURCE_DIR}/transport/client_protocol_encode.cpp
  ${CMAKE_SOURCE_DIR}/transport/client_frame_decode.cpp
  ${CMAKE_SOURCE_DIR}/transport/server_frame_decode.cpp
  ${CMAKE_SOURCE_DIR}/transport/msgpack_fields.cpp
  ${CMAKE_SOURCE_DIR}/transport/utf8.cpp
  ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_frame.cpp)
set(fuzz_frame_headers
  ${CMAKE_SOURCE_DIR}/transport/error.hpp
  ${CMAKE_SOURCE_DIR}/transport/frame.hpp
  ${CMAKE_SOURCE_DIR}/transport/client_protocol.hpp
  ${CMAKE_SOURCE_DIR}/transport/msgpack_fields.hpp
  ${CMAKE_SOURCE_DIR}/transport/utf8.hpp)
set(fuzz_frame_binary ${CMAKE_CURRENT_BINARY_DIR}/fuzz_frame)

add_custom_command(
  OUTPUT ${fuzz_frame_binary}
  COMMAND ${TROUPE_CLANGXX} -std=c++2b -O1 -g -fno-omit-frame-pointer
          -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
          -DFMT_HEADER_ONLY -DMSGPACK_DEFAULT_API_VERSION=3
          -I${CMAKE_SOURCE_DIR}
          ${fuzz_frame_sources} -o ${fuzz_frame_binary}
  DEPENDS ${fuzz_frame_sources} ${fuzz_frame_headers}
  COMMENT "Building fuzz_frame with clang++ (libFuzzer, ASan, UBSan)"
  VERBATIM)

add_executable(fuzz_frame_corpus ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_frame_corpus.cpp)
target_link_libraries(fuzz_frame_corpus PRIVATE troupe_options troupe::transport)
set(fuzz_frame_seeds ${CMAKE_CURRENT_BINARY_DIR}/corpus_frame)
add_custom_command(
  OUTPUT ${fuzz_frame_seeds}/.stamp
  COMMAND ${CMAKE_COMMAND} -E rm -rf ${fuzz_frame_seeds}
  COMMAND fuzz_frame_corpus ${fuzz_frame_seeds}
  COMMAND ${CMAKE_COMMAND} -E touch ${fuzz_frame_seeds}/.stamp
  DEPENDS fuzz_frame_corpus
  COMMENT "Writing the fuzz_frame seed corpus"
  VERBATIM)

add_custom_target(fuzz_frame_build ALL DEPENDS ${fuzz_frame_binary} ${fuzz_frame_seeds}/.stamp)
# The transport unit tests and this fuzz run are asked for together: build them together.
if(TARGET test_unit_transport)
  add_dependencies(test_unit_transport fuzz_frame_build)
endif()

# New inputs go to a scratch directory (the first one given), emptied before each run, so the
# seed corpus stays as generated.
set(fuzz_frame_work ${CMAKE_CURRENT_BINARY_DIR}/corpus_frame_work)
add_test(NAME unit.fuzz.frame
  COMMAND sh -c "rm -rf '${fuzz_frame_work}' && mkdir -p '${fuzz_frame_work}' && exec '${fuzz_frame_binary}' -max_total_time=20 -seed=1 -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix='${CMAKE_CURRENT_BINARY_DIR}/fuzz_frame_' '${fuzz_frame_work}' '${fuzz_frame_seeds}'")
set_tests_properties(unit.fuzz.frame PROPERTIES LABELS "unit;fuzz" TIMEOUT 120)
