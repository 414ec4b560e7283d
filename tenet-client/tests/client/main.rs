//! Tests of the client, the verification layer and the `tenet` command
//! against real `tenet-server` instances started in this process.

mod cli;
mod errors;
mod helpers;
mod layer;
mod lifecycle;
mod methods;
mod outage;
mod retries;
