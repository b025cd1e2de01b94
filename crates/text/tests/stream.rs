//! The streaming detokenizer against `decode`.

mod common;

use common::*;
use deepseek_text::Tokenizer;

/// Push ids one at a time and check every step: no text is taken back, the text so far
/// is `decode` of the ids so far minus at most a held-back incomplete character, and the
/// whole stream equals `decode`. Returns how many steps held something back.
fn check_stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> usize {
    let full = tok.decode(ids, skip_special);
    let mut dec = tok.stream_decoder(skip_special);
    let mut so_far = String::new();
    let mut held = 0;
    for (k, &id) in ids.iter().enumerate() {
        let chunk = dec.push(id);
        so_far.push_str(&chunk);
        let prefix = tok.decode(&ids[..=k], skip_special);
        assert!(
            full.starts_with(&so_far),
            "took back text at {k}: {so_far:?} vs {full:?}"
        );
        if so_far != prefix {
            assert_eq!(
                format!("{so_far}\u{FFFD}"),
                prefix,
                "step {k} of {ids:?}: emitted {so_far:?}, decode gives {prefix:?}"
            );
            held += 1;
        }
        // Any U+FFFD emitted is also in the final text at that position (checked by the
        // prefix test above); an incomplete character is never emitted as U+FFFD early.
        if chunk.contains('\u{FFFD}') {
            let pos = so_far.len();
            assert!(full[..pos].ends_with(&chunk), "{chunk:?}");
        }
    }
    so_far.push_str(&dec.finish());
    assert_eq!(so_far, full, "{ids:?}");
    held
}

#[test]
fn every_vector_streams_like_decode() {
    let tok = hf_tokenizer();
    for v in text_vectors() {
        check_stream(tok, &v.ids, false);
        check_stream(tok, &v.ids, true);
        let mut with_bos = vec![100000];
        with_bos.extend(&v.ids);
        with_bos.push(100001);
        check_stream(tok, &with_bos, false);
        check_stream(tok, &with_bos, true);
    }
}

#[test]
fn multibyte_characters_split_across_tokens() {
    let tok = hf_tokenizer();
    for text in [
        "😀👍🏽 emoji",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "龘靐齉",
        "日本語のテキスト",
        "한국어 🇰🇷",
    ] {
        let ids = tok.encode(text, false).unwrap();
        let held = check_stream(tok, &ids, false);
        assert!(held > 0, "{text:?} ({ids:?}) never split a character");
        assert_eq!(tok.decode(&ids, false), text);
    }
}

#[test]
fn ids_without_token_and_specials_in_the_stream() {
    let tok = hf_tokenizer();
    let emoji = tok.encode("a😀b", false).unwrap();
    assert!(emoji.len() >= 3);
    // Put ids without a token and special tokens between the pieces of the emoji.
    let mut ids = Vec::new();
    for (i, &id) in emoji.iter().enumerate() {
        ids.push(id);
        ids.push(100015 + i as u32);
        ids.push(102399);
        ids.push(100000);
    }
    ids.push(u32::MAX);
    check_stream(tok, &ids, true);
    check_stream(tok, &ids, false);
    let mut dec = tok.stream_decoder(true);
    let text: String = ids.iter().map(|&i| dec.push(i)).collect::<String>() + &dec.finish();
    assert_eq!(text, "a😀b");
}

#[test]
fn incomplete_character_at_the_end() {
    let tok = hf_tokenizer();
    let ids = tok.encode("😀", false).unwrap();
    assert!(ids.len() > 1, "{ids:?}");
    let cut = &ids[..ids.len() - 1];
    let mut dec = tok.stream_decoder(false);
    let pushed: String = cut.iter().map(|&i| dec.push(i)).collect();
    assert_eq!(pushed, "");
    assert_eq!(dec.finish(), "\u{FFFD}");
    assert_eq!(tok.decode(cut, false), "\u{FFFD}");
    // The byte-symbol tokens are invalid bytes: U+FFFD right away, as in decode.
    check_stream(tok, &[21322, 100003, 77], false);
    let mut dec = tok.stream_decoder(false);
    assert_eq!(dec.push(21322), "sch");
    // 0xF6 can never start a UTF-8 sequence, so it is replaced at once.
    assert_eq!(dec.push(100003), "\u{FFFD}");
    assert_eq!(dec.push(77), "n");
}

#[test]
fn generic_fallback_for_other_decoders() {
    let tmp = tempfile::tempdir().unwrap();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": 3, "content": "</s>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "post_processor": null,
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "model": {"type": "WordLevel", "vocab": {"▁hello": 0, "▁world": 1, "<unk>": 2, "</s>": 3}, "unk_token": "<unk>"}
    });
    let path = tmp.path().join("tokenizer.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let tok = Tokenizer::from_file(&path).unwrap();
    let ids = tok.encode("hello world</s>", false).unwrap();
    assert_eq!(ids, vec![0, 1, 3]);
    assert_eq!(tok.eos_ids(), vec![3]);
    assert_eq!(tok.bos_id(), None);
    assert_eq!(tok.encode("hello", true).unwrap(), vec![0]);
    for skip in [false, true] {
        check_stream(&tok, &[0, 1, 3, 7, 1], skip);
    }
    let mut dec = tok.stream_decoder(true);
    assert_eq!(dec.push(0), "hello");
    assert_eq!(dec.push(1), " world");
    assert_eq!(dec.push(3), "");
    assert_eq!(dec.finish(), "");
}

#[test]
fn random_id_sequences_stream_like_decode() {
    let tok = hf_tokenizer();
    let mut rng = Lcg(3);
    for _ in 0..300 {
        let len = 1 + rng.below(30) as usize;
        let ids: Vec<u32> = (0..len)
            .map(|_| match rng.below(10) {
                0 => 100000 + rng.below(3000) as u32,
                1 => rng.below(300) as u32,
                _ => rng.below(100000) as u32,
            })
            .collect();
        check_stream(tok, &ids, false);
        check_stream(tok, &ids, true);
    }
}
