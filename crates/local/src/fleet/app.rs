//! The `app` section: the program each instance runs, its environment, how to
//! tell it is ready and how long it may take to stop; and the `{placeholder}`s
//! sluice fills in per instance.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use sluice_core::spec::{InvalidField, MAX_SECONDS, check_range};

use crate::process::Probe;

/// Default seconds between SIGTERM and SIGKILL when an instance stops (as Kubernetes).
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i32 = 30;

/// The placeholders `app.command` and `app.env` values may contain.
pub const PLACEHOLDERS: [&str; 4] = ["{port}", "{probePort}", "{instance}", "{revision}"];

/// The program each instance runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct App {
    /// The program and its arguments: one string split into words like a shell
    /// does (quotes group, nothing is expanded), or a list of arguments. Must
    /// contain `{port}` (here or in `env`): the instance listens on the port
    /// sluice chose.
    #[serde(default)]
    pub command: AppCommand,
    /// Extra environment variables (the instance inherits sluice's environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How sluice tells an instance is ready to serve. Default: `tcp: {}`.
    #[serde(default)]
    pub readiness: Readiness,
    /// Seconds between SIGTERM and SIGKILL when an instance is stopped. Default 30.
    #[serde(default = "default_grace")]
    pub termination_grace_period_seconds: i32,
}

fn default_grace() -> i32 {
    DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS
}

/// `app.command`: a command line or a list of arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum AppCommand {
    /// `"my-server --port {port}"`, split into words like a shell (no expansion).
    Line(String),
    /// `["my-server", "--port", "{port}"]`.
    Args(Vec<String>),
}

impl Default for AppCommand {
    /// No command: validation then says it is missing.
    fn default() -> Self {
        AppCommand::Args(Vec::new())
    }
}

impl<'de> Deserialize<'de> for AppCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AppCommand;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a command line such as \"my-server --port {port}\" or a list of \
                     arguments such as [my-server, --port, \"{port}\"]",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AppCommand, E> {
                Ok(AppCommand::Line(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AppCommand, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    args.push(arg);
                }
                Ok(AppCommand::Args(args))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl AppCommand {
    /// The words of the command, before placeholders are filled in.
    pub fn words(&self) -> Result<Vec<String>, InvalidField> {
        match self {
            AppCommand::Args(args) => Ok(args.clone()),
            AppCommand::Line(line) => shell_words::split(line).map_err(|_| {
                InvalidField::new(
                    "command",
                    format!(
                        "has an unclosed quote (got {line:?}); close it, or write the \
                         command as a list of arguments"
                    ),
                )
            }),
        }
    }
}

/// `app.readiness`: how sluice tells an instance is ready to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Readiness {
    /// `tcp: {}`: ready once the instance port accepts a TCP connection.
    Tcp(TcpProbe),
    /// `http: {path: /healthz}`: ready once a GET answers 2xx.
    Http(HttpProbe),
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::Tcp(TcpProbe {})
    }
}

/// `readiness.tcp`: no settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {}

/// `readiness.http`: an HTTP GET that must answer 2xx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    /// The path to GET. Default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// `"{port}"` (the default: the instance port) or `"{probePort}"`: a second
    /// port sluice chooses per instance, passed to the app through the same
    /// placeholder in `app.command` or `app.env`. A fixed number cannot work:
    /// during an upgrade twice `replicas` instances run on this host at once.
    #[serde(default = "default_probe_port")]
    pub port: String,
}

fn default_path() -> String {
    "/".to_owned()
}

fn default_probe_port() -> String {
    "{port}".to_owned()
}

/// What sluice chose for one instance, to fill in the placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceVars {
    /// `{port}`: the port the instance must listen on.
    pub port: u16,
    /// `{probePort}`: a second port, for an HTTP readiness endpoint; `None` when
    /// the fleet does not use it.
    pub probe_port: Option<u16>,
    /// `{instance}`: the instance's name.
    pub instance: String,
    /// `{revision}`: the revision it runs ([`crate::Fleet::revision`]).
    pub revision: String,
}

/// A command with its placeholders filled in, ready to spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedCommand {
    /// The program (looked up on PATH when it has no `/`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Environment variables to add.
    pub env: BTreeMap<String, String>,
}

impl App {
    /// Whether the app needs a `{probePort}`.
    pub fn uses_probe_port(&self) -> bool {
        matches!(&self.readiness, Readiness::Http(h) if h.port == "{probePort}")
    }

    /// The command and environment of one instance, placeholders filled in.
    pub fn render(&self, vars: &InstanceVars) -> Result<RenderedCommand, InvalidField> {
        let fill = |s: &str| fill_placeholders(s, vars);
        let mut words = self
            .command
            .words()
            .map_err(|e| e.within("app"))?
            .into_iter()
            .map(|w| fill(&w));
        let program = words
            .next()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| InvalidField::new("app.command", "is missing"))?;
        Ok(RenderedCommand {
            program,
            args: words.collect(),
            env: self.env.iter().map(|(k, v)| (k.clone(), fill(v))).collect(),
        })
    }

    /// The readiness probe of the instance `vars` describes, on 127.0.0.1.
    pub fn probe(&self, vars: &InstanceVars) -> Probe {
        let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        match &self.readiness {
            Readiness::Tcp(_) => Probe::Tcp(at(vars.port)),
            Readiness::Http(h) => Probe::Http {
                addr: at(if self.uses_probe_port() {
                    vars.probe_port.unwrap_or(vars.port)
                } else {
                    vars.port
                }),
                path: h.path.clone(),
            },
        }
    }

    /// Field paths below `app`.
    pub(crate) fn validate(&self) -> Result<(), InvalidField> {
        let words = self.command.words()?;
        if words.first().is_none_or(|w| w.trim().is_empty()) {
            return Err(InvalidField::new(
                "command",
                "is missing: give the program each instance runs and its arguments, \
                 e.g. \"my-server --port {port}\"",
            ));
        }
        for word in &words {
            check_placeholders("command", word)?;
        }
        for (key, value) in &self.env {
            let field = format!("env.{key}");
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(InvalidField::new(
                    field,
                    "is not a valid environment variable name (empty, or contains '=')",
                ));
            }
            check_placeholders(&field, value)?;
        }
        let mentions = |p: &str| {
            words.iter().any(|w| w.contains(p)) || self.env.values().any(|v| v.contains(p))
        };
        if !mentions("{port}") {
            return Err(InvalidField::new(
                "command",
                "must contain the {port} placeholder (or app.env must): each instance \
                 listens on a port sluice chooses, e.g. \"my-server --port {port}\"",
            ));
        }
        if let Readiness::Http(h) = &self.readiness {
            if !h.path.starts_with('/') {
                return Err(InvalidField::new(
                    "readiness.http.path",
                    format!("must start with '/' (got {:?})", h.path),
                ));
            }
            match h.port.as_str() {
                "{port}" => {}
                "{probePort}" if mentions("{probePort}") => {}
                "{probePort}" => {
                    return Err(InvalidField::new(
                        "readiness.http.port",
                        "is \"{probePort}\" but neither app.command nor app.env \
                         contains {probePort}, so the app cannot know which port to \
                         answer on",
                    ));
                }
                other => {
                    return Err(InvalidField::new(
                        "readiness.http.port",
                        format!(
                            "must be \"{{port}}\" or \"{{probePort}}\" (got {other:?}): a fixed \
                             port cannot work, several instances run on this host at once"
                        ),
                    ));
                }
            }
        }
        check_range(
            "terminationGracePeriodSeconds",
            self.termination_grace_period_seconds.into(),
            0,
            MAX_SECONDS.into(),
        )
    }
}

/// Rejects `{name}` placeholders sluice does not know (typos like `{Port}`).
fn check_placeholders(field: &str, text: &str) -> Result<(), InvalidField> {
    for name in placeholder_names(text) {
        let placeholder = format!("{{{name}}}");
        if !PLACEHOLDERS.contains(&placeholder.as_str()) {
            return Err(InvalidField::new(
                field,
                format!(
                    "unknown placeholder {placeholder}; the known ones are {}",
                    PLACEHOLDERS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The names inside `{name}` where name is a letter followed by letters, digits or `_`.
fn placeholder_names(text: &str) -> impl Iterator<Item = &str> {
    text.split('{').skip(1).filter_map(|rest| {
        let name = &rest[..rest.find('}')?];
        let mut chars = name.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        ok.then_some(name)
    })
}

fn fill_placeholders(text: &str, vars: &InstanceVars) -> String {
    let probe_port = vars.probe_port.map(|p| p.to_string()).unwrap_or_default();
    text.replace("{port}", &vars.port.to_string())
        .replace("{probePort}", &probe_port)
        .replace("{instance}", &vars.instance)
        .replace("{revision}", &vars.revision)
}
