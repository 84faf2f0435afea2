//! A pre-scan of a pickle's opcodes that bounds what `serde-pickle` would do with it, before
//! it does it. Legacy Beaker files are not authenticated, and cargo-fuzz and review found
//! two ways for a few KB to take a worker down inside `serde-pickle`:
//!
//! * **depth**: it builds, resolves and drops values recursively, so a value nested a few
//!   hundred thousand levels deep overflows the stack and aborts the process;
//! * **size**: it copies values where Python shares them (DUP copies the top of the stack,
//!   memoising a memo reference copies the value, every reference to a memoised value is
//!   expanded into a copy when the result is built), so a short pickle can demand gigabytes.
//!
//! The scan follows the pickle protocols 0–5 opcode by opcode and tracks only shapes: a graph
//! whose nodes are containers and whose edges are "contains" (for the depth: the longest
//! path from the root, or the number of reachable containers if there is a cycle), and the
//! size in units (one per value, one per byte of a string) of every value as `serde-pickle`
//! would hold it, with the copies it would make. Anything deeper than [`MAX_DEPTH`] or
//! bigger than [`budget`] is refused, as is anything the scan does not understand (unknown
//! opcode, truncation, stack underflow), which `serde-pickle` would refuse too. Python's own
//! pickler never emits the copying forms, so real sessions cost about their length.

use std::collections::HashMap;

/// Deepest container nesting accepted. Measured here: serde-pickle needs about 1 KiB of
/// stack per level in a release build and several KiB in a debug build, and the decoder may
/// run on a server's worker thread, whose stack can be far smaller than the main thread's
/// 8 MiB (`legacy` tests decode a file at this limit on a 1 MiB thread, debug build). Real
/// sessions nest a handful of levels; one nested deeper than 100 is refused (read as no
/// session), which costs nothing real and keeps the process alive.
pub const MAX_DEPTH: u32 = 100;

/// Units (values and bytes) `serde-pickle` may build for a pickle of `len` bytes: four times
/// the length plus a million (a value is about 40 bytes, so at most ~40 MB plus 160 bytes
/// per input byte). A pickle written by Python builds about its length.
pub fn budget(len: usize) -> u64 {
    (len as u64).saturating_mul(4).saturating_add(1 << 20)
}

/// Why a pickle was refused by the scan.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Would make `serde-pickle` build more than [`budget`] units.
    TooBig,
    /// Not a pickle this scan understands (unknown opcode, truncated, stack underflow).
    Malformed,
}

/// What the scan found.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Shape {
    /// Nesting depth of the result (0 for a scalar).
    pub depth: u32,
    /// Units `serde-pickle` would build, copies and expanded references included.
    pub units: u64,
}

/// A value on the pickle stack.
#[derive(Clone, Copy)]
struct Item {
    /// Its container node, if it is a container.
    node: Option<usize>,
    /// Units as held on the stack (a memo reference is 1).
    size: u64,
    /// Set if `serde-pickle` holds it as a reference to this memo entry.
    memo: Option<u64>,
}

impl Item {
    fn scalar(len: usize) -> Item {
        Item {
            node: None,
            size: 1 + len as u64,
            memo: None,
        }
    }
}

#[derive(Default)]
struct Node {
    /// The container nodes it contains.
    children: Vec<usize>,
    /// The memo entries it holds references to.
    refs: Vec<u64>,
}

struct Entry {
    node: Option<usize>,
    size: u64,
    /// References pushed (GET): each is expanded into a copy when the result is built.
    gets: u64,
}

struct Scan<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Entry>,
    nodes: Vec<Node>,
    /// Units built so far, copies included.
    built: u64,
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
    fn counted(&mut self, n: usize) -> Result<usize, Refused> {
        let len = usize::try_from(self.uint(n)?).map_err(|_| Refused::Malformed)?;
        self.take(len).map(<[u8]>::len)
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

    fn charge(&mut self, units: u64) {
        self.built = self.built.saturating_add(units);
    }

    fn push_scalar(&mut self, len: usize) {
        let item = Item::scalar(len);
        self.charge(item.size);
        self.stack.push(item);
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

    fn entry(&self, index: u64) -> Result<&Entry, Refused> {
        self.memo.get(&index).ok_or(Refused::Malformed)
    }

    /// The size of `item` once a memo reference is resolved to a copy of its value.
    fn resolved_size(&self, item: Item) -> Result<u64, Refused> {
        match item.memo {
            Some(index) => Ok(self.entry(index)?.size),
            None => Ok(item.size),
        }
    }

    /// A new container holding `items`.
    fn new_node(&mut self, items: &[Item]) -> usize {
        let node = Node {
            children: items.iter().filter_map(|i| i.node).collect(),
            refs: items.iter().filter_map(|i| i.memo).collect(),
        };
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Pushes a new container holding `items` (which move into it).
    fn contain(&mut self, items: &[Item]) {
        let node = self.new_node(items);
        let size = items.iter().fold(1u64, |acc, i| acc.saturating_add(i.size));
        self.charge(1);
        self.stack.push(Item {
            node: Some(node),
            size,
            memo: None,
        });
    }

    /// Pushes a value serde-pickle builds in place of an object (an empty dict); the graph
    /// still records what went into it, so the depth is an upper bound.
    fn stand_in(&mut self, items: &[Item]) {
        let node = self.new_node(items);
        self.charge(1);
        self.stack.push(Item {
            node: Some(node),
            size: 1,
            memo: None,
        });
    }

    /// Adds `items` into the container on top of the stack (APPEND, SETITEM, …); through a
    /// memo reference the memoised value grows.
    fn add_into_top(&mut self, items: &[Item]) -> Result<(), Refused> {
        let top = self.top()?;
        let id = top.node.ok_or(Refused::Malformed)?;
        let added = items.iter().fold(0u64, |acc, i| acc.saturating_add(i.size));
        let node = self.nodes.get_mut(id).ok_or(Refused::Malformed)?;
        node.children.extend(items.iter().filter_map(|i| i.node));
        node.refs.extend(items.iter().filter_map(|i| i.memo));
        match top.memo {
            Some(index) => {
                let entry = self.memo.get_mut(&index).ok_or(Refused::Malformed)?;
                entry.size = entry.size.saturating_add(added);
            }
            None => {
                let last = self.stack.last_mut().ok_or(Refused::Malformed)?;
                last.size = last.size.saturating_add(added);
            }
        }
        Ok(())
    }

    fn memo_put(&mut self, index: u64) -> Result<(), Refused> {
        let top = self.top()?;
        // Memoising a reference copies the referenced value.
        let (node, size) = match top.memo {
            Some(r) => {
                let entry = self.entry(r)?;
                let copied = (entry.node, entry.size);
                self.charge(copied.1);
                copied
            }
            None => (top.node, top.size),
        };
        let entry = self.memo.entry(index).or_insert(Entry {
            node,
            size,
            gets: 0,
        });
        entry.node = node;
        entry.size = size;
        let last = self.stack.last_mut().ok_or(Refused::Malformed)?;
        *last = Item {
            node,
            size: 1,
            memo: Some(index),
        };
        Ok(())
    }

    fn memo_get(&mut self, index: u64) -> Result<(), Refused> {
        let entry = self.memo.get_mut(&index).ok_or(Refused::Malformed)?;
        entry.gets = entry.gets.saturating_add(1);
        let node = entry.node;
        self.charge(1);
        self.stack.push(Item {
            node,
            size: 1,
            memo: Some(index),
        });
        Ok(())
    }

    /// The memo index a PUT/GET-family opcode names: a decimal line (protocol 0), one or
    /// four bytes; MEMOIZE takes the next free index.
    fn memo_index(&mut self, op: u8) -> Result<u64, Refused> {
        match op {
            b'p' | b'g' => {
                let line = self.line()?;
                std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or(Refused::Malformed)
            }
            b'q' | b'h' => self.uint(1),
            b'r' | b'j' => self.uint(4),
            _ => Ok(self.memo.len() as u64),
        }
    }

    /// REDUCE: the callable and the argument tuple are resolved (copied if they are memo
    /// references), and so is the argument serde-pickle builds a set, list or bytes from.
    fn reduce(&mut self) -> Result<(), Refused> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let mut copied = 0u64;
        for item in [args, callable] {
            if item.memo.is_some() {
                copied = copied.saturating_add(self.resolved_size(item)?);
            }
        }
        let inner_refs: Vec<u64> = match args.node {
            Some(id) => self
                .nodes
                .get(id)
                .map(|n| n.refs.clone())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for index in inner_refs {
            copied = copied.saturating_add(self.entry(index)?.size);
        }
        self.charge(copied);
        let node = self.new_node(&[callable, args]);
        let size = copied
            .saturating_add(self.resolved_size(args)?)
            .saturating_add(1);
        self.stack.push(Item {
            node: Some(node),
            size,
            memo: None,
        });
        Ok(())
    }

    /// Runs the opcodes up to STOP; returns the root.
    fn run(&mut self, limit: u64) -> Result<Item, Refused> {
        loop {
            if self.built > limit {
                return Err(Refused::TooBig);
            }
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
                    // DUP copies the top (a memo reference resolved to its value).
                    let top = self.top()?;
                    let size = self.resolved_size(top)?;
                    let node = match top.memo {
                        Some(r) => self.entry(r)?.node,
                        None => top.node,
                    };
                    self.charge(size);
                    self.stack.push(Item {
                        node,
                        size,
                        memo: None,
                    });
                }
                // Scalars with a newline-terminated argument (FLOAT, INT, LONG, STRING,
                // UNICODE, PERSID).
                b'F' | b'I' | b'L' | b'S' | b'V' | b'P' => {
                    let len = self.line()?.len();
                    self.push_scalar(len);
                }
                b'c' => {
                    // GLOBAL module\nname\n
                    self.line()?;
                    self.line()?;
                    self.push_scalar(0);
                }
                b'i' => {
                    // INST module\nname\n, arguments above a MARK
                    self.line()?;
                    self.line()?;
                    let args = self.pop_mark()?;
                    self.stand_in(&args);
                }
                b'J' | 0x84 => {
                    self.take(4)?; // BININT, EXT4
                    self.push_scalar(0);
                }
                b'K' | 0x82 => {
                    self.take(1)?; // BININT1, EXT1
                    self.push_scalar(0);
                }
                b'M' | 0x83 => {
                    self.take(2)?; // BININT2, EXT2
                    self.push_scalar(0);
                }
                b'G' => {
                    self.take(8)?; // BINFLOAT
                    self.push_scalar(0);
                }
                b'N' | 0x88 | 0x89 | 0x97 => self.push_scalar(0), // NONE, TRUE, FALSE, NEXT_BUFFER
                0x98 => {}                                        // READONLY_BUFFER
                // Length-prefixed scalars: SHORT_BINSTRING, SHORT_BINBYTES, LONG1,
                // SHORT_BINUNICODE (1-byte length); BINSTRING, BINUNICODE, BINBYTES, LONG4
                // (4 bytes); BINUNICODE8, BINBYTES8, BYTEARRAY8 (8 bytes).
                b'U' | b'C' | 0x8a | 0x8c => {
                    let len = self.counted(1)?;
                    self.push_scalar(len);
                }
                b'T' | b'X' | b'B' | 0x8b => {
                    let len = self.counted(4)?;
                    self.push_scalar(len);
                }
                0x8d | 0x8e | 0x96 => {
                    let len = self.counted(8)?;
                    self.push_scalar(len);
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
                    self.push_scalar(0);
                }
                0x93 => {
                    // STACK_GLOBAL: module and name are resolved (copied if references).
                    for _ in 0..2 {
                        let item = self.pop()?;
                        if item.memo.is_some() {
                            let size = self.resolved_size(item)?;
                            self.charge(size);
                        }
                    }
                    self.push_scalar(0);
                }
                b']' | b'}' | b')' | 0x8f => self.contain(&[]), // empty list/dict/tuple/set
                b'l' | b'd' | b't' | 0x91 => {
                    // LIST, DICT, TUPLE, FROZENSET: built from the values above a MARK
                    let items = self.pop_mark()?;
                    self.contain(&items);
                }
                b'o' => {
                    // OBJ: class and arguments above a MARK
                    let items = self.pop_mark()?;
                    self.stand_in(&items);
                }
                0x85..=0x87 => {
                    // TUPLE1..TUPLE3
                    let mut items = Vec::with_capacity(3);
                    for _ in 0..(op - 0x84) {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.contain(&items);
                }
                b'a' => {
                    // APPEND
                    let value = self.pop()?;
                    self.add_into_top(&[value])?;
                }
                b's' => {
                    // SETITEM
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.add_into_top(&[key, value])?;
                }
                b'e' | b'u' | 0x90 => {
                    // APPENDS, SETITEMS, ADDITEMS
                    let items = self.pop_mark()?;
                    self.add_into_top(&items)?;
                }
                b'b' => {
                    // BUILD: serde-pickle replaces the object by its state; the graph keeps
                    // the state under the object (an upper bound on the depth).
                    let state = self.pop()?;
                    self.add_into_top(&[state])?;
                    let last = self.stack.last_mut().ok_or(Refused::Malformed)?;
                    last.size = state.size;
                    last.memo = state.memo;
                }
                b'R' => self.reduce()?,
                0x81 => {
                    // NEWOBJ (class, args)
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.stand_in(&[class, args]);
                }
                0x92 => {
                    // NEWOBJ_EX (class, args, kwargs)
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.stand_in(&[class, args, kwargs]);
                }
                // PUT, BINPUT, LONG_BINPUT, MEMOIZE
                b'p' | b'q' | b'r' | 0x94 => {
                    let index = self.memo_index(op)?;
                    self.memo_put(index)?;
                }
                // GET, BINGET, LONG_BINGET
                b'g' | b'h' | b'j' => {
                    let index = self.memo_index(op)?;
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
        let mut colour = vec![WHITE; self.nodes.len()];
        let mut depth = vec![0u32; self.nodes.len()];
        let mut reached = 1u32;
        let mut cyclic = false;
        // (node, index of the next child to visit)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        colour[root] = GREY;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let kids = &self.nodes[node].children;
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

/// Scans a pickle up to its first STOP opcode (what follows is ignored, as by `pickle`):
/// its depth and the units `serde-pickle` would build, or why it must not be decoded.
pub fn scan(bytes: &[u8]) -> Result<Shape, Refused> {
    let limit = budget(bytes.len());
    let mut scan = Scan {
        bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        nodes: Vec::new(),
        built: 0,
    };
    let root = scan.run(limit)?;
    // Building the result expands every reference to a memoised value into a copy of it.
    let expanded = scan.memo.values().fold(0u64, |acc, e| {
        acc.saturating_add(e.gets.saturating_mul(e.size))
    });
    let units = scan.built.saturating_add(expanded);
    if units > limit {
        return Err(Refused::TooBig);
    }
    let node = match root.memo {
        Some(index) => scan.entry(index)?.node,
        None => root.node,
    };
    let depth = node.map_or(0, |root| scan.depth_from(root));
    if depth > MAX_DEPTH {
        return Err(Refused::TooDeep);
    }
    Ok(Shape { depth, units })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(bytes: &[u8]) -> Result<u32, Refused> {
        scan(bytes).map(|shape| shape.depth)
    }

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
        assert_eq!(depth(b"K\x05."), Ok(0));
        assert_eq!(depth(b"\x80\x02]q\x00(K\x01K\x02e."), Ok(1));
        assert_eq!(depth(b"(K\x01K\x02l."), Ok(1));
        assert_eq!(depth(b"\x80\x02K\x01K\x02\x86q\x00."), Ok(1));
    }

    #[test]
    fn nesting_is_counted_through_every_container_kind() {
        // {'session': {'x': [ ...levels lists... ]}}: outer dict + session dict + lists
        assert_eq!(depth(&nested_lists(10)), Ok(12));
        // a list that contains itself: every reachable container counts
        assert_eq!(depth(b"]q\x00]q\x01h\x00ah\x01a."), Ok(2));
        // tuples from a MARK nest too
        assert_eq!(depth(b"((K\x01tt."), Ok(2));
    }

    #[test]
    fn too_deep_is_refused_before_building_anything() {
        assert_eq!(depth(&nested_lists(200_000)), Err(Refused::TooDeep));
        let tuples: Vec<u8> = std::iter::repeat_n(b'(', 300_000)
            .chain(std::iter::repeat_n(b't', 300_000))
            .chain([b'.'])
            .collect();
        assert_eq!(depth(&tuples), Err(Refused::TooDeep));
        let tuple1: Vec<u8> = [b'N']
            .into_iter()
            .chain(std::iter::repeat_n(0x85u8, 100_000))
            .chain([b'.'])
            .collect();
        assert_eq!(depth(&tuple1), Err(Refused::TooDeep));
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
        assert_eq!(depth(&chain(50)), Ok(50));
        assert_eq!(depth(&chain(200_000)), Err(Refused::TooDeep));
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
        assert_eq!(depth(&out), Ok(61));
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
            assert_eq!(depth(bad), Err(Refused::Malformed), "{bad:?}");
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
            assert_eq!(depth(bytes), Ok(want), "{bytes:?}");
        }
    }

    #[test]
    fn python_pickles_cost_about_their_length() {
        // A session of 3,000 small dicts, as Python writes it (protocol 2): no copies.
        let one = b"}q\x01(X\x01\x00\x00\x00iK\x05X\x01\x00\x00\x00l]K\x07au";
        let p = [&b"\x80\x02]q\x00("[..], &one.repeat(3000), b"e."].concat();
        let shape = scan(&p).unwrap();
        assert_eq!(shape.depth, 3);
        assert!(
            shape.units <= 2 * p.len() as u64,
            "{shape:?} for {} bytes",
            p.len()
        );
    }

    #[test]
    fn dup_copies_are_counted() {
        // x = []; then 40 times: DUP (a copy of x), APPEND it into x. serde-pickle doubles x
        // each time (2^40 values from 82 bytes); Python shares, so it never wrote this.
        let p = [&b"]"[..], &b"2a".repeat(40), b"."].concat();
        let started = std::time::Instant::now();
        assert_eq!(scan(&p), Err(Refused::TooBig));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn references_to_a_big_memoised_value_are_counted() {
        // A list of 50,000 ints in the memo, then a list of 100,000 references to it:
        // serde-pickle builds every reference as a copy (5 billion values from ~500 KB).
        let p = [
            &b"\x80\x02]("[..],
            &b"K\x01".repeat(50_000),
            b"eq\x00](",
            &b"h\x00".repeat(100_000),
            b"e.",
        ]
        .concat();
        assert_eq!(scan(&p), Err(Refused::TooBig));
        // A few references to it are fine (Python writes those for shared objects).
        let few = [&p[..p.len() - 200_000 - 2], b"h\x00h\x00h\x00e."].concat();
        assert_eq!(scan(&few).map(|s| s.depth), Ok(2));
    }

    #[test]
    fn memoising_a_reference_copies_it() {
        // A 100 KB string in the memo, then 20,000 times: GET it, PUT it under a new index.
        let mut p = b"\x80\x02X".to_vec();
        p.extend(100_000u32.to_le_bytes());
        p.extend(std::iter::repeat_n(b'x', 100_000));
        p.extend_from_slice(b"q\x00");
        for i in 1..=20_000u32 {
            p.extend_from_slice(b"h\x00r");
            p.extend(i.to_le_bytes());
            p.push(b'0');
        }
        p.push(b'.');
        assert_eq!(scan(&p), Err(Refused::TooBig));
    }

    #[test]
    fn the_fuzzers_copy_bomb_is_refused() {
        // Found by cargo-fuzz: 3.8 KB that made serde-pickle allocate past 2 GB.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
        let bomb = std::fs::read(root.join("legacy-copy-bomb.pickle")).unwrap();
        assert!(matches!(
            scan(&bomb),
            Err(Refused::TooBig | Refused::Malformed)
        ));
    }
}
