//! Segmented (version 3) record decoder: the head parser on arbitrary stored bytes (taken as
//! authentic, so the fuzzer reaches the manifest) never panics and describes nothing outside
//! them; a genuine slot with large values (first input byte = position, second = XOR mask,
//! third = key kind, the rest split into a small payload and two large values) whose bytes
//! are changed is refused, or opens to the same small payload with each large value intact
//! or failing to open, never altered.
#![no_main]

use _core::record::{self, Keys, Kind, Payload, Value};
use _core::sid::SessionId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((small, segments)) = record::segments::parse_unsealed(data) {
        let total = small.len() + segments.iter().flatten().map(Vec::len).sum::<usize>();
        assert!(total <= data.len());
    }
    let Some(id) = SessionId::parse("00112233445566778899aabbccddeeff") else {
        return;
    };
    if data.len() < 3 || data[1] == 0 {
        return;
    }
    let keys = match data[2] % 3 {
        0 => Keys::new(&[]),
        1 => Keys::new(&[b"fuzz".to_vec()]).encrypting(false),
        _ => Keys::new(&[b"fuzz".to_vec()]),
    };
    let rest = &data[3..];
    let (small, values) = rest.split_at(rest.len() / 3);
    let (a, b) = values.split_at(values.len() / 2);
    let large = [
        Value::New {
            key: b"a",
            kind: Kind::Pickle,
            plain: a,
        },
        Value::New {
            key: b"b",
            kind: Kind::Bytes,
            plain: b,
        },
    ];
    let payload = Payload {
        small,
        large: &large,
        loaded: None,
    };
    let Ok(mut slot) = record::encode_slot(&keys, &id, 1, 1.0, 2.0, payload) else {
        return;
    };
    let pos = usize::from(data[0]) * 257 % slot.len();
    slot[pos] ^= data[1];
    if let Ok(v) = record::check_value(&keys, &id, &slot) {
        assert_eq!(v.payload, small, "altered head accepted");
        for (i, value) in [a, b].iter().enumerate() {
            if let Some(opened) = v.segments.open(i) {
                assert_eq!(&opened[..], *value, "altered segment accepted");
            }
        }
    }
});
