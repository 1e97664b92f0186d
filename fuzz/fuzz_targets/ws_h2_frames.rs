//! Feeds arbitrary bytes to the WebSocket frame tracker and the HTTP/2 frame
//! splicer, whole and in splits derived from the data. Any panic is a bug; a
//! split stream must reach the same state as the whole one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_wire::h2::{Splicer, Step};
use sluice_wire::ws::Frames;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Frames::new();
    let whole_ok = whole.advance(stream, false).is_ok();
    let mut split = Frames::new();
    let mut split_ok = true;
    for piece in stream.chunks(usize::from(seed % 32) + 1) {
        let mut p = piece;
        while !p.is_empty() {
            match split.advance(p, seed & 1 == 1) {
                Ok(n) => p = &p[n..],
                Err(_) => {
                    split_ok = false;
                    break;
                }
            }
        }
        if !split_ok {
            break;
        }
    }
    assert_eq!(whole_ok, split_ok);
    if whole_ok {
        assert_eq!(whole.at_message_boundary(), split.at_message_boundary());
        assert_eq!(whole.closes(), split.closes());
    }

    let mut h2 = if seed & 2 == 0 {
        Splicer::client()
    } else {
        Splicer::server()
    };
    h2.swallow_ping_ack(*b"sluice\0\x01");
    let mut pos = 0;
    while let Ok(step) = h2.step(&stream[pos..]) {
        match step {
            Step::Forward(n, _) | Step::Drop(n) => {
                assert!(n > 0 && pos + n <= stream.len());
                pos += n;
            }
            Step::NeedMore => break,
        }
    }
});
