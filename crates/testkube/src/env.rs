//! A container's environment, command line and working directory, as the kubelet
//! builds them: `env` in order, each value expanded with the variables before it,
//! downward API `fieldRef`s resolved from the pod, `secretKeyRef`s from the
//! Secrets the node read, then `$(VAR)` expansion of `command` and `args` with
//! the whole environment.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};

use crate::expand::expand;

/// Why a container's command line or environment cannot be built (the kubelet
/// reports these as `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The container has no `command`: there is no image entrypoint to fall back on.
    #[error(
        "container {container}: `command` is empty; the test node does not pull images, so set `command` to a program on this machine"
    )]
    NoCommand {
        /// The container.
        container: String,
    },
    /// An `env[].valueFrom` source the test node does not resolve.
    #[error(
        "container {container}: env {name}: {what} is not supported by the test node (supported: value, valueFrom.fieldRef, valueFrom.secretKeyRef)"
    )]
    Unsupported {
        /// The container.
        container: String,
        /// The variable.
        name: String,
        /// What was used.
        what: String,
    },
    /// A `secretKeyRef` (not `optional`) whose Secret or key does not exist.
    #[error("container {container}: env {name}: {problem}")]
    Secret {
        /// The container.
        container: String,
        /// The variable.
        name: String,
        /// What is missing, and the fix.
        problem: String,
    },
    /// A `fieldRef.fieldPath` the downward API does not define.
    #[error("container {container}: env {name}: fieldRef.fieldPath {path:?} is not supported")]
    FieldPath {
        /// The container.
        container: String,
        /// The variable.
        name: String,
        /// The path.
        path: String,
    },
}

/// What the node knows about the pod beyond its spec when it starts a container.
#[derive(Debug, Clone, Copy)]
pub struct PodFacts<'a> {
    /// The pod's IP (`status.podIP`).
    pub pod_ip: &'a str,
    /// The node's IP (`status.hostIP`).
    pub host_ip: &'a str,
    /// The node's name (`spec.nodeName`).
    pub node_name: &'a str,
    /// The Secrets the container's `secretKeyRef`s name (see [`secret_names`]),
    /// as the node read them from the pod's namespace.
    pub secrets: &'a Secrets,
}

/// Secrets by name: their `data`, decoded (`None`: the Secret does not exist).
pub type Secrets = BTreeMap<String, Option<BTreeMap<String, String>>>;

/// The Secrets `container`'s `env[].valueFrom.secretKeyRef`s name: the node
/// reads them before building the environment.
pub fn secret_names(container: &Container) -> BTreeSet<String> {
    container
        .env
        .iter()
        .flatten()
        .filter_map(|v| v.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|r| r.name.clone())
        .collect()
}

/// A container's process, ready to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The program (`command[0]`, expanded).
    pub program: String,
    /// The rest of `command` then `args`, expanded.
    pub args: Vec<String>,
    /// The container's environment.
    pub env: BTreeMap<String, String>,
    /// `workingDir`, if set.
    pub working_dir: Option<String>,
}

/// Builds `container`'s launch from `pod` as the kubelet would.
pub fn launch(
    pod: &Pod,
    container: &Container,
    facts: PodFacts<'_>,
) -> Result<Launch, ConfigError> {
    let env = environment(pod, container, facts)?;
    let mut words = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|w| expand(w, &env));
    let program = match container.command.as_deref() {
        Some([_, ..]) => words.next().unwrap_or_default(),
        _ => {
            return Err(ConfigError::NoCommand {
                container: container.name.clone(),
            });
        }
    };
    Ok(Launch {
        program,
        args: words.collect(),
        env,
        working_dir: container.working_dir.clone().filter(|d| !d.is_empty()),
    })
}

/// The container's environment: `env` in order, values expanded with the earlier
/// ones; an `optional` `secretKeyRef` whose Secret or key is missing leaves its
/// variable unset, as the kubelet does.
pub fn environment(
    pod: &Pod,
    container: &Container,
    facts: PodFacts<'_>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(ConfigError::Unsupported {
            container: container.name.clone(),
            name: "*".into(),
            what: "envFrom".into(),
        });
    }
    let mut env = BTreeMap::new();
    for var in container.env.iter().flatten() {
        if let Some(value) = value_of(pod, container, var, facts, &env)? {
            env.insert(var.name.clone(), value);
        }
    }
    Ok(env)
}

fn value_of(
    pod: &Pod,
    container: &Container,
    var: &EnvVar,
    facts: PodFacts<'_>,
    earlier: &BTreeMap<String, String>,
) -> Result<Option<String>, ConfigError> {
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), earlier)));
    };
    if let Some(r) = &from.secret_key_ref {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let problem = match facts.secrets.get(&r.name) {
            Some(Some(data)) => match data.get(&r.key) {
                Some(value) => return Ok(Some(value.clone())),
                None => format!(
                    "valueFrom.secretKeyRef: key {:?} is not in Secret {namespace}/{}: add it to the Secret's data, or set optional: true",
                    r.key, r.name
                ),
            },
            _ => format!(
                "valueFrom.secretKeyRef: Secret {namespace}/{} not found: create it, or set optional: true",
                r.name
            ),
        };
        return if r.optional.unwrap_or(false) {
            Ok(None)
        } else {
            Err(ConfigError::Secret {
                container: container.name.clone(),
                name: var.name.clone(),
                problem,
            })
        };
    }
    let unsupported = |what: &str| ConfigError::Unsupported {
        container: container.name.clone(),
        name: var.name.clone(),
        what: what.into(),
    };
    let Some(field) = &from.field_ref else {
        let what = if from.config_map_key_ref.is_some() {
            "valueFrom.configMapKeyRef"
        } else if from.resource_field_ref.is_some() {
            "valueFrom.resourceFieldRef"
        } else {
            "this valueFrom"
        };
        return Err(unsupported(what));
    };
    field_value(pod, &field.field_path, facts)
        .map(Some)
        .ok_or_else(|| ConfigError::FieldPath {
            container: container.name.clone(),
            name: var.name.clone(),
            path: field.field_path.clone(),
        })
}

/// The downward API: the value of `path` for `pod`, `None` if the path is unknown.
pub fn field_value(pod: &Pod, path: &str, facts: PodFacts<'_>) -> Option<String> {
    let meta = &pod.metadata;
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => facts.node_name.to_string(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_string(),
        _ => {
            return keyed("metadata.labels['", &meta.labels)
                .or_else(|| keyed("metadata.annotations['", &meta.annotations));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(container: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "t1", "uid": "u-1",
                         "labels": {"app": "web"}},
            "spec": {"containers": [container]},
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    const FACTS: PodFacts<'static> = PodFacts {
        pod_ip: "10.244.0.7",
        host_ip: "10.244.0.1",
        node_name: "n1",
        secrets: &Secrets::new(),
    };

    #[test]
    fn downward_api_and_expansion_like_the_kubelet() {
        let (pod, c) = pod(serde_json::json!({
            "name": "app", "image": "ignored",
            "command": ["/bin/$(PROG)", "--id=$(POD_NAME).$(NS)"],
            "args": ["$(IP):$(PORT)", "$$(PORT)", "$(NOPE)"],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "PORT", "value": "1883"},
                {"name": "ADDR", "value": "$(IP):$(PORT)/$(LATER)"},
                {"name": "PROG", "value": "mosquitto"},
                {"name": "LATER", "value": "x"},
            ],
        }));
        let l = launch(&pod, &c, FACTS).unwrap();
        assert_eq!(l.program, "/bin/mosquitto");
        assert_eq!(
            l.args,
            ["--id=web-1.t1", "10.244.0.7:1883", "$(PORT)", "$(NOPE)"]
        );
        assert_eq!(l.env["APP"], "web");
        // Only variables defined earlier are expanded in a value.
        assert_eq!(l.env["ADDR"], "10.244.0.7:1883/$(LATER)");
    }

    #[test]
    fn clear_errors() {
        let (p, c) = pod(serde_json::json!({"name": "app", "image": "x", "args": ["a"]}));
        assert!(matches!(
            launch(&p, &c, FACTS),
            Err(ConfigError::NoCommand { .. })
        ));
        let (p, c) = pod(serde_json::json!({"name": "app", "command": ["x"], "env": [
            {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "s", "key": "k"}}}]}));
        let e = launch(&p, &c, FACTS).unwrap_err().to_string();
        assert!(
            e.contains("env K: valueFrom.configMapKeyRef is not supported"),
            "{e}"
        );
        let (p, c) = pod(serde_json::json!({"name": "app", "command": ["x"], "env": [
            {"name": "K", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]}));
        assert!(matches!(
            launch(&p, &c, FACTS),
            Err(ConfigError::FieldPath { .. })
        ));
    }

    #[test]
    fn secret_key_refs_like_the_kubelet() {
        let (p, c) = pod(serde_json::json!({"name": "side", "command": ["sluice"],
            "args": ["--admin-token=$(TOKEN)"], "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "admin", "key": "token"}}},
            {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            {"name": "NOKEY", "valueFrom": {"secretKeyRef": {"name": "admin", "key": "nope", "optional": true}}},
        ]}));
        assert_eq!(secret_names(&c), ["admin", "gone"].map(String::from).into());
        let data: BTreeMap<String, String> = [("token".to_string(), "s3cret".to_string())].into();
        let secrets: Secrets = [
            ("admin".to_string(), Some(data)),
            ("gone".to_string(), None),
        ]
        .into();
        let facts = PodFacts {
            secrets: &secrets,
            ..FACTS
        };
        let l = launch(&p, &c, facts).unwrap();
        assert_eq!(l.args, ["--admin-token=s3cret"]);
        assert_eq!(
            l.env.keys().collect::<Vec<_>>(),
            ["TOKEN"],
            "optional misses stay unset"
        );

        let (p, c) = pod(
            serde_json::json!({"name": "side", "command": ["x"], "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "token"}}}]}),
        );
        let e = launch(&p, &c, facts).unwrap_err().to_string();
        assert!(
            e.contains(
                "container side: env TOKEN: valueFrom.secretKeyRef: Secret t1/gone not found"
            ),
            "{e}"
        );
        let (p, c) = pod(
            serde_json::json!({"name": "side", "command": ["x"], "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "admin", "key": "nope", "optional": false}}}]}),
        );
        let e = launch(&p, &c, facts).unwrap_err().to_string();
        assert!(
            e.contains("env TOKEN: valueFrom.secretKeyRef: key \"nope\" is not in Secret t1/admin"),
            "{e}"
        );
    }
}
