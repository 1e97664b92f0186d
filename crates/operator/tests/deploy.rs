//! `deploy/` and `examples/` stay in step with the code: the CRD files are what
//! `sluice operator crd` prints, and the example sets parse and pass the
//! operator's own validation.

use std::path::PathBuf;

use serde_json::Value;
use sluice_operator::controller::validate;
use sluice_operator::crd::{GracefulSet, crd_yaml};
use sluice_operator::revision::PodShape;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_crd_files_are_what_sluice_operator_crd_prints() {
    let generated = crd_yaml().unwrap();
    for path in [
        "deploy/crd.yaml",
        "deploy/helm/sluice-operator/crds/gracefulsets.yaml",
    ] {
        assert!(
            read(path) == generated,
            "{path} is stale: regenerate it with `cargo run -- operator crd > {path}`"
        );
    }
}

#[test]
fn the_examples_are_valid_gracefulsets() {
    for path in [
        "examples/gracefulset-mosquitto.yaml",
        "examples/gracefulset-emqx.yaml",
    ] {
        let docs: Vec<Value> =
            serde_saphyr::from_str_multiple(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let sets: Vec<GracefulSet> = docs
            .into_iter()
            .filter(|d| d["kind"] == "GracefulSet")
            .map(|d| serde_json::from_value(d).unwrap_or_else(|e| panic!("{path}: {e}")))
            .collect();
        assert_eq!(sets.len(), 1, "{path}: one GracefulSet");
        let set = &sets[0];
        validate(set, &PodShape::of(set)).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
