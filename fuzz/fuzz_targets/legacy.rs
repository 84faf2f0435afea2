//! Legacy Beaker decoder: never panics on arbitrary bytes. Seed it with the fixture files
//! (`tests/fixtures/legacy/*/container_file/**/*.cache`) to start from real pickles.
//!
//! The decoder contains panics raised inside serde-pickle on purpose (a set holding NaN
//! makes its sort panic; see `legacy::decode_value`). libfuzzer-sys's panic hook aborts on
//! every panic, contained or not, so this target installs a silent hook instead: a panic
//! that escapes `decode` is still caught by libfuzzer-sys's own wrapper and reported.
#![no_main]

use std::sync::Once;

use _core::legacy;
use libfuzzer_sys::fuzz_target;

static QUIET_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    QUIET_HOOK.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    if let Ok(session) = legacy::decode(data) {
        if session.wrapped {
            assert_eq!(session.payload, data);
        }
    }
});
