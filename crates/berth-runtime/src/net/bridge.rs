//! Bridges from inside an instance's namespace to berth's services on the
//! host's loopback (PostgreSQL, Redis, the API, a loopback resolver).

use std::net::SocketAddr;
use std::sync::Arc;

/// Connections one instance may have open through a bridge or the proxy.
pub(super) const MAX_CONNECTIONS: usize = 256;

/// Accepts inside the namespace and connects each to `target` on the host.
pub(super) async fn bridge(listener: tokio::net::TcpListener, target: SocketAddr) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let mut inside = match listener.accept().await {
            Ok((inside, _)) => inside,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(mut outside) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            let _ = inside.set_nodelay(true);
            let _ = outside.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
        });
    }
}
