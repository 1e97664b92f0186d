//! Checked reading and writing of the primitive wire types.
//!
//! Modelled on rustls' `msgs/codec.rs`: a [`Reader`] is a cursor over a byte
//! slice whose every read is bounds-checked and returns an error instead of
//! panicking, so protocol decoders built on it cannot panic on hostile input.
//! The `put_*` functions are the matching encoders.

/// The largest value a variable byte integer can hold (four bytes of 7 bits).
pub const VAR_INT_MAX: u32 = 268_435_455;

/// The largest string or binary field a u16 length prefix can describe.
pub const U16_FIELD_MAX: usize = u16::MAX as usize;

/// Why a primitive read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended before the value did.
    #[error("input ended in the middle of a field")]
    Truncated,
    /// A string field is not valid UTF-8.
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    /// A variable byte integer has a continuation bit on its fourth byte.
    #[error("variable byte integer is longer than 4 bytes")]
    VarIntTooLong,
}

/// A cursor over a byte slice with checked reads.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// How many bytes are left.
    pub fn left(&self) -> usize {
        self.rest().len()
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.left() == 0
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let rest = self.rest();
        let taken = rest.get(..n).ok_or(CodecError::Truncated)?;
        self.pos += n;
        Ok(taken)
    }

    /// Takes everything that is left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        let rest = self.rest();
        self.pos = self.buf.len();
        rest
    }

    /// Splits off a sub-reader over the next `n` bytes.
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, CodecError> {
        self.take(n).map(Reader::new)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        self.array::<1>().map(|[b]| b)
    }

    /// Reads a big-endian two byte integer.
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        self.array().map(u16::from_be_bytes)
    }

    /// Reads a big-endian four byte integer.
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        self.array().map(u32::from_be_bytes)
    }

    /// Reads an MQTT variable byte integer (1 to 4 bytes, 7 bits each, least
    /// significant first). Non-minimal encodings are accepted.
    pub fn var_int(&mut self) -> Result<u32, CodecError> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::VarIntTooLong)
    }

    /// Reads binary data with a two byte length prefix.
    pub fn binary(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Reads a UTF-8 string with a two byte length prefix.
    pub fn string(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.binary()?).map_err(|_| CodecError::InvalidUtf8)
    }
}

/// Appends one byte.
pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

/// Appends a big-endian two byte integer.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian four byte integer.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Encodes a variable byte integer into a buffer and returns its length.
/// Values above [`VAR_INT_MAX`] are clamped to it (callers bound their
/// lengths first; clamping keeps the output well-formed).
pub fn var_int_bytes(v: u32) -> ([u8; 4], usize) {
    let mut v = v.min(VAR_INT_MAX);
    let mut bytes = [0; 4];
    let mut len = 0;
    for slot in &mut bytes {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        *slot = if v > 0 { low | 0x80 } else { low };
        len += 1;
        if v == 0 {
            break;
        }
    }
    (bytes, len)
}

/// Appends a variable byte integer (clamped to [`VAR_INT_MAX`]).
pub fn put_var_int(out: &mut Vec<u8>, v: u32) {
    let (bytes, len) = var_int_bytes(v);
    out.extend_from_slice(&bytes[..len]);
}

/// Appends whatever `body` writes, preceded by its length as a variable
/// byte integer (MQTT's remaining length and property length). The body
/// must stay within [`VAR_INT_MAX`] bytes.
pub fn put_var_int_prefixed(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    body(out);
    let body_len = out.len() - start;
    debug_assert!(body_len <= VAR_INT_MAX as usize);
    let (len_bytes, n) = var_int_bytes(u32::try_from(body_len).unwrap_or(u32::MAX));
    out.splice(start..start, len_bytes[..n].iter().copied());
}

/// Appends binary data with a two byte length prefix. Data longer than
/// 65535 bytes cannot be described and is truncated to that length.
pub fn put_binary(out: &mut Vec<u8>, data: &[u8]) {
    let data = &data[..data.len().min(U16_FIELD_MAX)];
    put_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}

/// Appends a UTF-8 string with a two byte length prefix. A string longer
/// than 65535 bytes is truncated at the last character boundary that fits.
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(U16_FIELD_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_binary(out, &s.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_int_boundaries_round_trip() {
        for (v, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (2_097_151, 3),
            (2_097_152, 4),
            (VAR_INT_MAX, 4),
        ] {
            let mut out = Vec::new();
            put_var_int(&mut out, v);
            assert_eq!(out.len(), len, "{v}");
            let mut r = Reader::new(&out);
            assert_eq!(r.var_int(), Ok(v));
            assert!(r.is_empty());
        }
    }

    #[test]
    fn var_int_errors() {
        assert_eq!(
            Reader::new(&[0x80, 0x80]).var_int(),
            Err(CodecError::Truncated)
        );
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x01]).var_int(),
            Err(CodecError::VarIntTooLong)
        );
    }

    #[test]
    fn checked_reads_do_not_advance_past_the_end() {
        let mut r = Reader::new(&[0x00, 0x05, b'a']);
        assert_eq!(r.string(), Err(CodecError::Truncated));
        let mut r = Reader::new(&[0x00, 0x02, 0xc3, 0x28]);
        assert_eq!(r.string(), Err(CodecError::InvalidUtf8));
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), Err(CodecError::Truncated));
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.left(), 1);
    }

    #[test]
    fn long_strings_are_truncated_on_a_char_boundary() {
        let s = "é".repeat(40_000); // 80,000 bytes, 2 per char
        let mut out = Vec::new();
        put_string(&mut out, &s);
        let decoded = Reader::new(&out).string().unwrap();
        assert_eq!(decoded.len(), 65_534);
    }
}
