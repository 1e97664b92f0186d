//! Building a set's pod from a revision's shape: labels, owner, the `serving`
//! readiness gate, the injected `sluice proxy` native sidecar, and the grace
//! period a drain needs.
//!
//! # Drain on node drain
//!
//! Kubernetes stops a pod's main containers first and its native sidecars after
//! them, so the app must outlive the sidecar's evacuation: the app container gets a
//! `preStop` `sleep` (unless it has a `preStop` of its own) long enough for
//! `maxConnectionsPerPod` connections to leave at `connEvictRate`, and the operator
//! starts the sidecar's evacuation as soon as it sees the pod terminating. The
//! arithmetic is `sluice plan drain`'s: `drainDelaySeconds` of propagation, then
//! the eviction time plus [`CLOSE_SECONDS`] for the last connections to close.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler,
    Pod, PodReadinessGate, Probe, SecretKeySelector, SleepAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::ObjectMeta;
use sluice_core::plan;
use sluice_core::spec::{EvacuationStrategy, InvalidField};

use crate::crd::{GracefulSet, SidecarEvacuator};
use crate::revision::{PodShape, labels};

/// The readiness gate condition the operator sets: the pod receives new
/// connections (it is in the Service's endpoints) only while it is `True`.
pub const SERVING_GATE: &str = "sluice.dev/serving";
/// Pod annotation: the engine's serving decision for the pod (`"true"`/`"false"`).
/// The gate may be narrower (see `reconcile`'s routing rule), so the decision is
/// kept apart from it and survives an operator restart.
pub const SERVING_ANNOTATION: &str = "sluice.dev/serving";
/// The injected sidecar container's name.
pub const SIDECAR_NAME: &str = "sluice-proxy";
/// The key of the admin token in the set's token Secret.
pub const TOKEN_KEY: &str = "token";
/// Seconds an evicted connection gets to close (`sluice proxy --close-timeout`'s default).
pub const CLOSE_SECONDS: u32 = 5;
/// Seconds left to the sidecar after the app stopped, within the grace period.
const SIDECAR_STOP_SECONDS: u32 = 10;

/// The name of the Secret holding a set's sidecar admin token.
pub fn token_secret_name(set: &str) -> String {
    format!("{set}-sluice-admin")
}

/// What a pod needs to stop without cutting anyone (drain on node drain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// Seconds the sidecar keeps accepting after SIGTERM (`--drain-delay`).
    pub delay_seconds: u32,
    /// Connections per second evicted (`--drain-rate`).
    pub rate: u32,
    /// Seconds the app is kept alive after the pod starts terminating (`preStop`
    /// sleep), and the sidecar's `--drain-timeout`.
    pub app_seconds: u32,
    /// The pod's `terminationGracePeriodSeconds`.
    pub grace_seconds: u32,
}

impl Drain {
    /// The drain for a sidecar's settings at the strategy's rate.
    pub fn plan(
        sidecar: &SidecarEvacuator,
        evacuation: &EvacuationStrategy,
    ) -> Result<Drain, InvalidField> {
        let rate = u32::try_from(evacuation.conn_evict_rate.max(1)).unwrap_or(1);
        let connections = u32::try_from(sidecar.max_connections_per_pod.max(0)).unwrap_or(0);
        let evict_seconds = connections.div_ceil(rate);
        let delay = u32::try_from(sidecar.drain_delay_seconds.max(0)).unwrap_or(0);
        let p = plan::drain(&[delay], evict_seconds + CLOSE_SECONDS)
            .map_err(|e| e.within("evacuator.sidecar"))?;
        Ok(Drain {
            delay_seconds: p.pre_stop_seconds,
            rate,
            app_seconds: p.termination_grace_period_seconds,
            grace_seconds: p.termination_grace_period_seconds + SIDECAR_STOP_SECONDS,
        })
    }
}

/// Builds pod `name` of `revision` from `shape`, owned by the set.
/// `evacuation` is the set's current strategy (it sizes the drain).
pub fn build(
    set: &GracefulSet,
    shape: &PodShape,
    revision: &str,
    name: &str,
    evacuation: &EvacuationStrategy,
) -> Result<Pod, InvalidField> {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let template_meta = shape.template.metadata.clone().unwrap_or_default();
    let mut pod_labels = template_meta.labels.unwrap_or_default();
    pod_labels.extend(labels(&set_name, revision));
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(SERVING_ANNOTATION.to_owned(), "false".to_owned());
    let mut spec = shape.template.spec.clone().ok_or_else(|| {
        InvalidField::new("template.spec", "is missing: give the pods' containers")
    })?;
    spec.readiness_gates
        .get_or_insert_with(Vec::new)
        .push(PodReadinessGate {
            condition_type: SERVING_GATE.to_owned(),
        });
    if let Some(sidecar) = &shape.evacuator.sidecar {
        let drain = Drain::plan(sidecar, evacuation)?;
        let app = spec
            .containers
            .iter_mut()
            .find(|c| declares_port(c, sidecar.app_port))
            .ok_or_else(|| missing_app_port(sidecar.app_port))?;
        let lifecycle = app.lifecycle.get_or_insert_with(Lifecycle::default);
        if lifecycle.pre_stop.is_none() {
            lifecycle.pre_stop = Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: i64::from(drain.app_seconds),
                }),
                ..LifecycleHandler::default()
            });
        }
        let grace = spec.termination_grace_period_seconds.unwrap_or(30);
        spec.termination_grace_period_seconds = Some(grace.max(i64::from(drain.grace_seconds)));
        spec.init_containers.get_or_insert_with(Vec::new).insert(
            0,
            sidecar_container(sidecar, shape.protocol.as_str(), &set_name, drain),
        );
    }
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: set.metadata.namespace.clone(),
            labels: Some(pod_labels),
            annotations: Some(annotations),
            owner_references: set.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The error for a template whose containers do not declare the sidecar's `appPort`.
pub fn missing_app_port(port: i32) -> InvalidField {
    InvalidField::new(
        "template.spec.containers",
        format!(
            "no container declares containerPort {port} (evacuator.sidecar.appPort): \
             add it to the app container's ports, or set appPort to the port the app listens on"
        ),
    )
}

fn declares_port(container: &Container, port: i32) -> bool {
    container
        .ports
        .iter()
        .flatten()
        .any(|p| p.container_port == port)
}

/// Checks what OpenAPI cannot: the template declares the port the sidecar fronts.
pub fn check_template(shape: &PodShape) -> Result<(), InvalidField> {
    let Some(spec) = &shape.template.spec else {
        return Err(InvalidField::new(
            "template.spec",
            "is missing: give the pods' containers",
        ));
    };
    if let Some(sidecar) = &shape.evacuator.sidecar
        && !spec
            .containers
            .iter()
            .any(|c| declares_port(c, sidecar.app_port))
    {
        return Err(missing_app_port(sidecar.app_port));
    }
    Ok(())
}

/// `sluice proxy` as a native sidecar: an init container with `restartPolicy:
/// Always`, started (and its `/healthz` answering) before the app, stopped after it.
/// The admin token is in its environment (`SLUICE_ADMIN_TOKEN`, which `sluice
/// proxy` reads itself), never in its command line.
fn sidecar_container(sidecar: &SidecarEvacuator, protocol: &str, set: &str, d: Drain) -> Container {
    let args = [
        "proxy".to_owned(),
        format!("--listen=0.0.0.0:{}", sidecar.port),
        format!("--upstream=app=127.0.0.1:{}", sidecar.app_port),
        format!("--admin=0.0.0.0:{}", sidecar.admin_port),
        format!("--protocol={protocol}"),
        format!("--drain-delay={}", d.delay_seconds),
        format!("--drain-rate={}", d.rate),
        format!("--drain-timeout={}", d.app_seconds),
    ];
    Container {
        name: SIDECAR_NAME.to_owned(),
        image: Some(sidecar.image.clone()),
        command: Some(vec!["sluice".to_owned()]),
        args: Some(args.to_vec()),
        restart_policy: Some("Always".to_owned()),
        env: Some(vec![EnvVar {
            name: "SLUICE_ADMIN_TOKEN".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: token_secret_name(set),
                    key: TOKEN_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(vec![
            ContainerPort {
                name: Some("sluice".to_owned()),
                container_port: sidecar.port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("sluice-admin".to_owned()),
                container_port: sidecar.admin_port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            },
        ]),
        startup_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".to_owned()),
                port: IntOrString::Int(sidecar.admin_port),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(1),
            failure_threshold: Some(60),
            ..Probe::default()
        }),
        resources: sidecar.resources.clone(),
        ..Container::default()
    }
}

/// The annotations map's serving decision (absent: not serving).
pub fn serving_decision(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations
        .and_then(|a| a.get(SERVING_ANNOTATION))
        .is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Evacuator, GracefulSetSpec, Protocol};
    use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};

    pub(crate) fn sample_set() -> GracefulSet {
        let spec: GracefulSetSpec = serde_json::from_value(serde_json::json!({
            "replicas": 3,
            "selector": {"matchLabels": {"app": "mqtt"}},
            "template": {
                "metadata": {"labels": {"app": "mqtt"}},
                "spec": {"containers": [{
                    "name": "mosquitto", "image": "eclipse-mosquitto:2",
                    "ports": [{"containerPort": 1884}]
                }]}
            },
            "evacuator": {"sidecar": {"image": "sluice:dev", "port": 1883, "appPort": 1884}},
            "updateStrategy": {"evacuationStrategy": {"connEvictRate": 500}}
        }))
        .unwrap();
        let mut set = GracefulSet::new("mqtt", spec);
        set.metadata.namespace = Some("default".to_owned());
        set.metadata.uid = Some("uid-1".to_owned());
        set
    }

    #[test]
    fn drain_fits_the_connections_at_the_rate() {
        let set = sample_set();
        let sidecar = set.spec.evacuator.sidecar.as_ref().unwrap();
        let d = Drain::plan(sidecar, &set.spec.update_strategy.evacuation_strategy).unwrap();
        // 5 s propagation + 10000/500 = 20 s eviction + 5 s close.
        assert_eq!(
            d,
            Drain {
                delay_seconds: 5,
                rate: 500,
                app_seconds: 30,
                grace_seconds: 40
            }
        );
    }

    #[test]
    fn pod_has_gate_sidecar_owner_and_drain() {
        let set = sample_set();
        let shape = PodShape::of(&set);
        let rev = shape.revision();
        let pod = build(
            &set,
            &shape,
            &rev,
            "mqtt-abc-0",
            &set.spec.update_strategy.evacuation_strategy,
        )
        .unwrap();
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "mqtt");
        assert_eq!(labels["sluice.dev/set"], "mqtt");
        assert_eq!(labels["sluice.dev/revision"], rev);
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("GracefulSet", Some(true))
        );
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.readiness_gates.unwrap()[0].condition_type,
            SERVING_GATE
        );
        assert_eq!(spec.termination_grace_period_seconds, Some(40));
        let sidecar = &spec.init_containers.unwrap()[0];
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        let args = sidecar.args.as_ref().unwrap().join(" ");
        assert!(args.contains("--listen=0.0.0.0:1883"), "{args}");
        assert!(args.contains("--upstream=app=127.0.0.1:1884"), "{args}");
        assert!(
            !args.contains("token"),
            "the token stays out of argv: {args}"
        );
        let env = sidecar.env.as_ref().unwrap();
        assert_eq!(env[0].name, "SLUICE_ADMIN_TOKEN");
        let secret = env[0].value_from.as_ref().unwrap().secret_key_ref.as_ref();
        assert_eq!(secret.unwrap().name, "mqtt-sluice-admin");
        assert!(
            args.contains("--drain-rate=500 --drain-timeout=30"),
            "{args}"
        );
        let app = &spec.containers[0];
        let sleep = app.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(sleep.sleep.as_ref().unwrap().seconds, 30);
    }

    #[test]
    fn a_template_without_the_app_port_is_refused_naming_the_field() {
        let shape = PodShape {
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".to_owned(),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            protocol: Protocol::Tcp,
            evacuator: sample_set().spec.evacuator,
        };
        let e = check_template(&shape).unwrap_err();
        assert_eq!(e.field, "template.spec.containers");
        assert!(e.problem.contains("containerPort 1884"), "{e}");
        let no_evacuator = PodShape {
            evacuator: Evacuator::default(),
            ..shape
        };
        assert!(check_template(&no_evacuator).is_ok());
    }
}
