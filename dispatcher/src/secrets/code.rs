//! One-time codes: generation, the stored MAC, and the sealed copy used for resends.
//!
//! A code is drawn uniformly from the operating system's CSPRNG. What a store keeps is
//! never the code:
//!
//! - `CodeMac` = HMAC-SHA256(mac key, id ‖ length ‖ code). A check recomputes it from
//!   the typed code and compares in constant time. Binding the id means a MAC copied
//!   from one verification says nothing about another.
//! - `SealedCode` = code XOR SipHash-2-4(seal key, id). A repeat request must re-send
//!   the *same* code, so the code has to be recoverable; the pad is a PRF of a unique
//!   id (ids are random), so without the server secret the sealed value is a one-time
//!   pad and reveals nothing. With the secret, the MAC alone would give the code away
//!   by trying the 10^len candidates anyway, so sealing adds no exposure. SipHash is a
//!   PRF with a 128-bit key, which is all a pad needs, at an eighth of HMAC's cost.
//!
//! Both keys are derived from the one server secret, so operators manage one value.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use siphasher::sip::SipHasher24;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::secrets::id::VerificationId;

type HmacSha256 = Hmac<Sha256>;

pub const MIN_CODE_LENGTH: u8 = 4;
pub const MAX_CODE_LENGTH: u8 = 10;

/// Where random bytes come from: the OS in production, a script in tests.
pub trait RandomSource {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError>;
}

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(pub String);

/// The operating system's CSPRNG (`getrandom(2)` on Linux).
///
/// A `getrandom` call costs about half a microsecond, as much as the rest of issuing a
/// code, so bytes are fetched in batches of [`POOL_BYTES`] per thread. Every byte
/// still comes straight from the OS and is handed out once, then wiped from the pool.
/// (A buffer like this must not survive a `fork`; otpd never forks.)
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

/// Size of each thread's batch of OS random bytes.
pub const POOL_BYTES: usize = 4096;

struct Pool {
    bytes: Box<[u8; POOL_BYTES]>,
    /// Bytes before this index were handed out (and wiped).
    used: usize,
}

impl Pool {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), RandomError> {
        if out.len() > POOL_BYTES {
            return getrandom::fill(out).map_err(|e| RandomError(e.to_string()));
        }
        if POOL_BYTES - self.used < out.len() {
            getrandom::fill(&mut self.bytes[..]).map_err(|e| RandomError(e.to_string()))?;
            self.used = 0;
        }
        let taken = &mut self.bytes[self.used..self.used + out.len()];
        out.copy_from_slice(taken);
        taken.zeroize();
        self.used += out.len();
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

thread_local! {
    static POOL: std::cell::RefCell<Pool> = std::cell::RefCell::new(Pool {
        bytes: Box::new([0; POOL_BYTES]),
        used: POOL_BYTES,
    });
}

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        POOL.with(|pool| pool.borrow_mut().fill(buf))
    }
}

/// A code's number of digits, 4 to 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLength(u8);

impl CodeLength {
    pub fn new(digits: u8) -> Option<Self> {
        (MIN_CODE_LENGTH..=MAX_CODE_LENGTH)
            .contains(&digits)
            .then_some(Self(digits))
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// 10^len: the number of distinct codes.
    fn space(self) -> u64 {
        10u64.pow(self.0 as u32)
    }
}

/// A one-time code. Wiped on drop; `Debug` never shows the digits.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Code {
    value: u64,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a code is 4 to 10 digits (0-9)")]
pub struct CodeFormatError;

impl Code {
    /// Draw a code uniformly from `[0, 10^len)`.
    pub fn generate(len: CodeLength, rng: &mut impl RandomSource) -> Result<Code, RandomError> {
        let value = uniform_below(len.space(), rng)?;
        Ok(Code { value, len: len.0 })
    }

    /// Parse what a person typed: ASCII digits only, 4 to 10 of them.
    pub fn parse(input: &str) -> Result<Code, CodeFormatError> {
        let len = u8::try_from(input.len()).map_err(|_| CodeFormatError)?;
        if CodeLength::new(len).is_none() || !input.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeFormatError);
        }
        let value = input
            .bytes()
            .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
        Ok(Code { value, len })
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digits, zero-padded to the code's length, in a buffer wiped on drop.
    pub fn expose_digits(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(self.len as usize));
        let mut v = self.value;
        let mut digits = [0u8; MAX_CODE_LENGTH as usize];
        for slot in digits[..self.len as usize].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        for &d in &digits[..self.len as usize] {
            out.push(d as char);
        }
        digits.zeroize();
        out
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code(<{} digits redacted>)", self.len)
    }
}

/// A uniform draw from `[0, n)` by Lemire's multiply-and-reject: the product of a
/// random 64-bit word and `n` lands in `n` equal bins once the few words of the
/// uneven remainder (fewer than `n` of 2^64) are rejected and redrawn. No modulo bias.
pub(crate) fn uniform_below(n: u64, rng: &mut impl RandomSource) -> Result<u64, RandomError> {
    debug_assert!(n > 0);
    let threshold = n.wrapping_neg() % n; // 2^64 mod n, computed once per draw
    loop {
        let mut word = [0u8; 8];
        rng.fill(&mut word)?;
        let x = u64::from_le_bytes(word);
        word.zeroize();
        let product = u128::from(x) * u128::from(n);
        if (product as u64) >= threshold {
            return Ok((product >> 64) as u64);
        }
    }
}

/// HMAC of a code bound to its verification: the only form in which a code is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CodeMac(pub [u8; 32]);

impl CodeMac {
    /// Constant-time equality: how long a comparison takes says nothing about where
    /// the first differing byte is.
    pub fn matches(&self, other: &CodeMac) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for CodeMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeMac(..)")
    }
}

/// A code XORed with a per-verification pad; see the module docs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SealedCode(pub u64);

impl fmt::Debug for SealedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedCode(..)")
    }
}

/// The acknowledgement secret of one verification's pushes (see
/// [`CodeKeys::ack_token`]): 128 bits, written as 22 characters of unpadded base64url.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AckToken([u8; 16]);

impl AckToken {
    /// Whether `given` (as the app sent it) is this token, in constant time.
    pub fn matches(&self, given: &str) -> bool {
        use base64::Engine as _;
        let mut decoded = [0u8; 16];
        let ok = given.len() == 22
            && base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode_slice(given, &mut decoded)
                .is_ok_and(|n| n == 16);
        ok & bool::from(subtle::ConstantTimeEq::ct_eq(&decoded[..], &self.0[..]))
    }
}

impl std::fmt::Display for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use base64::Engine as _;
        f.write_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckToken(<redacted>)")
    }
}

/// Keyed hashes for names that must not show what they are derived from (store
/// keys built from identity numbers, phone numbers, addresses). Keyed by the server
/// secret, so a name can neither be read back nor a guess tested without it.
#[derive(Clone)]
pub struct Pseudonyms(HmacSha256);

impl Pseudonyms {
    /// The pseudonym of `parts` under `label`. Parts are length-prefixed, so no two
    /// lists hash alike.
    pub fn of(&self, label: &[u8], parts: &[&[u8]]) -> Pseudonym {
        let mut mac = self.0.clone();
        mac.update(&(label.len() as u32).to_be_bytes());
        mac.update(label);
        for part in parts {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        Pseudonym(full[..16].try_into().expect("16 bytes"))
    }
}

/// A keyed hash standing in for personal data in a name (see [`Pseudonyms`]):
/// 128 bits, written as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Pseudonym(pub [u8; 16]);

impl std::fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Keys derived from the server secret. Cloning the keyed HMAC states is cheaper than
/// re-keying on every code.
#[derive(Clone)]
pub struct CodeKeys {
    mac: HmacSha256,
    seal: SipHasher24,
    contrast: HmacSha256,
    ack: HmacSha256,
    names: HmacSha256,
}

impl CodeKeys {
    /// Derive the MAC and seal keys from the server secret (HMAC as a KDF, one label
    /// per key, so the two can never be confused).
    pub fn derive(secret: &[u8]) -> Self {
        let subkey = |label: &[u8]| -> Zeroizing<[u8; 32]> {
            let mut kdf = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
            kdf.update(label);
            Zeroizing::new(kdf.finalize().into_bytes().into())
        };
        let mac_key = subkey(b"otpd/v1/code-mac");
        let seal_key = subkey(b"otpd/v1/code-seal");
        let contrast_key = subkey(b"otpd/v1/contrast");
        let ack_key = subkey(b"otpd/v1/push-ack");
        let names_key = subkey(b"otpd/v1/key-names");
        Self {
            mac: HmacSha256::new_from_slice(&mac_key[..]).expect("32-byte key"),
            contrast: HmacSha256::new_from_slice(&contrast_key[..]).expect("32-byte key"),
            ack: HmacSha256::new_from_slice(&ack_key[..]).expect("32-byte key"),
            names: HmacSha256::new_from_slice(&names_key[..]).expect("32-byte key"),
            seal: SipHasher24::new_with_key(seal_key[..16].try_into().expect("16 bytes")),
        }
    }

    pub fn mac(&self, id: &VerificationId, code: &Code) -> CodeMac {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(&[code.len]);
        mac.update(&code.value.to_be_bytes());
        CodeMac(mac.finalize().into_bytes().into())
    }

    /// The MAC of `subject`'s contrast value, in its normal form
    /// ([`crate::secrets::contrast::normalize`]).
    pub fn contrast(&self, subject: &str, normal: &str) -> crate::secrets::contrast::ContrastMac {
        let mut mac = self.contrast.clone();
        mac.update(&(subject.len() as u32).to_be_bytes());
        mac.update(subject.as_bytes());
        mac.update(normal.as_bytes());
        crate::secrets::contrast::ContrastMac(mac.finalize().into_bytes().into())
    }

    /// The secret a push carries for the app to acknowledge it with: a MAC of the
    /// verification id, so that nothing needs storing and every node can check it,
    /// and only whoever received the push (or sees the server secret) can present it.
    pub fn ack_token(&self, id: &VerificationId) -> AckToken {
        let mut mac = self.ack.clone();
        mac.update(id.as_bytes());
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        AckToken(full[..16].try_into().expect("16 bytes"))
    }

    /// The keyed hash that stands in for personal data in names (see
    /// [`Pseudonyms`]).
    pub fn pseudonyms(&self) -> Pseudonyms {
        Pseudonyms(self.names.clone())
    }

    pub fn seal(&self, id: &VerificationId, code: &Code) -> SealedCode {
        SealedCode(code.value ^ self.pad(id))
    }

    pub fn unseal(&self, id: &VerificationId, sealed: SealedCode, len: CodeLength) -> Code {
        Code {
            value: sealed.0 ^ self.pad(id),
            len: len.0,
        }
    }

    fn pad(&self, id: &VerificationId) -> u64 {
        use std::hash::Hasher;
        let mut h = self.seal;
        h.write(id.as_bytes());
        h.finish()
    }
}

impl fmt::Debug for CodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKeys(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::id::ShardTag;
    use proptest::prelude::*;

    /// Replays scripted 64-bit words.
    struct Scripted(Vec<u64>);

    impl RandomSource for Scripted {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
            let word = self.0.remove(0);
            buf.copy_from_slice(&word.to_le_bytes()[..buf.len()]);
            Ok(())
        }
    }

    fn id(n: u8) -> VerificationId {
        VerificationId::new(ShardTag(1), [n; 14])
    }

    #[test]
    fn os_random_hands_out_each_byte_once() {
        // Across several refills, consecutive draws never repeat (a reused pool byte
        // would show up as equal 16-byte draws).
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(3 * POOL_BYTES / 16) {
            let mut buf = [0u8; 16];
            OsRandom.fill(&mut buf).unwrap();
            assert!(seen.insert(buf));
        }
        let mut big = vec![0u8; POOL_BYTES + 1];
        OsRandom.fill(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
    }

    #[test]
    fn generated_codes_have_the_requested_length() {
        for len in MIN_CODE_LENGTH..=MAX_CODE_LENGTH {
            let len = CodeLength::new(len).unwrap();
            for _ in 0..200 {
                let code = Code::generate(len, &mut OsRandom).unwrap();
                let digits = code.expose_digits();
                assert_eq!(digits.len(), len.get() as usize);
                assert!(digits.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }

    #[test]
    fn lengths_outside_4_to_10_are_refused() {
        assert!(CodeLength::new(3).is_none());
        assert!(CodeLength::new(11).is_none());
        assert!(CodeLength::new(4).is_some());
        assert!(CodeLength::new(10).is_some());
    }

    #[test]
    fn words_in_the_uneven_remainder_are_redrawn() {
        // For n = 10^4, 2^64 mod n = 1616: a word whose product's low half falls below
        // that would bias the result, so it must be drawn again.
        let n = 10_000u64;
        assert_eq!(n.wrapping_neg() % n, 1616);
        let mut rng = Scripted(vec![0, 1, u64::MAX]);
        // 0 and 1 give low halves 0 and 10_000... 0 < 1616 is rejected, 1*10^4 is kept.
        assert_eq!(uniform_below(n, &mut rng).unwrap(), 0);
        assert_eq!(rng.0, vec![u64::MAX]);
        assert_eq!(uniform_below(n, &mut rng).unwrap(), n - 1);
    }

    #[test]
    fn leading_digit_is_uniform() {
        // Chi-square over the first digit of 100k six-digit codes; the 1e-6 critical
        // value for 9 degrees of freedom is 42.6, so a correct generator fails this
        // about once in a million runs.
        let len = CodeLength::new(6).unwrap();
        let mut counts = [0u32; 10];
        let samples = 100_000;
        for _ in 0..samples {
            let code = Code::generate(len, &mut OsRandom).unwrap();
            counts[(code.expose_digits().as_bytes()[0] - b'0') as usize] += 1;
        }
        let expected = samples as f64 / 10.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 42.6, "chi2 = {chi2}, counts = {counts:?}");
    }

    #[test]
    fn parse_accepts_digits_only() {
        assert_eq!(&*Code::parse("000123").unwrap().expose_digits(), "000123");
        for bad in [
            "",
            "123",
            "12345678901",
            "12a456",
            " 123456",
            "12 3456",
            "١٢٣٤٥٦",
            "-12345",
        ] {
            assert_eq!(Code::parse(bad), Err(CodeFormatError), "{bad:?}");
        }
    }

    #[test]
    fn debug_never_shows_digits() {
        let code = Code::parse("987654").unwrap();
        let shown = format!("{code:?}");
        assert!(!shown.contains("987654"), "{shown}");
    }

    #[test]
    fn mac_binds_code_length_and_id() {
        let keys = CodeKeys::derive(b"a server secret of at least 32 bytes!!");
        let a = Code::parse("001234").unwrap();
        let b = Code::parse("1234").unwrap();
        assert!(keys.mac(&id(1), &a).matches(&keys.mac(&id(1), &a)));
        assert!(!keys.mac(&id(1), &a).matches(&keys.mac(&id(1), &b)));
        assert!(!keys.mac(&id(1), &a).matches(&keys.mac(&id(2), &a)));
        let other = CodeKeys::derive(b"another server secret of 32 bytes!!!!");
        assert!(!keys.mac(&id(1), &a).matches(&other.mac(&id(1), &a)));
    }

    #[test]
    fn sealed_code_differs_per_id_and_unseals() {
        let keys = CodeKeys::derive(b"a server secret of at least 32 bytes!!");
        let code = Code::parse("424242").unwrap();
        let len = CodeLength::new(6).unwrap();
        let s1 = keys.seal(&id(1), &code);
        let s2 = keys.seal(&id(2), &code);
        assert_ne!(s1, s2);
        assert_eq!(keys.unseal(&id(1), s1, len), code);
        assert_ne!(keys.unseal(&id(2), s1, len), code);
    }

    proptest! {
        #[test]
        fn parse_of_exposed_digits_round_trips(value in 0u64..10_000_000_000, len in 4u8..=10) {
            let value = value % 10u64.pow(len as u32);
            let code = Code { value, len };
            prop_assert_eq!(Code::parse(&code.expose_digits()).unwrap(), code);
        }

        #[test]
        fn uniform_below_stays_in_range(words in proptest::collection::vec(any::<u64>(), 64), len in 4u8..=10) {
            let n = 10u64.pow(len as u32);
            let mut rng = Scripted(words);
            // 64 words are all rejected with probability below (10^-9)^64: never.
            prop_assert!(uniform_below(n, &mut rng).unwrap() < n);
        }
    }
}
