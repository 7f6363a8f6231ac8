//! Stable 64-bit hashes: the same on every machine, release and thread
//! count, because user-visible choices depend on them — the holdout split of
//! `predict`, the fit and silhouette samples of `predict` and `segment`, the
//! file tags of `append` sinks and run ids.
//!
//! [`splitmix64`] is SplitMix64's finalizer, [`Fnv1a`] the 64-bit FNV-1a
//! hash of bytes; [`key_hashes`] combines them for a key column. The golden
//! values in the tests come from an independent Python implementation,
//! `tests/reference/hash_golden.py`: if one changes, every user's split moves.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};

/// SplitMix64's finalizer: a bijective mix of 64 bits.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 64-bit FNV-1a hash, fed incrementally.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(self) -> u64 {
        self.0
    }

    /// The hash of one byte string.
    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Fnv1a::default();
        h.write(bytes);
        h.finish()
    }
}

/// The seed for a second, independent draw from the same seed: `purpose`
/// names the draw (e.g. `fit_sample`), so two draws never share a hash.
pub fn salted(seed: u64, purpose: &str) -> u64 {
    splitmix64(seed ^ Fnv1a::of(purpose.as_bytes()))
}

/// Stable hashes of a key column under a seed: SplitMix64 of the integer
/// (or of the FNV-1a hash of the string's bytes) xor SplitMix64 of the seed.
/// Null keys hash as the key 0.
pub fn key_hashes(array: &dyn Array, seed: u64) -> Vec<u64> {
    let mix = splitmix64(seed);
    let fnv = |s: &str| Fnv1a::of(s.as_bytes());
    let raw: Vec<u64> = match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().map(|v| v.map_or(0, fnv)).collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().map(|v| v.map_or(0, fnv)).collect(),
        DataType::Utf8View => array.as_string_view().iter().map(|v| v.map_or(0, fnv)).collect(),
        _ => match cast(array, &DataType::Int64) {
            Ok(a) => a
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.unwrap_or(0) as u64)
                .collect(),
            Err(_) => vec![0; array.len()],
        },
    };
    raw.into_iter().map(|v| splitmix64(v ^ mix)).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray, StringViewArray};

    use super::*;

    // Values from tests/reference/hash_golden.py.
    #[test]
    fn splitmix64_matches_the_reference() {
        assert_eq!(splitmix64(0), 16294208416658607535);
        assert_eq!(splitmix64(1), 10451216379200822465);
        assert_eq!(splitmix64(42), 13679457532755275413);
        assert_eq!(splitmix64(u64::MAX), 16490336266968443936);
    }

    #[test]
    fn fnv1a_matches_the_reference() {
        assert_eq!(Fnv1a::of(b""), 14695981039346656037);
        assert_eq!(Fnv1a::of(b"a"), 12638187200555641996);
        assert_eq!(Fnv1a::of(b"customer_id"), 16485235612702209503);
        assert_eq!(Fnv1a::of("München".as_bytes()), 6497911056446903539);
        let mut h = Fnv1a::default();
        h.write(b"custom");
        h.write(b"er_id");
        assert_eq!(h.finish(), 16485235612702209503);
    }

    #[test]
    fn salted_seeds_match_the_reference() {
        assert_eq!(salted(42, "fit_sample"), 15001189313993662973);
        assert_ne!(salted(42, "fit_sample"), salted(42, "other"));
    }

    #[test]
    fn key_hashes_match_the_reference_for_every_key_type() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(-1), None]));
        assert_eq!(
            key_hashes(ints.as_ref(), 42),
            vec![17532488217563185893, 14714397866638982195, splitmix64(splitmix64(42))]
        );
        let narrow: ArrayRef = Arc::new(Int32Array::from(vec![123456789]));
        assert_eq!(key_hashes(narrow.as_ref(), 7), vec![6095463055192736410]);
        let strings: ArrayRef = Arc::new(StringArray::from(vec!["C-1", ""]));
        let views: ArrayRef = Arc::new(StringViewArray::from(vec!["C-1", ""]));
        let want = vec![14430381312526100944, 16429173747930903682];
        assert_eq!(key_hashes(strings.as_ref(), 42), want);
        assert_eq!(key_hashes(views.as_ref(), 42), want);
    }
}
