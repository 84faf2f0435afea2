//! Record decoder: arbitrary bytes as one slot never panic and are never accepted; a
//! genuine slot whose header or payload bytes are changed (first input byte = position,
//! second = XOR mask) is never accepted either.
#![no_main]

use _core::record::{self, Keys, HEADER_LEN};
use _core::sid::SessionId;
use libfuzzer_sys::fuzz_target;

fn accept(keys: &Keys, id: &SessionId, slot: &[u8]) -> bool {
    let Ok(header) = record::parse_header(slot) else {
        return false;
    };
    let Some(payload) = HEADER_LEN
        .checked_add(header.payload_len)
        .and_then(|end| slot.get(HEADER_LEN..end))
    else {
        return false;
    };
    record::verify(keys, slot, &header, id, payload)
}

fuzz_target!(|data: &[u8]| {
    let Some(id) = SessionId::parse("00112233445566778899aabbccddeeff") else {
        return;
    };
    let keys = Keys::new(&[b"fuzz".to_vec()]);
    assert!(!accept(&keys, &id, data), "arbitrary bytes accepted");
    if data.len() >= 2 && data[1] != 0 {
        let payload = &data[2..];
        let mut slot = record::encode_slot(&keys, &id, 1, 1.0, 2.0, payload);
        assert!(accept(&keys, &id, &slot));
        let pos = usize::from(data[0]) % slot.len();
        slot[pos] ^= data[1];
        assert!(!accept(&keys, &id, &slot), "edited slot accepted");
    }
});
