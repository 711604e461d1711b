#![doc = include_str!("../README.md")]

pub mod accountability;
pub mod app;
pub mod block;
pub mod chain;
pub mod consensus;
pub mod genesis;
pub mod light;
pub mod mempool;
pub mod proof;
pub mod replica;
pub mod state;
pub mod store;
pub mod validators;
