pub mod config;
pub mod core;
pub mod framer;
pub mod protocol;
