//! The README's tested blocks: a fenced block right after `<!-- tested: NAME -->` is run
//! line by line by a test, so every command a newcomer pastes is known to work.
//!
//! A line whose comment says `refused` must fail; every other line must succeed. The
//! first surprise stops the run and names the line.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The commands of the block marked `<!-- tested: name -->` (continuations joined).
pub fn block(readme: &str, name: &str) -> Result<Vec<String>> {
    let marker = format!("<!-- tested: {name} -->");
    let after = readme
        .split_once(&marker)
        .with_context(|| format!("README has no {marker}"))?
        .1;
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .with_context(|| format!("{marker} is not followed by a ```sh block"))?;
    let body = body
        .split_once("\n```")
        .with_context(|| format!("the block after {marker} is not closed"))?
        .0;
    let mut commands: Vec<String> = Vec::new();
    let mut pending = String::new();
    for line in body.lines() {
        pending.push_str(line);
        if let Some(stripped) = pending.strip_suffix('\\') {
            pending = format!("{stripped} ");
            continue;
        }
        if !pending.trim().is_empty() {
            commands.push(std::mem::take(&mut pending));
        }
        pending.clear();
    }
    Ok(commands)
}

/// Whether a README line is expected to be refused (its comment says so).
fn expects_refusal(command: &str) -> bool {
    command
        .split_once(" # ")
        .is_some_and(|(_, comment)| comment.contains("refused"))
}

/// A bash script running `commands` in order, checking each as the module doc says;
/// `inject` adds test-only steps after the first command containing a pattern.
pub fn script(commands: &[String], inject: &[(&str, &str)]) -> String {
    // Whatever a block starts in the background stops with it.
    let mut out = String::from("set -u -o pipefail\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n");
    for command in commands {
        let shown = command.replace('\'', "'\\''");
        out.push_str(&format!("echo '+ {shown}' >&2\n"));
        // The command on its own line, so its trailing comment cannot swallow `then`.
        if expects_refusal(command) {
            out.push_str(&format!(
                "if\n{command}\nthen echo 'README: this line should have been refused: {shown}' >&2; exit 1; fi\n"
            ));
        } else {
            out.push_str(&format!(
                "if\n{command}\nthen :; else echo 'README: this line failed: {shown}' >&2; exit 1; fi\n"
            ));
        }
        for (pattern, step) in inject {
            if command.contains(pattern) {
                out.push_str(step);
                out.push('\n');
            }
        }
    }
    out
}

/// Runs `script` with bash in `dir` with `env`, killed after `timeout`.
pub fn run(script: &str, dir: &Path, env: &[(&str, String)], timeout: Duration) -> Result<Output> {
    bounded(&[], script, dir, env, timeout)
}

/// Runs `script` like [`run`], in a new network namespace (only its own loopback), so
/// fixed ports cannot collide with anything else on the machine.
pub fn run_isolated(script: &str, dir: &Path, timeout: Duration) -> Result<Output> {
    bounded(&["unshare", "--net"], script, dir, &[], timeout)
}

fn bounded(
    wrapper: &[&str],
    script: &str,
    dir: &Path,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<Output> {
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=10")
        .arg(timeout.as_secs().to_string())
        .args(wrapper)
        .args(["bash", "-c", script])
        .current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().context("running bash")?;
    if out.status.code() == Some(124) {
        bail!(
            "the README block did not finish within {timeout:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "text\n<!-- tested: demo -->\n```sh\nmake up   # starts\nkubectl apply \\\n  -f x   # refused by the webhook\n\n```\nmore\n";

    #[test]
    fn blocks_join_continuations_and_know_refusals() {
        let commands = block(README, "demo").unwrap();
        assert_eq!(
            commands,
            vec![
                "make up   # starts",
                "kubectl apply    -f x   # refused by the webhook"
            ]
        );
        assert!(!expects_refusal(&commands[0]));
        assert!(expects_refusal(&commands[1]));
        assert!(block(README, "other").is_err());
    }

    #[test]
    fn scripts_stop_at_the_first_surprise() {
        let dir = std::env::temp_dir();
        let lines = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = script(
            &lines(&[
                "export A=1",
                "test \"$A\" = 1   # uses it",
                "false  # refused",
            ]),
            &[],
        );
        assert!(
            run(&ok, &dir, &[], Duration::from_secs(10))
                .unwrap()
                .status
                .success()
        );
        let failing = script(&lines(&["true", "false", "touch /nonexistent-never"]), &[]);
        let out = run(&failing, &dir, &[], Duration::from_secs(10)).unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("this line failed: false"));
        let unrefused = script(&lines(&["true  # refused"]), &[]);
        assert!(
            !run(&unrefused, &dir, &[], Duration::from_secs(10))
                .unwrap()
                .status
                .success()
        );
        let injected = script(&lines(&["true"]), &[("true", "exit 7")]);
        assert_eq!(
            run(&injected, &dir, &[], Duration::from_secs(10))
                .unwrap()
                .status
                .code(),
            Some(7)
        );
    }
}
