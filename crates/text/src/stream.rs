//! Incremental detokenizer for streaming output.

use crate::bytes::token_bytes;
use crate::Tokenizer;

/// Incremental detokenizer: push ids one at a time and get the text that is safe to print
/// now.
///
/// It never emits broken UTF-8 and never emits text it later has to take back; the
/// concatenation of all [`push`](Self::push) results plus [`finish`](Self::finish) equals
/// [`Tokenizer::decode`] of all the ids (with the same `skip_special`).
///
/// For byte-level tokenizers each token is mapped to its raw bytes; the longest valid
/// UTF-8 prefix is emitted and an incomplete trailing sequence is held back. Invalid
/// sequences become U+FFFD exactly as `String::from_utf8_lossy` would on the whole byte
/// string. Other tokenizers use a generic method: the whole sequence is decoded after each
/// id and the new text is emitted once it no longer ends in U+FFFD.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    mode: Mode,
}

enum Mode {
    Bytes { pending: Vec<u8> },
    Generic { ids: Vec<u32>, emitted: String },
}

impl<'a> StreamDecoder<'a> {
    pub(crate) fn new(tok: &'a Tokenizer, skip_special: bool) -> Self {
        let mode = if tok.is_byte_level() {
            Mode::Bytes {
                pending: Vec::new(),
            }
        } else {
            Mode::Generic {
                ids: Vec::new(),
                emitted: String::new(),
            }
        };
        StreamDecoder {
            tok,
            skip_special,
            mode,
        }
    }

    /// Add one id; returns the text that became printable (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        match &mut self.mode {
            Mode::Bytes { pending } => {
                let Some(token) = self.tok.decoder_token(id) else {
                    return String::new();
                };
                if self.skip_special && self.tok.is_special_token_str(&token) {
                    return String::new();
                }
                token_bytes(&token, pending);
                let mut out = String::new();
                drain_utf8(pending, &mut out, false);
                out
            }
            Mode::Generic { ids, emitted } => {
                ids.push(id);
                let text = self.tok.decode(ids, self.skip_special);
                match text.strip_prefix(emitted.as_str()) {
                    Some(new) if !new.is_empty() && !new.ends_with('\u{FFFD}') => {
                        let new = new.to_string();
                        *emitted = text;
                        new
                    }
                    _ => String::new(),
                }
            }
        }
    }

    /// End of the stream: returns whatever is still held back (an incomplete UTF-8
    /// sequence becomes one U+FFFD, as in `decode`). The decoder is then empty and can be
    /// reused for a new stream.
    pub fn finish(&mut self) -> String {
        match &mut self.mode {
            Mode::Bytes { pending } => {
                let mut out = String::new();
                drain_utf8(pending, &mut out, true);
                pending.clear();
                out
            }
            Mode::Generic { ids, emitted } => {
                let text = self.tok.decode(ids, self.skip_special);
                let out = match text.strip_prefix(emitted.as_str()) {
                    Some(new) => new.to_string(),
                    None => {
                        // The decoder rewrote text already shown; emit what differs after
                        // the common prefix (cannot take back what was printed).
                        let common = common_prefix_len(&text, emitted);
                        text[common..].to_string()
                    }
                };
                ids.clear();
                emitted.clear();
                out
            }
        }
    }
}

/// Length in bytes of the longest common prefix of `a` and `b` that ends on a char boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| a.len().min(b.len()))
}

/// Move the decodable part of `pending` into `out`. Invalid sequences become one U+FFFD
/// each (as `String::from_utf8_lossy` does); an incomplete sequence at the end is kept,
/// unless `finish` is set, in which case it becomes one U+FFFD.
pub(crate) fn drain_utf8(pending: &mut Vec<u8>, out: &mut String, finish: bool) {
    let mut start = 0;
    while start < pending.len() {
        match std::str::from_utf8(&pending[start..]) {
            Ok(s) => {
                out.push_str(s);
                start = pending.len();
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(&String::from_utf8_lossy(&pending[start..start + valid]));
                start += valid;
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        start += n;
                    }
                    None => {
                        if finish {
                            out.push('\u{FFFD}');
                            start = pending.len();
                        }
                        break;
                    }
                }
            }
        }
    }
    pending.drain(..start);
}

#[cfg(test)]
mod tests {
    use super::drain_utf8;

    fn stream(chunks: &[&[u8]]) -> (Vec<String>, String) {
        let mut pending = Vec::new();
        let mut outs = Vec::new();
        for c in chunks {
            pending.extend_from_slice(c);
            let mut s = String::new();
            drain_utf8(&mut pending, &mut s, false);
            outs.push(s);
        }
        let mut s = String::new();
        drain_utf8(&mut pending, &mut s, true);
        (outs, s)
    }

    #[test]
    fn matches_from_utf8_lossy() {
        let cases: &[&[&[u8]]] = &[
            &[b"a\xF0\x9F", b"\x98\x80b"],
            &[b"\xF0\x9F", b"A"],
            &[b"\xF6", b"x"],
            &[b"x\xE4\xBD"],
            &[b"\xED\xA0\x80", b"\xC0\xAF"],
            &[b"\xF0", b"\x9F", b"\x98", b"\x80"],
        ];
        for chunks in cases {
            let (outs, last) = stream(chunks);
            let all: Vec<u8> = chunks.concat();
            assert_eq!(outs.concat() + &last, String::from_utf8_lossy(&all));
        }
        let (outs, _) = stream(&[b"\xF0", b"\x9F", b"\x98", b"\x80"]);
        assert_eq!(outs, ["", "", "", "\u{1F600}"]);
    }
}
