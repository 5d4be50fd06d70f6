//! In-process benchmark of one rollback (fetch when stale, audit index, plan, commit, push with
//! compare-and-swap), without process start-up. The CLI numbers are in `bench/run.py`.
//!
//!     cargo bench --bench engine -- 1000,50000,100000 30
//!     cargo bench --bench engine -- 50000 30 --stages     # and the time of each stage
//!
//! `--stages` records the engine's stage spans (`fetch`, `audit`, `select`, `plan`, `decide`,
//! `write`, `push`, `after`) and prints the median of each per rollback; recording costs a
//! little, so the first table is measured without it.
//!
//! Builds each synthetic repo with `bench/gen_repo.py` and `git fast-import`, then rolls back
//! one service after another (each a different bad deploy) on a single engine, as the server does.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use rollbackd::Config;
use rollbackd::SystemClock;
use rollbackd::{Engine, Event, Options, Outcome, Source};

const POLICY: &str = r#"- name: bench
  match: { source: any, matchers: ['service=~".+"'] }
  target:
    service: "{{ labels.service }}"
    env: "{{ labels.env }}"
    paths: ["apps/{{ labels.service }}/{{ labels.env }}/**"]
  action: { mode: direct, strategy: auto }
  guards: { cooldown: 30m, max_rollbacks: { count: 3, per: 24h }, max_change_age: 30d, require_immutable_artifacts: true }
"#;

fn sh(cmd: &mut Command) {
    let st = cmd.status().expect("spawn");
    assert!(st.success(), "{cmd:?}");
}

fn build_repo(dir: &Path, commits: usize, bad: usize) {
    let origin = dir.join("origin.git");
    sh(Command::new("git").args(["init", "-q", "--bare", "--initial-branch=main"]).arg(&origin));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut gen_repo = Command::new("python3")
        .arg(root.join("bench/gen_repo.py"))
        .args(["--commits", &commits.to_string(), "--bad", &bad.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let stream = gen_repo.stdout.take().unwrap();
    sh(Command::new("git").arg("--git-dir").arg(&origin).args(["fast-import", "--quiet", "--done"]).stdin(stream));
    assert!(gen_repo.wait().unwrap().success());
    sh(Command::new("git").arg("--git-dir").arg(&origin).args(["gc", "-q"]));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(dir.join("policies/bench.yaml"), POLICY).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    for (name, text) in rollbackd::DEMO_TEMPLATES {
        std::fs::write(dir.join("templates").join(name), text).unwrap();
    }
    // One service after another is the measurement, not an incident: the breaker is off.
    let config = "repo: { url: origin.git, branch: main }\ndata_dir: data\npause: { breaker: { max_services: 0 } }\n";
    std::fs::write(dir.join("rollbackd.yaml"), config).unwrap();
}

/// The engine's stages, in the order they run.
const STAGES: [&str; 8] = ["fetch", "audit", "select", "plan", "decide", "write", "push", "after"];

/// Adds up the time spent in each stage span of the current rollback.
#[derive(Clone, Default)]
struct Stages(Arc<Mutex<BTreeMap<&'static str, f64>>>);

impl Stages {
    fn take(&self) -> BTreeMap<&'static str, f64> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Stages {
    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().replace(Instant::now());
        }
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(name) = STAGES.iter().find(|s| **s == span.name()) else { return };
        if let Some(start) = span.extensions_mut().remove::<Instant>() {
            *self.0.lock().unwrap().entry(name).or_default() += start.elapsed().as_secs_f64() * 1000.0;
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let k = (sorted.len() - 1) as f64 * p / 100.0;
    let (lo, hi) = (k.floor() as usize, (k.ceil() as usize).min(sorted.len() - 1));
    sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo as f64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let sizes: Vec<usize> =
        args.first().map_or("1000,50000".to_string(), Clone::clone).split(',').map(|s| s.parse().unwrap()).collect();
    let rollbacks: usize = args.get(1).map_or(30, |s| s.parse().unwrap());
    let stages = std::env::args().any(|a| a == "--stages").then(Stages::default);
    if let Some(layer) = &stages {
        let filter = tracing_subscriber::filter::Targets::new().with_target("rollbackd", tracing::Level::DEBUG);
        tracing::subscriber::set_global_default(Registry::default().with(layer.clone().with_filter(filter))).unwrap();
    }
    let mut per_stage: Vec<(usize, BTreeMap<&'static str, Vec<f64>>)> = Vec::new();
    println!("| commits | build mirror | p50 | p90 | max | mean |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        build_repo(dir.path(), n, rollbacks);
        let (config, secrets) = Config::load(&dir.path().join("rollbackd.yaml")).unwrap();
        let mut engine = Engine::new(config, secrets, Arc::new(SystemClock)).unwrap();
        let t = Instant::now();
        engine.history().unwrap();
        let prime = t.elapsed().as_secs_f64();
        let mut times = Vec::new();
        let mut stage_times: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        stages.as_ref().map(Stages::take);
        for i in 0..rollbacks {
            let now = jiff::Timestamp::now();
            let event =
                Event::request(Source::Cli, &format!("s{i:03}"), "prod", "bench", None, now, &format!("bench-{i}"));
            let t = Instant::now();
            let report = engine.handle(&event, &Options::default()).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            for (stage, ms) in stages.as_ref().map(Stages::take).unwrap_or_default() {
                stage_times.entry(stage).or_default().push(ms);
            }
            assert!(matches!(report.outcome, Outcome::RolledBack { .. }), "{:?}", report.outcome);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        println!(
            "| {n} | {prime:.1} s | {:.1} ms | {:.1} ms | {:.1} ms | {mean:.1} ms |",
            pct(&times, 50.0),
            pct(&times, 90.0),
            times[times.len() - 1]
        );
        per_stage.push((n, stage_times));
    }
    if stages.is_some() {
        println!(
            "\n| stage (median ms per rollback) | {} |",
            per_stage.iter().map(|(n, _)| format!("{n} commits")).collect::<Vec<_>>().join(" | ")
        );
        println!("|---|{}", "---:|".repeat(per_stage.len()));
        for stage in STAGES {
            let cells: Vec<String> = per_stage
                .iter()
                .map(|(_, t)| {
                    let mut v = t.get(stage).cloned().unwrap_or_default();
                    v.sort_by(|a, b| a.total_cmp(b));
                    if v.is_empty() { "-".into() } else { format!("{:.2}", pct(&v, 50.0)) }
                })
                .collect();
            println!("| {stage} | {} |", cells.join(" | "));
        }
    }
}
