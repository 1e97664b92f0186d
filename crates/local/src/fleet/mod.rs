//! The fleet file: what `sluice up` runs, written in YAML with the same field
//! names as the Kubernetes `GracefulSet` resource.
//!
//! ```yaml
//! name: demo
//! replicas: 3
//! listen: 127.0.0.1:1883
//! protocol: mqtt
//! version: "1"
//! app:
//!   command: sluice broker --port {port}
//! ```
//!
//! [`Fleet::from_yaml_str`] parses and validates; every error names the field by
//! its path (`app.command`) and the line of the file it is on. The format is
//! documented for users in `docs/fleet.md`.

mod app;
mod error;
mod lines;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use sluice_core::spec::{InvalidField, UpdateStrategy, check_range};

pub use app::{
    App, AppCommand, HttpProbe, InstanceVars, PLACEHOLDERS, Readiness, RenderedCommand, TcpProbe,
};
pub use error::FleetError;

/// Most instances a fleet may ask for: one host runs them all.
pub const MAX_REPLICAS: i32 = 1000;

/// A validated fleet file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fleet {
    /// The fleet's name: lowercase letters, digits and `-` (it names instances and,
    /// on Kubernetes, the resource).
    pub name: String,
    /// How many instances serve at once (outside an upgrade). Default 1.
    #[serde(default = "default_replicas")]
    pub replicas: i32,
    /// The front address clients connect to, e.g. `127.0.0.1:1883`.
    #[serde(deserialize_with = "deserialize_listen")]
    #[schemars(with = "String")]
    pub listen: SocketAddr,
    /// What the clients speak; decides how a connection is evicted gracefully.
    /// Part of the revision: changing it is an upgrade.
    #[serde(default)]
    pub protocol: Protocol,
    /// The program each instance runs.
    pub app: App,
    /// A label for what `app` runs (e.g. the program's release). Changing it, or
    /// anything in `app`, makes a new revision and so an upgrade.
    #[serde(default)]
    pub version: String,
    /// How an upgrade proceeds; every field has a default.
    #[serde(default)]
    pub update_strategy: UpdateStrategy,
    /// Where the fleet was read from, for errors found later (a port in use).
    #[serde(skip)]
    origin: Origin,
}

/// The protocol clients speak through the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT 3.1.1 or 5: MQTT 5 clients get a DISCONNECT with a reason code when
    /// evicted, 3.1.1 clients a close at a packet boundary.
    Mqtt,
    /// Any TCP protocol: an evicted connection is closed.
    #[default]
    Tcp,
    /// HTTP/1.x, WebSocket, HTTP/2 cleartext and gRPC: evicted between
    /// exchanges (`Connection: close`, a Close frame, a two-phase GOAWAY).
    Http,
}

impl Protocol {
    /// The spelling of the file and of `sluice proxy --protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
        }
    }
}

/// The source text and its name, kept to point errors at lines.
#[derive(Debug, Clone, Default)]
struct Origin {
    name: String,
    text: String,
}

fn default_replicas() -> i32 {
    1
}

fn deserialize_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "listen: expected an IP address and a port such as 127.0.0.1:1883 or \
             [::1]:1883 (got {text:?}; host names are not resolved)"
        ))
    })
}

impl Fleet {
    /// Parses and validates a fleet file's text; `source_name` (usually the file
    /// name) starts every error message.
    pub fn from_yaml_str(text: &str, source_name: &str) -> Result<Fleet, FleetError> {
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Err(FleetError::Syntax {
                source_name: source_name.to_owned(),
                line: None,
                column: None,
                message: "the fleet file is empty; it needs at least name, listen and \
                          app.command (see docs/fleet.md)"
                    .to_owned(),
            });
        }
        let mut fleet: Fleet = serde_saphyr::from_str(text)
            .map_err(|e| FleetError::from_yaml(source_name, text, &e))?;
        fleet.origin = Origin {
            name: source_name.to_owned(),
            text: text.to_owned(),
        };
        fleet.validate().map_err(|e| fleet.error(e))?;
        Ok(fleet)
    }

    /// Reads, parses and validates the fleet file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Fleet, FleetError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
            path: path.to_owned(),
            source,
        })?;
        Fleet::from_yaml_str(&text, &path.display().to_string())
    }

    /// The revision of what instances run: the first 10 hex digits of the 64-bit
    /// FNV-1a hash of the canonical JSON of `{"app": …, "protocol": …,
    /// "version": …}`. Stable across processes, machines and Rust versions;
    /// changes whenever `app`, `protocol` or `version` does, and only then.
    /// `protocol` is in it because each instance's evacuator is started with it:
    /// a changed protocol must replace every instance (an upgrade), never leave
    /// old instances evicting the old way beside new ones.
    pub fn revision(&self) -> String {
        #[derive(Serialize)]
        struct Revisioned<'a> {
            app: &'a App,
            protocol: Protocol,
            version: &'a str,
        }
        // Serializing the typed struct (not a `serde_json::Value`) fixes the key
        // order: declaration order for structs, sorted for `env` (a BTreeMap).
        let canonical = serde_json::to_string(&Revisioned {
            app: &self.app,
            protocol: self.protocol,
            version: &self.version,
        })
        .unwrap_or_default();
        format!("{:016x}", fnv1a64(canonical.as_bytes()))[..10].to_owned()
    }

    /// Checks that the front address can be listened on now (nothing else holds
    /// it), so `sluice up` fails before starting anything. Binds and releases it.
    pub fn check_listen_available(&self) -> Result<(), FleetError> {
        match TcpListener::bind(self.listen) {
            Ok(_) => Ok(()),
            Err(e) => {
                let problem = if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!(
                        "{} is already in use by another process; stop that process or \
                         choose another port",
                        self.listen
                    )
                } else {
                    format!("cannot listen on {}: {e}", self.listen)
                };
                Err(self.error(InvalidField::new("listen", problem)))
            }
        }
    }

    /// Checks every field after parsing; the error names the first bad field.
    fn validate(&self) -> Result<(), InvalidField> {
        validate_name(&self.name)?;
        check_range("replicas", self.replicas.into(), 1, MAX_REPLICAS.into())?;
        self.app.validate().map_err(|e| e.within("app"))?;
        self.update_strategy
            .validate()
            .map_err(|e| e.within("updateStrategy"))
    }

    /// A [`FleetError`] for `e`, located at its field's line in the source text.
    fn error(&self, e: InvalidField) -> FleetError {
        let path: Vec<&str> = e.field.split('.').collect();
        FleetError::Invalid {
            source_name: self.origin.name.clone(),
            line: lines::line_of(&self.origin.text, &path),
            field: e.field,
            problem: e.problem,
        }
    }
}

fn validate_name(name: &str) -> Result<(), InvalidField> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            "name",
            format!(
                "must be 1 to 63 lowercase letters, digits or '-', starting with a letter \
                 and not ending with '-', e.g. \"demo\" (got {name:?})"
            ),
        ))
    }
}

/// 64-bit FNV-1a: tiny, specified, and the same everywhere.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests;
