//! The problem sluice exists to solve, on real Kubernetes machinery: a
//! StatefulSet of 3 mosquitto pods with 1000 MQTT clients (half 3.1.1, half 5)
//! through its Service, rolling-updated by the real StatefulSet controller. It
//! measures disconnects per client, connections per pod over time, the fewest
//! ready pods and the imbalance at the end, prints them and writes them to
//! `target/tmp/<namespace>/baseline.json`: the baseline the operator must beat
//! (docs/benchmarks.md; `kube_gracefulset` runs it beside the operator). It
//! asserts only what is robustly true.
//! Needs `scripts/testcluster up` and `SLUICE_KUBECONFIG` (scripts/test sets both).

mod kube_support;
mod support;

use kube_support::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_rolling_update_baseline() {
    Env::start("kube-sts", 4)
        .await
        .run(async |env| {
            kube_support::rollout::statefulset_baseline(env).await;
        })
        .await;
}
