//! The operator's API calls for one set, one small function each, so that tests
//! can check every request (`tower-test` verifiers in `tests`).

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use serde_json::json;

use crate::crd::{GracefulSet, GracefulSetStatus};
use crate::pod::{SERVING_ANNOTATION, SERVING_GATE, TOKEN_KEY, token_secret_name};
use crate::revision::{self, PodShape, SET_LABEL};

/// The one field manager of every server-side apply the operator makes.
pub const MANAGER: &str = "sluice-operator";
/// Annotation on a set: the user asked to abort the update (`kubectl sluice abort`).
pub const ABORT_ANNOTATION: &str = "sluice.dev/abort";

/// The API of one set's namespace.
#[derive(Clone)]
pub struct Cluster {
    /// The set's name.
    pub set: String,
    /// The set's pods.
    pub pods: Api<Pod>,
    /// GracefulSets of the namespace.
    pub sets: Api<GracefulSet>,
    /// Its ControllerRevisions.
    pub revisions: Api<ControllerRevision>,
    /// Its Secrets.
    pub secrets: Api<Secret>,
}

fn apply() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// `Ok` for a 404 (deleting what is gone) or 409 (creating what exists).
fn tolerate(r: Result<(), kube::Error>, code: u16) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(e)) if e.code == code => Ok(()),
        other => other,
    }
}

impl Cluster {
    /// The API for `set` in `namespace`.
    pub fn new(client: Client, namespace: &str, set: &str) -> Cluster {
        Cluster {
            set: set.to_owned(),
            pods: Api::namespaced(client.clone(), namespace),
            sets: Api::namespaced(client.clone(), namespace),
            revisions: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
        }
    }

    fn selector(&self) -> ListParams {
        ListParams::default().labels(&format!("{SET_LABEL}={}", self.set))
    }

    /// The set's pods (by its label).
    pub async fn list_pods(&self) -> Result<Vec<Pod>, kube::Error> {
        Ok(self.pods.list(&self.selector()).await?.items)
    }

    /// The set's ControllerRevisions.
    pub async fn list_revisions(&self) -> Result<Vec<ControllerRevision>, kube::Error> {
        Ok(self.revisions.list(&self.selector()).await?.items)
    }

    /// Creates a pod (an existing one of that name is fine: the engine names
    /// pods uniquely, so it is this very pod from an earlier reconcile).
    pub async fn create_pod(&self, pod: &Pod) -> Result<(), kube::Error> {
        tolerate(
            self.pods
                .create(&PostParams::default(), pod)
                .await
                .map(drop),
            409,
        )
    }

    /// Records the engine's serving decision on the pod.
    pub async fn set_serving(&self, pod: &str, serving: bool) -> Result<(), kube::Error> {
        let patch = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "annotations": {SERVING_ANNOTATION: serving.to_string()}},
        });
        self.pods
            .patch(pod, &apply(), &Patch::Apply(patch))
            .await
            .map(drop)
    }

    /// Sets the pod's serving gate: the pod is in the Service's endpoints only
    /// while it is `True` (and its containers are ready).
    pub async fn set_gate(&self, pod: &str, gate: bool, now: &str) -> Result<(), kube::Error> {
        let word = if gate { "True" } else { "False" };
        let patch = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod},
            "status": {"conditions": [{
                "type": SERVING_GATE, "status": word, "lastTransitionTime": now,
                "reason": if gate { "Serving" } else { "NotServing" },
            }]},
        });
        tolerate(
            self.pods
                .patch_status(pod, &apply(), &Patch::Apply(patch))
                .await
                .map(drop),
            404,
        )
    }

    /// Deletes a pod (a missing one is fine).
    pub async fn delete_pod(&self, pod: &str) -> Result<(), kube::Error> {
        tolerate(
            self.pods
                .delete(pod, &DeleteParams::default())
                .await
                .map(drop),
            404,
        )
    }

    /// Publishes the set's status (server-side apply, forced: the operator owns it).
    pub async fn publish_status(&self, status: &GracefulSetStatus) -> Result<(), kube::Error> {
        let patch = json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "GracefulSet",
            "metadata": {"name": self.set},
            "status": status,
        });
        self.sets
            .patch_status(&self.set, &apply(), &Patch::Apply(patch))
            .await
            .map(drop)
    }

    /// Removes the abort annotation once the abort is done.
    pub async fn clear_abort(&self) -> Result<(), kube::Error> {
        let patch = json!({"metadata": {"annotations": {ABORT_ANNOTATION: null}}});
        self.sets
            .patch(&self.set, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(drop)
    }

    /// The sidecars' admin token, from the set's Secret, created (random, owned by
    /// the set) when missing.
    pub async fn admin_token(&self, set: &GracefulSet) -> Result<String, kube::Error> {
        let name = token_secret_name(&self.set);
        if let Some(secret) = self.secrets.get_opt(&name).await?
            && let Some(token) = secret.data.as_ref().and_then(|d| d.get(TOKEN_KEY))
        {
            return Ok(String::from_utf8_lossy(&token.0).into_owned());
        }
        let token = random_token();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some([(SET_LABEL.to_owned(), self.set.clone())].into()),
                owner_references: set.controller_owner_ref(&()).map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            string_data: Some([(TOKEN_KEY.to_owned(), token.clone())].into()),
            ..Secret::default()
        };
        self.secrets.create(&PostParams::default(), &secret).await?;
        Ok(token)
    }

    /// The `(username, password)` of an EMQX credentials Secret.
    pub async fn credentials(&self, secret: &str) -> Result<Option<(String, String)>, kube::Error> {
        let Some(s) = self.secrets.get_opt(secret).await? else {
            return Ok(None);
        };
        let data = s.data.unwrap_or_default();
        let key = |k: &str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
        };
        Ok(key("username").zip(key("password")))
    }

    /// Keeps `shape` as a ControllerRevision (numbered after the newest) unless
    /// it is kept already.
    pub async fn ensure_revision(
        &self,
        set: &GracefulSet,
        shape: &PodShape,
        existing: &[ControllerRevision],
    ) -> Result<(), kube::Error> {
        let name = revision::controller_revision_name(&self.set, &shape.revision());
        if existing
            .iter()
            .any(|r| r.metadata.name.as_deref() == Some(&name))
        {
            return Ok(());
        }
        let number = existing
            .iter()
            .filter_map(|r| r.revision)
            .max()
            .unwrap_or(0)
            + 1;
        let cr = revision::controller_revision(set, shape, number);
        tolerate(
            self.revisions
                .create(&PostParams::default(), &cr)
                .await
                .map(drop),
            409,
        )
    }

    /// Deletes a ControllerRevision (a missing one is fine).
    pub async fn delete_revision(&self, name: &str) -> Result<(), kube::Error> {
        tolerate(
            self.revisions
                .delete(name, &DeleteParams::default())
                .await
                .map(drop),
            404,
        )
    }
}

/// 32 random bytes from the OS, hex-encoded.
fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if filled.is_err() {
        // No /dev/urandom: fall back on the hasher's per-process random keys.
        use std::hash::{BuildHasher, RandomState};
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let v = RandomState::new().hash_one(i).to_le_bytes();
            chunk.copy_from_slice(&v);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
