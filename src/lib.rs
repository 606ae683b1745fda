pub mod config;
pub mod core;
pub mod framer;
