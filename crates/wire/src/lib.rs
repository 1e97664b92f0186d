//! Sans-IO protocol framing for sluice.
//!
//! A proxy that evicts connections gracefully, and a load generator that plays
//! thousands of clients, both need to understand just enough of the protocols
//! they carry: where one packet ends and the next begins, what a client asked
//! for in its CONNECT, how to say "please go elsewhere" in a DISCONNECT. This
//! crate provides that and nothing else: no sockets, no async runtime, only
//! functions over byte slices.
//!
//! Decoding never panics, whatever the input (it is property-tested and fuzzed);
//! every encoder round-trips through its decoder.

pub mod codec;
pub mod h2;
pub mod http;
pub mod http1;
pub mod mqtt;
pub mod ws;
