//! The knock-sequence state machine.
//!
//! TODO(knock helper): bounded, O(1)-per-packet tracking of (source, door) progress.
