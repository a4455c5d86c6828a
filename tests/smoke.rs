//! The harness itself works: a server starts, answers the probe and exits cleanly on SIGTERM.

mod common;
use common::*;

#[test]
fn evented_probe_and_clean_exit() {
    let mut server = Server::start(&["--model", "evented"]);
    let (_, r) = roundtrip(&server, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    assert!(server.terminate().success());
}

/// The first number of the line that starts with `model` in `c10k doctor`'s capacity section,
/// and the limit it names.
fn doctor_capacity(report: &str, model: &str) -> (u64, String) {
    let line = report
        .lines()
        .find(|l| l.starts_with(model))
        .unwrap_or_else(|| panic!("no {model} line in:\n{report}"));
    let rest = line.split_once("about ").expect("a count").1;
    let count: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    let bound = line.split_once("bound by ").expect("a limit").1;
    let name = bound.split(':').next().unwrap().to_string();
    (count.parse().unwrap(), name)
}

fn proc_number(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn doctor_gives_each_model_its_capacity_from_this_machines_limits() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_c10k"))
        .arg("doctor")
        .output()
        .unwrap();
    assert!(out.status.success());
    let report = String::from_utf8(out.stdout).unwrap();

    // The blocking server: the tightest of its thread and descriptor limits, each worked out
    // here from the same /proc files (mappings and tasks in use move a little between the two
    // readings).
    let maps = proc_number("/proc/sys/vm/max_map_count");
    let pid_max = proc_number("/proc/sys/kernel/pid_max");
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) },
        0
    );
    let candidates = [
        ("vm.max_map_count", maps / 4),
        ("kernel.pid_max", pid_max),
        ("RLIMIT_NOFILE", nofile.rlim_max - 500),
    ];
    let (name, expected) = candidates.iter().min_by_key(|c| c.1).unwrap();
    let (count, bound) = doctor_capacity(&report, "blocking");
    assert_eq!(&bound, name, "{report}");
    assert!(
        count <= *expected && count + 1_000 >= *expected,
        "{count} vs {expected}\n{report}"
    );

    // The evented server: far past one process, bound by a system-wide limit, with the workers
    // it takes to get there.
    let (count, bound) = doctor_capacity(&report, "evented");
    assert!(count > nofile.rlim_max * 2, "{report}");
    assert!(["memory", "fs.file-max", "net.netfilter.nf_conntrack_max"].contains(&bound.as_str()));
    let workers = count.div_ceil(nofile.rlim_max - 500);
    assert!(
        report.contains(&format!("--workers N ({workers} for ")),
        "{report}"
    );
}
