//! Message text to short_message octets: GSM 03.38 7-bit when every character is in
//! the default alphabet (or its extension table), UCS-2 otherwise; split into parts
//! with a concatenation UDH when one SMS is not enough.
//!
//! GSM 7-bit is sent unpacked (one septet per octet, data_coding 0x00), which is what
//! most SMSCs expect on SMPP; they pack for the air. Part sizes are the air limits:
//! 160 septets alone or 153 per part (an escaped character counts 2 and is never
//! split), 70 UTF-16 units alone or 67 per part (a surrogate pair is never split).

/// GSM 03.38 default alphabet, by code 0x00..=0x7F. 0x1B is the escape to the
/// extension table and stands for no character.
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: (character, code after the 0x1B escape).
const EXTENSION: [(char, u8); 10] = [
    ('\u{0c}', 0x0A),
    ('^', 0x14),
    ('{', 0x28),
    ('}', 0x29),
    ('\\', 0x2F),
    ('[', 0x3C),
    ('~', 0x3D),
    (']', 0x3E),
    ('|', 0x40),
    ('€', 0x65),
];

pub const DCS_GSM7: u8 = 0x00;
pub const DCS_LATIN1: u8 = 0x03;
pub const DCS_UCS2: u8 = 0x08;

/// How a carrier wants text encoded (its SMSC's settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub preferred: Preferred,
    /// GSM 7-bit packed 8 septets into 7 octets, as some SMSCs expect, instead of one
    /// septet per octet.
    pub gsm7_packed: bool,
}

/// The encoding tried first; UCS-2 when the text does not fit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preferred {
    /// GSM 03.38 7-bit.
    #[default]
    Gsm7,
    /// ISO-8859-1 (data_coding 0x03): all of Western Europe's accents, 140 per SMS.
    Latin1,
    /// Always UCS-2.
    Ucs2,
}

/// A message ready for submit_sm: its data_coding and one body per part. With more
/// than one part, every body starts with a concatenation UDH and esm_class needs the
/// UDHI bit (0x40).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub data_coding: u8,
    pub parts: Vec<Vec<u8>>,
}

impl Encoded {
    pub fn esm_class(&self) -> u8 {
        if self.parts.len() > 1 { 0x40 } else { 0x00 }
    }
}

/// No GSM 7-bit form, in [`LATIN`].
const NONE: u16 = 0xFFFF;
/// An extension-table character: the escape, then the low byte.
const ESCAPED: u16 = 0x1B00;

/// GSM 7-bit forms of U+0000..U+00FF, built from the tables above at compile time:
/// the characters of a Western European text are one array read each, not a search
/// of the alphabet (this runs for every message, to measure it).
const LATIN: [u16; 256] = {
    let mut table = [NONE; 256];
    let mut i = 0;
    while i < BASIC.len() {
        let c = BASIC[i] as u32;
        if c < 256 && c != 0x1B {
            table[c as usize] = i as u16;
        }
        i += 1;
    }
    let mut i = 0;
    while i < EXTENSION.len() {
        let c = EXTENSION[i].0 as u32;
        if c < 256 {
            table[c as usize] = ESCAPED | EXTENSION[i].1 as u16;
        }
        i += 1;
    }
    table
};

/// The septets of `c` in GSM 7-bit, if it has any.
fn gsm7(c: char) -> Option<([u8; 2], usize)> {
    let code = match c as u32 {
        cp @ 0..=0xFF => LATIN[cp as usize],
        // Above Latin-1: the Greek capitals of the basic table, and €.
        _ => match BASIC.iter().position(|&b| b == c) {
            Some(i) => i as u16,
            None if c == '€' => ESCAPED | 0x65,
            None => NONE,
        },
    };
    match code {
        NONE => None,
        c if c & 0xFF00 == ESCAPED => Some(([0x1B, c as u8], 2)),
        c => Some(([c as u8, 0], 1)),
    }
}

/// Whether `text` can go as GSM 7-bit.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7(c).is_some())
}

/// Encode `text` the default way (GSM 7-bit unpacked, else UCS-2); `reference` is
/// the concatenation reference shared by its parts.
pub fn encode(text: &str, reference: u8) -> Encoded {
    encode_with(text, reference, Policy::default())
}

/// Encode `text` as `policy` asks.
pub fn encode_with(text: &str, reference: u8, policy: Policy) -> Encoded {
    match policy.preferred {
        Preferred::Gsm7 if is_gsm7(text) => {
            let units: Vec<Vec<u8>> = text
                .chars()
                .map(|c| {
                    let (s, n) = gsm7(c).expect("checked");
                    s[..n].to_vec()
                })
                .collect();
            let total = units.iter().map(Vec::len).sum();
            let mut parts = split(units, total, 160, 153, reference);
            if policy.gsm7_packed {
                let multi = parts.len() > 1;
                for part in &mut parts {
                    *part = if multi {
                        // The 6-octet UDH takes 48 bits; septets start on the next
                        // septet boundary, bit 49: one fill bit.
                        let mut packed = part[..6].to_vec();
                        packed.extend(pack_septets(&part[6..], 1));
                        packed
                    } else {
                        pack_septets(part, 0)
                    };
                }
            }
            Encoded {
                data_coding: DCS_GSM7,
                parts,
            }
        }
        Preferred::Latin1 if text.chars().all(|c| (c as u32) <= 0xFF) => {
            let units: Vec<Vec<u8>> = text.chars().map(|c| vec![c as u32 as u8]).collect();
            let total = units.len();
            Encoded {
                data_coding: DCS_LATIN1,
                parts: split(units, total, 140, 134, reference),
            }
        }
        _ => {
            let mut units: Vec<Vec<u8>> = Vec::new();
            let mut total = 0;
            for c in text.chars() {
                let mut buf = [0u16; 2];
                let encoded = c.encode_utf16(&mut buf);
                total += encoded.len();
                units.push(encoded.iter().flat_map(|u| u.to_be_bytes()).collect());
            }
            // Limits are in UTF-16 units; split() counts octets, so double them.
            Encoded {
                data_coding: DCS_UCS2,
                parts: split(units, total * 2, 140, 134, reference),
            }
        }
    }
}

/// The alphabet a text goes in by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alphabet {
    /// GSM 03.38 7-bit: 160 septets alone, 153 per part.
    Gsm7,
    /// UCS-2: 70 UTF-16 units alone, 67 per part.
    Ucs2,
}

impl Alphabet {
    pub fn as_str(self) -> &'static str {
        match self {
            Alphabet::Gsm7 => "gsm7",
            Alphabet::Ucs2 => "ucs2",
        }
    }
}

/// How a text goes by SMS under the default policy: its alphabet, its length in
/// that alphabet's units (septets, an escaped character counting two; or UTF-16
/// units) and how many SMS it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    pub alphabet: Alphabet,
    pub units: usize,
    pub segments: usize,
}

/// [`Measure`] a text without encoding it; agrees with [`encode`] on the parts.
pub fn measure(text: &str) -> Measure {
    // One pass counts both ways; the second pass is only for texts of several parts.
    let (mut septets, mut utf16, mut gsm) = (0, 0, true);
    for c in text.chars() {
        utf16 += c.len_utf16();
        match gsm7(c) {
            Some((_, n)) => septets += n,
            None => gsm = false,
        }
    }
    let (alphabet, single, each, units) = if gsm {
        (Alphabet::Gsm7, 160, 153, septets)
    } else {
        (Alphabet::Ucs2, 70, 67, utf16)
    };
    let unit = |c: char| {
        if gsm {
            gsm7(c).map_or(1, |(_, n)| n)
        } else {
            c.len_utf16()
        }
    };
    let segments = if units <= single {
        1
    } else {
        // Parts fill greedily and never divide a character, as `split` does.
        let (mut parts, mut current) = (1, 0);
        for c in text.chars() {
            let n = unit(c);
            if current + n > each {
                parts += 1;
                current = 0;
            }
            current += n;
        }
        parts
    };
    Measure {
        alphabet,
        units,
        segments,
    }
}

/// Pack septets (one per octet, 0..=0x7F) 8 into 7 octets, least significant bit
/// first, after `fill_bits` zero bits (GSM 03.38 §6.1.2.1).
pub fn pack_septets(septets: &[u8], fill_bits: usize) -> Vec<u8> {
    let total_bits = fill_bits + septets.len() * 7;
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    for (i, &s) in septets.iter().enumerate() {
        let bit = fill_bits + i * 7;
        let (byte, shift) = (bit / 8, bit % 8);
        let value = u16::from(s & 0x7F) << shift;
        out[byte] |= value as u8;
        if shift > 1 {
            out[byte + 1] |= (value >> 8) as u8;
        }
    }
    out
}

/// The inverse of [`pack_septets`], for `count` septets.
pub fn unpack_septets(octets: &[u8], fill_bits: usize, count: usize) -> Vec<u8> {
    (0..count)
        .map(|i| {
            let bit = fill_bits + i * 7;
            let (byte, shift) = (bit / 8, bit % 8);
            let lo = u16::from(octets.get(byte).copied().unwrap_or(0));
            let hi = u16::from(octets.get(byte + 1).copied().unwrap_or(0));
            (((lo | (hi << 8)) >> shift) & 0x7F) as u8
        })
        .collect()
}

/// Split characters (each its octets, never divided) into parts of at most `single`
/// or, when more than one part is needed, `each` octets plus a UDH.
fn split(
    units: Vec<Vec<u8>>,
    total: usize,
    single: usize,
    each: usize,
    reference: u8,
) -> Vec<Vec<u8>> {
    if total <= single {
        return vec![units.concat()];
    }
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    for unit in units {
        if current.len() + unit.len() > each {
            bodies.push(std::mem::take(&mut current));
        }
        current.extend(unit);
    }
    if !current.is_empty() {
        bodies.push(current);
    }
    let count = bodies.len().min(255) as u8;
    bodies
        .into_iter()
        .take(255)
        .enumerate()
        .map(|(i, body)| {
            // IEI 0x00: concatenated short messages, 8-bit reference.
            let mut part = vec![0x05, 0x00, 0x03, reference, count, (i + 1) as u8];
            part.extend(body);
            part
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_latin_table_agrees_with_the_alphabet() {
        for cp in 0u32..0x2400 {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            let slow = if c != '\u{1b}'
                && let Some(code) = BASIC.iter().position(|&b| b == c)
            {
                Some(([code as u8, 0], 1))
            } else {
                EXTENSION
                    .iter()
                    .find(|(e, _)| *e == c)
                    .map(|(_, code)| ([0x1B, *code], 2))
            };
            assert_eq!(gsm7(c), slow, "U+{cp:04X}");
        }
    }

    proptest! {
        #[test]
        fn measure_agrees_with_encode(text in "[a-z0-9 €\\[\\]ñçüóá😀]{0,400}") {
            let m = measure(&text);
            let e = encode(&text, 1);
            prop_assert_eq!(m.segments, e.parts.len().max(1));
            prop_assert_eq!(m.alphabet == Alphabet::Gsm7, e.data_coding == DCS_GSM7);
        }
    }

    #[test]
    fn boundaries_of_one_and_two_segments() {
        let m = measure(&"a".repeat(160));
        assert_eq!((m.alphabet, m.units, m.segments), (Alphabet::Gsm7, 160, 1));
        assert_eq!(measure(&"a".repeat(161)).segments, 2);
        // `€` is an escape: two septets.
        let m = measure(&format!("{}€", "a".repeat(158)));
        assert_eq!((m.units, m.segments), (160, 1));
        assert_eq!(measure(&format!("{}€", "a".repeat(159))).segments, 2);
        let m = measure(&"ó".repeat(70));
        assert_eq!((m.alphabet, m.units, m.segments), (Alphabet::Ucs2, 70, 1));
        assert_eq!(measure(&"ó".repeat(71)).segments, 2);
        assert_eq!(measure(&"ó".repeat(134)).segments, 2);
        assert_eq!(measure(&"ó".repeat(135)).segments, 3);
    }

    fn decode_gsm7(octets: &[u8]) -> String {
        let mut out = String::new();
        let mut escape = false;
        for &o in octets {
            if escape {
                out.push(EXTENSION.iter().find(|(_, c)| *c == o).unwrap().0);
                escape = false;
            } else if o == 0x1B {
                escape = true;
            } else {
                out.push(BASIC[o as usize]);
            }
        }
        out
    }

    fn body(part: &[u8], multi: bool) -> &[u8] {
        if multi { &part[6..] } else { part }
    }

    #[test]
    fn plain_text_is_one_gsm7_part() {
        let e = encode("042317 is your verification code. It expires in 10 min.", 1);
        assert_eq!(e.data_coding, DCS_GSM7);
        assert_eq!(e.parts.len(), 1);
        assert_eq!(e.esm_class(), 0);
        assert_eq!(e.parts[0][0], 0x30, "'0' is 0x30 in GSM 7-bit too");
        assert_eq!(
            decode_gsm7(&e.parts[0]),
            "042317 is your verification code. It expires in 10 min."
        );
    }

    #[test]
    fn the_extension_table_costs_two_septets() {
        let e = encode("10€ [x]", 1);
        assert_eq!(
            e.parts[0],
            vec![0x31, 0x30, 0x1B, 0x65, 0x20, 0x1B, 0x3C, 0x78, 0x1B, 0x3E]
        );
        assert_eq!(decode_gsm7(&e.parts[0]), "10€ [x]");
    }

    #[test]
    fn accents_outside_gsm7_switch_to_ucs2() {
        assert!(is_gsm7("é è ñ Ñ ü à Ç ¿ ¡"));
        assert!(!is_gsm7("código"), "ó is not in GSM 03.38");
        let e = encode("código", 1);
        assert_eq!(e.data_coding, DCS_UCS2);
        assert_eq!(e.parts[0][..4], [0x00, 0x63, 0x00, 0xF3]);
    }

    #[test]
    fn exactly_160_septets_is_one_part_161_is_two() {
        assert_eq!(encode(&"a".repeat(160), 7).parts.len(), 1);
        let e = encode(&"a".repeat(161), 7);
        assert_eq!(e.parts.len(), 2);
        assert_eq!(e.esm_class(), 0x40);
        assert_eq!(&e.parts[0][..6], &[0x05, 0x00, 0x03, 7, 2, 1]);
        assert_eq!(&e.parts[1][..6], &[0x05, 0x00, 0x03, 7, 2, 2]);
        assert_eq!(e.parts[0].len(), 6 + 153);
        assert_eq!(e.parts[1].len(), 6 + 8);
    }

    #[test]
    fn an_escaped_character_is_never_split() {
        let text = format!("{}€", "a".repeat(152));
        let text = format!("{text}{}", "b".repeat(10));
        let e = encode(&text, 1);
        assert_eq!(e.parts.len(), 2);
        assert_eq!(
            e.parts[0].len(),
            6 + 152,
            "the escape pair moved whole to part 2"
        );
        assert_eq!(&e.parts[1][6..8], &[0x1B, 0x65]);
    }

    #[test]
    fn ucs2_limits_and_surrogate_pairs() {
        assert_eq!(encode(&"ó".repeat(70), 1).parts.len(), 1);
        let e = encode(&"ó".repeat(71), 1);
        assert_eq!(e.parts.len(), 2);
        assert_eq!(e.parts[0].len(), 6 + 134);
        // 66 units then an emoji (2 units): the pair does not fit in 67, so it moves.
        let text = format!("{}😀", "ó".repeat(66)) + &"ó".repeat(10);
        let e = encode(&text, 1);
        assert_eq!(e.parts[0].len(), 6 + 132);
        assert_eq!(&e.parts[1][6..10], &[0xD8, 0x3D, 0xDE, 0x00]);
    }

    #[test]
    fn every_otpd_language_encodes() {
        for text in [
            "042317 es tu código de verificación. Caduca en 10 min. No lo compartas con nadie.",
            "042317 és el teu codi de verificació. Caduca d'aquí a 10 min. No el comparteixis amb ningú.",
            "042317 da zure egiaztapen-kodea. 10 minututan iraungiko da. Ez partekatu inorekin.",
        ] {
            let e = encode(text, 3);
            assert!(!e.parts.is_empty());
            assert!(e.parts.iter().all(|p| p.len() <= 140 + 20));
        }
    }

    #[test]
    fn packing_follows_gsm_03_38() {
        // The classic example: "hellohello" packs to E8 32 9B FD 46 97 D9 EC 37.
        let septets: Vec<u8> = "hellohello"
            .chars()
            .map(|c| gsm7(c).unwrap().0[0])
            .collect();
        assert_eq!(
            pack_septets(&septets, 0),
            vec![0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37]
        );
        assert_eq!(unpack_septets(&pack_septets(&septets, 0), 0, 10), septets);
    }

    #[test]
    fn packed_parts_fit_140_octets_with_their_udh() {
        let policy = Policy {
            preferred: Preferred::Gsm7,
            gsm7_packed: true,
        };
        let one = encode_with(&"a".repeat(160), 1, policy);
        assert_eq!(one.parts.len(), 1);
        assert_eq!(one.parts[0].len(), 140);
        let two = encode_with(&"a".repeat(200), 1, policy);
        assert_eq!(two.parts.len(), 2);
        assert_eq!(
            two.parts[0].len(),
            140,
            "6 UDH octets + 153 septets with one fill bit"
        );
        assert_eq!(&two.parts[0][..6], &[0x05, 0x00, 0x03, 1, 2, 1]);
        let back = unpack_septets(&two.parts[0][6..], 1, 153);
        assert!(back.iter().all(|&s| s == gsm7('a').unwrap().0[0]));
    }

    #[test]
    fn latin1_carries_spanish_accents_in_one_octet_each() {
        let policy = Policy {
            preferred: Preferred::Latin1,
            gsm7_packed: false,
        };
        let e = encode_with("código", 1, policy);
        assert_eq!(e.data_coding, DCS_LATIN1);
        assert_eq!(e.parts[0], vec![b'c', 0xF3, b'd', b'i', b'g', b'o']);
        assert_eq!(encode_with(&"ó".repeat(140), 1, policy).parts.len(), 1);
        assert_eq!(encode_with(&"ó".repeat(141), 1, policy).parts.len(), 2);
        // Outside Latin-1: UCS-2.
        assert_eq!(encode_with("10 €", 1, policy).data_coding, DCS_UCS2);
        let ucs2 = Policy {
            preferred: Preferred::Ucs2,
            gsm7_packed: false,
        };
        assert_eq!(encode_with("abc", 1, ucs2).data_coding, DCS_UCS2);
    }

    proptest! {
        #[test]
        fn pack_then_unpack_is_identity(septets in proptest::collection::vec(0u8..0x80, 0..200), fill in 0usize..7) {
            let packed = pack_septets(&septets, fill);
            prop_assert_eq!(packed.len(), (fill + septets.len() * 7).div_ceil(8));
            prop_assert_eq!(unpack_septets(&packed, fill, septets.len()), septets);
        }

        /// Whatever the text, parts respect the limits and reassemble to the text.
        #[test]
        fn parts_reassemble(text in "\\PC{0,400}", reference in any::<u8>()) {
            let e = encode(&text, reference);
            let multi = e.parts.len() > 1;
            for (i, part) in e.parts.iter().enumerate() {
                if multi {
                    prop_assert_eq!(&part[..6], &[0x05, 0x00, 0x03, reference, e.parts.len() as u8, (i + 1) as u8][..]);
                }
                let limit = match (e.data_coding, multi) {
                    (DCS_GSM7, false) => 160, (DCS_GSM7, true) => 153,
                    (_, false) => 140, (_, true) => 134,
                };
                prop_assert!(body(part, multi).len() <= limit);
            }
            let joined: Vec<u8> = e.parts.iter().flat_map(|p| body(p, multi).to_vec()).collect();
            let back = if e.data_coding == DCS_GSM7 {
                decode_gsm7(&joined)
            } else {
                let units: Vec<u16> = joined.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                String::from_utf16(&units).unwrap()
            };
            if e.parts.len() < 255 {
                prop_assert_eq!(back, text);
            }
        }
    }
}
