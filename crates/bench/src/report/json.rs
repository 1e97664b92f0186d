//! The `--json` file: the [`Summary`] as one JSON object.

use std::path::Path;

use crate::BenchError;
use crate::summary::Summary;

/// Writes `summary` to `path`, pretty-printed.
pub fn write(path: &Path, summary: &Summary) -> Result<(), BenchError> {
    let mut text = serde_json::to_string_pretty(summary)?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| BenchError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// Reads a summary a run wrote with `--json` (for `sluice demo`, which may
/// run the bench as a subprocess).
pub fn read(path: &Path) -> Result<Summary, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| BenchError::Flag {
        flag: "RUN.json",
        message: format!(
            "{} is not a summary written by `sluice bench conn --json`: {e}",
            path.display()
        ),
    })
}
