//! The real Prometheus and Alertmanager, from their Debian packages, as child processes of a
//! test: killed when the handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A child process, killed (and reaped) on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary from a Debian package: CI must have it; elsewhere the test is skipped, loudly.
pub fn installed(names: &[&str], package: &str) -> Option<PathBuf> {
    let found = names.iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "{package} is not installed; CI must install it (apt-get install {package})"
        );
        eprintln!("\n!!! SKIPPED: {package} not found; `apt-get install {package}` to run this test !!!\n");
    }
    found
}

/// Alertmanager on `port`, routing every alert to rollbackd at `rollbackd_url` with `token`,
/// repeating notifications every `repeat_interval`. Its files live in `dir`.
pub fn alertmanager(dir: &Path, port: u16, rollbackd_url: &str, token: &str, repeat_interval: &str) -> Option<Killed> {
    alertmanager_grouped(dir, port, rollbackd_url, token, repeat_interval, "[alertname, service, env]", "100ms")
}

/// `alertmanager`, grouping alerts by `group_by` and waiting `group_wait` before the first
/// notification of a group.
pub fn alertmanager_grouped(
    dir: &Path,
    port: u16,
    rollbackd_url: &str,
    token: &str,
    repeat_interval: &str,
    group_by: &str,
    group_wait: &str,
) -> Option<Killed> {
    let bin = installed(&["prometheus-alertmanager", "alertmanager"], "prometheus-alertmanager")?;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: rollbackd\n  group_by: {group_by}\n  group_wait: {group_wait}\n  group_interval: 1s\n  repeat_interval: {repeat_interval}\n\
             receivers:\n  - name: rollbackd\n    webhook_configs:\n      - url: {rollbackd_url}/webhooks/alertmanager\n        send_resolved: true\n\
             \x20       http_config:\n          authorization:\n            type: Bearer\n            credentials: {token}\n"
        ),
    )
    .unwrap();
    Some(spawn(
        Command::new(bin)
            .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address="),
    ))
}

/// Prometheus on `port` with `config` (prometheus.yml) and `rules` (rules.yml, when given).
pub fn prometheus(dir: &Path, port: u16, config: &str, rules: Option<&str>) -> Option<Killed> {
    let bin = installed(&["prometheus"], "prometheus")?;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    if let Some(rules) = rules {
        std::fs::write(dir.join("rules.yml"), rules).unwrap();
    }
    Some(spawn(
        Command::new(bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--rules.alert.resend-delay=1s"),
    ))
}

fn spawn(cmd: &mut Command) -> Killed {
    Killed(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
}
