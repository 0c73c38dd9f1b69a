#!/usr/bin/env python3
"""Known answers for src/data/rng.rs (the shuffle generator), written from SplitMix64's published
constants (Steele, Lea, Flood 2014) and the algorithms its doc comments name, not from the crate:
Lemire's bounded draw with rejection, Fisher-Yates, a weighted pick by cumulative sums.
Prints the values that tests/known_answers.rs::shuffle_generator_is_known writes as numbers.
Plain Python integers, masked to 64 bits; no dependencies."""
M = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def left_to_right_sum(xs):
    # A plain running sum, as Rust's f64 `Iterator::sum`: Python 3.12's sum() of floats is
    # compensated (Neumaier) and can differ in the last bit.
    total = 0.0
    for x in xs:
        total += x
    return total


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & M

    @staticmethod
    def stream(seed, stream):
        # The crate's (seed, stream) derivation: one draw from seed ^ sqrt(2)'s fraction bits,
        # xored with stream * golden rotated left by 17.
        a = SplitMix64(seed ^ 0x6A09E667F3BCC908).next_u64()
        x = (stream * GOLDEN) & M
        return SplitMix64(a ^ (((x << 17) | (x >> 47)) & M))

    def next_u64(self):
        self.state = (self.state + GOLDEN) & M
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    def next_f64(self):
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def below(self, n, rejected=None):
        threshold = ((-n) & M) % n
        while True:
            m = self.next_u64() * n
            if (m & M) >= threshold:
                return m >> 64
            if rejected is not None:
                rejected.append(m)

    def shuffle(self, v):
        for i in range(len(v) - 1, 0, -1):
            j = self.below(i + 1)
            v[i], v[j] = v[j], v[i]

    def range_inclusive(self, lo, hi):
        return lo + self.below(hi - lo + 1)

    def weighted(self, w):
        x = self.next_f64() * left_to_right_sum(w)
        for i, wi in enumerate(w):
            if x < wi:
                return i
            x -= wi
        return max(i for i, wi in enumerate(w) if wi > 0)


def main():
    g = SplitMix64(0)
    print("new(0):", [hex(g.next_u64()) for _ in range(3)])
    g = SplitMix64.stream(42, 3)
    print("stream(42, 3):", hex(g.next_u64()), hex(g.next_u64()))
    print("stream(42, 0):", hex(SplitMix64.stream(42, 0).next_u64()))
    g = SplitMix64(7)
    print("new(7).below(10) x8:", [g.below(10) for _ in range(8)])
    g, rejected = SplitMix64(5), []
    print("new(5).below(2^63 + 1) x3:", [g.below((1 << 63) + 1, rejected) for _ in range(3)],
          f"({len(rejected)} draws rejected)")
    g = SplitMix64(9)
    print("new(9).range_inclusive(5, 7) x8:", [g.range_inclusive(5, 7) for _ in range(8)])
    v = list(range(10))
    SplitMix64(7).shuffle(v)
    print("new(7).shuffle(0..10):", v)
    g = SplitMix64(1)
    print("new(1).next_f64() x2:", [repr(g.next_f64()) for _ in range(2)])
    g = SplitMix64(3)
    print("new(3).weighted([0, 1, 3, 0]) x12:", [g.weighted([0.0, 1.0, 3.0, 0.0]) for _ in range(12)])


if __name__ == "__main__":
    main()
