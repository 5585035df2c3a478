//! No fd leaks: every kind of process IO, created, used and closed, leaves the shim's fd table
//! exactly as it found it. Its own test binary, so no other test opens fds meanwhile.
fn main() {}
