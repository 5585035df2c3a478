//! berthd configuration (config.toml, containerd keys).
