//! The Claude Agent SDK architecture.
//!
//! `message` converts one SDK/transcript message into blocks (shared by transcript parsing
//! and, later, the live stream); `transcript` handles the stored combined transcript.

pub mod message;
pub mod stream;
pub mod transcript;
