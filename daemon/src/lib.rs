//! berthd as a library: every subsystem is a module, `server` wires them together explicitly.
//!
//! Layering (arrows point down only): `server` → `api` (thin tonic adapters) → `runtime`,
//! `images` → `metadata`, `diff` → `snapshots`, `content`, with `events` and `config` beside.

pub mod api;
pub mod config;
pub mod content;
pub mod diff;
pub mod events;
pub mod images;
pub mod metadata;
pub mod runtime;
pub mod server;
pub mod snapshots;
