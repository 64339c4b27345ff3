//! One testbed per test binary, shared by its tests.
//!
//! Cleanup design: the shared testbed lives in a `static` and is never dropped, so an
//! `atexit` hook (registered once it has started) stops it when the test binary exits
//! normally — including after failed tests, since libtest exits through `exit()`. If the
//! binary dies abruptly (SIGKILL, abort), the hook does not run; then PDEATHSIG kills the
//! processes (they were forked by the permanent spawner thread), and the next testbed
//! start reclaims the stale slot and removes its directory. Under `cargo nextest`, each
//! test is its own process, so "shared" means one testbed per test there.

use std::sync::OnceLock;

use crate::controlplane::{Options, Testbed};
use crate::error::{Error, Result, chain};

static SHARED: OnceLock<std::result::Result<Testbed, String>> = OnceLock::new();

impl Testbed {
    /// The binary-wide shared testbed, started on first use. A start failure is
    /// remembered and returned to every caller (no retry storms).
    pub async fn shared() -> Result<&'static Testbed> {
        if let Some(started) = SHARED.get() {
            return as_result(started);
        }
        // get_or_init blocks concurrent callers until the first start finishes.
        tokio::task::spawn_blocking(|| as_result(SHARED.get_or_init(start_shared)))
            .await
            .map_err(|e| Error::Shared(e.to_string()))?
    }
}

fn as_result(started: &'static std::result::Result<Testbed, String>) -> Result<&'static Testbed> {
    started.as_ref().map_err(|e| Error::Shared(e.clone()))
}

/// Starts the testbed on a private runtime in a fresh thread: the caller's runtime may
/// be current-thread (so `block_on` there would deadlock or panic) and ends with its test.
fn start_shared() -> std::result::Result<Testbed, String> {
    let started = std::thread::Builder::new()
        .name("mq-testbed-shared".into())
        .spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(Testbed::start(Options::default()))
                .map_err(|e| chain(&e))
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the shared testbed's start thread panicked".to_owned())?;
    if started.is_ok() {
        // SAFETY: registers a plain `extern "C"` function without arguments.
        if unsafe { libc::atexit(stop_shared_at_exit) } != 0 {
            tracing::warn!("atexit registration failed; relying on PDEATHSIG for cleanup");
        }
    }
    started
}

extern "C" fn stop_shared_at_exit() {
    // Unwinding out of an extern "C" function aborts, so contain any panic here.
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(testbed)) = SHARED.get()
            && let Err(e) = testbed.stop()
        {
            eprintln!(
                "mq-testbed: stopping the shared testbed at exit failed: {}",
                chain(&e)
            );
        }
    });
}
