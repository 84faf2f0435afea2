//! A pre-scan of a pickle's opcodes that measures how deeply its containers nest, without
//! decoding any value. `serde-pickle` builds, resolves and drops its values recursively, so
//! a legacy file nested a few hundred thousand levels deep (a few hundred KB of `]…a…`)
//! would overflow the stack and abort the worker. Legacy Beaker files are not authenticated,
//! so the legacy decoder runs this scan first and refuses anything deeper than
//! [`MAX_DEPTH`].
//!
//! The scan follows the pickle protocols 0–5 opcode by opcode and builds only the shape of
//! the result: a graph whose nodes are containers and whose edges are "contains". Memo
//! entries are references to nodes, as in `serde-pickle`, which resolves them when it walks
//! the finished value (a container filled after it was memoised and then nested elsewhere
//! still counts at its final depth). The depth is the longest path from the root; if the
//! graph has a cycle (a container that contains itself), every node reachable from the root
//! counts, an upper bound on any path `serde-pickle` can walk without revisiting an entry.
//! Anything the scan does not understand (unknown opcode, truncation, stack underflow) is
//! refused, as `serde-pickle` would refuse it too.

use std::collections::HashMap;

/// Deepest container nesting accepted. Measured here: serde-pickle needs about 1 KiB of
/// stack per level in a release build and several KiB in a debug build, and the decoder may
/// run on a server's worker thread, whose stack can be far smaller than the main thread's
/// 8 MiB (`legacy` tests decode a file at this limit on a 1 MiB thread, debug build). Real
/// sessions nest a handful of levels; one nested deeper than 100 is refused (read as no
/// session), which costs nothing real and keeps the process alive.
pub const MAX_DEPTH: u32 = 100;

/// Why a pickle was refused by the scan.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Nested deeper than the limit.
    TooDeep,
    /// Not a pickle this scan understands (unknown opcode, truncated, stack underflow).
    Malformed,
}

/// A value on the pickle stack: a scalar (`None`) or a container node.
type Item = Option<usize>;

struct Scan<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Item>,
    /// For each container node, the nodes it contains.
    children: Vec<Vec<usize>>,
}

impl<'a> Scan<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refused> {
        let end = self.pos.checked_add(n).ok_or(Refused::Malformed)?;
        let out = self.bytes.get(self.pos..end).ok_or(Refused::Malformed)?;
        self.pos = end;
        Ok(out)
    }

    fn uint(&mut self, n: usize) -> Result<u64, Refused> {
        let raw = self.take(n)?;
        Ok(raw
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// Skips a length-prefixed argument whose length takes `n` bytes (little endian).
    fn skip_counted(&mut self, n: usize) -> Result<(), Refused> {
        let len = usize::try_from(self.uint(n)?).map_err(|_| Refused::Malformed)?;
        self.take(len).map(|_| ())
    }

    /// Reads a newline-terminated argument (protocol 0 opcodes).
    fn line(&mut self) -> Result<&'a [u8], Refused> {
        let rest = self.bytes.get(self.pos..).ok_or(Refused::Malformed)?;
        let len = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(Refused::Malformed)?;
        self.pos += len + 1;
        Ok(&rest[..len])
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Item, Refused> {
        if self.stack.len() <= self.floor() {
            return Err(Refused::Malformed);
        }
        self.stack.pop().ok_or(Refused::Malformed)
    }

    /// Pops everything above the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Item>, Refused> {
        let at = self.marks.pop().ok_or(Refused::Malformed)?;
        Ok(self.stack.split_off(at.min(self.stack.len())))
    }

    fn top(&self) -> Result<Item, Refused> {
        if self.stack.len() <= self.floor() {
            return Err(Refused::Malformed);
        }
        self.stack.last().copied().ok_or(Refused::Malformed)
    }

    /// Pushes a new container holding `items`.
    fn contain(&mut self, items: impl IntoIterator<Item = Item>) {
        let id = self.children.len();
        self.children.push(items.into_iter().flatten().collect());
        self.stack.push(Some(id));
    }

    /// Adds `items` into the container on top of the stack (APPEND, SETITEM, BUILD, …).
    fn add_into_top(&mut self, items: impl IntoIterator<Item = Item>) -> Result<(), Refused> {
        let id = self.top()?.ok_or(Refused::Malformed)?;
        let children = self.children.get_mut(id).ok_or(Refused::Malformed)?;
        children.extend(items.into_iter().flatten());
        Ok(())
    }

    fn memo_put(&mut self, index: u64) -> Result<(), Refused> {
        let item = self.top()?;
        self.memo.insert(index, item);
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Result<(), Refused> {
        let item = *self.memo.get(&index).ok_or(Refused::Malformed)?;
        self.stack.push(item);
        Ok(())
    }

    fn line_index(&mut self) -> Result<u64, Refused> {
        let line = self.line()?;
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(Refused::Malformed)
    }

    /// Runs the opcodes up to STOP; returns the root.
    fn run(&mut self) -> Result<Item, Refused> {
        loop {
            let op = *self.take(1)?.first().ok_or(Refused::Malformed)?;
            match op {
                b'.' => return self.top(), // STOP
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    // POP: CPython pops a MARK when the stack is empty above it.
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(top);
                }
                // Scalars with a newline-terminated argument (FLOAT, INT, LONG, STRING,
                // UNICODE, PERSID).
                b'F' | b'I' | b'L' | b'S' | b'V' | b'P' => {
                    self.line()?;
                    self.stack.push(None);
                }
                b'c' => {
                    // GLOBAL module\nname\n
                    self.line()?;
                    self.line()?;
                    self.stack.push(None);
                }
                b'i' => {
                    // INST module\nname\n, arguments above a MARK
                    self.line()?;
                    self.line()?;
                    let args = self.pop_mark()?;
                    self.contain(args);
                }
                b'J' | 0x84 => {
                    self.take(4)?; // BININT, EXT4
                    self.stack.push(None);
                }
                b'K' | 0x82 => {
                    self.take(1)?; // BININT1, EXT1
                    self.stack.push(None);
                }
                b'M' | 0x83 => {
                    self.take(2)?; // BININT2, EXT2
                    self.stack.push(None);
                }
                b'G' => {
                    self.take(8)?; // BINFLOAT
                    self.stack.push(None);
                }
                b'N' | 0x88 | 0x89 | 0x97 => self.stack.push(None), // NONE, TRUE, FALSE, NEXT_BUFFER
                0x98 => {}                                          // READONLY_BUFFER
                // Length-prefixed scalars: SHORT_BINSTRING, SHORT_BINBYTES, LONG1,
                // SHORT_BINUNICODE (1-byte length); BINSTRING, BINUNICODE, BINBYTES, LONG4
                // (4 bytes); BINUNICODE8, BINBYTES8, BYTEARRAY8 (8 bytes).
                b'U' | b'C' | 0x8a | 0x8c => {
                    self.skip_counted(1)?;
                    self.stack.push(None);
                }
                b'T' | b'X' | b'B' | 0x8b => {
                    self.skip_counted(4)?;
                    self.stack.push(None);
                }
                0x8d | 0x8e | 0x96 => {
                    self.skip_counted(8)?;
                    self.stack.push(None);
                }
                0x80 => {
                    self.take(1)?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'Q' => {
                    // BINPERSID
                    self.pop()?;
                    self.stack.push(None);
                }
                0x93 => {
                    // STACK_GLOBAL
                    self.pop()?;
                    self.pop()?;
                    self.stack.push(None);
                }
                b']' | b'}' | b')' | 0x8f => self.contain([]), // empty list/dict/tuple/set
                b'l' | b'd' | b't' | 0x91 => {
                    // LIST, DICT, TUPLE, FROZENSET: built from the values above a MARK
                    let items = self.pop_mark()?;
                    self.contain(items);
                }
                b'o' => {
                    // OBJ: class and arguments above a MARK
                    let items = self.pop_mark()?;
                    self.contain(items);
                }
                0x85..=0x87 => {
                    // TUPLE1..TUPLE3
                    let mut items = Vec::with_capacity(3);
                    for _ in 0..(op - 0x84) {
                        items.push(self.pop()?);
                    }
                    self.contain(items);
                }
                b'a' => {
                    // APPEND
                    let value = self.pop()?;
                    self.add_into_top([value])?;
                }
                b's' => {
                    // SETITEM
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.add_into_top([key, value])?;
                }
                b'e' | b'u' | 0x90 => {
                    // APPENDS, SETITEMS, ADDITEMS
                    let items = self.pop_mark()?;
                    self.add_into_top(items)?;
                }
                b'b' => {
                    // BUILD: the state goes into the object below it
                    let state = self.pop()?;
                    self.add_into_top([state])?;
                }
                b'R' | 0x81 => {
                    // REDUCE (callable, args) and NEWOBJ (class, args)
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.contain([callable, args]);
                }
                0x92 => {
                    // NEWOBJ_EX (class, args, kwargs)
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.contain([class, args, kwargs]);
                }
                b'p' => {
                    let index = self.line_index()?;
                    self.memo_put(index)?;
                }
                b'q' => {
                    let index = self.uint(1)?;
                    self.memo_put(index)?;
                }
                b'r' => {
                    let index = self.uint(4)?;
                    self.memo_put(index)?;
                }
                0x94 => {
                    // MEMOIZE: the next free memo index
                    let index = self.memo.len() as u64;
                    self.memo_put(index)?;
                }
                b'g' => {
                    let index = self.line_index()?;
                    self.memo_get(index)?;
                }
                b'h' => {
                    let index = self.uint(1)?;
                    self.memo_get(index)?;
                }
                b'j' => {
                    let index = self.uint(4)?;
                    self.memo_get(index)?;
                }
                _ => return Err(Refused::Malformed),
            }
        }
    }

    /// The longest path of containers from `root`, or, if a cycle is reachable, the number
    /// of containers reachable (iterative: the graph itself may be deep).
    fn depth_from(&self, root: usize) -> u32 {
        const WHITE: u8 = 0;
        const GREY: u8 = 1;
        const BLACK: u8 = 2;
        let mut colour = vec![WHITE; self.children.len()];
        let mut depth = vec![0u32; self.children.len()];
        let mut reached = 0u32;
        let mut cyclic = false;
        // (node, index of the next child to visit)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        colour[root] = GREY;
        reached += 1;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let kids = &self.children[node];
            if let Some(&child) = kids.get(*next) {
                *next += 1;
                match colour[child] {
                    WHITE => {
                        colour[child] = GREY;
                        reached = reached.saturating_add(1);
                        path.push((child, 0));
                    }
                    GREY => cyclic = true,
                    _ => {}
                }
            } else {
                let deepest = kids.iter().map(|&k| depth[k]).max().unwrap_or(0);
                depth[node] = deepest.saturating_add(1);
                colour[node] = BLACK;
                path.pop();
            }
        }
        if cyclic {
            reached
        } else {
            depth[root]
        }
    }
}

/// The nesting depth of the value `bytes` unpickles to (0 for a scalar), or why it was
/// refused. Reads up to the first STOP opcode; what follows it is ignored, as by `pickle`.
pub fn depth(bytes: &[u8], limit: u32) -> Result<u32, Refused> {
    let mut scan = Scan {
        bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        children: Vec::new(),
    };
    let depth = match scan.run()? {
        None => 0,
        Some(root) => scan.depth_from(root),
    };
    if depth > limit {
        Err(Refused::TooDeep)
    } else {
        Ok(depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{'session': {'x': [[…]]}}` with `levels` nested lists, as protocol-2 opcodes.
    pub(crate) fn nested_lists(levels: usize) -> Vec<u8> {
        let mut out =
            b"\x80\x02}q\x00X\x07\x00\x00\x00sessionq\x01}q\x02X\x01\x00\x00\x00x".to_vec();
        out.extend(std::iter::repeat_n(b']', levels));
        out.extend(std::iter::repeat_n(b'a', levels.saturating_sub(1)));
        out.extend_from_slice(b"ss.");
        out
    }

    #[test]
    fn scalars_and_flat_containers() {
        assert_eq!(depth(b"K\x05.", MAX_DEPTH), Ok(0));
        assert_eq!(depth(b"\x80\x02]q\x00(K\x01K\x02e.", MAX_DEPTH), Ok(1));
        assert_eq!(depth(b"(K\x01K\x02l.", MAX_DEPTH), Ok(1));
        assert_eq!(depth(b"\x80\x02K\x01K\x02\x86q\x00.", MAX_DEPTH), Ok(1));
    }

    #[test]
    fn nesting_is_counted_through_every_container_kind() {
        // {'session': {'x': [ ...levels lists... ]}}: outer dict + session dict + lists
        assert_eq!(depth(&nested_lists(10), MAX_DEPTH), Ok(12));
        // a list that contains itself: every reachable container counts
        assert_eq!(depth(b"]q\x00]q\x01h\x00ah\x01a.", MAX_DEPTH), Ok(2));
        // tuples from a MARK nest too
        assert_eq!(depth(b"((K\x01tt.", MAX_DEPTH), Ok(2));
    }

    #[test]
    fn too_deep_is_refused_before_building_anything() {
        assert_eq!(
            depth(&nested_lists(200_000), MAX_DEPTH),
            Err(Refused::TooDeep)
        );
        let tuples: Vec<u8> = std::iter::repeat_n(b'(', 300_000)
            .chain(std::iter::repeat_n(b't', 300_000))
            .chain([b'.'])
            .collect();
        assert_eq!(depth(&tuples, MAX_DEPTH), Err(Refused::TooDeep));
        let tuple1: Vec<u8> = [b'N']
            .into_iter()
            .chain(std::iter::repeat_n(0x85u8, 100_000))
            .chain([b'.'])
            .collect();
        assert_eq!(depth(&tuple1, MAX_DEPTH), Err(Refused::TooDeep));
    }

    #[test]
    fn containers_filled_after_being_memoised_count_at_their_final_depth() {
        // n empty lists put in the memo, then chained through memo references
        // (list i gets list i+1 appended after both were memoised): n levels.
        fn chain(n: u32) -> Vec<u8> {
            let mut out = b"\x80\x02".to_vec();
            for i in 0..n {
                out.push(b']');
                out.push(b'r');
                out.extend(i.to_le_bytes());
                out.push(b'0');
            }
            for i in 0..n - 1 {
                for index in [i, i + 1] {
                    out.push(b'j');
                    out.extend(index.to_le_bytes());
                }
                out.extend_from_slice(b"a0");
            }
            out.push(b'j');
            out.extend(0u32.to_le_bytes());
            out.push(b'.');
            out
        }
        assert_eq!(depth(&chain(50), MAX_DEPTH), Ok(50));
        assert_eq!(depth(&chain(200_000), MAX_DEPTH), Err(Refused::TooDeep));
    }

    #[test]
    fn a_memo_bomb_is_scanned_in_linear_time() {
        // Each list holds the previous one twice: 2^60 leaves when expanded, 61 levels.
        let mut out = b"\x80\x02]q\x00".to_vec();
        for i in 1u8..=60 {
            // ] ( h[i-1] h[i-1] e q[i]: a new list extended with the previous one twice
            out.extend_from_slice(&[b']', b'(', b'h', i - 1, b'h', i - 1, b'e', b'q', i]);
        }
        out.push(b'.');
        assert_eq!(depth(&out, MAX_DEPTH), Ok(61));
    }

    #[test]
    fn malformed_input_is_refused() {
        for bad in [
            &b""[..],
            b"a.",
            b"K",
            b"X\xff\xff\xff\xff",
            b"h\x00.",
            b"\xff.",
            b"1.",
        ] {
            assert_eq!(depth(bad, MAX_DEPTH), Err(Refused::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn python_pickles_of_every_protocol_scan() {
        // pickle.dumps({'a': [1, (2.5, 'x'), {'b': b'y', 's': {1, 2}, 'f': frozenset([3])}],
        //               'c': None, 'd': [[[]]]}, protocol=p) for p = 0, 2, 5; REDUCE counts as a
        // container (protocols 0 and 2 spell bytes and sets as calls), so those read deeper.
        let cases: [(&[u8], u32); 3] = [
            (&b"(dp0\nVa\np1\n(lp2\nI1\na(F2.5\nVx\np3\ntp4\na(dp5\nVb\np6\nc_codecs\nencode\np7\n(Vy\np8\nVlatin1\np9\ntp10\nRp11\nsVs\np12\nc__builtin__\nset\np13\n((lp14\nI1\naI2\natp15\nRp16\nsVf\np17\nc__builtin__\nfrozenset\np18\n((lp19\nI3\natp20\nRp21\nsasVc\np22\nNsVd\np23\n(lp24\n(lp25\n(lp26\naas."[..], 6),
            (&b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x03\x86q\x04}q\x05(X\x01\x00\x00\x00bq\x06c_codecs\nencode\nq\x07X\x01\x00\x00\x00yq\x08X\x06\x00\x00\x00latin1q\x09\x86q\nRq\x0bX\x01\x00\x00\x00sq\x0cc__builtin__\nset\nq\x0d]q\x0e(K\x01K\x02e\x85q\x0fRq\x10X\x01\x00\x00\x00fq\x11c__builtin__\nfrozenset\nq\x12]q\x13K\x03a\x85q\x14Rq\x15ueX\x01\x00\x00\x00cq\x16NX\x01\x00\x00\x00dq\x17]q\x18]q\x19]q\x1aaau."[..], 6),
            (&b"\x80\x05\x95P\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00\x8c\x01x\x94\x86\x94}\x94(\x8c\x01b\x94C\x01y\x94\x8c\x01s\x94\x8f\x94(K\x01K\x02\x90\x8c\x01f\x94(K\x03\x91\x94ue\x8c\x01c\x94N\x8c\x01d\x94]\x94]\x94]\x94aau."[..], 4),
        ];
        for (bytes, want) in cases {
            assert_eq!(depth(bytes, MAX_DEPTH), Ok(want), "{bytes:?}");
        }
    }
}
