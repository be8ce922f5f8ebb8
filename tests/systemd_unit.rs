//! dist/proxrt.service as systemd reads it: `systemd-analyze verify` (no running systemd
//! needed; hack/setup installs Debian's `systemd` package) must accept every line without
//! a warning, and the settings a runtime depends on must be there.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::{output_within, proxrt_bin, temp_dir};

fn unit() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/proxrt.service");
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[test]
fn the_unit_has_what_a_runtime_needs() {
    let unit = unit();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/proxrt serve --config /etc/proxrt/config.toml",
        // A restart or stop signals the daemon only: monitors and containers stay.
        "KillMode=process",
        "Delegate=yes",
        "Restart=always",
        "TasksMax=infinity",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}:\n{unit}");
    }
    assert!(unit.lines().any(|l| l.starts_with("LimitNOFILE=")));
}

#[test]
fn systemd_analyze_verify_accepts_the_unit_without_warnings() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        // hack/setup installs it; a machine without it cannot check the unit.
        eprintln!("skipped: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one under test.
    let dir = temp_dir("proxrt-unit-");
    let path = dir.path().join("proxrt.service");
    let unit = unit().replace("/usr/bin/proxrt", &proxrt_bin().display().to_string());
    fs::write(&path, unit).unwrap();
    let out = output_within(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .current_dir(dir.path()),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Unknown keys and bad values are only warnings (exit 0): none may appear.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[test]
fn a_typo_in_a_unit_is_caught_by_the_same_check() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    let dir = temp_dir("proxrt-unit-");
    let path = dir.path().join("typo.service");
    fs::write(
        &path,
        format!(
            "[Service]\nType=notfy\nExecStart={}\n",
            proxrt_bin().display()
        ),
    )
    .unwrap();
    let out = output_within(
        Command::new("systemd-analyze").arg("verify").arg(&path),
        Duration::from_secs(60),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("notfy"),
        "{out:?}"
    );
}
