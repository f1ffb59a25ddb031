//! The `codec` fuzz target's property on its committed corpus, in the normal
//! test run (no cargo-fuzz or nightly needed): whatever parses encodes to
//! text that parses to the same message.

use std::path::Path;

use easechat_protocol::parse;

#[test]
fn the_committed_codec_corpus_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/codec");
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/codec") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let Ok(message) = parse(text) else {
            continue;
        };
        let encoded = message.encode();
        assert_eq!(message.encoded_len(), encoded.len(), "{text:?}");
        assert_eq!(parse(&encoded), Ok(message), "{text:?} as {encoded:?}");
        parsed += 1;
    }
    assert!(parsed > 0, "no input of {} parses", dir.display());
}
