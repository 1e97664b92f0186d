//! The fleet file the demo writes for each strategy (v1, then v2).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A strategy the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strategy {
    /// `BlueGreen`.
    BlueGreen,
    /// `Rolling` with maxSurge 1, maxUnavailable 0.
    Rolling,
    /// `Naive`: the Kubernetes StatefulSet restart, for comparison.
    Naive,
}

impl Strategy {
    /// All of them, in the order `--strategy all` runs them.
    pub const ALL: [Strategy; 3] = [Strategy::BlueGreen, Strategy::Rolling, Strategy::Naive];

    /// The flag's spelling: `blue-green`, `rolling`, `naive`.
    pub fn label(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Rolling => "rolling",
            Strategy::Naive => "naive",
        }
    }

    /// The fleet file's `updateStrategy.type`. A file cannot say `Naive` (users
    /// cannot pick it): the naive run writes `Rolling` and asks `sluice up` for
    /// Naive with [`Strategy::up_flags`].
    pub fn kind(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "BlueGreen",
            Strategy::Rolling | Strategy::Naive => "Rolling",
        }
    }

    /// Extra flags of `sluice up` for this strategy.
    pub fn up_flags(self) -> &'static [&'static str] {
        match self {
            Strategy::Naive => &["--naive-for-comparison"],
            Strategy::BlueGreen | Strategy::Rolling => &[],
        }
    }

    /// Whether it evacuates (the other one cuts).
    pub fn evacuates(self) -> bool {
        self != Strategy::Naive
    }
}

/// What each instance runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppKind {
    /// `sluice broker --port {port}` (this binary).
    Builtin {
        /// The sluice binary, absolute.
        sluice: PathBuf,
    },
    /// `mosquitto -c CONF -p {port}`.
    Mosquitto {
        /// The mosquitto binary.
        mosquitto: PathBuf,
        /// Its generated configuration file.
        config: PathBuf,
    },
    /// `sluice serve-http --port {port}` (this binary): an HTTP/1.1,
    /// WebSocket and h2c server, evacuated with `protocol: http`.
    Http {
        /// The sluice binary, absolute.
        sluice: PathBuf,
    },
}

impl AppKind {
    /// The fleet's `protocol`: `http` for the HTTP server, else `mqtt`.
    pub fn protocol(&self) -> &'static str {
        match self {
            AppKind::Http { .. } => "http",
            AppKind::Builtin { .. } | AppKind::Mosquitto { .. } => "mqtt",
        }
    }
}

/// Everything the fleet file says.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSpec {
    /// The strategy.
    pub strategy: Strategy,
    /// Instances.
    pub replicas: u32,
    /// The front's address.
    pub listen: SocketAddr,
    /// The program.
    pub app: AppKind,
    /// `connEvictRate` and `sessEvictRate`.
    pub rate: u32,
    /// `initialDelaySeconds`.
    pub initial_delay_seconds: u32,
    /// `progressDeadlineSeconds`.
    pub progress_deadline_seconds: u32,
    /// `waitTakeover`.
    pub wait_takeover: u32,
    /// Seconds each instance sleeps before it starts its broker, so that a new
    /// instance takes as long to become ready as a real broker (or pod) does,
    /// instead of a few milliseconds; 0: none.
    pub start_delay_seconds: u32,
}

/// A YAML (and JSON) double-quoted string.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

impl FleetSpec {
    /// The fleet's name: `demo-<strategy>`.
    pub fn name(&self) -> String {
        format!("demo-{}", self.strategy.label())
    }

    /// The fleet file at `version` (`v1`, `v2`). With `broken`, the instances
    /// of that version run a command that never listens, so they never become
    /// ready (the fault-injection run of `--break-green`).
    pub fn yaml(&self, version: &str, broken: bool) -> String {
        let command: Vec<String> = if broken {
            // `sh -c 'exec sleep 3600' {port}`: runs, never listens.
            vec![
                "sh".into(),
                "-c".into(),
                "exec sleep 3600".into(),
                "{port}".into(),
            ]
        } else {
            match &self.app {
                AppKind::Builtin { sluice } => vec![
                    path_str(sluice),
                    "broker".into(),
                    "--port".into(),
                    "{port}".into(),
                ],
                AppKind::Mosquitto { mosquitto, config } => vec![
                    path_str(mosquitto),
                    "-c".into(),
                    path_str(config),
                    "-p".into(),
                    "{port}".into(),
                ],
                AppKind::Http { sluice } => vec![
                    path_str(sluice),
                    "serve-http".into(),
                    "--port".into(),
                    "{port}".into(),
                ],
            }
        };
        let command: Vec<String> = if self.start_delay_seconds > 0 && !broken {
            // `sh -c 'sleep N; exec "$0" "$@"' PROGRAM ARGS…`: the same program,
            // started N seconds late (exec keeps the process id).
            let script = format!("sleep {}; exec \"$0\" \"$@\"", self.start_delay_seconds);
            ["sh".to_owned(), "-c".to_owned(), script]
                .into_iter()
                .chain(command)
                .collect()
        } else {
            command
        };
        let command: Vec<String> = command.iter().map(|w| quote(w)).collect();
        let rolling = if self.strategy == Strategy::Rolling {
            "  rollingUpdate:\n    maxSurge: 1\n    maxUnavailable: 0\n"
        } else {
            ""
        };
        format!(
            "# Written by `sluice demo`.\n\
             name: {name}\n\
             replicas: {replicas}\n\
             listen: {listen}\n\
             protocol: {protocol}\n\
             version: {version}\n\
             app:\n  \
               command: [{command}]\n  \
               readiness:\n    tcp: {{}}\n  \
               terminationGracePeriodSeconds: 10\n\
             updateStrategy:\n  \
               type: {kind}\n  \
               initialDelaySeconds: {delay}\n  \
               progressDeadlineSeconds: {deadline}\n  \
               evacuationStrategy:\n    \
                 connEvictRate: {rate}\n    \
                 sessEvictRate: {rate}\n    \
                 waitTakeover: {takeover}\n    \
                 waitHealthCheck: 0\n\
             {rolling}",
            name = self.name(),
            replicas = self.replicas,
            listen = quote(&self.listen.to_string()),
            protocol = self.app.protocol(),
            version = quote(version),
            command = command.join(", "),
            kind = self.strategy.kind(),
            delay = self.initial_delay_seconds,
            deadline = self.progress_deadline_seconds,
            rate = self.rate,
            takeover = self.wait_takeover,
        )
    }
}

/// The mosquitto configuration the instances share (the port comes from `-p`).
pub fn mosquitto_config() -> &'static str {
    "# Written by `sluice demo`: one listener per instance, given with -p.\n\
     allow_anonymous true\n\
     max_connections -1\n\
     persistence false\n\
     log_dest stderr\n\
     log_type error\n\
     log_type warning\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::spec::{IntOrPercent, StrategyType};
    use sluice_local::Fleet;

    fn spec(strategy: Strategy) -> FleetSpec {
        FleetSpec {
            strategy,
            replicas: 3,
            listen: "127.0.0.1:18830".parse().unwrap(),
            app: AppKind::Builtin {
                sluice: PathBuf::from("/opt/my tools/sluice"),
            },
            rate: 500,
            initial_delay_seconds: 2,
            progress_deadline_seconds: 120,
            wait_takeover: 1,
            start_delay_seconds: 0,
        }
    }

    #[test]
    fn the_fleet_file_parses_with_the_demo_settings() {
        for s in Strategy::ALL {
            let text = spec(s).yaml("v1", false);
            let f = Fleet::from_yaml_str(&text, "demo").unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(f.name, format!("demo-{}", s.label()));
            assert_eq!(f.replicas, 3);
            assert_eq!(f.version, "v1");
            assert_eq!(f.listen.port(), 18830);
            let u = &f.update_strategy;
            assert_eq!(u.initial_delay_seconds, 2);
            assert_eq!(u.evacuation_strategy.conn_evict_rate, 500);
            assert_eq!(u.evacuation_strategy.sess_evict_rate, 500);
            assert_eq!(u.evacuation_strategy.wait_takeover, 1);
            assert_eq!(u.evacuation_strategy.wait_health_check, 0);
            let kind = match s {
                Strategy::BlueGreen => StrategyType::BlueGreen,
                // Naive cannot be written; `sluice up` is asked for it by flag.
                Strategy::Rolling | Strategy::Naive => StrategyType::Rolling,
            };
            assert_eq!(u.kind, kind);
            assert_eq!(s.up_flags().is_empty(), s != Strategy::Naive);
            if s == Strategy::Rolling {
                assert_eq!(u.rolling_update.max_surge, IntOrPercent::Count(1));
                assert_eq!(u.rolling_update.max_unavailable, IntOrPercent::Count(0));
            }
            let words = f.app.command.words().unwrap();
            assert_eq!(
                words,
                ["/opt/my tools/sluice", "broker", "--port", "{port}"]
            );
        }
    }

    #[test]
    fn v2_is_a_new_revision_and_broken_runs_a_command_that_never_listens() {
        let s = spec(Strategy::BlueGreen);
        let v1 = Fleet::from_yaml_str(&s.yaml("v1", false), "v1").unwrap();
        let v2 = Fleet::from_yaml_str(&s.yaml("v2", false), "v2").unwrap();
        assert_ne!(v1.revision(), v2.revision());
        let broken = Fleet::from_yaml_str(&s.yaml("v2", true), "v2").unwrap();
        assert_eq!(broken.app.command.words().unwrap()[0], "sh");
    }

    #[test]
    fn mosquitto_gets_its_config_and_port() {
        let mut s = spec(Strategy::Naive);
        s.app = AppKind::Mosquitto {
            mosquitto: "/usr/sbin/mosquitto".into(),
            config: "/tmp/d/mosquitto.conf".into(),
        };
        let f = Fleet::from_yaml_str(&s.yaml("v1", false), "m").unwrap();
        assert_eq!(
            f.app.command.words().unwrap(),
            [
                "/usr/sbin/mosquitto",
                "-c",
                "/tmp/d/mosquitto.conf",
                "-p",
                "{port}"
            ]
        );
    }

    #[test]
    fn the_http_app_serves_http_in_an_http_fleet() {
        let mut s = spec(Strategy::BlueGreen);
        s.app = AppKind::Http {
            sluice: "/bin/sluice".into(),
        };
        let text = s.yaml("v1", false);
        assert!(text.contains("protocol: http\n"), "{text}");
        let f = Fleet::from_yaml_str(&text, "h").unwrap();
        assert_eq!(
            f.app.command.words().unwrap(),
            ["/bin/sluice", "serve-http", "--port", "{port}"]
        );
        assert!(
            spec(Strategy::BlueGreen)
                .yaml("v1", false)
                .contains("protocol: mqtt\n")
        );
    }

    #[test]
    fn a_start_delay_wraps_the_command_in_sh() {
        let mut s = spec(Strategy::BlueGreen);
        s.start_delay_seconds = 2;
        let f = Fleet::from_yaml_str(&s.yaml("v1", false), "d").unwrap();
        assert_eq!(
            f.app.command.words().unwrap(),
            [
                "sh",
                "-c",
                "sleep 2; exec \"$0\" \"$@\"",
                "/opt/my tools/sluice",
                "broker",
                "--port",
                "{port}"
            ]
        );
        // Really runs the program late, with its arguments intact.
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 0; exec \"$0\" \"$@\"", "echo", "a b", "{port}"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b {port}\n");
    }
}
