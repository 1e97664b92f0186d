//! Reason and return codes used by sluice.

/// v5: success / normal disconnection.
pub const NORMAL: u8 = 0x00;
/// v5 DISCONNECT: the server is going away (evict without a destination).
pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
/// v5: the server is busy, try again later.
pub const SERVER_BUSY: u8 = 0x89;
/// v5 CONNACK: the server cannot take the connection.
pub const SERVER_UNAVAILABLE: u8 = 0x88;
/// v5: reconnect to the server in Server Reference, temporarily.
pub const USE_ANOTHER_SERVER: u8 = 0x9C;
/// v5: reconnect to the server in Server Reference, permanently.
pub const SERVER_MOVED: u8 = 0x9D;
/// 3.1.1 CONNACK return code: server unavailable.
pub const V3_SERVER_UNAVAILABLE: u8 = 3;

/// Human name of a v5 reason code, for logs and reports ("server shutting
/// down", …). Codes whose meaning depends on the packet (0x00, 0x01, 0x02)
/// get the DISCONNECT/CONNACK reading.
pub fn name(code: u8) -> &'static str {
    match code {
        0x00 => "success",
        0x01 => "granted QoS 1",
        0x02 => "granted QoS 2",
        0x04 => "disconnect with will message",
        0x10 => "no matching subscribers",
        0x11 => "no subscription existed",
        0x18 => "continue authentication",
        0x19 => "re-authenticate",
        0x80 => "unspecified error",
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8A => "banned",
        0x8B => "server shutting down",
        0x8C => "bad authentication method",
        0x8D => "keep alive timeout",
        0x8E => "session taken over",
        0x8F => "topic filter invalid",
        0x90 => "topic name invalid",
        0x91 => "packet identifier in use",
        0x92 => "packet identifier not found",
        0x93 => "receive maximum exceeded",
        0x94 => "topic alias invalid",
        0x95 => "packet too large",
        0x96 => "message rate too high",
        0x97 => "quota exceeded",
        0x98 => "administrative action",
        0x99 => "payload format invalid",
        0x9A => "retain not supported",
        0x9B => "QoS not supported",
        0x9C => "use another server",
        0x9D => "server moved",
        0x9E => "shared subscriptions not supported",
        0x9F => "connection rate exceeded",
        0xA0 => "maximum connect time",
        0xA1 => "subscription identifiers not supported",
        0xA2 => "wildcard subscriptions not supported",
        _ => "unknown reason code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_codes_sluice_sends() {
        assert_eq!(name(SERVER_SHUTTING_DOWN), "server shutting down");
        assert_eq!(name(USE_ANOTHER_SERVER), "use another server");
        assert_eq!(name(SERVER_MOVED), "server moved");
        assert_eq!(name(SERVER_BUSY), "server busy");
        assert_eq!(name(SERVER_UNAVAILABLE), "server unavailable");
        assert_eq!(name(NORMAL), "success");
        assert_eq!(name(0x7f), "unknown reason code");
    }
}
