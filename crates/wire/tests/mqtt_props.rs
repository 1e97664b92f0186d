//! Property tests for the MQTT codec: decoders never panic, encoders round
//! trip, and the Framer finds exactly the packet boundaries.

use proptest::prelude::*;
use sluice_wire::codec::put_var_int_prefixed;
use sluice_wire::mqtt::{
    ConnAck, Connect, Disconnect, Framer, ProtocolVersion, encode_pingreq, encode_pingresp,
    encode_publish_qos0, encode_subscribe, parse_fixed_header,
};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop::sample::select(&VERSIONS[..])
}

fn connect() -> impl Strategy<Value = Connect> {
    (
        version(),
        any::<bool>(),
        any::<u16>(),
        any::<Option<u32>>(),
        ".{0,24}",
        proptest::option::of(".{0,24}"),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)),
    )
        .prop_map(
            |(version, clean_start, keep_alive, sei, client_id, username, password)| Connect {
                version,
                clean_start,
                keep_alive,
                session_expiry_interval: sei.filter(|_| version == ProtocolVersion::V5),
                client_id,
                username,
                password,
            },
        )
}

fn disconnect() -> impl Strategy<Value = Disconnect> {
    (
        any::<u8>(),
        proptest::option::of(".{0,40}"),
        proptest::option::of(".{0,40}"),
    )
        .prop_map(
            |(reason_code, server_reference, reason_string)| Disconnect {
                reason_code,
                server_reference,
                reason_string,
            },
        )
}

/// A packet with a valid header: type 1..=15, any flags, a body of a length
/// that exercises 1, 2 and 3 byte remaining lengths.
fn raw_packet() -> impl Strategy<Value = Vec<u8>> {
    let body_len = prop_oneof![8 => 0usize..200, 1 => 16_370usize..16_400];
    (1u8..=15, 0u8..16, body_len, any::<u8>()).prop_map(|(ty, flags, len, fill)| {
        let mut out = vec![ty << 4 | flags];
        put_var_int_prefixed(&mut out, |o| o.resize(o.len() + len, fill));
        out
    })
}

/// Any packet sluice encodes, or a raw one.
fn packet() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        connect().prop_map(|c| encoded(|o| c.encode(o))),
        (any::<bool>(), any::<u8>(), version()).prop_map(|(s, r, v)| encoded(|o| {
            ConnAck {
                session_present: s,
                reason_code: r,
            }
            .encode(v, o)
        })),
        disconnect().prop_map(|d| encoded(|o| d.encode_v5(o))),
        (any::<u16>(), ".{0,20}", 0u8..3, version())
            .prop_map(|(id, t, q, v)| encoded(|o| encode_subscribe(id, &t, q, v, o))),
        (
            ".{0,20}",
            proptest::collection::vec(any::<u8>(), 0..300),
            version()
        )
            .prop_map(|(t, p, v)| encoded(|o| encode_publish_qos0(&t, &p, v, o))),
        Just(encoded(encode_pingreq)),
        Just(encoded(encode_pingresp)),
        raw_packet(),
    ]
}

/// Valid packets with a few bytes overwritten, inserted or removed, so
/// decoders get past their first checks.
fn mutated_packet() -> impl Strategy<Value = Vec<u8>> {
    (
        packet(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    )
        .prop_map(|(mut p, edits)| {
            for (at, byte, kind) in edits {
                let at = at % (p.len() + 1);
                match kind {
                    0 if at < p.len() => p[at] = byte,
                    1 => p.insert(at, byte),
                    _ if at < p.len() => {
                        p.remove(at);
                    }
                    _ => {}
                }
            }
            p
        })
}

fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut out);
    out
}

/// Splits `buf` at the given points (taken modulo its length).
fn split<'a>(buf: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p % (buf.len() + 1)).collect();
    cuts.push(0);
    cuts.push(buf.len());
    cuts.sort_unstable();
    cuts.windows(2).map(|w| &buf[w[0]..w[1]]).collect()
}

fn decode_everything(data: &[u8]) {
    let _ = parse_fixed_header(data);
    let _ = Connect::decode(data);
    for v in VERSIONS {
        let _ = ConnAck::decode(data, v);
        let _ = Disconnect::decode(data, v);
    }
}

proptest! {
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&data);
        let mut framer = Framer::new();
        let _ = framer.advance(&data);
        let _ = framer.advance(&data);
    }

    #[test]
    fn decoders_never_panic_on_mutated_packets(data in mutated_packet()) {
        decode_everything(&data);
    }

    #[test]
    fn framer_result_does_not_depend_on_splits(
        data in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            proptest::collection::vec(mutated_packet(), 0..6).prop_map(|v| v.concat()),
        ],
        points in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut whole = Framer::new();
        let whole_result = whole.advance(&data);
        let mut pieces = Framer::new();
        let mut pieces_result = Ok(0);
        for chunk in split(&data, &points) {
            match (pieces.advance(chunk), &mut pieces_result) {
                (Ok(n), Ok(total)) => *total += n,
                (Err(e), r @ Ok(_)) => *r = Err(e),
                (_, Err(_)) => {}
            }
        }
        prop_assert_eq!(&whole_result, &pieces_result);
        prop_assert_eq!(whole.at_boundary(), pieces.at_boundary());
        prop_assert_eq!(whole.current_packet_type(), pieces.current_packet_type());
    }

    #[test]
    fn connect_round_trips(c in connect()) {
        let out = encoded(|o| c.encode(o));
        prop_assert_eq!(parse_fixed_header(&out).unwrap().unwrap().packet_len(), out.len());
        prop_assert_eq!(Connect::decode(&out), Ok(c));
    }

    #[test]
    fn connack_round_trips(session_present: bool, reason_code: u8, v in version()) {
        let ack = ConnAck { session_present, reason_code };
        let out = encoded(|o| ack.encode(v, o));
        prop_assert_eq!(ConnAck::decode(&out, v), Ok(ack));
    }

    #[test]
    fn disconnect_v5_round_trips(d in disconnect()) {
        let out = encoded(|o| d.encode_v5(o));
        prop_assert_eq!(Disconnect::decode(&out, ProtocolVersion::V5), Ok(d));
    }

    #[test]
    fn framer_finds_exactly_the_packet_ends(
        packets in proptest::collection::vec(packet(), 0..12),
        points in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let stream = packets.concat();
        let ends: Vec<usize> = packets
            .iter()
            .scan(0, |offset, p| {
                *offset += p.len();
                Some(*offset)
            })
            .collect();
        let chunks = split(&stream, &points);

        // advance: the count, and a boundary exactly where a chunk ends at a
        // packet end.
        let mut framer = Framer::new();
        let (mut offset, mut count) = (0, 0);
        for chunk in &chunks {
            count += framer.advance(chunk).unwrap();
            offset += chunk.len();
            prop_assert_eq!(framer.at_boundary(), offset == 0 || ends.contains(&offset));
        }
        prop_assert_eq!(count, packets.len());

        // advance_to_boundary: stops at every packet end and nowhere else.
        let mut framer = Framer::new();
        let (mut offset, mut seen) = (0, Vec::new());
        for chunk in &chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let n = framer.advance_to_boundary(rest).unwrap();
                prop_assert!(n > 0);
                rest = &rest[n..];
                offset += n;
                if framer.at_boundary() {
                    seen.push(offset);
                } else {
                    prop_assert!(rest.is_empty());
                }
            }
        }
        prop_assert_eq!(seen, ends);
    }
}
