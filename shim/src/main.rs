//! `containerd-shim-runc-v2`: dispatches to `start`, `delete`, `-info`, `-v` or the daemon.
//!
//! Exit status and stderr follow the Go shim: on failure it prints `<runtime>: <error>` to
//! stderr and exits 1 (containerd shows that text to the user); bad flags exit 2 as Go's
//! `flag` package does.

use std::process::ExitCode;

use shim::args::{Action, Flags};
use shim::manager;

fn current_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

/// Runs a short-lived async action with the reaper loop alongside (runtime processes are
/// reaped by it, never by tokio).
fn run_short<F, Fut>(f: F) -> Result<Vec<u8>, String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, manager::ManagerError>>,
{
    let rt = current_thread().map_err(|e| format!("building the tokio runtime: {e}"))?;
    rt.block_on(async {
        let reaper = shim::reaper::Reaper::global();
        let _others = reaper.take_unsubscribed();
        tokio::spawn(async move {
            let _ = reaper.run().await;
        });
        f().await.map_err(|e| e.to_string())
    })
}

fn main() -> ExitCode {
    let flags = match Flags::parse(std::env::args_os().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}\nUsage of {}: -namespace NS -id ID -address ADDR [-debug] [-bundle DIR] [-socket PATH] [-publish-binary PATH] [-info] [-v] start|delete",
                std::env::args().next().unwrap_or_default());
            return ExitCode::from(2);
        }
    };
    let result: Result<Vec<u8>, String> = match flags.action() {
        Action::Version => {
            print!("{}", manager::version_text());
            return ExitCode::SUCCESS;
        }
        Action::Info => run_short(manager::info),
        Action::Start => manager::start(&flags).map_err(|e| e.to_string()),
        Action::Delete => run_short(|| manager::delete(&flags)),
        Action::Serve => match shim::daemon::serve(&flags) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(e) => Err(e.to_string()),
        },
        Action::Unknown(a) => Err(format!("unknown action {a:?}: expected start or delete")),
    };
    match result {
        Ok(out) => match manager::print(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{}: writing stdout: {e}", manager::RUNTIME_NAME);
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprint!("{}: {e}", manager::RUNTIME_NAME);
            ExitCode::FAILURE
        }
    }
}
