//! Typed async client for the runc CLI.
