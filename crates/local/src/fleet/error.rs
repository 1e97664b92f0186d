//! Errors in a fleet file: one line each, `fleet.yaml:7: replicas: must be …`.

use std::fmt;
use std::path::PathBuf;

use super::lines;

/// Why a fleet file was rejected. `Display` is one line starting with the source
/// name and, when known, the line: `fleet.yaml:7: replicas: must be from 1 to
/// 1000 (got -3)`.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The file could not be read.
    #[error("{}: cannot read the fleet file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not YAML, or not the shape of a fleet file (unknown field, wrong type,
    /// missing field), as the YAML parser reported it.
    #[error("{}{message}", Located(source_name, *line))]
    Syntax {
        /// File name (or whatever the text was called).
        source_name: String,
        /// 1-based line, when the parser knew it.
        line: Option<usize>,
        /// 1-based column, when the parser knew it.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// Well-formed, but a field's value is not allowed.
    #[error("{}{field}: {problem}", Located(source_name, *line))]
    Invalid {
        /// File name (or whatever the text was called).
        source_name: String,
        /// 1-based line of the field (or of its closest parent present in the file).
        line: Option<usize>,
        /// Dotted path of the field, e.g. `updateStrategy.evacuationStrategy.connEvictRate`.
        field: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

impl FleetError {
    /// The field path, for [`FleetError::Invalid`].
    pub fn field(&self) -> Option<&str> {
        match self {
            FleetError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The 1-based line the error points at, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            FleetError::Read { .. } => None,
            FleetError::Syntax { line, .. } | FleetError::Invalid { line, .. } => *line,
        }
    }

    /// The parser's error `e` on `text`, located, its message on one line and
    /// prefixed with the path of the field at that line when it can be told.
    pub(crate) fn from_yaml(source_name: &str, text: &str, e: &serde_saphyr::Error) -> FleetError {
        let location = e.location();
        let to_usize = |n: u64| usize::try_from(n).ok().filter(|&n| n > 0);
        let line = location.and_then(|l| to_usize(l.line()));
        let column = location.and_then(|l| to_usize(l.column()));
        let message = reword(&one_line(&e.without_snippet().to_string()));
        let mut path = line.map(|l| lines::path_at(text, l)).unwrap_or_default();
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            // Located at the unknown key itself: name the mapping it is in.
            if path.last() == Some(&unknown) {
                path.pop();
            }
        } else if message.starts_with("missing field") {
            // Located wherever the mapping ended: the path would mislead.
            path.clear();
        }
        let message = match path.last() {
            Some(last) if !message.starts_with(&format!("{last}:")) => {
                format!("{}: {message}", path.join("."))
            }
            _ => message,
        };
        FleetError::Syntax {
            source_name: source_name.to_owned(),
            line,
            column,
            message,
        }
    }
}

/// `name:line: ` or `name: `.
struct Located<'a>(&'a String, Option<usize>);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(line) => write!(f, "{}:{line}: ", self.0),
            None => write!(f, "{}: ", self.0),
        }
    }
}

/// Plainer words for a few of the parser's messages.
fn reword(message: &str) -> String {
    let message = message
        .replace("invalid i32", "expected a whole number")
        .replace("invalid u16", "expected a whole number from 0 to 65535");
    match message.strip_suffix(", expected one of ") {
        Some(start) => format!("{start}: no fields are allowed here"),
        None => message,
    }
}

/// The parser's message without its own location suffix, on one line.
fn one_line(message: &str) -> String {
    let first = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid YAML");
    // serde-saphyr appends " at line L, column C"; the prefix already says where.
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    }
}
