//! Legacy Beaker decoder: never panics on arbitrary bytes. Seed it with the fixture files
//! (`tests/fixtures/legacy/*/container_file/**/*.cache`) to start from real pickles.
#![no_main]

use _core::legacy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(session) = legacy::decode(data) {
        if session.wrapped {
            assert_eq!(session.payload, data);
        }
    }
});
