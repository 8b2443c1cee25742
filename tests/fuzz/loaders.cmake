# unit.fuzz.loaders: the model and tokenizer loaders compiled again, straight from their sources,
# under AddressSanitizer + UBSan (independent of troupe_engine and of TROUPE_SANITIZE), and fed
# truncated and bit-flipped copies of the real models in TROUPE_MODELS_DIR (fuzz_loaders.cpp).
set(fuzz_loaders_sources ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_loaders.cpp)
foreach(name error mapped_file model_weights llama_tensors tensor gguf_format gguf_reader gguf_llama_loader
             safetensors llama2c)
  list(APPEND fuzz_loaders_sources ${CMAKE_SOURCE_DIR}/engine/${name}.cpp)
endforeach()
# tokenizer.cpp plus its format files (tokenizer_spm.cpp, tokenizer_hf.cpp, ...).
file(GLOB fuzz_loaders_tokenizer_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/engine/tokenizer*.cpp)
list(APPEND fuzz_loaders_sources ${fuzz_loaders_tokenizer_sources})

set(fuzz_loaders_sanitize -fsanitize=address,undefined -fno-sanitize-recover=all)
add_executable(fuzz_loaders ${fuzz_loaders_sources})
# -Wno-maybe-uninitialized: GCC 12 reports false positives inside std::variant under ASan at -O1.
target_compile_options(fuzz_loaders PRIVATE ${fuzz_loaders_sanitize} -fno-omit-frame-pointer -O1 -g
                       -Wno-maybe-uninitialized)
# mmap/munmap are wrapped so that reads past the end of a mapped file are caught (see fuzz_loaders.cpp).
target_link_options(fuzz_loaders PRIVATE ${fuzz_loaders_sanitize} -Wl,--wrap=mmap -Wl,--wrap=munmap)
target_link_libraries(fuzz_loaders PRIVATE troupe_options fmt::fmt nlohmann_json::nlohmann_json Threads::Threads)
target_compile_definitions(fuzz_loaders PRIVATE TROUPE_MODELS_DIR="${TROUPE_MODELS_DIR}")

add_test(NAME unit.fuzz.loaders COMMAND fuzz_loaders)
# Exit 77 (a model file missing: "SKIP: <path> missing" on stderr) is reported as Skipped.
set_tests_properties(unit.fuzz.loaders PROPERTIES LABELS "unit;fuzz;model" TIMEOUT 300 SKIP_RETURN_CODE 77)
# The harness itself: a read one byte past the end of a mapped file must be reported.
add_test(NAME unit.fuzz.loaders_harness
         COMMAND fuzz_loaders --check-harness tok512.bin)  # in TROUPE_MODELS_DIR
set_tests_properties(unit.fuzz.loaders_harness PROPERTIES LABELS "unit;fuzz;model" TIMEOUT 60
                     PASS_REGULAR_EXPRESSION "AddressSanitizer: use-after-poison" SKIP_RETURN_CODE 77)
