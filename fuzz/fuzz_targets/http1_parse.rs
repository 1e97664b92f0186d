//! Feeds arbitrary bytes to the HTTP/1.x head parsers, the `Connection: close`
//! edit and the body framer (whole and in splits derived from the data). Any
//! panic is a bug, and a split body must end where the whole one does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_wire::http1::{
    Body, Framing, Method, looks_like_request, parse_request_head, parse_response_head,
    with_connection_close,
};

fuzz_target!(|data: &[u8]| {
    let _ = looks_like_request(data);
    let _ = parse_request_head(data);
    for method in [Method::Head, Method::Connect, Method::Other] {
        if let Ok(Some(head)) = parse_response_head(data, method) {
            let edited = with_connection_close(&data[..head.len]);
            let again = parse_response_head(&edited, method);
            assert!(matches!(again, Ok(Some(h)) if h.close && h.len == edited.len()));
        }
    }

    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    for framing in [Framing::Chunked, Framing::Length(u64::from(seed) * 3)] {
        let mut whole = Body::new(framing);
        let whole_result = whole.advance(stream);
        let mut split = Body::new(framing);
        let mut split_result = Ok(0);
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
                (Ok(k), Ok(total)) => {
                    *total += k;
                    if k < chunk.len() {
                        break;
                    }
                }
                (Err(e), r @ Ok(_)) => *r = Err(e),
                (_, Err(_)) => break,
            }
        }
        if let (Ok(a), Ok(b)) = (&whole_result, &split_result) {
            assert_eq!(a, b);
            assert_eq!(whole.done(), split.done());
        }
    }
});
