//! The edge HTTP proxy.
//!
//! A request reads off the modules: [`listen`] accepts connections (HTTP/1.1
//! with keep-alive, HTTP/2, WebSocket upgrades), [`route`] finds the app from
//! the `Host` header (`APP.localhost`, or a host naming the app), [`balance`]
//! picks the healthy instance with the fewest requests in flight, and
//! [`upstream`] forwards the request and streams the answer back, counting it
//! in flight until its body ends so that draining can wait for it.
//!
//! The route table arrives through a `watch` channel: the router never asks
//! anyone what runs; whoever owns the instances publishes a new table.

pub mod balance;
mod coarse_timer;
mod dispatch;
pub mod edge_rules;
mod file_body;
mod forwarding;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod listen;
pub mod measure;
pub mod pages;
pub mod peek;
pub mod proxy_v2;
pub mod route;
mod router_state;
pub mod site;
pub mod sockets;
pub mod statics;
mod stats;
pub mod tunneled;
pub mod upstream;

pub use balance::{Backend, InFlight};
pub use edge_rules::{EdgeRules, EdgeState, RateRule};
pub use listen::{AcmeAnswers, Edge, HostFilter, serve};
pub use measure::{AccessLog, AccessRecord};
pub use route::{Admission, AppRoute, AppTraffic, InternalAccess, RouteTable, TcpRoute, Waker};
pub use site::Site;
pub use sockets::RouterSockets;
pub use statics::StaticDir;
pub use stats::{HttpFigures, HttpStats, LATENCY_BOUNDS, set_metering};
pub use tunneled::serve_tunneled;
