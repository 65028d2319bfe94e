//! What /proc says about a process: its peak RSS and CPU time. A module of
//! its own so that the driver (which measures) and the process starters
//! (which measure through the driver) do not import each other.

/// /proc facts about a child process.
pub fn proc_stats(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; here 11 and 12 after ")".
    let cpu_secs = (ticks(11) + ticks(12)) as f64 / 100.0;
    (hwm_kib, cpu_secs)
}

/// CPU seconds every process of the machine has used (user, system,
/// interrupts and steal from `/proc/stat`; idle and iowait left out).
pub fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let n: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|i| n.get(*i)).sum();
    busy as f64 / 100.0
}

/// CPU seconds used so far by each process whose name is `comm` (its
/// threads included), by pid: RabbitMQ's `beam.smp`, `redis-server`.
pub struct CpuOf(Vec<(u32, f64)>);

pub fn cpu_of(comm: &str) -> CpuOf {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return CpuOf(Vec::new());
    };
    CpuOf(
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == comm)
            })
            .map(|pid| (pid, proc_stats(pid).1))
            .collect(),
    )
}

impl CpuOf {
    /// CPU seconds used since `before` by the processes alive at both
    /// reads. A short-lived process of the same name that starts or ends in
    /// between is left out (RabbitMQ's command-line tools run on `beam.smp`
    /// too): counted, it would add its whole life, or take it away.
    pub fn since(&self, before: &CpuOf) -> f64 {
        self.0
            .iter()
            .filter_map(|(pid, now)| {
                let (_, then) = before.0.iter().find(|(p, _)| p == pid)?;
                Some(now - then)
            })
            .sum()
    }
}
