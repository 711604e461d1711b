#![doc = include_str!("../README.md")]

#[cfg(madsim)]
pub mod chain;
#[cfg(madsim)]
pub mod client;
#[cfg(madsim)]
pub mod env;
#[cfg(madsim)]
pub mod fork;
#[cfg(madsim)]
pub mod html;
#[cfg(madsim)]
pub mod light;
#[cfg(madsim)]
pub mod net;
#[cfg(madsim)]
pub mod outcome;
#[cfg(madsim)]
pub mod real;
#[cfg(madsim)]
pub mod report;
#[cfg(madsim)]
pub mod runner;
pub mod scenario;
pub mod shrink;
#[cfg(all(test, madsim))]
mod testkit;
#[cfg(madsim)]
pub mod timeline;
#[cfg(madsim)]
pub mod trust;
#[cfg(madsim)]
pub mod wall;
#[cfg(madsim)]
pub mod world;
