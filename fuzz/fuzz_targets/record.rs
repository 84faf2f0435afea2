//! Record decoder: arbitrary bytes as one slot never panic and are never accepted (opened,
//! or re-sealed by a `rekey` walk); a genuine slot, sealed or not, whose header or stored
//! bytes are changed (first input byte = position, second = XOR mask, third = key kind) is
//! never accepted either.
#![no_main]

use _core::record::{self, Keys, HEADER_LEN};
use _core::sid::SessionId;
use libfuzzer_sys::fuzz_target;

fn accept(keys: &Keys, id: &SessionId, slot: &[u8]) -> bool {
    let Ok(header) = record::parse_header(slot) else {
        return false;
    };
    let Some(stored) = HEADER_LEN
        .checked_add(header.payload_len)
        .and_then(|end| slot.get(HEADER_LEN..end))
    else {
        return false;
    };
    let opened = record::open(keys, slot, &header, id, stored).is_some();
    let digest = _core::shard::digest_bytes(id);
    let rekeyed = matches!(
        record::rekey_value(keys, &digest, slot),
        Ok(record::Rekey::Reseal(_) | record::Rekey::Current)
    );
    opened || rekeyed
}

fuzz_target!(|data: &[u8]| {
    let Some(id) = SessionId::parse("00112233445566778899aabbccddeeff") else {
        return;
    };
    let keys = Keys::new(&[b"fuzz".to_vec()]);
    assert!(!accept(&keys, &id, data), "arbitrary bytes accepted");
    if data.len() >= 3 && data[1] != 0 {
        let keys = match data[2] % 3 {
            0 => Keys::new(&[]),
            1 => keys.encrypting(false),
            _ => keys,
        };
        let payload = &data[3..];
        let Ok(mut slot) = record::encode_slot(&keys, &id, 1, 1.0, 2.0, payload) else {
            return;
        };
        assert!(accept(&keys, &id, &slot));
        let pos = usize::from(data[0]) % slot.len();
        slot[pos] ^= data[1];
        assert!(!accept(&keys, &id, &slot), "edited slot accepted");
    }
});
