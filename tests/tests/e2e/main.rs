//! End-to-end tests: the real server binary, real sockets, real clients. One test binary.

mod auth;
mod chain;
mod clients;
mod config;
mod content_filters;
mod delivery;
mod disk;
mod dns;
mod dns_filters;
mod durability;
mod frontends;
mod key_value;
mod languages;
mod limits;
mod plugins;
mod rights;
mod sandbox;
mod smtp;
mod stateful_filters;
mod tls;
mod vetting;
