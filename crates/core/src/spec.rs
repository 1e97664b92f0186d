//! The upgrade strategy a user writes, in the local fleet file and in the
//! Kubernetes `GracefulSet` resource alike.
//!
//! Field names and defaults follow the EMQX Operator's `updateStrategy`, so its users
//! feel at home. Numbers are signed on purpose: a negative value must reach
//! [`UpdateStrategy::validate`], which names the field and the allowed range, instead
//! of failing deep inside a deserializer with a type error.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Default seconds to wait after the new set is ready (and traffic switched) before
/// the first old instance is evacuated (EMQX Operator: 10).
pub const DEFAULT_INITIAL_DELAY_SECONDS: i32 = 10;
/// Default connections evicted per second from an evacuating instance (EMQX: 1000).
pub const DEFAULT_CONN_EVICT_RATE: i32 = 1000;
/// Default sessions evicted per second from an evacuating instance (EMQX: 1000).
pub const DEFAULT_SESS_EVICT_RATE: i32 = 1000;
/// Default seconds to wait, after the connections are gone, for clients to take
/// over their sessions elsewhere before sessions are evicted (EMQX: 10).
pub const DEFAULT_WAIT_TAKEOVER: i32 = 10;
/// Default seconds an evacuating instance keeps accepting before it evicts, so that
/// load balancers notice it is leaving. 0, because sluice switches traffic away
/// before it evacuates and `initialDelaySeconds` already covers propagation.
pub const DEFAULT_WAIT_HEALTH_CHECK: i32 = 0;
/// Default seconds a new set has to become ready before the upgrade is aborted
/// (Kubernetes Deployment: 600).
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;

/// Upper bound for any rate, to keep a typo (an extra zero or two) from passing.
pub const MAX_RATE: i32 = 1_000_000;
/// Upper bound for any duration in seconds (one day).
pub const MAX_SECONDS: i32 = 86_400;

/// How an upgrade replaces old instances by new ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStrategy {
    /// `BlueGreen` (a full new set, then evacuate the old one) or `Rolling`
    /// (`Naive` exists only for the demo's comparison and cannot be written, see
    /// [`StrategyType::Naive`]).
    #[serde(rename = "type", default)]
    pub kind: StrategyType,
    /// Seconds between "new set ready and serving" and the first evacuation.
    #[serde(default = "default_initial_delay")]
    pub initial_delay_seconds: i32,
    /// How fast connections and sessions leave an old instance.
    #[serde(default)]
    pub evacuation_strategy: EvacuationStrategy,
    /// Surge and unavailability budget of the `Rolling` strategy.
    #[serde(default)]
    pub rolling_update: RollingUpdate,
    /// Seconds the new set has to become ready before the upgrade is aborted.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline_seconds: i32,
}

/// The upgrade strategies: the two sluice offers, and one it exists to prevent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum StrategyType {
    /// Bring up a full new set, switch traffic, evacuate old instances one at a time.
    #[default]
    BlueGreen,
    /// Replace instances a few at a time within `maxSurge`/`maxUnavailable`,
    /// evacuating each old instance before it is deleted.
    Rolling,
    /// **For comparison only — not an upgrade strategy to use.** The plain rolling
    /// restart Kubernetes does for a StatefulSet: delete one old instance outright
    /// (no evacuation: its clients are cut and reconnect wherever they can, often
    /// to the next old instance, which cuts them again), create its replacement,
    /// wait until it is ready, then the next one. Capacity dips to `replicas − 1`
    /// at every step. It exists so that `sluice demo` can show what sluice
    /// prevents; see `docs/demo.md`.
    ///
    /// Users cannot select it: it does not deserialize (a fleet file or a CRD
    /// saying `Naive` is refused) and is absent from the JSON schema. Only the
    /// demo asks for it, explicitly (`sluice up`'s hidden `--naive-for-comparison`).
    #[serde(skip_deserializing)]
    #[schemars(skip)]
    Naive,
}

/// The pace at which an old instance is emptied (EMQX's node evacuation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvacuationStrategy {
    /// Connections evicted per second.
    #[serde(default = "default_conn_evict_rate")]
    pub conn_evict_rate: i32,
    /// Sessions evicted per second.
    #[serde(default = "default_sess_evict_rate")]
    pub sess_evict_rate: i32,
    /// Seconds to wait for sessions to be taken over before evicting them.
    #[serde(default = "default_wait_takeover")]
    pub wait_takeover: i32,
    /// Seconds to keep accepting before evicting, so load balancers catch up.
    #[serde(default = "default_wait_health_check")]
    pub wait_health_check: i32,
}

/// The `Rolling` strategy's budget, with Kubernetes' semantics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdate {
    /// Instances allowed above `replicas` during the update (count or percent, rounds up).
    #[serde(default = "default_quarter")]
    pub max_surge: IntOrPercent,
    /// Instances allowed below `replicas` during the update (count or percent, rounds down).
    #[serde(default = "default_quarter")]
    pub max_unavailable: IntOrPercent,
}

/// A count (`3`) or a percentage of the replica count (`"25%"`), like Kubernetes'
/// `IntOrString` for `maxSurge`/`maxUnavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOrPercent {
    /// An absolute number of instances.
    Count(i32),
    /// A percentage of the replica count.
    Percent(i32),
}

fn default_initial_delay() -> i32 {
    DEFAULT_INITIAL_DELAY_SECONDS
}
fn default_progress_deadline() -> i32 {
    DEFAULT_PROGRESS_DEADLINE_SECONDS
}
fn default_conn_evict_rate() -> i32 {
    DEFAULT_CONN_EVICT_RATE
}
fn default_sess_evict_rate() -> i32 {
    DEFAULT_SESS_EVICT_RATE
}
fn default_wait_takeover() -> i32 {
    DEFAULT_WAIT_TAKEOVER
}
fn default_wait_health_check() -> i32 {
    DEFAULT_WAIT_HEALTH_CHECK
}
fn default_quarter() -> IntOrPercent {
    IntOrPercent::Percent(25)
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        UpdateStrategy {
            kind: StrategyType::default(),
            initial_delay_seconds: DEFAULT_INITIAL_DELAY_SECONDS,
            evacuation_strategy: EvacuationStrategy::default(),
            rolling_update: RollingUpdate::default(),
            progress_deadline_seconds: DEFAULT_PROGRESS_DEADLINE_SECONDS,
        }
    }
}

impl Default for EvacuationStrategy {
    fn default() -> Self {
        EvacuationStrategy {
            conn_evict_rate: DEFAULT_CONN_EVICT_RATE,
            sess_evict_rate: DEFAULT_SESS_EVICT_RATE,
            wait_takeover: DEFAULT_WAIT_TAKEOVER,
            wait_health_check: DEFAULT_WAIT_HEALTH_CHECK,
        }
    }
}

impl Default for RollingUpdate {
    fn default() -> Self {
        RollingUpdate {
            max_surge: default_quarter(),
            max_unavailable: default_quarter(),
        }
    }
}

/// A value a user gave that is out of range: names the field (by its path in the
/// spec, e.g. `updateStrategy.evacuationStrategy.connEvictRate`), the value, and
/// what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    /// Dotted path of the field, in the spec's camelCase names.
    pub field: String,
    /// What is wrong and what is allowed, e.g. "must be > 0 (got -5)".
    pub problem: String,
}

impl InvalidField {
    /// An error for `field` saying `problem`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error with `prefix.` put before the field path, for nesting.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// Checks `value` lies in `min..=max`, naming `field` otherwise.
pub fn check_range(field: &str, value: i64, min: i64, max: i64) -> Result<(), InvalidField> {
    if value < min || value > max {
        let allowed = if max == i64::from(i32::MAX) {
            format!("at least {min}")
        } else {
            format!("from {min} to {max}")
        };
        return Err(InvalidField::new(
            field,
            format!("must be {allowed} (got {value})"),
        ));
    }
    Ok(())
}

impl UpdateStrategy {
    /// Checks every field; the error names the first bad field by its path below
    /// `updateStrategy` and says the allowed range.
    pub fn validate(&self) -> Result<(), InvalidField> {
        check_range(
            "initialDelaySeconds",
            self.initial_delay_seconds.into(),
            0,
            MAX_SECONDS.into(),
        )?;
        check_range(
            "progressDeadlineSeconds",
            self.progress_deadline_seconds.into(),
            1,
            MAX_SECONDS.into(),
        )?;
        self.evacuation_strategy
            .validate()
            .map_err(|e| e.within("evacuationStrategy"))?;
        self.rolling_update
            .validate()
            .map_err(|e| e.within("rollingUpdate"))
    }
}

impl EvacuationStrategy {
    /// Rates in `1..=MAX_RATE`, waits in `0..=MAX_SECONDS`.
    pub fn validate(&self) -> Result<(), InvalidField> {
        let rate = |name, v: i32| check_range(name, v.into(), 1, MAX_RATE.into());
        let secs = |name, v: i32| check_range(name, v.into(), 0, MAX_SECONDS.into());
        rate("connEvictRate", self.conn_evict_rate)?;
        rate("sessEvictRate", self.sess_evict_rate)?;
        secs("waitTakeover", self.wait_takeover)?;
        secs("waitHealthCheck", self.wait_health_check)
    }
}

impl RollingUpdate {
    /// Counts ≥ 0, percentages 0–100%, and not both zero (nothing could move).
    pub fn validate(&self) -> Result<(), InvalidField> {
        self.max_surge.validate("maxSurge")?;
        self.max_unavailable.validate("maxUnavailable")?;
        if self.max_surge.is_zero() && self.max_unavailable.is_zero() {
            return Err(InvalidField::new(
                "maxSurge",
                "maxSurge and maxUnavailable cannot both be 0: the update could never \
                 make progress; set maxSurge to at least 1",
            ));
        }
        Ok(())
    }
}

impl IntOrPercent {
    /// Resolves against `replicas`: percentages round up when `round_up` (maxSurge)
    /// and down otherwise (maxUnavailable), as Kubernetes does.
    pub fn resolve(self, replicas: i32, round_up: bool) -> i32 {
        match self {
            IntOrPercent::Count(n) => n,
            IntOrPercent::Percent(p) => {
                let scaled = i64::from(p) * i64::from(replicas);
                let value = if round_up {
                    (scaled + 99).div_euclid(100)
                } else {
                    scaled.div_euclid(100)
                };
                i32::try_from(value).unwrap_or(i32::MAX)
            }
        }
    }

    fn is_zero(self) -> bool {
        matches!(self, IntOrPercent::Count(0) | IntOrPercent::Percent(0))
    }

    /// Checks a count is ≥ 0 and a percentage lies in 0–100%.
    pub fn validate(self, field: &str) -> Result<(), InvalidField> {
        match self {
            IntOrPercent::Count(n) => check_range(field, n.into(), 0, i32::MAX.into()),
            IntOrPercent::Percent(p) if !(0..=100).contains(&p) => Err(InvalidField::new(
                field,
                format!("must be a percentage from 0% to 100% (got {p}%)"),
            )),
            IntOrPercent::Percent(_) => Ok(()),
        }
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrPercent::Count(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for IntOrPercent {
    type Err = String;

    /// Parses `3` or `25%`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (digits, percent) = match s.strip_suffix('%') {
            Some(d) => (d.trim(), true),
            None => (s, false),
        };
        let n: i32 = digits.parse().map_err(|_| {
            format!("expected a whole number such as 3 or a percentage such as 25% (got {s:?})")
        })?;
        Ok(if percent {
            IntOrPercent::Percent(n)
        } else {
            IntOrPercent::Count(n)
        })
    }
}

impl Serialize for IntOrPercent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrPercent::Count(n) => serializer.serialize_i32(*n),
            IntOrPercent::Percent(_) => serializer.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IntOrPercent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number such as 3 or a percentage string such as \"25%\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrPercent, E> {
                i32::try_from(v)
                    .map(IntOrPercent::Count)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrPercent, E> {
                i32::try_from(v)
                    .map(IntOrPercent::Count)
                    .map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrPercent, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for IntOrPercent {
    fn schema_name() -> Cow<'static, str> {
        "IntOrPercent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+%$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_emqx_operator() {
        let s: UpdateStrategy = serde_json::from_str("{}").unwrap();
        assert_eq!(s, UpdateStrategy::default());
        assert_eq!(s.kind, StrategyType::BlueGreen);
        assert_eq!(s.initial_delay_seconds, 10);
        assert_eq!(s.evacuation_strategy.conn_evict_rate, 1000);
        assert_eq!(s.evacuation_strategy.sess_evict_rate, 1000);
        assert_eq!(s.evacuation_strategy.wait_takeover, 10);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn camel_case_fields_and_int_or_percent() {
        let s: UpdateStrategy = serde_json::from_str(
            r#"{"type":"Rolling","initialDelaySeconds":3,
                "evacuationStrategy":{"connEvictRate":200,"waitTakeover":5},
                "rollingUpdate":{"maxSurge":1,"maxUnavailable":"0%"}}"#,
        )
        .unwrap();
        assert_eq!(s.kind, StrategyType::Rolling);
        assert_eq!(s.evacuation_strategy.conn_evict_rate, 200);
        assert_eq!(s.evacuation_strategy.sess_evict_rate, 1000);
        assert_eq!(s.rolling_update.max_surge, IntOrPercent::Count(1));
        assert_eq!(s.rolling_update.max_unavailable, IntOrPercent::Percent(0));
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["rollingUpdate"]["maxUnavailable"], "0%");
        assert_eq!(back["rollingUpdate"]["maxSurge"], 1);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err =
            serde_json::from_str::<UpdateStrategy>(r#"{"evacuationStrategy":{"connEvictRat":5}}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("connEvictRat"), "{err}");
    }

    #[test]
    fn validation_names_the_field_and_range() {
        let mut s = UpdateStrategy::default();
        s.evacuation_strategy.conn_evict_rate = -5;
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "evacuationStrategy.connEvictRate");
        assert!(e.to_string().contains("from 1 to 1000000 (got -5)"), "{e}");

        let mut s = UpdateStrategy::default();
        s.rolling_update.max_surge = IntOrPercent::Percent(150);
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "rollingUpdate.maxSurge");
        assert!(e.to_string().contains("0% to 100% (got 150%)"), "{e}");

        let s = UpdateStrategy {
            rolling_update: RollingUpdate {
                max_surge: IntOrPercent::Count(0),
                max_unavailable: IntOrPercent::Percent(0),
            },
            ..UpdateStrategy::default()
        };
        let e = s.validate().unwrap_err();
        assert!(e.to_string().contains("cannot both be 0"), "{e}");

        let mut s = UpdateStrategy::default();
        s.evacuation_strategy.wait_takeover = -1;
        assert_eq!(
            s.validate().unwrap_err().field,
            "evacuationStrategy.waitTakeover"
        );
    }

    #[test]
    fn bad_percent_strings_are_explained() {
        let err = serde_json::from_str::<IntOrPercent>(r#""many""#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("percentage such as 25%"), "{err}");
    }

    #[test]
    fn schema_mentions_every_field() {
        let schema = serde_json::to_string(&schemars::schema_for!(UpdateStrategy)).unwrap();
        for field in [
            "initialDelaySeconds",
            "connEvictRate",
            "sessEvictRate",
            "waitTakeover",
            "waitHealthCheck",
            "maxSurge",
            "maxUnavailable",
            "progressDeadlineSeconds",
            "x-kubernetes-int-or-string",
        ] {
            assert!(schema.contains(field), "schema lacks {field}: {schema}");
        }
    }
}
