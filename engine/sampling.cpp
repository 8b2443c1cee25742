#include "engine/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_set>
#include <vector>

#include "engine/error.hpp"

namespace troupe::engine {

std::string validate(const sampling_params& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) return "temperature must be >= 0";
  if (p.top_k < 0) return "top_k must be >= 0";
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return "top_p must be in (0, 1]";
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty)) return "repetition_penalty must be > 0";
  return {};
}

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

float counter_uniform(uint64_t seed, uint64_t counter) {
  // Two rounds so that nearby (seed, counter) pairs give unrelated draws.
  const uint64_t h = splitmix64(splitmix64(seed) ^ (counter * 0xd1342543de82ef95ull + 1));
  return float(h >> 40) * (1.0f / 16777216.0f);  // 24 random bits -> [0, 1)
}

int32_t sample(std::span<float> logits, const sampling_params& p, uint64_t step,
               std::span<const int32_t> history) {
  const int n = int(logits.size());
  // 1. Repetition penalty (as in CTRL / HF / llama.cpp): shrink the logits of tokens already seen.
  if (p.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen;
    for (int32_t id : history) {
      if (id < 0 || id >= n || !seen.insert(id).second) continue;
      float& l = logits[id];
      l = l > 0.0f ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
  }
  // 2. Greedy: the first index of the maximum.
  if (p.temperature <= 0.0f) {
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // 3. Candidates sorted by logit (ties: lower id first, so the order is deterministic).
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int k = (p.top_k > 0 && p.top_k < n) ? p.top_k : n;
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), by_logit);
  ids.resize(k);
  // 4. Softmax at temperature over the top-k.
  std::vector<float> probs(k);
  const float max = logits[ids[0]];
  float sum = 0.0f;
  for (int i = 0; i < k; ++i) {
    probs[i] = std::exp((logits[ids[i]] - max) / p.temperature);
    sum += probs[i];
  }
  for (float& q : probs) q /= sum;
  // 5. Top-p: the smallest prefix whose mass reaches top_p.
  int cut = k;
  if (p.top_p < 1.0f) {
    float cum = 0.0f;
    for (int i = 0; i < k; ++i) {
      cum += probs[i];
      if (cum >= p.top_p) {
        cut = i + 1;
        break;
      }
    }
  }
  float mass = 0.0f;
  for (int i = 0; i < cut; ++i) mass += probs[i];
  // 6. One counter-based draw: depends only on (seed, step).
  const float r = counter_uniform(p.seed, step) * mass;
  float cum = 0.0f;
  for (int i = 0; i < cut; ++i) {
    cum += probs[i];
    if (r < cum) return ids[i];
  }
  return ids[cut - 1];
}

top2_logits top2(std::span<const float> logits) {
  TROUPE_ASSERT(logits.size() >= 2);
  top2_logits t{{0, 1}, {logits[0], logits[1]}};
  if (t.logit[1] > t.logit[0]) t = {{1, 0}, {logits[1], logits[0]}};
  for (size_t i = 2; i < logits.size(); ++i) {
    if (logits[i] > t.logit[0]) {
      t.id[1] = t.id[0], t.logit[1] = t.logit[0];
      t.id[0] = int32_t(i), t.logit[0] = logits[i];
    } else if (logits[i] > t.logit[1]) {
      t.id[1] = int32_t(i), t.logit[1] = logits[i];
    }
  }
  return t;
}

}  // namespace troupe::engine
