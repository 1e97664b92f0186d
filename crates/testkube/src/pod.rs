//! One pod's life on the node, in the kubelet's order: network namespace, init
//! containers one by one (a sidecar — `restartPolicy: Always` — is started and
//! left running, the next waits for its startup), app containers together,
//! probes, restarts per `restartPolicy`; on deletion preStop, SIGTERM, the grace
//! period and SIGKILL, app containers before sidecars (in reverse order), then
//! the pod object is deleted with grace 0.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use sluice_local::process::{SpawnSpec, Stopped, Supervised};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::env::{self, PodFacts};
use crate::netns::NodeNet;
use crate::probe::{self, Target};
use crate::status::{self, ContainerView, Phase, PodView, Transitions};

/// First wait before restarting an exited container; doubles up to
/// [`MAX_BACKOFF`]. (The kubelet starts at 10 s and caps at 5 min; tests want
/// restarts they can watch.)
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// Time a sidecar gets to stop even when the pod's grace period is used up
/// (the kubelet's minimum).
const SIDECAR_MIN_GRACE: Duration = Duration::from_secs(2);
/// Wait before building a container's configuration again after it failed.
const CONFIG_RETRY: Duration = Duration::from_secs(2);
/// Grace period when the node shuts down (it then force-deletes its pods).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What every pod on the node shares.
pub(crate) struct NodeCtx {
    pub name: String,
    pub net: Arc<NodeNet>,
    pub netrt: tokio::runtime::Handle,
    pub log_dir: PathBuf,
    pub client: kube::Client,
    /// `PATH` of every container.
    pub path: String,
}

/// Where a container sits in the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Init(usize),
    App(usize),
}

/// How a container's runner ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It exited with this code and will not be restarted.
    Exited(i32),
    /// It was stopped (pod deleted or node shutting down).
    Stopped,
    /// It could not be configured (see its waiting state).
    ConfigError,
}

/// The pod's reported state, and a counter bumped on every change.
struct Shared {
    view: Mutex<PodView>,
    bump: watch::Sender<u64>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut PodView)) {
        f(&mut self.view.lock().expect("view lock"));
        self.bump.send_modify(|n| *n += 1);
    }

    fn container(&self, slot: Slot, f: impl FnOnce(&mut ContainerView)) {
        self.update(|v| match slot {
            Slot::Init(i) => f(&mut v.init[i]),
            Slot::App(i) => f(&mut v.app[i]),
        });
    }

    fn read<T>(&self, f: impl FnOnce(&PodView) -> T) -> T {
        f(&self.view.lock().expect("view lock"))
    }
}

/// What a container runner needs to know about its pod.
struct Run {
    node: Arc<NodeCtx>,
    shared: Arc<Shared>,
    pod: Pod,
    net_name: String,
    pod_ip: std::net::Ipv4Addr,
    restart_policy: String,
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

/// Why the pod stops.
#[derive(Debug, Clone, Copy)]
enum Why {
    /// Deleted with this grace period.
    Deleted(Duration),
    /// Removed from the API (force-deleted by someone else).
    Gone,
    /// The node shuts down.
    Shutdown,
}

/// Waits until the pod is deleted (or gone) or the node shuts down.
async fn termination(
    updates: &mut watch::Receiver<Option<Pod>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Why {
    loop {
        if *shutdown.borrow_and_update() {
            return Why::Shutdown;
        }
        match &*updates.borrow_and_update() {
            None => return Why::Gone,
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                let grace = p
                    .metadata
                    .deletion_grace_period_seconds
                    .or_else(|| p.spec.as_ref()?.termination_grace_period_seconds)
                    .unwrap_or(30);
                return Why::Deleted(Duration::from_secs(grace.max(0) as u64));
            }
            Some(_) => {}
        }
        tokio::select! {
            r = updates.changed() => if r.is_err() { return Why::Shutdown },
            r = shutdown.changed() => if r.is_err() { return Why::Shutdown },
        }
    }
}

/// Pushes the pod's status to the API when it differs from the last push.
struct Reporter {
    api: Api<Pod>,
    name: String,
    shared: Arc<Shared>,
    times: Mutex<Transitions>,
    last: Mutex<Option<Value>>,
}

impl Reporter {
    async fn push(&self, pod: &Pod) {
        let view = self.shared.read(Clone::clone);
        let patch = status::status_patch(&view, pod, &mut self.times.lock().expect("lock"), &now());
        if self.last.lock().expect("lock").as_ref() == Some(&patch) {
            return;
        }
        match self
            .api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => *self.last.lock().expect("lock") = Some(patch),
            Err(e) => tracing::warn!(pod = self.name, error = %e, "cannot patch pod status"),
        }
    }

    /// Pushes on every change of the view or of the pod (readiness gates).
    async fn run(self: Arc<Self>, mut updates: watch::Receiver<Option<Pod>>) {
        let mut bump = self.shared.bump.subscribe();
        loop {
            let pod = updates.borrow_and_update().clone();
            let Some(pod) = pod else { return };
            bump.borrow_and_update();
            self.push(&pod).await;
            let retry = self.last.lock().expect("lock").is_none();
            tokio::select! {
                r = bump.changed() => if r.is_err() { return },
                r = updates.changed() => if r.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(1)), if retry => {}
            }
        }
    }
}

/// A started container runner.
struct Handle {
    stop: watch::Sender<Option<Instant>>,
    outcome: Option<Outcome>,
}

/// The pod's container runners and their endings.
struct Containers {
    init: Vec<Option<Handle>>,
    app: Vec<Handle>,
    done_tx: mpsc::UnboundedSender<(Slot, Outcome)>,
    done_rx: mpsc::UnboundedReceiver<(Slot, Outcome)>,
}

impl Containers {
    fn start(&mut self, run: &Arc<Run>, slot: Slot, c: &Container, sidecar: bool) {
        let (stop, stop_rx) = watch::channel(None);
        let handle = Handle {
            stop,
            outcome: None,
        };
        match slot {
            Slot::Init(i) => self.init[i] = Some(handle),
            Slot::App(_) => self.app.push(handle),
        }
        let (run, c, done) = (run.clone(), c.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let outcome = run_container(run, slot, c, sidecar, stop_rx).await;
            let _ = done.send((slot, outcome));
        });
    }

    fn handle(&mut self, slot: Slot) -> Option<&mut Handle> {
        match slot {
            Slot::Init(i) => self.init.get_mut(i)?.as_mut(),
            Slot::App(i) => self.app.get_mut(i),
        }
    }

    /// Waits for the next runner to end and records it.
    async fn next(&mut self) {
        if let Some((slot, outcome)) = self.done_rx.recv().await
            && let Some(h) = self.handle(slot)
        {
            h.outcome = Some(outcome);
        }
    }

    /// Stops the runner in `slot` by `deadline` and waits for it.
    async fn stop(&mut self, slot: Slot, deadline: Instant) {
        let Some(h) = self.handle(slot) else { return };
        if h.outcome.is_none() {
            let _ = h.stop.send(Some(deadline));
        }
        while self.handle(slot).is_some_and(|h| h.outcome.is_none()) {
            self.next().await;
        }
    }

    /// The termination order: app containers together, then init containers
    /// (sidecars) one at a time in reverse order, each with at least the minimum.
    async fn stop_all(&mut self, deadline: Instant) {
        for h in &self.app {
            if h.outcome.is_none() {
                let _ = h.stop.send(Some(deadline));
            }
        }
        while self.app.iter().any(|h| h.outcome.is_none()) {
            self.next().await;
        }
        for i in (0..self.init.len()).rev() {
            let d = deadline.max(Instant::now() + SIDECAR_MIN_GRACE);
            self.stop(Slot::Init(i), d).await;
        }
    }
}

/// Runs `pod` (already bound to this node) until it is deleted or the node stops.
pub(crate) async fn run_pod(
    node: Arc<NodeCtx>,
    pod: Pod,
    mut updates: watch::Receiver<Option<Pod>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone();
    let api: Api<Pod> = Api::namespaced(node.client.clone(), &ns);
    let spec = pod.spec.clone().unwrap_or_default();
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    if pod.metadata.deletion_timestamp.is_some() || finished {
        // Nothing of it runs here (a previous node process had it): wait for its
        // deletion if it is not deleted yet, then finish it.
        let why = termination(&mut updates, &mut shutdown).await;
        finish(&api, &name, uid, why).await;
        return;
    }
    let net = match node.net.add_pod().await {
        Ok(net) => net,
        Err(e) => {
            tracing::error!(pod = name, error = %e, "cannot create the pod's network");
            let patch = json!({"status": {"message": format!("test node: {e}")}});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await;
            let why = termination(&mut updates, &mut shutdown).await;
            finish(&api, &name, uid, why).await;
            return;
        }
    };
    let init_specs = spec.init_containers.clone().unwrap_or_default();
    let is_sidecar = |c: &Container| c.restart_policy.as_deref() == Some("Always");
    let view = PodView {
        phase: Phase::Pending,
        pod_ip: net.ip().to_string(),
        host_ip: node.net.gateway().to_string(),
        start_time: now(),
        initialized: false,
        init: init_specs
            .iter()
            .map(|c| {
                let image = c.image.as_deref().unwrap_or_default();
                ContainerView::waiting(&c.name, image, "PodInitializing", is_sidecar(c))
            })
            .collect(),
        app: spec
            .containers
            .iter()
            .map(|c| {
                let image = c.image.as_deref().unwrap_or_default();
                ContainerView::waiting(&c.name, image, "PodInitializing", false)
            })
            .collect(),
        message: None,
    };
    let shared = Arc::new(Shared {
        view: Mutex::new(view),
        bump: watch::channel(0).0,
    });
    let reporter = Arc::new(Reporter {
        api: api.clone(),
        name: name.clone(),
        shared: shared.clone(),
        times: Mutex::default(),
        last: Mutex::default(),
    });
    let reporting = tokio::spawn(reporter.clone().run(updates.clone()));
    let run = Arc::new(Run {
        node: node.clone(),
        shared: shared.clone(),
        pod: pod.clone(),
        net_name: net.name().to_string(),
        pod_ip: net.ip(),
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
    });
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut containers = Containers {
        init: init_specs.iter().map(|_| None).collect(),
        app: Vec::new(),
        done_tx,
        done_rx,
    };
    let why = life(&run, &spec, &mut containers, &mut updates, &mut shutdown).await;
    let grace = match why {
        Why::Deleted(g) => g,
        Why::Gone => Duration::ZERO,
        Why::Shutdown => SHUTDOWN_GRACE,
    };
    containers.stop_all(Instant::now() + grace).await;
    reporting.abort();
    let latest = updates.borrow().clone();
    if let Some(latest) = latest {
        reporter.push(&latest).await;
    }
    node.net.remove_pod(net).await;
    finish(&api, &name, uid, why).await;
}

/// Starts the containers and waits for the pod to be deleted.
async fn life(
    run: &Arc<Run>,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    containers: &mut Containers,
    updates: &mut watch::Receiver<Option<Pod>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Why {
    let mut bump = run.shared.bump.subscribe();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        containers.start(run, Slot::Init(i), c, sidecar);
        loop {
            if sidecar && run.shared.read(|v| v.init[i].started) {
                break;
            }
            match containers.init[i].as_ref().and_then(|h| h.outcome) {
                Some(Outcome::Exited(0)) if !sidecar => break,
                Some(_) => {
                    run.shared.update(|v| v.phase = Phase::Failed);
                    return termination(updates, shutdown).await;
                }
                None => {}
            }
            tokio::select! {
                why = termination(updates, shutdown) => return why,
                () = containers.next() => {}
                _ = bump.changed() => {}
            }
        }
    }
    run.shared.update(|v| {
        v.initialized = true;
        v.phase = Phase::Running;
    });
    for (i, c) in spec.containers.iter().enumerate() {
        containers.start(run, Slot::App(i), c, false);
    }
    loop {
        if containers.app.iter().all(|h| h.outcome.is_some()) {
            // Nothing will restart (restartPolicy Never or OnFailure): the pod is done.
            let ok = containers
                .app
                .iter()
                .all(|h| h.outcome == Some(Outcome::Exited(0)));
            run.shared
                .update(|v| v.phase = if ok { Phase::Succeeded } else { Phase::Failed });
            let why = termination(updates, shutdown).await;
            return why;
        }
        tokio::select! {
            why = termination(updates, shutdown) => return why,
            () = containers.next() => {}
        }
    }
}

/// Removes the pod object (grace 0, only this incarnation) unless it is gone already.
async fn finish(api: &Api<Pod>, name: &str, uid: Option<String>, why: Why) {
    if matches!(why, Why::Gone) {
        return;
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = name, error = %e, "cannot delete the pod"),
    }
}

/// Waits until the runner is told to stop; the deadline of the stop.
async fn stop_requested(stop: &mut watch::Receiver<Option<Instant>>) -> Instant {
    loop {
        if let Some(deadline) = *stop.borrow_and_update() {
            return deadline;
        }
        if stop.changed().await.is_err() {
            return Instant::now();
        }
    }
}

/// Runs one container, restarting it per policy, until it is stopped or ends.
async fn run_container(
    run: Arc<Run>,
    slot: Slot,
    c: Container,
    sidecar: bool,
    mut stop: watch::Receiver<Option<Instant>>,
) -> Outcome {
    let launch = loop {
        match configure(&run, &c).await {
            Ok(l) => break l,
            Err(message) => {
                run.shared.container(slot, |v| {
                    v.state = json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}});
                });
                // The kubelet retries on its next sync (the Secret may appear).
                tokio::select! {
                    () = tokio::time::sleep(CONFIG_RETRY) => {}
                    _ = stop_requested(&mut stop) => return Outcome::ConfigError,
                }
            }
        }
    };
    let target = Target {
        pod_ip: run.pod_ip,
        pod_netns: run.net_name.clone(),
        node_net: run.node.netrt.clone(),
        env: launch.env.clone(),
        container: c.clone(),
    };
    let meta = &run.pod.metadata;
    let log_file = run.node.log_dir.join(format!(
        "{}_{}_{}.log",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
        c.name
    ));
    let spawn = SpawnSpec {
        program: "ip".into(),
        args: command_line(&run, &launch),
        env: BTreeMap::new(),
        log_file,
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started_at = now();
        let mut process = match Supervised::spawn(&spawn).await {
            Ok(p) => p,
            Err(e) => {
                run.shared.container(slot, |v| {
                    v.state = json!({"waiting": {"reason": "RunContainerError", "message": e.to_string()}});
                });
                stop_requested(&mut stop).await;
                return Outcome::ConfigError;
            }
        };
        let id = format!("sluice://{}", process.pid());
        run.shared.container(slot, |v| {
            v.state = json!({"running": {"startedAt": started_at}});
            v.started = c.startup_probe.is_none();
            v.ready = false;
            v.container_id = Some(id.clone());
        });
        let probes = tokio::spawn(probe_loop(
            run.shared.clone(),
            slot,
            c.clone(),
            target.clone(),
        ));
        let exited = tokio::select! {
            status = process.wait() => status.ok(),
            deadline = stop_requested(&mut stop) => {
                probes.abort();
                run.shared.container(slot, |v| v.ready = false);
                pre_stop(&c, &target, deadline).await;
                let grace = deadline.saturating_duration_since(Instant::now());
                match process.stop(grace).await {
                    Ok(Stopped::AlreadyExited(s) | Stopped::Graceful(s) | Stopped::Killed(s)) => Some(s),
                    Err(e) => {
                        tracing::warn!(container = c.name, error = %e, "cannot stop the container");
                        None
                    }
                }
            }
        };
        probes.abort();
        let stopped = *stop.borrow();
        let code = match exited {
            Some(status) => status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            _ => 128 + 9,
        };
        let terminated = json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": started_at,
            "finishedAt": now(),
            "containerID": id,
        }});
        run.shared.container(slot, |v| {
            v.state = terminated.clone();
            v.ready = false;
            v.started = false;
        });
        if stopped.is_some() {
            return Outcome::Stopped;
        }
        let restart = match slot {
            _ if sidecar => true,
            Slot::Init(_) => code != 0 && run.restart_policy != "Never",
            Slot::App(_) => {
                run.restart_policy == "Always" || (run.restart_policy == "OnFailure" && code != 0)
            }
        };
        if !restart {
            return Outcome::Exited(code);
        }
        run.shared.container(slot, |v| {
            v.restart_count += 1;
            v.last_state = terminated;
            v.state = json!({"waiting": {"reason": "CrashLoopBackOff",
                "message": format!("back-off {}s restarting failed container={}", backoff.as_secs(), c.name)}});
        });
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop_requested(&mut stop) => return Outcome::Stopped,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The container's launch: reads the Secrets its env refers to, then builds it
/// (the error is the `CreateContainerConfigError` message).
async fn configure(run: &Run, c: &Container) -> Result<env::Launch, String> {
    let namespace = run.pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(run.node.client.clone(), namespace);
    let mut secrets = env::Secrets::new();
    for name in env::secret_names(c) {
        let secret = api.get_opt(&name).await.map_err(|e| {
            format!(
                "container {}: reading Secret {namespace}/{name}: {e}",
                c.name
            )
        })?;
        let data = secret.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        });
        secrets.insert(name, data);
    }
    let (pod_ip, host_ip) = (run.pod_ip.to_string(), run.node.net.gateway().to_string());
    let facts = PodFacts {
        pod_ip: &pod_ip,
        host_ip: &host_ip,
        node_name: &run.node.name,
        secrets: &secrets,
    };
    env::launch(&run.pod, c, facts).map_err(|e| e.to_string())
}

/// `ip netns exec POD env -i [-C DIR] PATH=… HOSTNAME=… VARS… PROGRAM ARGS…`: the
/// container runs in the pod's network namespace with only its own environment
/// (plus the node's `PATH` and `HOSTNAME`, as a container gets them).
fn command_line(run: &Run, launch: &env::Launch) -> Vec<String> {
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        run.net_name.clone(),
        "env".into(),
        "-i".into(),
    ];
    if let Some(dir) = &launch.working_dir {
        args.push("-C".into());
        args.push(dir.clone());
    }
    let mut vars = BTreeMap::new();
    vars.insert("PATH".to_string(), run.node.path.clone());
    vars.insert(
        "HOSTNAME".to_string(),
        run.pod.metadata.name.clone().unwrap_or_default(),
    );
    vars.extend(launch.env.clone());
    args.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
    args.push(launch.program.clone());
    args.extend(launch.args.iter().cloned());
    args
}

/// Runs the container's preStop hook, if any, until it ends or `deadline`.
async fn pre_stop(c: &Container, target: &Target, deadline: Instant) {
    let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return;
    };
    let budget = deadline.saturating_duration_since(Instant::now());
    if let Err(e) = probe::run_hook(hook, target, budget).await {
        tracing::info!(container = c.name, error = %e, "preStop hook failed");
    }
}

/// The startup probe until it passes, then the readiness probe for as long as
/// the process runs, with the probes' delays, periods and thresholds.
async fn probe_loop(shared: Arc<Shared>, slot: Slot, c: Container, target: Target) {
    if let Some(p) = &c.startup_probe {
        tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
        let mut passes = 0;
        loop {
            match probe::run_probe(p, &target).await {
                Ok(()) => passes += 1,
                Err(e) => {
                    passes = 0;
                    tracing::debug!(container = c.name, error = e, "startup probe failed");
                }
            }
            if passes >= p.success_threshold.unwrap_or(1).max(1) {
                break;
            }
            tokio::time::sleep(secs(p.period_seconds, 10)).await;
        }
        shared.container(slot, |v| v.started = true);
    }
    let Some(p) = &c.readiness_probe else {
        shared.container(slot, |v| v.ready = true);
        return;
    };
    tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
    let (success, failure) = (
        p.success_threshold.unwrap_or(1).max(1),
        p.failure_threshold.unwrap_or(3).max(1),
    );
    let (mut passes, mut fails, mut ready) = (0, 0, false);
    loop {
        match probe::run_probe(p, &target).await {
            Ok(()) => {
                passes += 1;
                fails = 0;
            }
            Err(e) => {
                fails += 1;
                passes = 0;
                tracing::debug!(container = c.name, error = e, "readiness probe failed");
            }
        }
        let now_ready = if ready {
            fails < failure
        } else {
            passes >= success
        };
        if now_ready != ready {
            ready = now_ready;
            shared.container(slot, |v| v.ready = ready);
        }
        tokio::time::sleep(secs(p.period_seconds, 10)).await;
    }
}

fn secs(value: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(0) as u64)
}
