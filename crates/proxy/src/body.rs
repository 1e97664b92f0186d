//! Strict reading of admin API request bodies: a JSON object whose every field is
//! known, of the right type and in range. Errors name the field, so that an
//! operator's typo is answered with what to fix.

use serde_json::{Map, Value};

/// The largest request body the admin API reads.
pub const MAX_BODY: usize = 4096;

/// A request body the API cannot accept; answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    /// The offending field, when one is to blame.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl BadRequest {
    /// An error about `field`.
    pub fn field(field: &str, message: impl Into<String>) -> BadRequest {
        BadRequest {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    /// An error about the body as a whole.
    pub fn body(message: impl Into<String>) -> BadRequest {
        BadRequest {
            field: None,
            message: message.into(),
        }
    }
}

/// The fields of a JSON object body, consumed one by one; whatever is left at the
/// end is an unknown field.
#[derive(Debug)]
pub struct Fields {
    map: Map<String, Value>,
    known: &'static [&'static str],
}

impl Fields {
    /// Parses `bytes` as a JSON object whose fields are among `known`.
    pub fn parse(bytes: &[u8], known: &'static [&'static str]) -> Result<Fields, BadRequest> {
        if bytes.len() > MAX_BODY {
            return Err(BadRequest::body(format!(
                "request body is {} bytes; the limit is {MAX_BODY}",
                bytes.len()
            )));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| BadRequest::body(format!("request body is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(BadRequest::body(
                "request body must be a JSON object such as {\"conn_evict_rate\": 100}",
            ));
        };
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(BadRequest::field(
                unknown,
                format!(
                    "unknown field `{unknown}`; expected one of: {}",
                    known.join(", ")
                ),
            ));
        }
        Ok(Fields { map, known })
    }

    /// An integer field in `min..=max`; `None` when absent or null.
    pub fn int(&mut self, field: &str, min: i64, max: i64) -> Result<Option<i64>, BadRequest> {
        debug_assert!(self.known.contains(&field));
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(BadRequest::field(
                    field,
                    format!("`{field}` must be a whole number from {min} to {max} (got {n})"),
                )),
            },
            Some(other) => Err(BadRequest::field(
                field,
                format!(
                    "`{field}` must be a whole number from {min} to {max} (got {})",
                    type_name(&other)
                ),
            )),
        }
    }

    /// A string field; `None` when absent or null.
    pub fn string(&mut self, field: &str) -> Result<Option<String>, BadRequest> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(BadRequest::field(
                field,
                format!("`{field}` must be a string (got {})", type_name(&other)),
            )),
        }
    }

    /// A list of strings; `None` when absent or null.
    pub fn strings(&mut self, field: &str) -> Result<Option<Vec<String>>, BadRequest> {
        let wrong = |got: &Value| {
            BadRequest::field(
                field,
                format!(
                    "`{field}` must be a list of strings such as [\"b\"] (got {})",
                    type_name(got)
                ),
            )
        };
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(wrong(&other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(wrong(&other)),
        }
    }

    /// A boolean field; `None` when absent or null.
    pub fn bool(&mut self, field: &str) -> Result<Option<bool>, BadRequest> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(BadRequest::field(
                field,
                format!(
                    "`{field}` must be true or false (got {})",
                    type_name(&other)
                ),
            )),
        }
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["rate", "name", "on"];

    #[test]
    fn reads_known_fields() {
        let mut f = Fields::parse(br#"{"rate": 5, "name": "x", "on": true}"#, KNOWN).unwrap();
        assert_eq!(f.int("rate", 1, 10).unwrap(), Some(5));
        assert_eq!(f.string("name").unwrap().as_deref(), Some("x"));
        assert_eq!(f.bool("on").unwrap(), Some(true));
        let mut f = Fields::parse(b"{}", KNOWN).unwrap();
        assert_eq!(f.int("rate", 1, 10).unwrap(), None);
    }

    #[test]
    fn errors_name_the_field() {
        let e = Fields::parse(br#"{"rat": 5}"#, KNOWN).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rat"));
        assert!(e.message.contains("expected one of: rate, name, on"), "{e}");
        let e = Fields::parse(br#"{"rate": "fast"}"#, KNOWN)
            .unwrap()
            .int("rate", 1, 10)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rate"));
        assert!(
            e.message.contains("from 1 to 10 (got the string \"fast\")"),
            "{e}"
        );
        let e = Fields::parse(br#"{"rate": 11}"#, KNOWN)
            .unwrap()
            .int("rate", 1, 10)
            .unwrap_err();
        assert!(e.message.contains("(got 11)"), "{e}");
        let e = Fields::parse(br#"{"rate": 1.5}"#, KNOWN)
            .unwrap()
            .int("rate", 1, 10)
            .unwrap_err();
        assert!(e.message.contains("(got 1.5)"), "{e}");
        let e = Fields::parse(br#"{"on": 1}"#, KNOWN)
            .unwrap()
            .bool("on")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("on"));
        assert!(Fields::parse(b"[1]", KNOWN).unwrap_err().field.is_none());
        assert!(
            Fields::parse(b"{", KNOWN)
                .unwrap_err()
                .message
                .contains("not valid JSON")
        );
        let big = vec![b' '; MAX_BODY + 1];
        assert!(
            Fields::parse(&big, KNOWN)
                .unwrap_err()
                .message
                .contains("limit")
        );
    }
}
