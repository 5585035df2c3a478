//! `berth version`: client and server versions (ctr's layout, "Go version" becomes "Rust").

use crate::{client, Globals};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] client::Error),
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
}

pub async fn run(g: &Globals) -> Result<(), Error> {
    println!("Client:");
    println!("  Version:  {}", env!("CARGO_PKG_VERSION"));
    println!("  Revision: {}", env!("BERTH_REVISION"));
    println!("  Rust version: {}", env!("BERTH_RUSTC_VERSION"));
    println!();
    let client = g.connect().await?;
    let v = client.version().version(()).await?.into_inner();
    println!("Server:");
    println!("  Version:  {}", v.version);
    println!("  Revision: {}", v.revision);
    let server = client.introspection().server(()).await?.into_inner();
    println!("  UUID: {}", server.uuid);
    Ok(())
}
