//! Unit tests of the file store (see store.rs).
use super::*;
