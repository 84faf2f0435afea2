//! What a walk over a store does (`WalkMode`) and what it found (`Report`): shared by every
//! backend and by the CLI's `stats`/`sweep`/`clear`, so they all report in one shape.

use std::sync::atomic::{AtomicU64, Ordering};

/// Records visited by walks in this process since it started (every store, every mode).
static WALKED: AtomicU64 = AtomicU64::new(0);

/// Counts `n` records visited by a walk (called by each backend as it goes).
pub fn count_walked(n: u64) {
    WALKED.fetch_add(n, Ordering::Relaxed);
}

/// Records visited by walks in this process so far: a monotonic counter that a caller
/// samples before and during a walk to show its progress, since the walk itself is one
/// call that returns only when it is done (`flask beaker-session rekey`'s progress bar).
pub fn walked() -> u64 {
    WALKED.load(Ordering::Relaxed)
}

/// What a walk does with what it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkMode {
    /// Count only.
    Stats,
    /// Remove expired records and leftovers.
    Sweep,
    /// Remove every session (records, temporary and legacy files).
    Clear,
    /// Re-seal every record opened under a fallback key (or not sealed though it could be)
    /// under the current key, keeping its times (`flask beaker-session rekey`); removes
    /// nothing: a record no key opens is counted and left for a request or sweep.
    Rekey,
    /// `Rekey`, counting only (`rekey --dry-run`).
    RekeyDryRun,
}

impl WalkMode {
    /// Whether the walk removes anything (expired or garbled records, leftovers).
    pub fn removes(self) -> bool {
        matches!(self, WalkMode::Sweep | WalkMode::Clear)
    }

    /// Whether this is a rekey walk (dry run or not).
    pub fn rekeys(self) -> bool {
        matches!(self, WalkMode::Rekey | WalkMode::RekeyDryRun)
    }
}

/// Upper bounds (bytes) of the size histogram buckets; the last bucket is "larger".
pub const SIZE_BUCKETS: [u64; 6] = [1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];

/// Counts from one walk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Records seen.
    pub records: u64,
    /// Total bytes of the records seen.
    pub bytes: u64,
    /// Records that are live (kept).
    pub live: u64,
    /// Records found expired (removed unless `Stats`).
    pub expired: u64,
    /// Records that could not be parsed (removed unless `Stats`).
    pub corrupt: u64,
    /// Orphaned temporary files (removed unless `Stats`).
    pub temp: u64,
    /// Legacy Beaker session files seen.
    pub legacy: u64,
    /// Legacy files past the idle timeout (removed unless `Stats`).
    pub legacy_expired: u64,
    /// Beaker lock files (removed by `Sweep` when old, by `Clear` always).
    pub legacy_locks: u64,
    /// Records and files removed.
    pub removed: u64,
    /// Bytes freed by removals.
    pub bytes_freed: u64,
    /// Files that could not be read or removed (permissions, races).
    pub errors: u64,
    /// Symbolic links found in a file store where a directory (or a record, a stamp)
    /// belongs: never followed; a link in place of a directory is left and its tree
    /// skipped, a link at a record's name is removed by `Sweep` and `Clear`.
    pub symlinks: u64,
    /// Entries a file store found but never writes (other names, or a non-empty directory
    /// or other non-file where a record, a shard or the sweep stamp belongs): left alone,
    /// not counted as sessions.
    pub foreign: u64,
    /// Records re-sealed under the current key (`Rekey`; would be, `RekeyDryRun`).
    pub rekeyed: u64,
    /// Records already sealed under the current key (`Rekey*`).
    pub current: u64,
    /// Unsealed (version 1) records, which only their session's next save can seal: they
    /// are bound to the id, which no store keeps (`Rekey*`).
    pub plain: u64,
    /// Records no key opens, left in place (`Rekey*`): written under a key that is neither
    /// `SECRET_KEY` nor one of its fallbacks, or forged.
    pub unopenable: u64,
    /// Record sizes: counts per `SIZE_BUCKETS` bucket, plus one for larger.
    pub sizes: [u64; 7],
}

impl Report {
    /// The counters by name (everything but `sizes`), in declaration order.
    pub fn counts(&self) -> [(&'static str, u64); 18] {
        [
            ("records", self.records),
            ("bytes", self.bytes),
            ("live", self.live),
            ("expired", self.expired),
            ("corrupt", self.corrupt),
            ("temp", self.temp),
            ("legacy", self.legacy),
            ("legacy_expired", self.legacy_expired),
            ("legacy_locks", self.legacy_locks),
            ("removed", self.removed),
            ("bytes_freed", self.bytes_freed),
            ("errors", self.errors),
            ("symlinks", self.symlinks),
            ("foreign", self.foreign),
            ("rekeyed", self.rekeyed),
            ("current", self.current),
            ("plain", self.plain),
            ("unopenable", self.unopenable),
        ]
    }

    /// Adds the counts of `o` (a worker's share of a walk).
    pub fn merge(&mut self, o: &Report) {
        self.records += o.records;
        self.bytes += o.bytes;
        self.live += o.live;
        self.expired += o.expired;
        self.corrupt += o.corrupt;
        self.temp += o.temp;
        self.legacy += o.legacy;
        self.legacy_expired += o.legacy_expired;
        self.legacy_locks += o.legacy_locks;
        self.removed += o.removed;
        self.bytes_freed += o.bytes_freed;
        self.errors += o.errors;
        self.symlinks += o.symlinks;
        self.foreign += o.foreign;
        self.rekeyed += o.rekeyed;
        self.current += o.current;
        self.plain += o.plain;
        self.unopenable += o.unopenable;
        for (a, b) in self.sizes.iter_mut().zip(o.sizes) {
            *a += b;
        }
    }

    /// Counts a record of `len` bytes in the size histogram.
    pub fn add_size(&mut self, len: u64) {
        let bucket = SIZE_BUCKETS
            .iter()
            .position(|&b| len <= b)
            .unwrap_or(SIZE_BUCKETS.len());
        self.sizes[bucket] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_every_count_and_bucket() {
        let mut a = Report {
            records: 1,
            errors: 2,
            ..Report::default()
        };
        a.add_size(10);
        let mut b = a.clone();
        b.add_size(2 << 20);
        a.merge(&b);
        assert_eq!(a.records, 2);
        assert_eq!(a.errors, 4);
        assert_eq!(a.sizes, [2, 0, 0, 0, 0, 0, 1]);
        assert_eq!(a.counts()[0], ("records", 2));
        assert_eq!(a.counts()[11], ("errors", 4));
    }
}
