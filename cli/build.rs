// The build metadata script is shared: see daemon/build.rs.
include!("../daemon/build.rs");
