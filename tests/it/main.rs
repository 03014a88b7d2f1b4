//! End-to-end tests over real gRPC on 127.0.0.1:0: the server in-process or as a child process,
//! one test binary with a module per concern.

mod common;

mod auth;
mod cli;
mod client;
mod compression;
mod durable;
mod edge;
mod fanout;
mod interceptor_refusals;
mod lifecycle;
mod nodes;
mod objects;
mod operability;
mod redis_store;
mod resume;
mod server_api;
mod tls;
