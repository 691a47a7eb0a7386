//! What makes an upstream "the same" across `nginx -s reload`: its name and its server lines.
//! The shared zone keeps backend statuses for an upstream whose identity did not change.

/// A stable 64-bit digest (FNV-1a) that does not depend on the process or the build.
#[derive(Clone, Copy, Debug)]
pub struct IdentityHasher(u64);

impl Default for IdentityHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl IdentityHasher {
    /// Adds a field; the length goes first so that ("ab", "c") and ("a", "bc") differ.
    pub fn field(mut self, bytes: &[u8]) -> Self {
        for byte in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(fields: &[&str]) -> u64 {
        fields
            .iter()
            .fold(IdentityHasher::default(), |hasher, field| {
                hasher.field(field.as_bytes())
            })
            .finish()
    }

    #[test]
    fn same_fields_same_identity() {
        assert_eq!(
            identity(&["backend", "127.0.0.1:8000", "127.0.0.1:8001"]),
            identity(&["backend", "127.0.0.1:8000", "127.0.0.1:8001"])
        );
    }

    #[test]
    fn any_change_changes_the_identity() {
        let base = identity(&["backend", "127.0.0.1:8000", "127.0.0.1:8001"]);
        assert_ne!(
            base,
            identity(&["backend", "127.0.0.1:8001", "127.0.0.1:8000"])
        );
        assert_ne!(base, identity(&["backend", "127.0.0.1:8000"]));
        assert_ne!(
            base,
            identity(&["backend2", "127.0.0.1:8000", "127.0.0.1:8001"])
        );
        assert_ne!(identity(&["ab", "c"]), identity(&["a", "bc"]));
    }
}
