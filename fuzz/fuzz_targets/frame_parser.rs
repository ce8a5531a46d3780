//! Any bytes, cut into reads anywhere, through the codec and both parsers:
//! nothing may panic, and no line may exceed the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use riftd::codec::LineCodec;
use riftd::proto::{TextExpect, parse_json, parse_text};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let mut codec = LineCodec::new(256);
    let cut = usize::from(cut).min(bytes.len());
    for piece in [&bytes[..cut], &bytes[cut..]] {
        codec.push(piece);
        while let Some(line) = codec.next_line() {
            if let Ok(line) = line {
                assert!(line.len() <= 256);
                let _ = parse_json(line);
                for expect in [TextExpect::Username, TextExpect::Password, TextExpect::Chat] {
                    let _ = parse_text(line, expect);
                }
            }
        }
    }
});
