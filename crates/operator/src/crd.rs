//! The `GracefulSet` custom resource (`sluice.dev/v1alpha1`), generated from these
//! Rust types by kube-derive; `sluice operator crd` prints it.
//!
//! The spec embeds `sluice_core`'s [`UpdateStrategy`] as is (the same type the local
//! fleet file uses); what OpenAPI cannot say about it (ranges, the strategies a user
//! may pick, `maxSurge`/`maxUnavailable` not both zero) is added to its schema here,
//! so the API server refuses a bad resource with the field named.

use k8s_openapi::api::core::v1::{PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_core::engine::{NodeEvacuationStatus, Phase};
use sluice_core::spec::{MAX_RATE, MAX_SECONDS, UpdateStrategy};

use sluice_core::time::Timestamp;

/// The API group.
pub const GROUP: &str = "sluice.dev";
/// The finalizer that stops running evacuations when a set is deleted.
pub const FINALIZER: &str = "sluice.dev/evacuate";
/// Default `revisionHistoryLimit` (as a Deployment's).
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// Default sidecar admin API port (`sluice proxy --admin`'s default).
pub const DEFAULT_ADMIN_PORT: i32 = 9190;
/// Default EMQX REST API port.
pub const DEFAULT_EMQX_API_PORT: i32 = 18083;
/// Default seconds endpoints take to forget a terminating pod.
pub const DEFAULT_DRAIN_DELAY_SECONDS: i32 = 5;
/// Default connections one pod is expected to hold at most (sizes the drain).
pub const DEFAULT_MAX_CONNECTIONS_PER_POD: i32 = 10_000;

/// A set of pods that serve long-lived connections and are upgraded without a
/// reconnect storm: blue-green or surge-rolling, each old pod evacuated at a chosen
/// rate before it is deleted.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
// Several printer columns share a `type_`: not a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "GracefulSet",
    namespaced,
    status = "GracefulSetStatus",
    shortname = "gset",
    category = "sluice",
    derive = "PartialEq",
    doc = "A set of pods serving long-lived connections, upgraded by evacuating each old pod at a chosen rate",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Serving",
        type_ = "integer",
        json_path = ".status.servingReplicas"
    ),
    printcolumn(
        name = "Current",
        type_ = "string",
        json_path = ".status.currentRevision"
    ),
    printcolumn(
        name = "Update",
        type_ = "string",
        json_path = ".status.updateRevision"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".status.phase",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GracefulSetSpec {
    /// Desired number of pods.
    #[schemars(range(min = 0, max = 100000))]
    pub replicas: i32,
    /// Selects the set's pods; must match the template's labels (as a Deployment's).
    pub selector: LabelSelector,
    /// The pods' template, as a Deployment's. Its hash is the revision: any change
    /// starts an upgrade.
    pub template: PodTemplateSpec,
    /// What the connections carry: decides how the sidecar evicts (MQTT at a packet
    /// boundary, TCP by a clean close).
    #[serde(default)]
    pub protocol: Protocol,
    /// How an upgrade moves from one revision to the next (sluice's strategy type,
    /// the EMQX Operator's field names).
    #[serde(default)]
    #[schemars(schema_with = "update_strategy_schema")]
    pub update_strategy: UpdateStrategy,
    /// What evacuates a pod: the injected `sluice proxy` sidecar, or EMQX itself.
    pub evacuator: Evacuator,
    /// Old revisions' templates kept (as ControllerRevisions) beyond those pods run.
    #[serde(default = "default_revision_history_limit")]
    #[schemars(range(min = 0, max = 1000))]
    pub revision_history_limit: i32,
    /// While true, the operator observes and publishes status but changes nothing:
    /// no pod is created, switched, evacuated or deleted (evacuations already
    /// running go on at their pace).
    #[serde(default)]
    pub paused: bool,
}

fn default_revision_history_limit() -> i32 {
    DEFAULT_REVISION_HISTORY_LIMIT
}

/// What the connections carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT 3.1.1 and 5: evicted at a packet boundary.
    #[default]
    Mqtt,
    /// Opaque TCP: evicted by a clean close.
    Tcp,
}

impl Protocol {
    /// The `sluice proxy --protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Tcp => "tcp",
        }
    }
}

/// Exactly one evacuator.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.sidecar) != has(self.emqx)",
    "message": "set exactly one of evacuator.sidecar or evacuator.emqx",
    "reason": "FieldValueInvalid",
}]))]
pub struct Evacuator {
    /// Inject `sluice proxy` as a native sidecar in front of the app's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarEvacuator>,
    /// EMQX evacuates its own nodes through its REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emqx: Option<EmqxEvacuator>,
}

/// The injected `sluice proxy` sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.port != self.appPort && self.port != self.adminPort && self.appPort != self.adminPort",
    "message": "evacuator.sidecar: port, appPort and adminPort must be three different ports",
    "reason": "FieldValueInvalid",
}]))]
pub struct SidecarEvacuator {
    /// Image containing the `sluice` binary (its entrypoint or `/usr/local/bin/sluice`).
    pub image: String,
    /// Port the sidecar listens on for clients: point the Service's `targetPort` here.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The app container's port the sidecar forwards to (on 127.0.0.1); the
    /// template must declare it as a `containerPort`.
    #[schemars(range(min = 1, max = 65535))]
    pub app_port: i32,
    /// The sidecar's admin API port (on the pod IP, behind a bearer token).
    #[serde(default = "default_admin_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin_port: i32,
    /// Seconds endpoints and load balancers take to forget a terminating pod; the
    /// drain waits this long before evicting.
    #[serde(default = "default_drain_delay")]
    #[schemars(range(min = 0, max = 3600))]
    pub drain_delay_seconds: i32,
    /// Connections one pod is expected to hold at most: with `connEvictRate` it
    /// sizes the grace period a drain (`kubectl drain`, eviction) needs.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 0, max = 10000000))]
    pub max_connections_per_pod: i32,
    /// The sidecar container's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_admin_port() -> i32 {
    DEFAULT_ADMIN_PORT
}
fn default_drain_delay() -> i32 {
    DEFAULT_DRAIN_DELAY_SECONDS
}
fn default_max_connections() -> i32 {
    DEFAULT_MAX_CONNECTIONS_PER_POD
}

/// EMQX's own node evacuation (`/api/v5/load_rebalance/{node}/evacuation/start`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmqxEvacuator {
    /// Base URL of the EMQX REST API (e.g. a dashboard Service
    /// `http://emqx-dashboard:18083`); empty: each pod's own IP and `apiPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^http://[^/\s]+$"))]
    pub api_url: Option<String>,
    /// The REST API port on each pod when `apiUrl` is not set.
    #[serde(default = "default_emqx_api_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub api_port: i32,
    /// A Secret in the set's namespace with `username` and `password` (an EMQX API
    /// key and secret), sent as HTTP basic auth.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// The EMQX node name of a pod; `{podIP}`, `{pod}`, `{namespace}` are replaced.
    #[serde(default = "default_node_name")]
    pub node_name: String,
}

fn default_emqx_api_port() -> i32 {
    DEFAULT_EMQX_API_PORT
}
fn default_node_name() -> String {
    "emqx@{podIP}".to_owned()
}

/// The set's status: the engine's status in Kubernetes form, plus the few facts
/// the engine needs to resume (times, the evacuation order).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GracefulSetStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// Where the set is: `Stable`, `Provisioning`, `WaitingInitialDelay`,
    /// `Evacuating`, `Rolling`, `Aborting`, `Aborted`.
    #[serde(default)]
    pub phase: Phase,
    /// The revision the set was last entirely on (an abort returns to it).
    #[serde(default)]
    pub current_revision: String,
    /// The spec's revision.
    #[serde(default)]
    pub update_revision: String,
    /// Pods that exist and have not failed.
    #[serde(default)]
    pub replicas: i32,
    /// Of those, ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Of those, ready and serving new connections.
    #[serde(default)]
    pub serving_replicas: i32,
    /// Pods on `updateRevision`.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Of those, ready.
    #[serde(default)]
    pub updated_ready_replicas: i32,
    /// The label selector, as a string (the scale subresource, for an HPA).
    #[serde(default)]
    pub selector: String,
    /// When the update to `updateRevision` started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_started_at: Option<Timestamp>,
    /// BlueGreen: when new connections were switched to which revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_switch: Option<TrafficSwitch>,
    /// Since when the update waits for new pods to become ready with nothing else
    /// moving; `progressDeadlineSeconds` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
    /// Pods whose evacuation the engine started and which still exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evacuations: Vec<String>,
    /// The running evacuations as their evacuators report them (the EMQX
    /// Operator's shape: `node`, `state`, `stats.initial_connected`, …).
    #[serde(default)]
    pub node_evacuations_status: Vec<NodeEvacuationStatus>,
    /// `Available` and `Progressing` (and `InvalidSpec` when the spec is refused).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The moment new connections were switched to a revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSwitch {
    /// The revision that serves since.
    pub revision: String,
    /// When.
    pub at: Timestamp,
}

/// A Kubernetes condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Available`, `Progressing` or `InvalidSpec`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    /// For humans.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Time,
    /// The `metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `updateStrategy`'s schema: core's, with what the API server should enforce.
fn update_strategy_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<UpdateStrategy>();
    let secs = json!({ "minimum": 0, "maximum": MAX_SECONDS });
    let rate = json!({ "minimum": 1, "maximum": MAX_RATE });
    for (pointer, limits) in [
        ("/properties/initialDelaySeconds", secs.clone()),
        (
            "/properties/progressDeadlineSeconds",
            json!({ "minimum": 1, "maximum": MAX_SECONDS }),
        ),
        (
            "/properties/evacuationStrategy/properties/connEvictRate",
            rate.clone(),
        ),
        (
            "/properties/evacuationStrategy/properties/sessEvictRate",
            rate,
        ),
        (
            "/properties/evacuationStrategy/properties/waitTakeover",
            secs.clone(),
        ),
        (
            "/properties/evacuationStrategy/properties/waitHealthCheck",
            secs,
        ),
    ] {
        merge(&mut schema, pointer, limits);
    }
    // Naive exists for comparison in `sluice demo`, not for users: the variants'
    // one-of list is replaced by the two strategies a user may pick.
    if let Some(Value::Object(kind)) = schema.pointer_mut("/properties/type") {
        kind.retain(|k, _| k == "description" || k == "default");
        kind.insert("type".into(), json!("string"));
        kind.insert("enum".into(), json!(["BlueGreen", "Rolling"]));
    }
    for field in ["maxSurge", "maxUnavailable"] {
        merge(
            &mut schema,
            &format!("/properties/rollingUpdate/properties/{field}"),
            json!({ "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^(100|[1-9]?[0-9])%$" }
            ]}),
        );
    }
    // Heterogeneous equality: an int-or-string is compared with both spellings of
    // zero (the pattern above admits no other string spelling of 0%).
    let zero = |f: &str| format!("(has(self.{f}) && (self.{f} == 0 || self.{f} == '0%'))");
    merge(
        &mut schema,
        "/properties/rollingUpdate",
        json!({ "x-kubernetes-validations": [{
            "rule": format!("!({} && {})", zero("maxSurge"), zero("maxUnavailable")),
            "message": "maxSurge and maxUnavailable cannot both be 0: the update could never make progress; set maxSurge to at least 1",
            "fieldPath": ".maxSurge",
            "reason": "FieldValueInvalid",
        }]}),
    );
    schema
}

/// Merges the keys of `extra` into the object at `pointer`. The pointer is a
/// property of core's type: a missing one is a programming error caught by the
/// CRD snapshot test, so it panics there rather than silently dropping a rule.
fn merge(schema: &mut Schema, pointer: &str, extra: Value) {
    let Some(Value::Object(target)) = schema.pointer_mut(pointer) else {
        panic!("updateStrategy schema has no object at {pointer}");
    };
    if let Value::Object(extra) = extra {
        target.extend(extra);
    }
}

/// The CRD as installed: kube-derive's, with the descriptions of the embedded
/// `PodTemplateSpec` dropped (they are Kubernetes' own, `kubectl explain pod`
/// has them) so that the CRD is a fraction of the size. As JSON.
pub fn crd_json() -> Result<Value, String> {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(GracefulSet::crd()).map_err(|e| e.to_string())?;
    let template = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/template";
    let Some(Value::Object(schema)) = crd.pointer_mut(template) else {
        return Err(format!("the CRD has no schema at {template}"));
    };
    for value in schema.values_mut() {
        drop_descriptions(value);
    }
    Ok(crd)
}

fn drop_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("description").is_some_and(Value::is_string) {
                map.remove("description");
            }
            map.values_mut().for_each(drop_descriptions);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_descriptions),
        _ => {}
    }
}

/// The CRD as YAML, as `sluice operator crd` prints it and `deploy/` holds it.
pub fn crd_yaml() -> Result<String, String> {
    serde_saphyr::to_string(&crd_json()?).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use kube::core::cel::Validator;

    fn schema() -> Value {
        let crd = GracefulSet::crd();
        let version = &crd.spec.versions[0];
        serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap()
    }

    fn valid() -> Value {
        json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "GracefulSet",
            "metadata": {"name": "mqtt", "namespace": "default"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "mqtt"}},
                "template": {"metadata": {"labels": {"app": "mqtt"}},
                             "spec": {"containers": [{"name": "m", "image": "x"}]}},
                "updateStrategy": {"type": "Rolling",
                                   "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "evacuator": {"sidecar": {"image": "s", "port": 1883, "appPort": 1884,
                                          "adminPort": 9190}}
            }
        })
    }

    /// The CEL rules' messages for `object` (empty: accepted).
    fn cel_errors(object: &Value) -> Vec<String> {
        match Validator::new().validate(&schema(), object, None) {
            Ok(()) => vec![],
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn the_generated_crd_is_stable() {
        insta::assert_snapshot!(crd_yaml().unwrap());
    }

    #[test]
    fn names_subresources_and_columns() {
        let crd = serde_json::to_value(GracefulSet::crd()).unwrap();
        let spec = &crd["spec"];
        assert_eq!(spec["group"], "sluice.dev");
        assert_eq!(spec["scope"], "Namespaced");
        assert_eq!(spec["names"]["kind"], "GracefulSet");
        assert_eq!(spec["names"]["shortNames"], json!(["gset"]));
        assert_eq!(spec["names"]["categories"], json!(["sluice"]));
        let v = &spec["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(v["subresources"]["status"], json!({}));
        assert_eq!(
            v["subresources"]["scale"],
            json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                   "labelSelectorPath": ".status.selector"})
        );
        let columns: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            [
                "Phase", "Desired", "Ready", "Serving", "Current", "Update", "Age"
            ]
        );
    }

    #[test]
    fn the_schema_carries_ranges_and_enums() {
        let s = schema();
        let spec = &s["properties"]["spec"]["properties"];
        let num = |v: &Value| v.as_f64().unwrap();
        assert_eq!(num(&spec["replicas"]["minimum"]), 0.0);
        let strategy = &spec["updateStrategy"]["properties"];
        assert_eq!(strategy["type"]["enum"], json!(["BlueGreen", "Rolling"]));
        assert_eq!(num(&strategy["progressDeadlineSeconds"]["minimum"]), 1.0);
        let evac = &strategy["evacuationStrategy"]["properties"];
        assert_eq!(num(&evac["connEvictRate"]["minimum"]), 1.0);
        assert_eq!(num(&evac["connEvictRate"]["maximum"]), f64::from(MAX_RATE));
        assert_eq!(num(&evac["waitTakeover"]["minimum"]), 0.0);
        let surge = &strategy["rollingUpdate"]["properties"]["maxSurge"];
        assert_eq!(surge["x-kubernetes-int-or-string"], true);
        assert_eq!(spec["protocol"]["enum"], json!(["mqtt", "tcp"]));
        let sidecar = &spec["evacuator"]["properties"]["sidecar"]["properties"];
        assert_eq!(num(&sidecar["port"]["maximum"]), 65535.0);
        // Phase is an enum in the status too.
        let phase = &s["properties"]["status"]["properties"]["phase"];
        assert!(
            phase["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("Evacuating"))
        );
    }

    #[test]
    fn cel_refuses_surge_and_unavailable_both_zero() {
        assert_eq!(cel_errors(&valid()), Vec::<String>::new());
        for (surge, unavailable) in [
            (json!(0), json!(0)),
            (json!("0%"), json!(0)),
            (json!(0), json!("0%")),
        ] {
            let mut bad = valid();
            bad["spec"]["updateStrategy"]["rollingUpdate"] =
                json!({"maxSurge": surge, "maxUnavailable": unavailable});
            let errors = cel_errors(&bad);
            assert_eq!(errors.len(), 1, "{surge} {unavailable}: {errors:?}");
            assert!(
                errors[0].contains("maxSurge and maxUnavailable cannot both be 0"),
                "{errors:?}"
            );
        }
        let mut ok = valid();
        ok["spec"]["updateStrategy"]["rollingUpdate"] =
            json!({"maxSurge": "0%", "maxUnavailable": "25%"});
        assert_eq!(cel_errors(&ok), Vec::<String>::new());
    }

    #[test]
    fn cel_wants_exactly_one_evacuator_and_distinct_ports() {
        let mut both = valid();
        both["spec"]["evacuator"]["emqx"] = json!({"secretName": "s"});
        let errors = cel_errors(&both);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("set exactly one of evacuator.sidecar or evacuator.emqx")),
            "{errors:?}"
        );
        let mut none = valid();
        none["spec"]["evacuator"] = json!({});
        let errors = cel_errors(&none);
        assert!(
            errors.iter().all(|e| e.contains("set exactly one")),
            "{errors:?}"
        );
        let mut same = valid();
        same["spec"]["evacuator"]["sidecar"]["appPort"] = json!(1883);
        let errors = cel_errors(&same);
        assert!(
            errors.iter().any(|e| e.contains("three different ports")),
            "{errors:?}"
        );
    }
}
