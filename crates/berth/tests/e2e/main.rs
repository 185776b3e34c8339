//! The end-to-end suites, in one test binary: the real `berth` CLI and
//! server, real processes, real HTTP over loopback, real cargo builds of
//! `examples/`, a real PostgreSQL and Redis. One binary links once; run a
//! suite with `cargo test -p berth --test e2e jobs::`.

mod acme;
mod api_tls;
mod budgets;
mod builds;
mod config;
mod crashes;
mod dashboard;
mod deploys;
mod disk;
mod docker_runtime;
mod dockerfiles;
mod domains;
mod drains;
mod edge;
mod fly_meaning;
mod formats;
mod images;
mod isolation;
mod jobs;
mod log_search;
mod metrics;
mod migrations;
mod one_off;
mod packages;
mod ports;
mod private_names;
mod pulls;
mod registry;
mod remote;
mod resources;
mod scaling;
mod server_control;
mod shuttle;
mod static_sites;
mod support;
mod tcp_services;
mod terminal;
mod tls;
mod tunnel;
mod volumes;
mod workspaces;
