#!/usr/bin/env bash
# The demo: installs dependencies, builds troupe, then generates text.
#  1. From troupe's embedded default model: a stories15M-shaped Q8_0 model that troupe synthesizes
#     itself (deterministic random weights, so the words are random; no download needed).
#  2. When the real TinyStories models are beside the repository (../shared/models), a real story.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== building (this takes a few minutes on 2 cores) =="
scripts/build.sh
troupe=build/bin/troupe
mkdir -p build/models
default_model=build/models/stories15M-q8_0.gguf
if [ ! -f "$default_model" ]; then
  echo "== synthesizing the default model ($default_model) =="
  "$troupe" model synth --shape stories15M --dtype q8_0 --out "$default_model"
fi
echo "== troupe generate on the default (synthetic) model =="
"$troupe" generate --model "$default_model" --prompt "Once upon a time" -n 48 --temperature 0.8 --seed 7
models=../shared/models
if [ -f "$models/stories260K.bin" ]; then
  echo
  echo "== troupe generate on a real model: $models/TinyStories-656K-Q8_0.gguf =="
  "$troupe" generate --model "$models/TinyStories-656K-Q8_0.gguf" --prompt "Once upon a time" -n 200
fi
