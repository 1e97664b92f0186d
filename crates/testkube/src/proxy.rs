//! The service proxy (kube-proxy's part): for each ClusterIP Service, a listener
//! on the ClusterIP and each TCP port inside the node's network namespace; each
//! new connection goes to one endpoint of the Service's EndpointSlices chosen at
//! random among the ready ones (the serving-but-terminating ones only when none
//! is ready), as kube-proxy does. A connection stays on its endpoint for its
//! whole life, even after the endpoint leaves the slice (as conntrack keeps it).
//! With no endpoint, the connection is reset (kube-proxy rejects it).
//!
//! Given the API server's address, it also serves the `default/kubernetes`
//! Service's ClusterIP (10.96.0.1:443), forwarding from the host's network
//! namespace, where the API server listens: what runs in the node's namespace
//! reaches the API server as a pod would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::netns::NodeNet;

/// `(namespace, service name)`.
type Key = (String, String);

/// Every Service's EndpointSlices, by slice name.
#[derive(Debug, Default)]
struct Slices(Mutex<HashMap<Key, BTreeMap<String, EndpointSlice>>>);

impl Slices {
    /// One endpoint for the Service port named `port_name`, chosen at random.
    fn pick(&self, key: &Key, port_name: &str) -> Option<SocketAddr> {
        let map = self.0.lock().expect("slices lock");
        let mut ready = Vec::new();
        let mut terminating = Vec::new();
        for slice in map.get(key)?.values() {
            if slice.address_type != "IPv4" {
                continue;
            }
            let Some(port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.name.as_deref().unwrap_or("") == port_name
                        && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                })
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for e in slice.endpoints.iter().flatten() {
                let Some(ip) = e.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                    continue;
                };
                let c = e.conditions.clone().unwrap_or_default();
                let is_ready = c.ready.unwrap_or(true);
                let addr = SocketAddr::from((ip, port));
                if is_ready {
                    ready.push(addr);
                } else if c.serving.unwrap_or(false) && c.terminating.unwrap_or(false) {
                    terminating.push(addr);
                }
            }
        }
        let pool = if ready.is_empty() { terminating } else { ready };
        (!pool.is_empty()).then(|| pool[fastrand::usize(..pool.len())])
    }
}

/// A Service's listeners, and what they were made from.
struct Listening {
    fingerprint: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs the proxy until `shutdown`: watches on this (host) runtime, sockets on
/// `netrt` (the node's network namespace).
pub(crate) async fn run(
    client: Client,
    namespace: Option<String>,
    api_server: Option<SocketAddr>,
    net: Arc<NodeNet>,
    netrt: Handle,
    mut shutdown: watch::Receiver<bool>,
) {
    let api = match api_server {
        Some(addr) => api_service(&client, addr, &net, &netrt).await,
        None => None,
    };
    let (services, slices_api): (Api<Service>, Api<EndpointSlice>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let mut svc_events = watcher::watcher(services, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut slice_events = watcher::watcher(slices_api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let slices = Arc::new(Slices::default());
    let mut listening: HashMap<Key, Listening> = HashMap::new();
    let mut listed: Option<HashSet<Key>> = None;
    let mut slices_listed: Option<HashMap<Key, BTreeMap<String, EndpointSlice>>> = None;
    loop {
        tokio::select! {
            event = svc_events.next() => match event {
                // With the API server served apart, `default/kubernetes` is
                // not proxied a second time (both would bind its ClusterIP).
                Some(Ok(Event::Apply(s))) if !(api.is_some() && is_api(&s)) => {
                    service(&s, &net, &netrt, &slices, &mut listening).await;
                }
                Some(Ok(Event::InitApply(s))) if !(api.is_some() && is_api(&s)) => {
                    if let Some(seen) = listed.as_mut() {
                        seen.insert(key_of(&s.metadata));
                    }
                    service(&s, &net, &netrt, &slices, &mut listening).await;
                }
                Some(Ok(Event::Apply(_) | Event::InitApply(_))) => {}
                Some(Ok(Event::Delete(s))) => {
                    listening.remove(&key_of(&s.metadata));
                }
                Some(Ok(Event::Init)) => listed = Some(HashSet::new()),
                Some(Ok(Event::InitDone)) => {
                    if let Some(seen) = listed.take() {
                        listening.retain(|k, _| seen.contains(k));
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "service watch"),
                None => break,
            },
            event = slice_events.next() => match event {
                Some(Ok(Event::Apply(s))) => {
                    let mut map = slices.0.lock().expect("slices lock");
                    insert_slice(&mut map, s);
                }
                Some(Ok(Event::Delete(s))) => {
                    let mut map = slices.0.lock().expect("slices lock");
                    if let (Some(key), Some(name)) = (service_of(&s), s.metadata.name.as_ref())
                        && let Some(m) = map.get_mut(&key)
                    {
                        m.remove(name);
                    }
                }
                Some(Ok(Event::Init)) => slices_listed = Some(HashMap::new()),
                Some(Ok(Event::InitApply(s))) => {
                    if let Some(map) = slices_listed.as_mut() {
                        insert_slice(map, s);
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    if let Some(map) = slices_listed.take() {
                        *slices.0.lock().expect("slices lock") = map;
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "endpointslice watch"),
                None => break,
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// The Service that names the API server, `default/kubernetes`.
fn is_api(s: &Service) -> bool {
    s.metadata.namespace.as_deref() == Some("default")
        && s.metadata.name.as_deref() == Some("kubernetes")
}

fn key_of(meta: &kube::api::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The Service a slice belongs to (its `kubernetes.io/service-name` label).
fn service_of(s: &EndpointSlice) -> Option<Key> {
    let svc = s
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?;
    Some((
        s.metadata.namespace.clone().unwrap_or_default(),
        svc.clone(),
    ))
}

fn insert_slice(map: &mut HashMap<Key, BTreeMap<String, EndpointSlice>>, s: EndpointSlice) {
    if let (Some(key), Some(name)) = (service_of(&s), s.metadata.name.clone()) {
        map.entry(key).or_default().insert(name, s);
    }
}

/// (Re)creates a Service's listeners when its ClusterIP or ports changed.
async fn service(
    s: &Service,
    net: &NodeNet,
    netrt: &Handle,
    slices: &Arc<Slices>,
    listening: &mut HashMap<Key, Listening>,
) {
    let key = key_of(&s.metadata);
    let spec = s.spec.clone().unwrap_or_default();
    let ip = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    let Some(ip) = ip else {
        // Headless or ExternalName: nothing to proxy.
        listening.remove(&key);
        return;
    };
    let ports: Vec<(String, u16)> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            Some((
                p.name.clone().unwrap_or_default(),
                u16::try_from(p.port).ok()?,
            ))
        })
        .collect();
    let fingerprint = format!("{ip} {ports:?}");
    if listening
        .get(&key)
        .is_some_and(|l| l.fingerprint == fingerprint)
    {
        return;
    }
    listening.remove(&key);
    if let Err(e) = net.add_local(ip).await {
        tracing::error!(service = ?key, error = %e, "cannot add the ClusterIP");
        return;
    }
    let mut tasks = Vec::new();
    for (port_name, port) in ports {
        let (key, slices) = (key.clone(), slices.clone());
        tasks.push(netrt.spawn(async move {
            let addr = SocketAddr::from((ip, port));
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    let pick = {
                        let key = key.clone();
                        move || slices.pick(&key, &port_name)
                    };
                    serve(l, key, pick, Handle::current()).await
                }
                Err(e) => tracing::error!(service = ?key, %addr, error = %e, "cannot listen"),
            }
        }));
    }
    listening.insert(key, Listening { fingerprint, tasks });
}

/// Listens on the `default/kubernetes` Service's ClusterIP and port (inside the
/// node's namespace) and forwards each connection to `api_server` from this
/// (host) runtime. The listener lives as long as the returned value.
async fn api_service(
    client: &Client,
    api_server: SocketAddr,
    net: &NodeNet,
    netrt: &Handle,
) -> Option<Listening> {
    let key: Key = ("default".into(), "kubernetes".into());
    let svc = match Api::<Service>::namespaced(client.clone(), &key.0)
        .get(&key.1)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read Service default/kubernetes: the API server is not served in the node");
            return None;
        }
    };
    let spec = svc.spec.unwrap_or_default();
    let ip = spec.cluster_ip.as_deref()?.parse::<Ipv4Addr>().ok()?;
    let port = spec
        .ports
        .iter()
        .flatten()
        .find_map(|p| u16::try_from(p.port).ok())?;
    if let Err(e) = net.add_local(ip).await {
        tracing::error!(error = %e, "cannot add the API server's ClusterIP");
        return None;
    }
    let host = Handle::current();
    let task = netrt.spawn(async move {
        let addr = SocketAddr::from((ip, port));
        match TcpListener::bind(addr).await {
            Ok(l) => serve(l, key, move || Some(api_server), host).await,
            Err(e) => tracing::error!(%addr, error = %e, "cannot listen for the API server"),
        }
    });
    Some(Listening {
        fingerprint: format!("{ip}:{port} -> {api_server}"),
        tasks: vec![task],
    })
}

/// Accepts connections for one Service port and forwards each to the endpoint
/// `pick` chooses, connecting from the runtime `on` (its network namespace).
async fn serve(listener: TcpListener, key: Key, pick: impl Fn() -> Option<SocketAddr>, on: Handle) {
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => {
                tracing::warn!(service = ?key, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        on.spawn(forward(conn, pick()));
    }
}

async fn forward(mut client: TcpStream, target: Option<SocketAddr>) {
    let upstream = match target {
        Some(addr) => TcpStream::connect(addr).await.ok(),
        None => None,
    };
    let Some(mut upstream) = upstream else {
        // Refused, as kube-proxy's REJECT: reset instead of a clean close.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(name: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "t",
                         "labels": {"kubernetes.io/service-name": "mqtt"}},
            "addressType": "IPv4",
            "ports": [{"name": "mqtt", "port": 1883, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool) -> serde_json::Value {
        serde_json::json!({"addresses": [ip], "conditions":
            {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    /// Slices of the Service `t/mqtt`, each `(name, endpoints)`.
    fn slices(of: &[(&str, serde_json::Value)]) -> Slices {
        let mut map = HashMap::new();
        for (name, endpoints) in of {
            insert_slice(&mut map, slice(name, endpoints.clone()));
        }
        Slices(Mutex::new(map))
    }

    #[test]
    fn picks_ready_endpoints_at_random_and_terminating_only_as_a_last_resort() {
        let key = ("t".to_string(), "mqtt".to_string());
        let both = slices(&[
            (
                "a",
                serde_json::json!([
                    ep("10.244.0.2", true, true, false),
                    ep("10.244.0.3", false, false, false)
                ]),
            ),
            (
                "b",
                serde_json::json!([
                    ep("10.244.0.4", true, true, false),
                    ep("10.244.0.5", false, true, true)
                ]),
            ),
        ]);
        let mut seen = HashSet::new();
        for _ in 0..200 {
            seen.insert(both.pick(&key, "mqtt").unwrap().to_string());
        }
        let want: HashSet<String> = ["10.244.0.2:1883", "10.244.0.4:1883"]
            .map(String::from)
            .into();
        assert_eq!(seen, want);
        assert_eq!(both.pick(&key, "other"), None);
        let none_ready = slices(&[(
            "a",
            serde_json::json!([
                ep("10.244.0.3", false, false, false),
                ep("10.244.0.5", false, true, true)
            ]),
        )]);
        assert_eq!(
            none_ready.pick(&key, "mqtt").unwrap().to_string(),
            "10.244.0.5:1883"
        );
    }
}
