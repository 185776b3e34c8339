//! Each request to an app is counted (status class, latency, bytes) and,
//! when the app keeps one, written to the access log with the instance
//! that answered; the router's own answers are counted too.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use berth_router::{AccessRecord, AppRoute, Backend, RouteTable};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A backend that answers `hello` (5 bytes).
async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn get(router: SocketAddr, host: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(router).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    raw[9..12].parse().unwrap()
}

#[tokio::test]
async fn requests_are_counted_and_logged_with_the_instance_that_answered() {
    let backend = Arc::new(Backend::new(start_backend().await, "web-a".into()));
    let logged = AppRoute {
        backends: vec![backend],
        access_log: true,
        ..AppRoute::default()
    };
    let quiet = AppRoute {
        access_log: false,
        unavailable_reason: Some("stopped".into()),
        ..AppRoute::default()
    };
    // Every client is denied: counted, never logged.
    let walled = AppRoute {
        access_log: true,
        edge: Arc::new(berth_router::EdgeRules {
            deny: vec!["127.0.0.0/8".parse().unwrap()],
            ..berth_router::EdgeRules::default()
        }),
        ..AppRoute::default()
    };
    let walled_traffic = walled.traffic.clone();
    let traffic = logged.traffic.clone();
    let quiet_traffic = quiet.traffic.clone();
    let table = RouteTable {
        apps: HashMap::from([
            ("shop".to_string(), logged),
            ("quiet".to_string(), quiet),
            ("walled".to_string(), walled),
        ]),
        ..RouteTable::default()
    };
    let records: Arc<Mutex<Vec<AccessRecord>>> = Arc::default();
    let kept = records.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = listener.local_addr().unwrap();
    let (_sender, receiver) = watch::channel(Arc::new(table));
    tokio::spawn(berth_router::serve(
        listener,
        receiver,
        "localhost".into(),
        berth_router::Edge {
            access_log: Some(Arc::new(move |record| kept.lock().unwrap().push(record))),
            ..berth_router::Edge::default()
        },
        std::future::pending(),
    ));

    for _ in 0..3 {
        assert_eq!(
            get(router, "shop.localhost", "/cart?token=secret").await,
            200
        );
    }
    assert_eq!(get(router, "quiet.localhost", "/").await, 503);
    assert_eq!(get(router, "walled.localhost", "/").await, 403);

    let records = records.lock().unwrap().clone();
    assert_eq!(
        records.len(),
        3,
        "only the app that keeps a log: {records:?}"
    );
    let record = &records[0];
    assert_eq!(record.app, "shop");
    assert_eq!(
        (record.method.as_str(), record.path.as_str()),
        ("GET", "/cart")
    );
    assert_eq!(record.status, 200);
    assert_eq!(record.bytes_out, 5);
    assert_eq!(record.instance.as_deref(), Some("web-a"));
    assert_eq!(record.client.to_string(), "127.0.0.1");

    let figures = traffic.http.figures();
    assert_eq!(figures.status, [0, 3, 0, 0, 0]);
    assert_eq!(*figures.latency_cumulative.last().unwrap(), 3);
    assert_eq!(figures.bytes_out, 15);
    // The router's own 503 counts for the app it was about.
    assert_eq!(quiet_traffic.http.figures().status, [0, 0, 0, 0, 1]);
    assert_eq!(walled_traffic.http.figures().status, [0, 0, 0, 1, 0]);
}
