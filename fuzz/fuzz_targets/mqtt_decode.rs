//! Feeds arbitrary bytes to every MQTT decoder and to the Framer, whole and
//! in splits derived from the data. Any panic is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_wire::mqtt::{
    ConnAck, Connect, Disconnect, Framer, ProtocolVersion, parse_fixed_header,
};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

fuzz_target!(|data: &[u8]| {
    let _ = parse_fixed_header(data);
    let _ = Connect::decode(data);
    for version in VERSIONS {
        let _ = ConnAck::decode(data, version);
        let _ = Disconnect::decode(data, version);
    }

    // The first byte seeds the chunk sizes; the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Framer::new();
    let whole_result = whole.advance(stream);

    let mut split = Framer::new();
    let mut split_result = Ok(0);
    let mut to_boundary = Framer::new();
    let mut rest = stream;
    let mut state = u32::from(seed) | 1;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state as usize % 64 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        match (split.advance(chunk), &mut split_result) {
            (Ok(k), Ok(total)) => *total += k,
            (Err(e), r @ Ok(_)) => *r = Err(e),
            (_, Err(_)) => {}
        }
        let mut piece = chunk;
        while let Ok(used) = to_boundary.advance_to_boundary(piece) {
            assert!(used <= piece.len());
            piece = &piece[used..];
            if piece.is_empty() {
                break;
            }
            assert!(to_boundary.at_boundary());
        }
    }
    assert_eq!(whole_result, split_result);
    assert_eq!(whole.at_boundary(), split.at_boundary());
    assert_eq!(whole.at_boundary(), to_boundary.at_boundary());
});
