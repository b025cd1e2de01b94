//! The GPT-2 byte-level alphabet: every byte is written as one printable character.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Map from a byte-level character back to its byte.
pub(crate) fn char_to_byte() -> &'static HashMap<char, u8> {
    static MAP: OnceLock<HashMap<char, u8>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::with_capacity(256);
        let mut extra = 0u32;
        for b in 0u32..256 {
            let printable = (0x21..=0x7e).contains(&b)
                || (0xa1..=0xac).contains(&b)
                || (0xae..=0xff).contains(&b);
            let c = if printable {
                b
            } else {
                extra += 1;
                255 + extra
            };
            if let Some(c) = char::from_u32(c) {
                // `b` < 256, so the cast is exact.
                map.insert(c, b as u8);
            }
        }
        map
    })
}

/// The raw bytes a token stands for under a byte-level decoder: each character mapped back
/// to its byte, or, when some character is outside the alphabet (e.g. special tokens),
/// the token's own UTF-8 bytes. This is what the `tokenizers` ByteLevel decoder does.
pub(crate) fn token_bytes(token: &str, out: &mut Vec<u8>) {
    let map = char_to_byte();
    let start = out.len();
    for c in token.chars() {
        match map.get(&c) {
            Some(b) => out.push(*b),
            None => {
                out.truncate(start);
                out.extend_from_slice(token.as_bytes());
                return;
            }
        }
    }
}
