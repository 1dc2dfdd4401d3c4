//! Runs this program again as a child process with a time limit: what both the bundle's cases
//! and a round's candidates run in, because a kernel that faults leaves the whole CUDA
//! context unusable (every later launch of the process fails) and one that hangs must be
//! killable.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a child run ended, when it did not print its result.
#[derive(Debug)]
pub enum ChildError {
    /// Killed at the time limit.
    TimedOut,
    /// It could not start, or died without a result line: what it said last.
    Failed(String),
}

/// A time limit given on the command line after `flag`: a positive, finite number of
/// seconds (`Duration::from_secs_f64` would panic on a negative or NaN one).
pub fn limit_arg(flag: &str, value: Option<String>) -> Result<Duration, String> {
    value
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{flag} needs a positive number of seconds"))
}

/// Runs `me args…`, kills it after `limit`, and returns the last line it printed on stdout
/// (which `parse` turns into its result; a line it does not take is a failure).
pub fn run<T>(
    me: &Path,
    args: &[&str],
    limit: Duration,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, ChildError> {
    let mut child = Command::new(me)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ChildError::Failed(format!("starting the child process: {e}")))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ChildError::TimedOut);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(ChildError::Failed(e.to_string())),
        }
    }
    let o = child
        .wait_with_output()
        .map_err(|e| ChildError::Failed(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    stdout.lines().last().and_then(parse).ok_or_else(|| {
        let stderr = String::from_utf8_lossy(&o.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        ChildError::Failed(format!(
            "the child process died ({}): {}",
            o.status,
            tail.join(" | ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, limit_ms: u64) -> Result<String, ChildError> {
        let parse = |l: &str| l.starts_with('{').then(|| l.to_string());
        run(
            Path::new("/bin/sh"),
            &["-c", script],
            Duration::from_millis(limit_ms),
            parse,
        )
    }

    #[test]
    fn a_child_gives_its_last_line_or_why_it_has_none() {
        let ok = sh("echo starting; echo '{\"pass\":true}'", 10_000);
        assert_eq!(ok.unwrap(), "{\"pass\":true}");
        match sh("echo faulted >&2; exit 3", 10_000) {
            Err(ChildError::Failed(why)) => assert!(why.contains("faulted"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(sh("sleep 5", 100), Err(ChildError::TimedOut)));
    }
}
