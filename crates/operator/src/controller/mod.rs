//! The reconciler: per GracefulSet, observe its pods and each evacuator's report,
//! call [`sluice_core::engine::decide`], apply the actions, publish the status.
//! It decides nothing itself; everything it needs to resume is in the cluster (the
//! set's status, the pods' labels and annotations, the ControllerRevisions).

pub mod cluster;
pub mod metrics;
pub mod observe;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::join_all;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Api;
use kube::core::Selector;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Client, Resource, ResourceExt};
use sluice_core::engine::{self, Action, Decision, Observed};
use sluice_core::spec::{EvacuationStrategy, InvalidField, StrategyType, check_range};
use sluice_core::time::Timestamp;

use crate::crd::{Condition, FINALIZER, GracefulSet, GracefulSetStatus};
use crate::evacuator::emqx::EmqxDriver;
use crate::evacuator::sidecar::SidecarDriver;
use crate::evacuator::{Driver, DriverError, Evacuator, Report, Target};
use crate::pod;
use crate::revision::{self, PodShape};
use crate::status::{self, kube_time};
use cluster::{ABORT_ANNOTATION, Cluster};
pub use metrics::Metrics;
use observe::{PodView, gates, switch_settling};

/// Condition type published when the spec is refused (with the field named).
pub const INVALID_SPEC: &str = "InvalidSpec";

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events (`kubectl describe gset` tells the story of an upgrade).
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Metrics,
}

/// Why a reconcile failed; it is retried (see [`error_policy`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer failed, or the cleanup did.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// The set has no namespace.
    #[error("GracefulSet without a namespace")]
    NoNamespace,
    /// An evacuator call failed while applying an action.
    #[error("{0}")]
    Driver(#[from] DriverError),
    /// An action cannot be applied (e.g. the template of an old revision is gone).
    #[error("{0}")]
    Apply(String),
}

/// The controller's reconcile function.
pub async fn reconcile(set: Arc<GracefulSet>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let namespace = set.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<GracefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, set, |event| async {
        match event {
            finalizer::Event::Apply(set) => apply(&set, &ctx).await,
            finalizer::Event::Cleanup(set) => cleanup(&set, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled(result.is_ok());
    result
}

/// Retries a failed reconcile after a few seconds.
pub fn error_policy(set: Arc<GracefulSet>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    tracing::warn!(set = %set.name_any(), %error, "reconcile failed; retrying in 5 s");
    Requeue::requeue(Duration::from_secs(5))
}

/// Now, for the engine.
fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// Checks what the API server's schema cannot: the field is named from `spec`.
pub fn validate(set: &GracefulSet, shape: &PodShape) -> Result<(), InvalidField> {
    let spec = &set.spec;
    check_range("spec.replicas", spec.replicas.into(), 0, 100_000)?;
    spec.update_strategy
        .validate()
        .map_err(|e| e.within("spec.updateStrategy"))?;
    if spec.update_strategy.kind == StrategyType::Naive {
        return Err(InvalidField::new(
            "spec.updateStrategy.type",
            "Naive exists for comparison in `sluice demo` only: use BlueGreen or Rolling",
        ));
    }
    let labels = shape
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in spec.selector.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Err(InvalidField::new(
                "spec.selector.matchLabels",
                format!(
                    "{k}={v} is not among spec.template.metadata.labels: the set's pods would not match its selector; add the label to the template"
                ),
            ));
        }
    }
    match (&spec.evacuator.sidecar, &spec.evacuator.emqx) {
        (Some(_), None) | (None, Some(_)) => {}
        _ => {
            return Err(InvalidField::new(
                "spec.evacuator",
                "set exactly one of evacuator.sidecar or evacuator.emqx",
            ));
        }
    }
    pod::check_template(shape).map_err(|e| e.within("spec"))
}

/// The label selector as a string (`status.selector`, for the scale subresource).
fn selector_string(set: &GracefulSet) -> String {
    Selector::try_from(set.spec.selector.clone())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Publishes an Event about the set; `pod` (related object) keeps the events of
/// different pods apart (the recorder folds repeats of one key into a series).
async fn publish(
    ctx: &Context,
    set: &GracefulSet,
    pod: Option<&str>,
    reason: &str,
    note: String,
    warn: bool,
) {
    let secondary = pod.map(|name| ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.to_owned()),
        namespace: set.namespace(),
        ..ObjectReference::default()
    });
    let event = Event {
        type_: if warn {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(note),
        action: reason.to_owned(),
        secondary,
    };
    if let Err(e) = ctx.recorder.publish(&event, &set.object_ref(&())).await {
        tracing::warn!(set = %set.name_any(), error = %e, "cannot publish event {reason}");
    }
}

/// The set's evacuator driver, with its credentials.
async fn driver(set: &GracefulSet, cluster: &Cluster) -> Result<Driver, Error> {
    if let Some(s) = &set.spec.evacuator.sidecar {
        let token = cluster.admin_token(set).await?;
        return Ok(Driver::Sidecar(SidecarDriver {
            admin_port: u16::try_from(s.admin_port).unwrap_or(9190),
            token,
        }));
    }
    let Some(e) = &set.spec.evacuator.emqx else {
        return Err(Error::Apply("spec.evacuator: no evacuator set".into()));
    };
    let (user, pass) = cluster.credentials(&e.secret_name).await?.ok_or_else(|| {
        DriverError::Credentials(format!(
            "spec.evacuator.emqx.secretName: Secret {:?} is missing or lacks the keys `username` and `password`",
            e.secret_name
        ))
    })?;
    Ok(Driver::Emqx(EmqxDriver::new(
        e.api_url.as_deref(),
        u16::try_from(e.api_port).unwrap_or(18083),
        &e.node_name,
        &user,
        &pass,
    )?))
}

/// Reports of the pods that need one (`None` where nothing can hold a connection).
async fn reports(driver: &Driver, views: &[PodView]) -> Vec<Option<Result<Report, DriverError>>> {
    join_all(views.iter().map(|v| async move {
        let target = v.target().filter(|_| v.needs_report())?;
        Some(driver.report(&target).await)
    }))
    .await
}

async fn apply(set: &GracefulSet, ctx: &Context) -> Result<Requeue, Error> {
    let name = set.name_any();
    let namespace = set.namespace().ok_or(Error::NoNamespace)?;
    let cluster = Cluster::new(ctx.client.clone(), &namespace, &name);
    let generation = set.metadata.generation.unwrap_or(0);
    let selector = selector_string(set);
    let shape = PodShape::of(set);
    let revision = shape.revision();
    let last = set.status.clone().unwrap_or_default();

    if let Err(e) = validate(set, &shape) {
        let mut status = last.clone();
        status.observed_generation = generation;
        status.selector = selector;
        set_condition(
            &mut status,
            INVALID_SPEC,
            "True",
            "InvalidSpec",
            &e.to_string(),
            generation,
        );
        if status != last {
            publish(ctx, set, None, "InvalidSpec", e.to_string(), true).await;
            cluster.publish_status(&status).await?;
        }
        return Ok(Requeue::await_change());
    }

    let revisions = cluster.list_revisions().await?;
    cluster.ensure_revision(set, &shape, &revisions).await?;
    let driver = driver(set, &cluster).await?;
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let sidecar = set.spec.evacuator.sidecar.is_some();
    let pods = cluster.list_pods().await?;
    let mut views: Vec<PodView> = pods
        .iter()
        .filter(|p| p.owner_references().iter().any(|o| o.uid == uid))
        .filter_map(|p| PodView::of(&name, p, sidecar))
        .collect();
    let reports = reports(&driver, &views).await;

    // Drain on node drain: a pod deleted by someone else (eviction, `kubectl
    // drain`) is evacuated at the set's rate while its app waits in preStop.
    let evacuation = &set.spec.update_strategy.evacuation_strategy;
    let drain = EvacuationStrategy {
        wait_health_check: 0,
        ..evacuation.clone()
    };
    for (v, r) in views.iter().zip(&reports) {
        if let (true, Some(Ok(r)), Some(t)) = (v.terminating, r, v.target())
            && r.connections > 0
            && r.evacuation.is_none()
        {
            match driver.start(&t, &drain, &[]).await {
                Ok(()) => {
                    let note = format!(
                        "pod {} is terminating with {} connections: evacuating them at {}/s",
                        v.name, r.connections, drain.conn_evict_rate
                    );
                    publish(ctx, set, Some(&v.name), "Draining", note, false).await;
                }
                Err(e) => tracing::warn!(pod = %v.name, error = %e, "cannot drain"),
            }
        }
    }

    let mut instances = Vec::with_capacity(views.len());
    for (v, r) in views.iter().zip(&reports) {
        instances.push(v.instance(r.as_ref()));
    }
    let observed = Observed {
        instances,
        last_status: status::from_kube(&last),
        abort_requested: set.annotations().contains_key(ABORT_ANNOTATION),
    };
    if set.spec.paused {
        let mut status = last.clone();
        status.observed_generation = generation;
        status.selector = selector;
        status.conditions.retain(|c| c.type_ != INVALID_SPEC);
        if status != last {
            cluster.publish_status(&status).await?;
        }
        return Ok(Requeue::requeue(engine::REQUEUE_AT_REST));
    }
    let spec = engine::Spec {
        name: name.clone(),
        generation,
        replicas: set.spec.replicas,
        revision: revision.clone(),
        strategy: set.spec.update_strategy.clone(),
    };
    let now = now();
    let decision = engine::decide(&spec, &observed, now);

    let applier = Applier {
        ctx,
        set,
        cluster: &cluster,
        driver: &driver,
        revisions: &revisions,
    };
    for action in &decision.actions {
        applier.apply(&mut views, action).await?;
        ctx.metrics.action(action);
    }

    let now_text = kube_time(now).0.to_string();
    let target = decision.status.target_revision();
    // A BlueGreen switch holds the old pods' gates until the new pods reached
    // the endpoints; the controller looks again once they should have.
    let blue_green = set.spec.update_strategy.kind == StrategyType::BlueGreen;
    let settling = (blue_green && target == decision.status.update_revision)
        .then(|| switch_settling(&views, target, now))
        .flatten();
    for (pod, gate) in gates(&views, target, settling.is_some()) {
        let Some(v) = views.iter().find(|v| v.name == pod) else {
            continue;
        };
        // A missing condition already keeps the pod out of the endpoints.
        if v.gate.unwrap_or(false) != gate && !v.terminating {
            cluster.set_gate(&pod, gate, &now_text).await?;
        }
    }

    let status = status::to_kube(&decision.status, generation, &selector);
    if status != last {
        cluster.publish_status(&status).await?;
    }
    if last.phase != status.phase || last.update_revision != status.update_revision {
        publish(
            ctx,
            set,
            None,
            "PhaseChanged",
            phase_note(&last, &decision),
            false,
        )
        .await;
    }
    if decision.clear_abort_request && observed.abort_requested {
        cluster.clear_abort().await?;
    }
    let in_use: Vec<&str> = views
        .iter()
        .map(|v| v.revision.as_str())
        .chain([
            decision.status.current_revision.as_str(),
            decision.status.update_revision.as_str(),
        ])
        .collect();
    for old in revision::prune(&revisions, &in_use, set.spec.revision_history_limit) {
        if let Some(n) = &old.metadata.name {
            cluster.delete_revision(n).await?;
        }
    }
    let requeue = match settling {
        Some(wait) if !wait.is_zero() => decision.requeue_after.min(wait),
        _ => decision.requeue_after,
    };
    Ok(Requeue::requeue(requeue))
}

fn phase_note(last: &GracefulSetStatus, decision: &Decision) -> String {
    let s = &decision.status;
    let why = s
        .condition(engine::PROGRESSING)
        .map(|c| format!(": {}", c.message))
        .unwrap_or_default();
    format!(
        "{:?} -> {:?} (current {}, update {}){why}",
        last.phase, s.phase, s.current_revision, s.update_revision
    )
}

fn set_condition(
    status: &mut GracefulSetStatus,
    type_: &str,
    word: &str,
    reason: &str,
    message: &str,
    generation: i64,
) {
    let since = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == word)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| kube_time(now()));
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(Condition {
        type_: type_.to_owned(),
        status: word.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: since,
        observed_generation: Some(generation),
    });
}

/// What applying one decision's actions needs.
struct Applier<'a> {
    ctx: &'a Context,
    set: &'a GracefulSet,
    cluster: &'a Cluster,
    driver: &'a Driver,
    revisions: &'a [ControllerRevision],
}

impl Applier<'_> {
    /// Applies `action`, keeping `views` in step, and tells it in an Event.
    async fn apply(&self, views: &mut Vec<PodView>, action: &Action) -> Result<(), Error> {
        let (ctx, set, cluster) = (self.ctx, self.set, self.cluster);
        let pod = action.name().to_owned();
        let target = || {
            views
                .iter()
                .find(|v| v.name == pod)
                .and_then(PodView::target)
        };
        match action {
            Action::Create { revision, .. } => {
                let shape = shape_for(set, self.revisions, revision)?;
                let evacuation = &set.spec.update_strategy.evacuation_strategy;
                let p = pod::build(set, &shape, revision, &pod, evacuation)
                    .map_err(|e| Error::Apply(e.to_string()))?;
                cluster.create_pod(&p).await?;
                let sidecar = set.spec.evacuator.sidecar.is_some();
                views.extend(PodView::of(&cluster.set, &p, sidecar));
                let note = format!("created pod {pod} of revision {revision}");
                publish(ctx, set, Some(&pod), "CreatedPod", note, false).await;
            }
            Action::SetServing { serving, .. } => {
                cluster.set_serving(&pod, *serving).await?;
                if let Some(v) = views.iter_mut().find(|v| v.name == pod) {
                    v.serving = *serving;
                }
                let (reason, note) = if *serving {
                    ("Serving", format!("pod {pod} receives new connections"))
                } else {
                    (
                        "NotServing",
                        format!(
                            "pod {pod} receives no new connections; it keeps its established ones"
                        ),
                    )
                };
                publish(ctx, set, Some(&pod), reason, note, false).await;
            }
            Action::StartEvacuation {
                evacuation,
                migrate_to,
                ..
            } => {
                let t = target()
                    .ok_or_else(|| Error::Apply(format!("pod {pod} has no IP to evacuate")))?;
                // The instances that receive its clients (EMQX's `migrate_to`).
                let to: Vec<Target> = views
                    .iter()
                    .filter(|v| migrate_to.contains(&v.name))
                    .filter_map(PodView::target)
                    .collect();
                self.driver.start(&t, evacuation, &to).await?;
                let note = format!(
                    "evacuating pod {pod}: {} connections/s, {} sessions/s, waitTakeover {} s",
                    evacuation.conn_evict_rate,
                    evacuation.sess_evict_rate,
                    evacuation.wait_takeover
                );
                publish(ctx, set, Some(&pod), "NodeEvacuation", note, false).await;
            }
            Action::StopEvacuation { .. } => {
                if let Some(t) = target() {
                    self.driver.stop(&t).await?;
                }
                let note = format!("stopped the evacuation of pod {pod}");
                publish(ctx, set, Some(&pod), "EvacuationStopped", note, false).await;
            }
            Action::Delete { .. } => {
                if views.iter().any(|v| v.name == pod && v.terminating) {
                    // Already being deleted (and drained): nothing to do, nothing to tell.
                    return Ok(());
                }
                cluster.delete_pod(&pod).await?;
                views.retain(|v| v.name != pod);
                publish(
                    ctx,
                    set,
                    Some(&pod),
                    "DeletedPod",
                    format!("deleted pod {pod}"),
                    false,
                )
                .await;
            }
        }
        Ok(())
    }
}

/// The pod shape of `revision`: the spec's, or a kept ControllerRevision's.
fn shape_for(
    set: &GracefulSet,
    revisions: &[ControllerRevision],
    rev: &str,
) -> Result<PodShape, Error> {
    let current = PodShape::of(set);
    if current.revision() == rev {
        return Ok(current);
    }
    let name = revision::controller_revision_name(&set.name_any(), rev);
    revisions
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&name))
        .and_then(revision::shape_of)
        .ok_or_else(|| {
            Error::Apply(format!(
                "the template of revision {rev} is gone (ControllerRevision {name} missing)"
            ))
        })
}

/// On deletion: stop every running evacuation, so that nothing keeps evicting
/// while garbage collection removes the pods.
async fn cleanup(set: &GracefulSet, ctx: &Context) -> Result<Requeue, Error> {
    let name = set.name_any();
    let namespace = set.namespace().ok_or(Error::NoNamespace)?;
    let cluster = Cluster::new(ctx.client.clone(), &namespace, &name);
    let sidecar = set.spec.evacuator.sidecar.is_some();
    let driver = match driver(set, &cluster).await {
        Ok(d) => d,
        Err(e) => {
            // Without credentials nothing can be stopped; do not hold the set forever.
            publish(
                ctx,
                set,
                None,
                "CleanupIncomplete",
                format!("cannot stop evacuations: {e}"),
                true,
            )
            .await;
            return Ok(Requeue::await_change());
        }
    };
    let views: Vec<PodView> = cluster
        .list_pods()
        .await?
        .iter()
        .filter_map(|p| PodView::of(&name, p, sidecar))
        .collect();
    for (v, r) in views.iter().zip(reports(&driver, &views).await) {
        if let (Some(Ok(r)), Some(t)) = (r, v.target())
            && r.evacuation.is_some()
        {
            match driver.stop(&t).await {
                Ok(()) => {
                    publish(
                        ctx,
                        set,
                        Some(&v.name),
                        "EvacuationStopped",
                        format!("set deleted: stopped the evacuation of pod {}", v.name),
                        false,
                    )
                    .await
                }
                Err(e) => {
                    publish(
                        ctx,
                        set,
                        Some(&v.name),
                        "CleanupIncomplete",
                        format!("set deleted: {e}"),
                        true,
                    )
                    .await
                }
            }
        }
    }
    Ok(Requeue::await_change())
}
