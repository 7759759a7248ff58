//! What the compiler's randomised tests (and the health writer's, which compile models)
//! share: a small deterministic generator.

/// xorshift64*: reproducible cases without a dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// A number below `n` (0 for `n` = 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}
