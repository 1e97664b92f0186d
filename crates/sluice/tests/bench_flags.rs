//! Bad flags of `sluice bench conn` exit non-zero with one line naming the
//! flag.

mod support;

use std::process::Command;

use support::sluice_bin;

fn fails_naming(args: &[&str], flag: &str) {
    let out = Command::new(sluice_bin())
        .args(["bench", "conn"])
        .args(args)
        .output()
        .expect("run sluice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line expected, got {stderr}");
    assert!(
        lines[0].contains(flag),
        "{args:?}: '{}' does not name {flag}",
        lines[0]
    );
}

#[test]
fn bad_flags_exit_non_zero_with_one_line_naming_the_flag() {
    fails_naming(&["-c", "0"], "--count");
    fails_naming(&["-i", "-1"], "--interval");
    fails_naming(&["-h", "not a host!"], "--host");
    fails_naming(&["--source-ips", "127.0.0.40-127.0.0.2"], "--source-ips");
    fails_naming(&["--source-ips", "127.0.0.2-banana"], "--source-ips");
    fails_naming(&["-V", "4.5"], "--mqtt-version");
    fails_naming(&["--metrics", "https://127.0.0.1:1/metrics"], "--metrics");
    fails_naming(&["--reconnect-jitter", "2"], "--reconnect-jitter");
    // Checked when the run starts, before any connection.
    fails_naming(
        &["-c", "60000", "--workers", "1", "--duration", "1"],
        "--workers",
    );
    fails_naming(
        &["-h", "no-such-host.invalid", "--duration", "1"],
        "-h/--host",
    );
    fails_naming(
        &["--json", "/nonexistent-dir/s.json", "--duration", "1"],
        "--json",
    );
}

#[test]
fn help_works_despite_dash_h_being_the_host() {
    let out = Command::new(sluice_bin())
        .args(["bench", "conn", "--help"])
        .output()
        .expect("run sluice");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "-h, --host",
        "-p, --port",
        "-c, --count",
        "-i, --interval",
        "--source-ips",
        "--metrics",
    ] {
        assert!(text.contains(flag), "help lacks {flag}");
    }
}
