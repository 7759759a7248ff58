//! DNS wire format, sans-I/O: [`parse`] reads a query in place, [`respond`] writes the
//! answer from a [`crate::tables::Snapshot`]. No sockets, no allocation, no locks: the
//! backends in `shard` and the micro-benchmark call the same two functions.

mod chase;
pub mod cookie;
mod lookup;
pub mod parse;
pub mod respond;

pub use parse::Query;
pub use respond::{respond, Outcome, Transport};
