// hash_rng.cuh: counter-based random numbers, identical on the GPU, in the emulator and in the
// CPU reference (src/rng.rs mirrors it bit for bit).
//
// A uniform draw is a pure function of (seed, counter): dropout masks are regenerated in the
// backward instead of stored, and every device draws the same mask. The mixer is SplitMix64's
// finaliser applied to seed ⊕ golden-ratio·counter; the top 24 bits give a float in [0, 1).
// Callers build the counter from the element's coordinates, e.g. for attention dropout
// ((b · h + head) · n + row) · n + column.
#pragma once

__device__ __forceinline__ unsigned long long asif_hash64(unsigned long long seed, unsigned long long counter) {
    unsigned long long z = seed ^ (counter * 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Uniform in [0, 1), exactly representable (multiples of 2^-24).
__device__ __forceinline__ float asif_uniform(unsigned long long seed, unsigned long long counter) {
    return (float)(asif_hash64(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

// Dropout keep decision: kept with probability 1 - p.
__device__ __forceinline__ bool asif_dropout_keep(unsigned long long seed, unsigned long long counter, float p) {
    return asif_uniform(seed, counter) >= p;
}

// The seed of dropout site `site` at the training step a device step counter holds (Adam steps
// taken before this step), in the model's dropout stream `stream`: hash64(hash64(stream, step),
// site), as src/rng.rs's step_seed and the model's DropoutSeeds draw it by value. The step-counter
// kernels take (counter, stream, site) in place of a seed, so a CUDA graph replays with new masks.
__device__ __forceinline__ unsigned long long asif_step_seed(const unsigned long long* step, unsigned long long stream,
                                                             unsigned long long site) {
    return asif_hash64(asif_hash64(stream, *step), site);
}
