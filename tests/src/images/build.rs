//! Running `images/build.sh` (what `make images` runs after cargo) from tests, bounded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ImageError, Result, io_error};

/// Builds the OCI images of `names` from the binaries in `bin_dir` (`target/<profile>`)
/// into `out` (`out/<name>` layouts, `out/<name>.rootfs`), within `timeout`.
pub fn build_images(bin_dir: &Path, out: &Path, names: &[&str], timeout: Duration) -> Result<()> {
    let script = crate::paths::workspace_dir().join("images/build.sh");
    let profile = bin_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ImageError::Tool(format!("{} names no profile", bin_dir.display())))?;
    let log = out.with_extension("build.log");
    std::fs::create_dir_all(out).map_err(io_error("creating", out))?;
    let log_file = std::fs::File::create(&log).map_err(io_error("creating", &log))?;
    let err_file = log_file.try_clone().map_err(io_error("cloning", &log))?;
    let mut child = Command::new("bash")
        .arg(&script)
        .args(names)
        .env("PROFILE", profile)
        .env("IMAGES_DIR", out)
        .current_dir(crate::paths::workspace_dir())
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .spawn()
        .map_err(io_error("running", &script))?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io_error("waiting for", &script))? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ImageError::Tool(format!(
                "{} did not finish within {timeout:?}: {}",
                script.display(),
                read(&log)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        return Err(ImageError::Tool(format!(
            "{} failed ({status}): {}",
            script.display(),
            read(&log)
        )));
    }
    Ok(())
}

/// Where [`build_images`] wrote its output (beside `out`).
pub fn build_log(out: &Path) -> PathBuf {
    out.with_extension("build.log")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
