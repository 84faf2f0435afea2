//! Session id parser: never panics; accepts exactly 32 lowercase hex characters, and an
//! accepted id prints back as the same text.
#![no_main]

use _core::sid::SessionId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let valid = text.len() == 32 && text.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    match SessionId::parse(text) {
        Some(id) => {
            assert!(valid, "accepted {text:?}");
            assert_eq!(id.to_hex(), text);
        }
        None => assert!(!valid, "refused {text:?}"),
    }
});
