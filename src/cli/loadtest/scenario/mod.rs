//! The measured scenarios: `bulk`, `boot`, `trickle`, `direct`.

pub mod boot;
pub mod bulk;
pub mod direct;
pub mod trickle;
