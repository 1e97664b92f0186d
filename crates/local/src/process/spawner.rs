//! Spawns children from one thread that lives as long as the process.
//!
//! Linux sends the parent-death signal when the *thread* that forked the child
//! exits, not the process. Tokio's blocking-pool threads exit after some idle
//! time, and a caller's thread may be short-lived too, which would kill healthy
//! instances. So every spawn happens on this dedicated thread.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

struct Request {
    command: Command,
    runtime: Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

static SPAWNER: OnceLock<io::Result<mpsc::Sender<Request>>> = OnceLock::new();

/// Spawns `command` on the spawner thread, registered with the caller's runtime.
pub(super) async fn spawn(command: Command) -> io::Result<Child> {
    let sender = SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("sluice-spawner".into())
                .spawn(move || {
                    // Ends only when every sender is gone: never, the sender is static.
                    for mut request in rx {
                        let _runtime = request.runtime.enter();
                        let _ = request.reply.send(request.command.spawn());
                    }
                })
                .map(|_| tx)
        })
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start the spawner thread: {e}")))?;
    let runtime = Handle::try_current().map_err(|e| io::Error::other(e.to_string()))?;
    let (reply, answer) = oneshot::channel();
    sender
        .send(Request {
            command,
            runtime,
            reply,
        })
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))?
}
