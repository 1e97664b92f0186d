use std::net::{SocketAddr, TcpListener};

use sluice_core::spec::{StrategyType, UpdateStrategy};

use super::*;

const MINIMAL: &str = "\
name: demo
listen: 127.0.0.1:1883
app:
  command: my-server --port {port}
";

fn parse(text: &str) -> Result<Fleet, FleetError> {
    Fleet::from_yaml_str(text, "fleet.yaml")
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(f) => panic!("expected an error, got {f:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_file_gets_the_defaults() {
    let f = parse(MINIMAL).unwrap();
    assert_eq!(f.name, "demo");
    assert_eq!(f.replicas, 1);
    assert_eq!(f.listen, "127.0.0.1:1883".parse::<SocketAddr>().unwrap());
    assert_eq!(f.protocol, Protocol::Tcp);
    let http = parse(&MINIMAL.replace("name: demo", "name: demo\nprotocol: http")).unwrap();
    assert_eq!(http.protocol.as_str(), "http");
    assert_eq!(f.version, "");
    assert_eq!(f.update_strategy, UpdateStrategy::default());
    assert_eq!(f.app.readiness, Readiness::Tcp(TcpProbe {}));
    assert_eq!(f.app.termination_grace_period_seconds, 30);
    assert!(f.app.env.is_empty());
    assert_eq!(
        f.app.command,
        AppCommand::Line("my-server --port {port}".into())
    );
}

#[test]
fn the_example_in_the_docs_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/fleet.yaml");
    let f = Fleet::load(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.name, "demo");
    assert_eq!(f.replicas, 3);
    assert_eq!(f.protocol, Protocol::Mqtt);
    assert_eq!(f.version, "1");
    assert_eq!(f.update_strategy.kind, StrategyType::BlueGreen);
    assert_eq!(f.update_strategy.evacuation_strategy.conn_evict_rate, 200);
    assert_eq!(f.app.env["RUST_LOG"], "info");
    let vars = InstanceVars {
        port: 4000,
        probe_port: None,
        instance: "demo-0".into(),
        revision: f.revision(),
    };
    let cmd = f.app.render(&vars).unwrap();
    assert_eq!(cmd.program, "sluice");
    assert_eq!(cmd.args, ["broker", "--port", "4000"]);
}

#[test]
fn every_field_of_the_docs_reference_example_parses() {
    let text = "\
name: api
replicas: 2
listen: '[::1]:8080'
protocol: tcp
version: 2024.1
app:
  command: [python3, -m, http.server, '{port}', --bind, 127.0.0.1]
  env:
    INSTANCE: '{instance}'
    REVISION: '{revision}'
    HEALTH_PORT: '{probePort}'
  readiness:
    http:
      path: /healthz
      port: '{probePort}'
  terminationGracePeriodSeconds: 5
updateStrategy:
  type: Rolling
  initialDelaySeconds: 0
  progressDeadlineSeconds: 120
  evacuationStrategy: {connEvictRate: 50}
  rollingUpdate:
    maxSurge: 1
    maxUnavailable: 0
";
    let f = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.listen.port(), 8080);
    assert_eq!(f.version, "2024.1");
    assert!(f.app.uses_probe_port());
    let vars = InstanceVars {
        port: 5000,
        probe_port: Some(5001),
        instance: "api-1".into(),
        revision: "abc".into(),
    };
    let cmd = f.app.render(&vars).unwrap();
    assert_eq!(cmd.program, "python3");
    assert_eq!(
        cmd.args,
        ["-m", "http.server", "5000", "--bind", "127.0.0.1"]
    );
    assert_eq!(cmd.env["INSTANCE"], "api-1");
    assert_eq!(cmd.env["REVISION"], "abc");
    assert_eq!(cmd.env["HEALTH_PORT"], "5001");
    assert_eq!(
        f.app.probe(&vars),
        crate::process::Probe::Http {
            addr: "127.0.0.1:5001".parse().unwrap(),
            path: "/healthz".into()
        }
    );
}

#[test]
fn revision_is_stable_and_follows_app_protocol_and_version_only() {
    let f = parse(MINIMAL).unwrap();
    let r = f.revision();
    assert_eq!(r.len(), 10);
    assert!(r.bytes().all(|b| b.is_ascii_hexdigit()), "{r}");
    // Pinned: the hash must not change between builds, processes or Rust versions.
    // (Checked against an independent FNV-1a of the canonical JSON
    // {"app":{"command":"my-server --port {port}","env":{},"readiness":{"tcp":{}},
    // "terminationGracePeriodSeconds":30},"protocol":"tcp","version":""}.)
    assert_eq!(r, "0a30d5c402");

    // Not part of the revision: name, replicas, listen, strategy, formatting.
    let same = parse(
        "name: other\nreplicas: 5\nlisten: 127.0.0.1:1\n\
         updateStrategy: {type: Rolling}\napp: {command: 'my-server --port {port}'}\n",
    )
    .unwrap();
    assert_eq!(same.revision(), r);

    for changed in [
        MINIMAL.replace("my-server", "my-server2"),
        format!("{MINIMAL}version: '2'\n"),
        format!("{MINIMAL}  env: {{A: b}}\n"),
        format!("{MINIMAL}  terminationGracePeriodSeconds: 3\n"),
        format!("{MINIMAL}  readiness: {{http: {{}}}}\n"),
        // The evacuators of a changed protocol evict differently: an upgrade.
        format!("{MINIMAL}protocol: mqtt\n"),
    ] {
        let f = parse(&changed).unwrap_or_else(|e| panic!("{e}\n{changed}"));
        assert_ne!(f.revision(), r, "{changed}");
    }
}

#[test]
fn fnv1a_matches_the_reference_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn negative_replicas_names_field_range_and_line() {
    let text = MINIMAL.replace("listen:", "replicas: -3\nlisten:");
    assert_eq!(
        error(&text),
        "fleet.yaml:2: replicas: must be from 1 to 1000 (got -3)"
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.field(), Some("replicas"));
    assert_eq!(e.line(), Some(2));
}

#[test]
fn unknown_fields_are_named_with_their_line() {
    let e = error(&format!("{MINIMAL}replicaz: 3\n"));
    assert!(e.starts_with("fleet.yaml:5: "), "{e}");
    assert!(e.contains("replicaz"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    let e = error(&MINIMAL.replace("  command:", "  comand: x\n  command:"));
    assert!(e.starts_with("fleet.yaml:4: "), "{e}");
    assert!(e.contains("comand"), "{e}");

    let e = error(&format!(
        "{MINIMAL}updateStrategy:\n  evacuationStrategy:\n    connEvictRat: 5\n"
    ));
    assert!(e.starts_with("fleet.yaml:7: "), "{e}");
    assert!(e.contains("connEvictRat"), "{e}");

    let e = error(&format!("{MINIMAL}  readiness:\n    tcp: {{port: 3}}\n"));
    assert!(e.starts_with("fleet.yaml:6: "), "{e}");
    assert!(e.contains("port"), "{e}");
}

#[test]
fn missing_command_is_explained() {
    let e = error("name: demo\nlisten: 127.0.0.1:1883\napp:\n  env: {A: b}\n");
    assert!(
        e.starts_with("fleet.yaml:3: app.command: is missing"),
        "{e}"
    );
    let e = error("name: demo\nlisten: 127.0.0.1:1883\napp:\n  command: ''\n");
    assert!(
        e.starts_with("fleet.yaml:4: app.command: is missing"),
        "{e}"
    );
    let e = error("name: demo\nlisten: 127.0.0.1:1883\napp:\n  command: []\n");
    assert!(
        e.starts_with("fleet.yaml:4: app.command: is missing"),
        "{e}"
    );
}

#[test]
fn command_without_port_placeholder_is_refused() {
    let e = error(&MINIMAL.replace("{port}", "8080"));
    assert!(
        e.starts_with("fleet.yaml:4: app.command: must contain the {port} placeholder"),
        "{e}"
    );
    // In the environment instead is fine.
    let text = MINIMAL.replace("{port}", "8080") + "  env:\n    PORT: '{port}'\n";
    parse(&text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn unknown_placeholders_and_bad_quotes_are_refused() {
    let e = error(&MINIMAL.replace("{port}", "{Port}"));
    assert!(e.contains("app.command: unknown placeholder {Port}"), "{e}");
    let e = error(&format!("{MINIMAL}  env:\n    X: '{{revison}}'\n"));
    assert!(
        e.starts_with("fleet.yaml:6: app.env.X: unknown placeholder {revison}"),
        "{e}"
    );
    let e = error(&MINIMAL.replace("--port {port}", "\"--port {port}"));
    assert!(e.contains("app.command: has an unclosed quote"), "{e}");
    // Braces that are not placeholders are left alone.
    let text = MINIMAL.replace(
        "my-server --port {port}",
        "[my-server, --port, '{port}', --json, '{\"a\": 1}', '{}', '{1x}']",
    );
    parse(&text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_listen_address_is_explained() {
    for bad in ["localhost:1883", "127.0.0.1", "1883", "127.0.0.1:99999"] {
        let e = error(&MINIMAL.replace("127.0.0.1:1883", bad));
        assert!(e.starts_with("fleet.yaml:2: "), "{bad}: {e}");
        assert!(
            e.contains("listen: expected an IP address and a port"),
            "{bad}: {e}"
        );
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn listen_address_in_use_is_named() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let text = MINIMAL.replace("127.0.0.1:1883", &addr.to_string());
    let fleet = parse(&text).unwrap();
    let e = fleet.check_listen_available().unwrap_err();
    assert_eq!(e.field(), Some("listen"));
    assert_eq!(
        e.to_string(),
        format!(
            "fleet.yaml:2: listen: {addr} is already in use by another process; \
             stop that process or choose another port"
        )
    );
    drop(holder);
    fleet.check_listen_available().unwrap();
}

#[test]
fn strategy_errors_carry_the_full_path_and_line() {
    let text = format!(
        "{MINIMAL}updateStrategy:\n  type: Rolling\n  evacuationStrategy:\n    connEvictRate: -5\n"
    );
    assert_eq!(
        error(&text),
        "fleet.yaml:8: updateStrategy.evacuationStrategy.connEvictRate: \
         must be from 1 to 1000000 (got -5)"
    );
    let e = error(&format!("{MINIMAL}updateStrategy: {{type: Sideways}}\n"));
    assert!(e.starts_with("fleet.yaml:5: "), "{e}");
    assert!(e.contains("Sideways"), "{e}");
}

#[test]
fn other_field_checks() {
    let e = error(&MINIMAL.replace("demo", "Demo_1"));
    assert!(e.starts_with("fleet.yaml:1: name: must be"), "{e}");
    let e = error(&format!("{MINIMAL}  terminationGracePeriodSeconds: -1\n"));
    assert!(
        e.starts_with("fleet.yaml:5: app.terminationGracePeriodSeconds: must be from 0"),
        "{e}"
    );
    let e = error(&format!(
        "{MINIMAL}  readiness:\n    http: {{path: healthz}}\n"
    ));
    assert!(
        e.starts_with("fleet.yaml:6: app.readiness.http.path: must start with '/'"),
        "{e}"
    );
    let e = error(&format!(
        "{MINIMAL}  readiness:\n    http:\n      port: 8081\n"
    ));
    assert!(
        e.starts_with("fleet.yaml:7: app.readiness.http.port: must be \"{port}\" or"),
        "{e}"
    );
    let e = error(&format!(
        "{MINIMAL}  readiness:\n    http:\n      port: '{{probePort}}'\n"
    ));
    assert!(
        e.contains("app.readiness.http.port: is \"{probePort}\" but"),
        "{e}"
    );
    let e = error(&format!("{MINIMAL}protocol: ftp\n"));
    assert!(e.starts_with("fleet.yaml:5: "), "{e}");
    let e = error(&format!("{MINIMAL}replicas: many\n"));
    assert!(e.starts_with("fleet.yaml:5: "), "{e}");
    let e = error("name: demo\napp: {command: 'x {port}'}\n");
    assert!(e.contains("listen"), "{e}");
    let e = error("name: [unclosed\n");
    assert!(e.starts_with("fleet.yaml:"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let e = error("# nothing\n\n");
    assert!(e.starts_with("fleet.yaml: the fleet file is empty"), "{e}");
}

#[test]
fn missing_file_is_named() {
    let e = Fleet::load("/nonexistent/fleet.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/fleet.yaml: cannot read the fleet file:"),
        "{e}"
    );
}

#[test]
fn schema_names_every_field() {
    let schema = serde_json::to_string(&schemars::schema_for!(Fleet)).unwrap();
    for field in [
        "replicas",
        "listen",
        "protocol",
        "terminationGracePeriodSeconds",
        "readiness",
        "updateStrategy",
        "connEvictRate",
    ] {
        assert!(schema.contains(field), "schema lacks {field}");
    }
}

/// The YAML blocks of `docs/fleet.md`, in order.
fn doc_yaml_blocks() -> Vec<String> {
    let doc = include_str!("../../../../docs/fleet.md");
    doc.split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_docs_examples_parse_and_match_the_example_file() {
    let blocks = doc_yaml_blocks();
    assert_eq!(
        blocks.len(),
        2,
        "docs/fleet.md should have two yaml examples"
    );
    let in_doc = parse(&blocks[0]).unwrap_or_else(|e| panic!("docs/fleet.md example: {e}"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/fleet.yaml");
    let file = Fleet::load(path).unwrap();
    assert_eq!(
        serde_json::to_value(&in_doc).unwrap(),
        serde_json::to_value(&file).unwrap(),
        "the example in docs/fleet.md differs from examples/fleet.yaml"
    );
    assert_eq!(in_doc.revision(), file.revision());
    parse(&blocks[1]).unwrap_or_else(|e| panic!("docs/fleet.md minimal example: {e}"));
}

#[test]
fn naive_cannot_be_chosen_in_a_fleet_file() {
    let e = error(&format!("{MINIMAL}updateStrategy:\n  type: Naive\n"));
    assert!(
        e.contains("updateStrategy.type") || e.contains("type"),
        "names the field: {e}"
    );
    assert!(e.contains("BlueGreen") && e.contains("Rolling"), "{e}");
    let schema = serde_json::to_string(&schemars::schema_for!(Fleet)).unwrap();
    assert!(
        !schema.contains(r#""const":"Naive""#),
        "Naive is not offered: {schema}"
    );
}
