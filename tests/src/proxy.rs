//! A TCP proxy on a free loopback port whose backend can be switched: what a
//! virtual address, or a proxy that health-checks Redis for its role, does when a
//! replica is promoted. Connections open at the switch are cut, as the old
//! master's would be.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct SwitchProxy {
    pub port: u16,
    target: Arc<Mutex<SocketAddr>>,
    cut: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl SwitchProxy {
    pub async fn start(target: SocketAddr) -> SwitchProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let port = listener.local_addr().expect("bound").port();
        let target = Arc::new(Mutex::new(target));
        let (cut, _) = watch::channel(0u64);
        let task = tokio::spawn({
            let (target, cut) = (target.clone(), cut.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let to = *target.lock();
                    let mut cut = cut.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(to).await else {
                            return;
                        };
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            }
        });
        SwitchProxy {
            port,
            target,
            cut,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on, connect to `to`; cut every connection made before.
    pub fn switch(&self, to: SocketAddr) {
        *self.target.lock() = to;
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for SwitchProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
