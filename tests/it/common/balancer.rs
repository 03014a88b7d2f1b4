//! A TCP load balancer in front of several servers, as clients of a deployment meet one: each
//! new connection goes to the next server in turn that accepts it.

use std::net::SocketAddr;

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Listens on a loopback port of its own until dropped.
pub(crate) struct Balancer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Hands connections to `backends` in turn, the first to `backends[0]`; a backend that
    /// refuses the connection is skipped.
    pub(crate) async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut next = 0;
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut outbound = None;
                for offset in 0..backends.len() {
                    let at = (next + offset) % backends.len();
                    if let Ok(stream) = TcpStream::connect(backends[at]).await {
                        outbound = Some(stream);
                        next = at + 1;
                        break;
                    }
                }
                // No backend takes it: the client sees the connection close.
                let Some(mut outbound) = outbound else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
