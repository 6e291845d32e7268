//! A process's own accounting from `/proc`: CPU time and memory. Linux only.

/// (user, system) CPU seconds of process `pid` (`USER_HZ` = 100).
pub fn cpu_split(pid: u32) -> Result<(f64, f64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name may hold spaces; fields resume after the last ')'.
    let after_name = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .ok_or("unexpected /proc/PID/stat format")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat: field {i} missing"))
    };
    // utime and stime are fields 14 and 15 of the whole line (11, 12 here).
    Ok((field(11)? as f64 / 100.0, field(12)? as f64 / 100.0))
}

/// Voluntary + involuntary context switches of every thread of `pid`
/// (`/proc/PID/task/*/status`; threads that ended are not counted).
pub fn context_switches(pid: u32) -> Result<u64, String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("/proc/{pid}/task: {e}"))?;
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn status_bytes(pid: u32, key: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("/proc/{pid}/status has no {key}"))
}

/// What `perf stat` counted for a process over a window.
#[derive(Debug, Clone, Copy)]
pub struct PerfCounts {
    pub syscalls: u64,
    /// CPU time of every thread (also threads started and ended within the
    /// window), in seconds: far finer than `/proc`'s 10 ms ticks.
    pub cpu_seconds: f64,
}

/// Waits `window` while `perf stat` counts the system calls
/// (`raw_syscalls:sys_enter`) and CPU time (`task-clock`) of `pid`; `None`
/// (after waiting all the same) when perf is missing or not permitted.
pub fn perf_counts(pid: u32, window: std::time::Duration) -> Option<PerfCounts> {
    let started = std::time::Instant::now();
    let output = std::process::Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            "raw_syscalls:sys_enter,task-clock",
            "-p",
        ])
        .arg(pid.to_string())
        .arg("--")
        .arg("sleep")
        .arg(format!("{:.3}", window.as_secs_f64()))
        .stdout(std::process::Stdio::null())
        .output();
    let counted = output.ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stderr).to_string();
        let value = |event: &str| -> Option<f64> {
            text.lines()
                .find(|l| l.contains(event))
                .and_then(|l| l.split(',').next()?.trim().parse::<f64>().ok())
        };
        Some(PerfCounts {
            syscalls: value("raw_syscalls:sys_enter")? as u64,
            cpu_seconds: value("task-clock")? / 1e3,
        })
    });
    // Whatever happened, the caller measured a window of this length.
    std::thread::sleep(window.saturating_sub(started.elapsed()));
    counted
}
