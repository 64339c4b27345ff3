//! The README's quickstart, console and testbed blocks, run line by line as written (see
//! `mq_testbed::readme`) on a fresh testbed of their own: `make up`, the exports of
//! `make env`, produce and consume, kubectl's refusals, signed console calls, a Pod
//! behind a Service. The real-cluster block runs in `chart_install.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, ensure};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The blocks run `make up` / `make build`, whose cargo may re-link the binaries another
/// block is starting at that moment: one block at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Stops the block's testbed and removes its directory, however the test ends.
struct TestbedDir(PathBuf);

impl Drop for TestbedDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new(workspace().join("target/debug/mq-testbed"))
            .arg("down")
            .env("MQFLEET_TESTBED_DIR", &self.0)
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_readme_quickstart_console_and_pods_blocks_work_as_written() -> Result<()> {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let readme = std::fs::read_to_string(workspace().join("README.md"))?;
    let mut commands = Vec::new();
    for name in ["quickstart", "console", "pods"] {
        commands.extend(mq_testbed::readme::block(&readme, name)?);
    }
    let dir = TestbedDir(std::env::temp_dir().join(format!("mq-readme-{}", std::process::id())));
    let script = mq_testbed::readme::script(&commands, &[]);
    let out = mq_testbed::readme::run(
        &script,
        &workspace(),
        &[("MQFLEET_TESTBED_DIR", dir.0.display().to_string())],
        Duration::from_secs(900),
    )?;
    // What a reader would look for in the output.
    let stderr = succeeded_saying(
        &out,
        &[
            "mqfleet is up in",
            "hello from mq-broker produce #3",
            "order-created",
            "\"instanceName\": \"shop\"",
            "totalDiff",
            "\"accessKey\"",
        ],
    )?;
    let refusals =
        stderr.matches("denied the request").count() + stderr.matches("Invalid value").count();
    ensure!(refusals >= 2, "the refusals did not say why:\n{stderr}");
    drop(dir);
    Ok(())
}

/// The broker block uses the default ports (9876, 10911, 10912), so it runs in a network
/// namespace of its own: nothing else can hold them there, and it holds nothing of ours.
#[test]
fn the_readme_broker_block_works_as_written_in_its_own_network() -> Result<()> {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let readme = std::fs::read_to_string(workspace().join("README.md"))?;
    let script = mq_testbed::readme::script(&mq_testbed::readme::block(&readme, "broker")?, &[]);
    let isolated = format!("ip link set lo up\n{script}");
    let out = mq_testbed::readme::run_isolated(&isolated, &workspace(), Duration::from_secs(300))?;
    succeeded_saying(
        &out,
        &[
            "hello from mq-broker produce #2",
            "DefaultCluster",
            "mq_ready 1",
        ],
    )?;
    Ok(())
}

/// Fails unless the block succeeded and its output holds every `wanted` text; the
/// block's stderr (the commands it ran, and what refused ones said).
fn succeeded_saying(out: &std::process::Output, wanted: &[&str]) -> Result<String> {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(
        out.status.success(),
        "the README failed:\n{stderr}\n--- stdout:\n{stdout}"
    );
    for wanted in wanted {
        ensure!(
            stdout.contains(wanted),
            "no {wanted:?} in the output:\n{stdout}"
        );
    }
    Ok(stderr.into_owned())
}

#[test]
fn every_tested_block_exists() -> Result<()> {
    let readme = std::fs::read_to_string(workspace().join("README.md"))?;
    for name in ["quickstart", "console", "pods", "broker", "real-cluster"] {
        let commands = mq_testbed::readme::block(&readme, name)?;
        ensure!(!commands.is_empty(), "block {name} is empty");
    }
    ensure!(
        readme.matches("<!-- tested: ").count() == 5,
        "a tested block is not run by any test"
    );
    Ok(())
}
