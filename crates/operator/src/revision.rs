//! Revisions: the hash of what shapes a pod, and the `ControllerRevision` that
//! keeps each revision's shape so that an abort can re-create old pods (as
//! StatefulSet and DaemonSet do).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::Resource;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::crd::{Evacuator, GracefulSet, Protocol};

/// Label on pods and ControllerRevisions: the set they belong to.
pub const SET_LABEL: &str = "sluice.dev/set";
/// Label on pods and ControllerRevisions: the revision (hash of the pod shape).
pub const REVISION_LABEL: &str = "sluice.dev/revision";

/// Everything in the spec that shapes a pod. Its hash is the revision; the
/// upgrade strategy is not part of it (changing a rate must not start an upgrade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodShape {
    /// The pod template.
    pub template: PodTemplateSpec,
    /// What the connections carry.
    pub protocol: Protocol,
    /// The evacuator (the sidecar is part of the pod).
    pub evacuator: Evacuator,
}

impl PodShape {
    /// The shape the set's spec asks for.
    pub fn of(set: &GracefulSet) -> PodShape {
        PodShape {
            template: set.spec.template.clone(),
            protocol: set.spec.protocol,
            evacuator: set.spec.evacuator.clone(),
        }
    }

    /// The revision: 10 hex digits of the FNV-1a hash of the shape's JSON (keys
    /// in a fixed order: k8s-openapi's field order, BTreeMaps for labels).
    pub fn revision(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{:010x}", hash & 0xff_ffff_ffff)
    }
}

/// The name of a set's ControllerRevision for `revision`.
pub fn controller_revision_name(set: &str, revision: &str) -> String {
    format!("{set}-{revision}")
}

/// The labels the operator puts on everything it creates for a set.
pub fn labels(set: &str, revision: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (SET_LABEL.to_owned(), set.to_owned()),
        (REVISION_LABEL.to_owned(), revision.to_owned()),
    ])
}

/// The ControllerRevision keeping `shape`, owned by the set, numbered `number`.
pub fn controller_revision(set: &GracefulSet, shape: &PodShape, number: i64) -> ControllerRevision {
    let name = set.metadata.name.clone().unwrap_or_default();
    let revision = shape.revision();
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(controller_revision_name(&name, &revision)),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels(&name, &revision)),
            owner_references: set.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: RawExtension(serde_json::to_value(shape).unwrap_or_default()),
        revision: Some(number),
    }
}

/// The shape a ControllerRevision keeps, if it holds one.
pub fn shape_of(revision: &ControllerRevision) -> Option<PodShape> {
    serde_json::from_value(revision.data.0.clone()).ok()
}

/// The ControllerRevisions to delete: those of no revision `in_use` (pods run it,
/// or it is the current or update revision) beyond the newest `limit`.
pub fn prune<'a>(
    revisions: &'a [ControllerRevision],
    in_use: &[&str],
    limit: i32,
) -> Vec<&'a ControllerRevision> {
    let rev_of = |r: &ControllerRevision| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_LABEL).cloned())
            .unwrap_or_default()
    };
    let mut unused: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| !in_use.contains(&rev_of(r).as_str()))
        .collect();
    unused.sort_by_key(|r| std::cmp::Reverse(r.revision.unwrap_or(0)));
    let keep = usize::try_from(limit).unwrap_or(0);
    unused.into_iter().skip(keep).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(rev: &str, number: i64) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(format!("s-{rev}")),
                labels: Some(labels("s", rev)),
                ..ObjectMeta::default()
            },
            data: RawExtension(serde_json::Value::Null),
            revision: Some(number),
        }
    }

    #[test]
    fn revision_is_ten_hex_digits_and_follows_the_template() {
        let mut shape = PodShape {
            template: PodTemplateSpec::default(),
            protocol: Protocol::Mqtt,
            evacuator: Evacuator::default(),
        };
        let a = shape.revision();
        assert_eq!(a.len(), 10);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, shape.clone().revision(), "stable");
        shape.protocol = Protocol::Tcp;
        assert_ne!(a, shape.revision());
    }

    #[test]
    fn prune_keeps_the_newest_unused_and_every_used_one() {
        let all: Vec<_> = (1..=6).map(|n| revision(&format!("r{n}"), n)).collect();
        let gone: Vec<_> = prune(&all, &["r1", "r6"], 2)
            .into_iter()
            .map(|r| r.revision)
            .collect();
        // r1 and r6 in use; of r2..r5 the newest two (r5, r4) are kept.
        assert_eq!(gone, vec![Some(3), Some(2)]);
        assert!(prune(&all, &[], 10).is_empty());
    }
}
