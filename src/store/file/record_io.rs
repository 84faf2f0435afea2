//! The file store's record I/O, kept apart from its locking and lifecycle logic (opening and
//! creating files and directories, confined to the data dir, is `platform`'s): reading a
//! record's two slots with as few `pread`s as possible, and the one rule that
//! turns a record file into a last access (`last_access`), shared by `open` and the sweeper.

use std::fs::{File, Metadata};
use std::io::{self, ErrorKind};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{StoreError, StoreResult};
use crate::expiry;
use crate::platform;
use crate::record::{self, Choice, Keys, Name, Rekey, HEADER_LEN};
use crate::sid::SessionId;

/// Records up to this size are read with one `pread`; larger ones slot by slot.
const SMALL_RECORD: u64 = 256 << 10;

/// How far the kernel's clock may run ahead of the injected one before a write pins the
/// file's mtime to the injected time (see `pin_mtime`).
const CLOCK_SLACK: f64 = 1.0;

/// Epoch seconds as a `SystemTime` (non-finite or negative values give the epoch).
pub(crate) fn to_system_time(secs: f64) -> SystemTime {
    if secs.is_finite() && secs > 0.0 {
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    } else {
        UNIX_EPOCH
    }
}

/// The last access of a record: the later of the save time in its header and its mtime,
/// which a touch sets to the (injected) time of the touch, and a write leaves at most
/// `CLOCK_SLACK` after the injected time of the write (`pin_mtime`).
pub(crate) fn last_access(saved_at: f64, meta: &Metadata) -> f64 {
    expiry::last_access(saved_at, Some(platform::mtime(meta)))
}

/// After a write at injected time `now`, the kernel has set the mtime to the *system* time.
/// When `now` is behind the system clock (a faked clock in the past), that mtime would pass
/// for a later access and keep the session alive on the system clock; the mtime is then set
/// to `now`. In the normal case (`now` is the system time) this reads the clock (vDSO, no
/// syscall) and does nothing else.
pub(crate) fn pin_mtime(file: &File, path: &Path, now: f64) -> StoreResult<()> {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if now + CLOCK_SLACK >= system {
        return Ok(());
    }
    file.set_modified(to_system_time(now))
        .map_err(|e| StoreError::io("touch", path, e))
}

/// Writes a whole new record file (slot 0 = `slot`, slot 1 empty) into an open, empty file
/// at injected time `now`.
pub(crate) fn fill_new(
    file: &File,
    path: &Path,
    slot: &[u8],
    slot_size: usize,
    now: f64,
) -> StoreResult<()> {
    platform::write_all_at(file, slot, 0).map_err(|e| StoreError::io("write", path, e))?;
    // The second slot stays a hole until the first in-place save writes it.
    file.set_len(2 * slot_size as u64)
        .map_err(|e| StoreError::io("write", path, e))?;
    pin_mtime(file, path, now)
}

/// Refuses payloads (plain bytes, or stored bytes) the record format cannot describe.
pub(crate) fn check_len(len: usize) -> StoreResult<()> {
    // Room for the nonce and tag of a sealed record as well.
    if u32::try_from(len.saturating_add(record::SEAL_OVERHEAD)).is_err() {
        return Err(StoreError::TooLarge(len));
    }
    Ok(())
}

/// The current slot of a record, as read and verified.
pub(crate) struct RecordRead {
    pub slot: usize,
    pub seq: u64,
    pub slot_size: usize,
    pub created: f64,
    pub saved_at: f64,
    pub payload: Vec<u8>,
    /// The large values (`record::Verified::segments`).
    pub segments: record::Segments,
    /// Opened under a fallback key or in the other format (`record::Verified::stale`).
    pub stale: bool,
}

/// Why a record could not be used.
pub(crate) enum ReadError {
    Io(io::Error),
    Corrupt,
    Unauthenticated,
    Newer,
}

/// Reads both slot headers, and the payload of the newest slot that verifies.
///
/// Nothing is allocated from a length read in the file before it is bounded: the file's
/// size (from `fstat`) decides whether it is read whole (small records only) or as two
/// 64-byte headers, and a header's `payload_len` must fit its slot *and* be at most
/// `max_payload` (the store's maximum session size) before its payload is read. A planted
/// multi-gigabyte (sparse) file with a plausible header therefore costs at most
/// `max_payload` (plus a sealed record's 40 bytes) of memory and one pass of the tag over them, then reads as corrupt.
pub(crate) fn read_record(
    file: &File,
    meta: &Metadata,
    keys: &Keys,
    id: &SessionId,
    max_payload: usize,
) -> Result<RecordRead, ReadError> {
    let (choice, slot_size) = choose_in_file(file, meta, keys, Name::Id(id), max_payload)?;
    match choice {
        Choice::Valid(slot, v) => Ok(RecordRead {
            slot,
            seq: v.header.seq,
            slot_size,
            created: v.header.created,
            saved_at: v.header.saved_at,
            payload: v.payload,
            segments: v.segments,
            stale: v.stale,
        }),
        Choice::Newer(_) => Err(ReadError::Newer),
        Choice::Unauthenticated => Err(ReadError::Unauthenticated),
        // `Unbound` only comes of reading by digest.
        Choice::Corrupt | Choice::Unbound => Err(ReadError::Corrupt),
    }
}

/// The slot choice of a record file (see `read_record` for the bounds on what is read) and
/// its slot size.
fn choose_in_file(
    file: &File,
    meta: &Metadata,
    keys: &Keys,
    name: Name<'_>,
    max_payload: usize,
) -> Result<(Choice, usize), ReadError> {
    let len = meta.len();
    if !meta.file_type().is_file()
        || len < 2 * HEADER_LEN as u64
        || len % 2 != 0
        || len > 2 * (u64::from(u32::MAX) + HEADER_LEN as u64)
    {
        return Err(ReadError::Corrupt);
    }
    let slot_size = usize::try_from(len / 2).map_err(|_| ReadError::Corrupt)?;
    let (heads, whole) = read_heads(file, len, slot_size).map_err(eof_is_corrupt)?;
    let mut io_error = None;
    let choice = record::choose_named(keys, name, [&heads[0], &heads[1]], slot_size, |i, h| {
        if h.payload_len > record::max_stored(max_payload) {
            return None;
        }
        let start = i * slot_size + HEADER_LEN;
        match &whole {
            Some(all) => Some(all.get(start..start + h.payload_len)?.to_vec()),
            None => {
                let mut buf = vec![0u8; h.payload_len];
                if let Err(e) = platform::read_exact_at(file, &mut buf, start as u64) {
                    io_error = Some(e);
                    return None;
                }
                Some(buf)
            }
        }
    });
    if let Some(e) = io_error {
        return Err(eof_is_corrupt(e));
    }
    Ok((choice, slot_size))
}

/// Re-seals a record file under the current key (`flask beaker-session rekey`), known by
/// the digest that names it; the caller holds its `flock`. The new version goes to the
/// older slot, as a save's would (a crash leaves the current slot intact, and the torn
/// new one fails its tag), with the same times; the mtime (part of the last access) is
/// put back. With `write` false (a dry run) it only says what it would do.
pub(crate) fn rekey_file(
    file: &File,
    meta: &Metadata,
    keys: &Keys,
    digest: &[u8; 32],
    max_payload: usize,
    write: bool,
) -> io::Result<Rekey> {
    let (choice, slot_size) =
        match choose_in_file(file, meta, keys, Name::Digest(digest), max_payload) {
            Ok(c) => c,
            Err(ReadError::Io(e)) => return Err(e),
            Err(_) => return Ok(Rekey::Corrupt),
        };
    let (slot, verified) = match choice {
        Choice::Valid(slot, v) => (slot, v),
        Choice::Newer(_) => return Ok(Rekey::Newer),
        Choice::Unauthenticated => return Ok(Rekey::Unopenable),
        Choice::Corrupt => return Ok(Rekey::Corrupt),
        Choice::Unbound => return Ok(Rekey::Plain),
    };
    let new = match record::reseal(keys, digest, &verified) {
        Ok(Some(new)) => new,
        Ok(None) => return Ok(Rekey::Current),
        Err(e) => return Err(io::Error::other(e.to_string())),
    };
    if new.len() > slot_size {
        // Cannot happen (same payload, same sealing overhead); never write past a slot.
        return Ok(Rekey::Corrupt);
    }
    if write {
        let offset = ((1 - slot) * slot_size) as u64;
        platform::write_all_at(file, &new[HEADER_LEN..], offset + HEADER_LEN as u64)?;
        platform::write_all_at(file, &new[..HEADER_LEN], offset)?;
        // The version under the retired key goes (rotation after a leak must not leave
        // it readable with the leaked key); the new one is whole by now.
        scrub_slot(file, slot, slot_size)?;
        file.set_modified(meta.modified()?)?;
    }
    Ok(Rekey::Reseal(Vec::new()))
}

/// Overwrites slot `slot` of a record file with zeros, in chunks of at most 64 KiB.
pub(crate) fn scrub_slot(file: &File, slot: usize, slot_size: usize) -> io::Result<()> {
    const CHUNK: usize = 64 << 10;
    let zeros = vec![0u8; slot_size.min(CHUNK)];
    let start = (slot * slot_size) as u64;
    let mut done = 0;
    while done < slot_size {
        let n = (slot_size - done).min(CHUNK);
        platform::write_all_at(file, &zeros[..n], start + done as u64)?;
        done += n;
    }
    Ok(())
}

/// A file shorter than its `fstat` said (truncated under us by someone who does not take
/// the lock) is corrupt, not an I/O failure of the store.
fn eof_is_corrupt(e: io::Error) -> ReadError {
    if e.kind() == ErrorKind::UnexpectedEof {
        ReadError::Corrupt
    } else {
        ReadError::Io(e)
    }
}

/// The two slot headers; for a small record also the whole file (read in one `pread`).
type Heads = ([Vec<u8>; 2], Option<Vec<u8>>);

fn read_heads(file: &File, len: u64, slot_size: usize) -> io::Result<Heads> {
    if len <= SMALL_RECORD {
        let mut all = vec![0u8; len as usize];
        platform::read_exact_at(file, &mut all, 0)?;
        let heads = [
            all[..HEADER_LEN].to_vec(),
            all[slot_size..slot_size + HEADER_LEN].to_vec(),
        ];
        return Ok((heads, Some(all)));
    }
    let mut a = vec![0u8; HEADER_LEN];
    let mut b = vec![0u8; HEADER_LEN];
    platform::read_exact_at(file, &mut a, 0)?;
    platform::read_exact_at(file, &mut b, slot_size as u64)?;
    Ok(([a, b], None))
}
