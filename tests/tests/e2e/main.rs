//! End-to-end tests: the real server binary, real sockets, real clients. One test binary.

mod chain;
mod clients;
mod config;
mod disk;
mod durability;
mod languages;
mod limits;
mod plugins;
mod sandbox;
mod smtp;
