//! Tests of `tenet-server` over real HTTP: in-process servers on port 0 and
//! the real binary, each with its own temporary data directory.

mod auth;
mod binary;
mod deploy;
mod drain;
mod errors;
mod flow;
mod helpers;
mod lifecycle;
mod limits;
mod observability;
mod openapi;
mod pagination;
mod protocol;
mod proxies;
mod quotas;
mod rate_limits;
mod rotate;
mod self_service;
mod usage;
mod verify;
