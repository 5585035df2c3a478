//! cgroups v1 and v2: detection, OOM events, metrics.
