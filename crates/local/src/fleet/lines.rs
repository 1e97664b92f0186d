//! Finds the line of a key in YAML text, so that errors found after parsing (a
//! value out of range, a port in use) can point at the line the user must edit.
//!
//! A small scan of block mappings by indentation, not a YAML parser: it handles
//! what fleet files contain (nested block mappings, comments, quoted keys). When a
//! key cannot be found (it is absent, or written in flow style `{a: 1}`), the line
//! of its deepest ancestor that can be found is returned instead.

/// One line that starts a mapping key: `indent` spaces, then `key:`.
struct KeyLine<'a> {
    /// 1-based line number.
    number: usize,
    indent: usize,
    key: &'a str,
}

/// The 1-based line of the key at `path` (e.g. `["app", "command"]`), or of its
/// deepest ancestor present in the text; `None` when not even the first key is.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let lines: Vec<Option<KeyLine<'_>>> = text
        .lines()
        .enumerate()
        .map(|(i, l)| key_line(i + 1, l))
        .collect();
    let indents: Vec<Option<usize>> = text.lines().map(content_indent).collect();

    let mut found = None;
    let (mut start, mut end) = (0, lines.len());
    for segment in path {
        // The block's indentation is that of its first key.
        let Some(block_indent) = lines[start..end].iter().flatten().map(|k| k.indent).next() else {
            break;
        };
        let Some(pos) = (start..end).find(|&i| {
            lines[i]
                .as_ref()
                .is_some_and(|k| k.indent == block_indent && k.key == *segment)
        }) else {
            break;
        };
        found = lines[pos].as_ref().map(|k| k.number);
        // The child block runs until the next line indented no deeper than the key.
        let child_end = (pos + 1..end)
            .find(|&i| indents[i].is_some_and(|d| d <= block_indent))
            .unwrap_or(end);
        (start, end) = (pos + 1, child_end);
    }
    found
}

/// The keys whose blocks enclose 1-based `line` (the key on that line included),
/// outermost first: `["app", "readiness", "tcp"]`.
pub fn path_at(text: &str, line: usize) -> Vec<&str> {
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (i, l) in text.lines().enumerate().take(line) {
        let Some(indent) = content_indent(l) else {
            continue;
        };
        while stack.last().is_some_and(|&(d, _)| d >= indent) {
            stack.pop();
        }
        if let Some(k) = key_line(i + 1, l) {
            stack.push((k.indent, k.key));
        }
    }
    stack.into_iter().map(|(_, k)| k).collect()
}

/// Indentation of a line with content; `None` for blank and comment-only lines.
fn content_indent(line: &str) -> Option<usize> {
    let trimmed = line.trim_start_matches(' ');
    if trimmed.trim().is_empty() || trimmed.starts_with('#') {
        None
    } else {
        Some(line.len() - trimmed.len())
    }
}

/// Parses `  key: ...` (plain, single- or double-quoted key).
fn key_line(number: usize, line: &str) -> Option<KeyLine<'_>> {
    let indent = content_indent(line)?;
    let rest = &line[indent..];
    let (key, after) = match rest.chars().next()? {
        q @ ('"' | '\'') => {
            let close = rest[1..].find(q)? + 1;
            (&rest[1..close], &rest[close + 1..])
        }
        _ => {
            let colon = rest.find(':')?;
            (rest[..colon].trim_end(), &rest[colon..])
        }
    };
    let after = after.trim_start().strip_prefix(':')?;
    if !(after.is_empty() || after.starts_with([' ', '\t'])) || key.is_empty() {
        return None;
    }
    Some(KeyLine {
        number,
        indent,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::{line_of, path_at};

    const TEXT: &str = "\
# a comment
name: demo
replicas: 3
app:
  command: [a, b]

  # env below
  env:
    'A': x
    \"url\": http://x:1/
  readiness:
    http: {path: /}
updateStrategy:
  evacuationStrategy:
    connEvictRate: 5
  initialDelaySeconds: 1
version: \"1\"
";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(line_of(TEXT, &["name"]), Some(2));
        assert_eq!(line_of(TEXT, &["replicas"]), Some(3));
        assert_eq!(line_of(TEXT, &["app", "command"]), Some(5));
        assert_eq!(line_of(TEXT, &["app", "env", "A"]), Some(9));
        assert_eq!(line_of(TEXT, &["app", "env", "url"]), Some(10));
        assert_eq!(
            line_of(
                TEXT,
                &["updateStrategy", "evacuationStrategy", "connEvictRate"]
            ),
            Some(15)
        );
        assert_eq!(
            line_of(TEXT, &["updateStrategy", "initialDelaySeconds"]),
            Some(16)
        );
        assert_eq!(line_of(TEXT, &["version"]), Some(17));
    }

    #[test]
    fn falls_back_to_the_deepest_ancestor() {
        // Flow style: the key is inside `{...}` on the parent's line.
        assert_eq!(
            line_of(TEXT, &["app", "readiness", "http", "path"]),
            Some(12)
        );
        // Absent key.
        assert_eq!(
            line_of(TEXT, &["app", "terminationGracePeriodSeconds"]),
            Some(4)
        );
        // A key of the same name in another block is not taken.
        assert_eq!(line_of(TEXT, &["updateStrategy", "command"]), Some(13));
        assert_eq!(line_of(TEXT, &["listen"]), None);
        assert_eq!(line_of("", &["a"]), None);
    }

    #[test]
    fn path_at_a_line() {
        assert_eq!(path_at(TEXT, 1), Vec::<&str>::new());
        assert_eq!(path_at(TEXT, 3), ["replicas"]);
        assert_eq!(path_at(TEXT, 5), ["app", "command"]);
        assert_eq!(path_at(TEXT, 6), ["app", "command"]);
        assert_eq!(path_at(TEXT, 10), ["app", "env", "url"]);
        assert_eq!(path_at(TEXT, 12), ["app", "readiness", "http"]);
        assert_eq!(
            path_at(TEXT, 15),
            ["updateStrategy", "evacuationStrategy", "connEvictRate"]
        );
        assert_eq!(path_at(TEXT, 16), ["updateStrategy", "initialDelaySeconds"]);
        assert_eq!(path_at(TEXT, 99), ["version"]);
    }

    #[test]
    fn values_with_colons_are_not_keys() {
        assert_eq!(line_of("a: http://x:1\nb: 2\n", &["b"]), Some(2));
        assert_eq!(line_of("- a: 1\n", &["a"]), None);
    }
}
