//! `$(VAR)` expansion in `command`, `args` and `env` values, with the kubelet's
//! rules: `$(NAME)` becomes NAME's value when NAME is defined and stays as
//! written otherwise, `$$` is an escaped `$`, any other `$` is kept.

use std::collections::BTreeMap;

/// Expands `$(NAME)` references in `input` from `vars`, as the kubelet does.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            match tail.find(')') {
                Some(close) => {
                    let name = &tail[..close];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &tail[close + 1..];
                }
                None => {
                    // Unclosed: the kubelet keeps "$(" and reads on after it.
                    out.push_str("$(");
                    rest = tail;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("A", "1"), ("POD", "web-0"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kubelet_rules() {
        let v = vars();
        for (input, want) in [
            ("$(A)", "1"),
            ("x$(A)y$(POD)z", "x1yweb-0z"),
            ("$(MISSING)", "$(MISSING)"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$1"),
            ("$$", "$"),
            ("a$b", "a$b"),
            ("end$", "end$"),
            ("$(A", "$(A"),
            ("$(EMPTY)!", "!"),
            ("($(A))", "(1)"),
            ("héllo $(POD) ü", "héllo web-0 ü"),
            ("", ""),
        ] {
            assert_eq!(expand(input, &v), want, "input {input:?}");
        }
    }
}
