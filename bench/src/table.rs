//! The printed form of a [`Report`]: one table per section, then the issue-5 targets.

use std::fmt::Write as _;

use crate::report::Report;
use crate::sections::density::mib;

/// Three significant digits, without trailing noise.
pub(crate) fn round(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    /// The human-readable table.
    pub(crate) fn render(&self) -> String {
        let m = &self.meta;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nNimbus benchmark — {} — commit {}{} — sandbox {}{}, functions of {} MB, CPU limit {}, idle polling {} ({}){}\nmachine: {} × {}, kernel {}, {:.1} GiB, idle CPUs: {}; load generator on the same cores; CPU busy before the run {}; load average {} → {}\n",
            m.started,
            m.commit,
            if m.dirty { " (dirty tree)" } else { "" },
            m.sandbox,
            if m.sandbox == "jail" {
                format!(" (Python zygote {})", m.python_zygote)
            } else {
                String::new()
            },
            m.memory_mb,
            m.cpu_limit,
            if m.idle_poll { "on" } else { "off" },
            m.idle_poll_mode,
            if m.quick { " — QUICK run" } else { "" },
            m.machine.nproc,
            m.machine.cpu_model,
            m.machine.kernel,
            m.machine.mem_total_bytes as f64 / 1024f64.powi(3),
            m.machine.cpu_idle,
            m.background_cpu_percent
                .map_or("?".into(), |p| format!("{p:.0} %")),
            m.load_average_start,
            m.load_average_end,
        );
        if let Some(w) = &self.warm {
            let mut tab = Table::new(&[
                "warm invoke (1 conn)",
                "p50 µs",
                "p90 µs",
                "p99 µs",
                "p99.9 µs",
                "max µs",
                "p50/floor",
                "REPORT p50 µs",
                "CPU µs/invoke: server",
                "env",
                "n",
                "errors",
            ]);
            for r in &w.rows {
                let s = r.latency.as_ref();
                let f =
                    |g: fn(&crate::stats::Summary) -> f64| s.map_or("-".into(), |s| round(g(s)));
                tab.row(vec![
                    r.target.clone(),
                    f(|s| s.p50_us),
                    f(|s| s.p90_us),
                    f(|s| s.p99_us),
                    f(|s| s.p999_us),
                    f(|s| s.max_us),
                    r.p50_over_floor.map_or("-".into(), |v| format!("{v:.1}×")),
                    r.report_duration
                        .as_ref()
                        .map_or("-".into(), |d| round(d.p50_us)),
                    r.server_cpu_us_per_invoke.map_or("-".into(), round),
                    r.env_cpu_us_per_invoke.map_or("-".into(), round),
                    s.map_or("0".into(), |s| s.n.to_string()),
                    r.errors.to_string(),
                ]);
            }
            out.push_str(&tab.render());
        }
        if let Some(rows) = &self.throughput {
            let mut tab = Table::new(&[
                "throughput",
                "clients",
                "invokes/s",
                "ok",
                "errors",
                "429",
                "p50 µs",
                "p99 µs",
                "CPU µs/invoke: server",
                "envs",
                "client",
                "other procs",
                "irq",
                "warm-up s",
            ]);
            for r in rows {
                let s = r.latency.as_ref();
                tab.row(vec![
                    r.target.clone(),
                    r.clients.to_string(),
                    format!("{:.0}", r.per_second),
                    r.ok.to_string(),
                    r.errors.to_string(),
                    r.throttled.to_string(),
                    s.map_or("-".into(), |s| round(s.p50_us)),
                    s.map_or("-".into(), |s| round(s.p99_us)),
                    r.cpu_us_per_invoke(r.cpu.server_s)
                        .map_or("-".into(), round),
                    r.cpu_us_per_invoke(r.cpu.envs_s).map_or("-".into(), round),
                    r.cpu_us_per_invoke(r.cpu.client_s)
                        .map_or("-".into(), round),
                    r.cpu_us_per_invoke(r.cpu.other_s).map_or("-".into(), round),
                    r.cpu_us_per_invoke(r.cpu.irq_s).map_or("-".into(), round),
                    format!(
                        "{:.1}{}",
                        r.warm_up_s,
                        if r.all_clients_warm {
                            ""
                        } else {
                            " (not all warm)"
                        }
                    ),
                ]);
            }
            out.push_str(&tab.render());
        }
        if let Some(c) = &self.cold {
            let mut tab = Table::new(&[
                "cold start (medians)",
                "after create ms",
                "init ms",
                "after reap ms",
                "init ms",
                "process floor ms",
                "floor",
                "n",
                "errors",
            ]);
            let ms = |v: Option<f64>| v.map_or("-".into(), round);
            for r in &c.rows {
                tab.row(vec![
                    r.runtime.label().into(),
                    ms(r.after_create.median_ms()),
                    ms(r.after_create.median_init_ms()),
                    ms(r.after_reap.median_ms()),
                    ms(r.after_reap.median_init_ms()),
                    ms(r.floor.median_ms()),
                    r.floor
                        .command
                        .split(" (")
                        .next()
                        .unwrap_or("")
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .to_string(),
                    format!(
                        "{}+{}",
                        r.after_create.latency_ms.len(),
                        r.after_reap.latency_ms.len()
                    ),
                    (r.after_create.errors.len() + r.after_reap.errors.len()).to_string(),
                ]);
            }
            for f in &c.extra_floors {
                tab.row(vec![
                    "(floor)".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                    ms(f.median_ms()),
                    f.command.clone(),
                    f.samples_ms.len().to_string(),
                    "".into(),
                ]);
            }
            out.push_str(&tab.render());
        }
        if let Some(rows) = &self.scale {
            let mut tab = Table::new(&[
                "scale-out (sleep 1 s)",
                "all done s",
                "p50 s",
                "environments",
                "envs/s",
                "ok",
                "errors",
                "429",
                "CPU ms/env: server",
                "env",
                "client",
                "other procs",
                "irq",
            ]);
            for r in rows {
                let per_env = |s: f64| {
                    if r.environments > 0 {
                        format!("{:.2}", s * 1e3 / r.environments as f64)
                    } else {
                        "-".into()
                    }
                };
                tab.row(vec![
                    format!("{} concurrent", r.burst),
                    r.all_done_s.map_or("-".into(), |v| format!("{v:.2}")),
                    r.latency
                        .as_ref()
                        .map_or("-".into(), |s| format!("{:.2}", s.p50_us / 1e6)),
                    r.environments.to_string(),
                    r.envs_per_second.map_or("-".into(), |v| format!("{v:.0}")),
                    r.ok.to_string(),
                    r.errors.to_string(),
                    r.throttled.to_string(),
                    per_env(r.cpu.server_s),
                    per_env(r.cpu.envs_s),
                    per_env(r.cpu.client_s),
                    per_env(r.cpu.other_s),
                    per_env(r.cpu.irq_s),
                ]);
            }
            out.push_str(&tab.render());
            if let Some(r) = rows.last().filter(|r| r.environments > 0) {
                let n = r.environments as f64;
                let kinds: Vec<String> = r
                    .cpu
                    .envs_by_kind
                    .iter()
                    .map(|(k, s)| format!("{k} {:.2}", s * 1e3 / n))
                    .collect();
                let _ = writeln!(
                    out,
                    "  env CPU ms/env by process ({} concurrent): {}\n",
                    r.burst,
                    kinds.join(", ")
                );
            }
        }
        if let Some(d) = &self.density {
            let mut tab = Table::new(&[
                "density (idle Python)",
                "environments",
                "server RSS MiB",
                "envs RSS MiB",
                "envs PSS MiB",
                "total RSS MiB",
            ]);
            for s in &d.steps {
                tab.row(vec![
                    format!("t={:.0}s", s.elapsed_s),
                    s.environments.to_string(),
                    format!("{:.1}", mib(s.server_rss as f64)),
                    format!("{:.0}", mib(s.env_rss_sum as f64)),
                    format!("{:.0}", mib(s.env_pss_sum as f64)),
                    format!("{:.0}", mib(s.total_rss() as f64)),
                ]);
            }
            out.push_str(&tab.render());
            let _ = writeln!(
                out,
                "  server per idle env: {}; env RSS {} MiB, PSS {} MiB; fit under {:.0} MiB: {}{} (by PSS: {}); stopped: {}\n",
                d.server_bytes_per_env
                    .map_or("-".into(), |b| format!("{:.0} KiB", b / 1024.0)),
                d.env_rss_mean
                    .map_or("-".into(), |b| format!("{:.1}", mib(b))),
                d.env_pss_mean
                    .map_or("-".into(), |b| format!("{:.1}", mib(b))),
                mib(d.budget_bytes as f64),
                d.fit.map_or("-".into(), |n| n.to_string()),
                if d.fit_projected { " (projected)" } else { "" },
                d.fit_by_pss.map_or("-".into(), |n| n.to_string()),
                d.stopped_because,
            );
            if let Some(last) = d.steps.last().filter(|s| s.environments > 0) {
                let n = last.environments as f64;
                let kinds: Vec<String> = last
                    .by_kind
                    .iter()
                    .map(|k| {
                        format!(
                            "{} ×{:.2} RSS {:.1} PSS {:.1}",
                            k.kind,
                            k.processes as f64 / n,
                            mib(k.rss as f64 / n),
                            mib(k.pss as f64 / n)
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  per environment by process (MiB): {}\n",
                    kinds.join("; ")
                );
            }
        }
        let mut tab = Table::new(&["issue 5 target", "target", "measured", ""]);
        for c in &self.targets {
            tab.row(vec![
                c.measure.clone(),
                c.target.clone(),
                c.measured.clone().unwrap_or_else(|| "-".into()),
                match c.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "not measured",
                }
                .into(),
            ]);
        }
        out.push_str(&tab.render());
        for e in &self.errors {
            let _ = writeln!(out, "ERROR: {e}\n");
        }
        let _ = writeln!(out, "total {:.0} s", m.total_seconds);
        out
    }
}

/// Left-aligned first column, right-aligned numbers.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (i, r) in self.rows.iter().enumerate() {
            let mut line = String::from("  ");
            for (c, cell) in r.iter().enumerate() {
                let pad = width[c].saturating_sub(cell.chars().count());
                if c == 0 {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str("  ");
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if i == 0 {
                let total: usize = width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
                out.push_str(&format!("  {}\n", "─".repeat(total)));
            }
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(round(1234.4), "1234");
        assert_eq!(round(41.26), "41.3");
        assert_eq!(round(4.126), "4.13");
    }

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&["name", "n"]);
        t.row(vec!["a".into(), "1000".into()]);
        t.row(vec!["long name".into(), "7".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "  name          n");
        assert_eq!(lines[2], "  a          1000");
        assert_eq!(lines[3], "  long name     7");
    }
}
