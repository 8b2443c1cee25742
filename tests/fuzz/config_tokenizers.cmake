# unit.fuzz.config_tokenizers: the cluster file parser and the tokenizer loaders compiled again,
# straight from their sources, under AddressSanitizer + UBSan (as loaders.cmake does), and fed
# mutated cluster files and tokenizer files (fuzz_config_tokenizers.cpp).
set(fuzz_ct_sources ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_config_tokenizers.cpp)
file(GLOB fuzz_ct_config_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/cluster-config/*.cpp)
file(GLOB fuzz_ct_tokenizer_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/engine/tokenizer*.cpp)
list(APPEND fuzz_ct_sources ${fuzz_ct_config_sources} ${fuzz_ct_tokenizer_sources})
# What the tokenizers need: GGUF vocabularies (gguf.cpp over mapped_file.cpp, which links the
# model loaders in), errors.
foreach(name error mapped_file model_weights llama_tensors tensor gguf_format gguf_reader gguf_llama_loader
             safetensors llama2c)
  list(APPEND fuzz_ct_sources ${CMAKE_SOURCE_DIR}/engine/${name}.cpp)
endforeach()

set(fuzz_ct_sanitize -fsanitize=address,undefined -fno-sanitize-recover=all)
add_executable(fuzz_config_tokenizers ${fuzz_ct_sources})
target_compile_options(fuzz_config_tokenizers PRIVATE ${fuzz_ct_sanitize} -fno-omit-frame-pointer -O1 -g
                       -Wno-maybe-uninitialized)
target_link_options(fuzz_config_tokenizers PRIVATE ${fuzz_ct_sanitize})
target_link_libraries(fuzz_config_tokenizers PRIVATE troupe_options fmt::fmt nlohmann_json::nlohmann_json
                      Threads::Threads)
target_include_directories(fuzz_config_tokenizers SYSTEM PRIVATE ${TOML11_INCLUDE_DIR})
target_compile_definitions(fuzz_config_tokenizers PRIVATE TROUPE_MODELS_DIR="${TROUPE_MODELS_DIR}"
                           TROUPE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

add_test(NAME unit.fuzz.config_tokenizers COMMAND fuzz_config_tokenizers)
set_tests_properties(unit.fuzz.config_tokenizers PROPERTIES LABELS "unit;fuzz" TIMEOUT 300)
