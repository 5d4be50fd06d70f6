//! The kinds of channel and how each is spoken to: a generic JSON webhook, a Slack incoming
//! webhook, Slack's `chat.postMessage` (threaded per incident), and the config repo's
//! conversation on GitHub (the pull request, or one issue per incident).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::Message;
use crate::config::ChannelConfig;
use crate::forge::{Forge, ForgeError};
use crate::outbound::{self, Answer};
use crate::support::secret::SecretString;

/// How hard one message is tried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delivery {
    pub attempts: u32,
}

pub(crate) enum Channel {
    Webhook { url: SecretString, agent: ureq::Agent },
    SlackWebhook { url: SecretString, agent: ureq::Agent },
    SlackApi { api_url: String, token: SecretString, channel: String, agent: ureq::Agent, threads: Threads },
    GithubIssue { forge: Arc<dyn Forge>, threads: Threads },
    File { path: std::path::PathBuf },
}

/// Where each incident's conversation continues (Slack `ts`, issue number), bounded.
#[derive(Default)]
pub(crate) struct Threads {
    by_incident: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Threads {
    fn get(&self, incident: &str) -> Option<&str> {
        self.by_incident.get(incident).map(String::as_str)
    }

    fn remember(&mut self, incident: &str, at: String) {
        if self.by_incident.insert(incident.to_string(), at).is_none() {
            self.order.push_back(incident.to_string());
        }
        if self.order.len() > 10_000
            && let Some(old) = self.order.pop_front()
        {
            self.by_incident.remove(&old);
        }
    }
}

/// The longest `Retry-After` waited for: Slack's rate limits ask for minutes at times, and each
/// channel has its own thread, so waiting them out delays only that channel's messages.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// How long to wait before the next try: what the receiver asked for (`Retry-After`, up to
/// [`MAX_RETRY_AFTER`]), else the backoff.
fn pause(retry_after: Option<Duration>, backoff: Duration) -> Duration {
    retry_after.map_or(backoff, |r| r.min(MAX_RETRY_AFTER))
}

/// Why one try failed, and whether another may succeed.
struct Failure {
    message: String,
    transient: bool,
    retry_after: Option<Duration>,
}

impl Failure {
    fn answer(a: &Answer) -> Failure {
        let body: String = a.body.chars().take(200).collect();
        Failure {
            message: format!("HTTP {}: {}", a.status, body.trim()),
            transient: a.transient(),
            retry_after: a.retry_after,
        }
    }
}

impl Channel {
    pub(crate) fn new(
        cfg: &ChannelConfig,
        secret: Option<SecretString>,
        forge: Arc<dyn Forge>,
        timeout: Duration,
    ) -> Option<Channel> {
        let agent = || outbound::agent(timeout);
        Some(match cfg {
            ChannelConfig::Webhook { .. } => Channel::Webhook { url: secret?, agent: agent() },
            ChannelConfig::SlackWebhook { .. } => Channel::SlackWebhook { url: secret?, agent: agent() },
            ChannelConfig::SlackApi { channel, api_url, .. } => Channel::SlackApi {
                api_url: api_url.trim_end_matches('/').to_string(),
                token: secret?,
                channel: channel.clone(),
                agent: agent(),
                threads: Threads::default(),
            },
            ChannelConfig::GithubIssue {} => Channel::GithubIssue { forge, threads: Threads::default() },
            ChannelConfig::File { path } => Channel::File { path: path.clone() },
        })
    }

    /// Delivers `m`, trying again with backoff while failures are transient.
    pub(crate) fn deliver(&mut self, m: &Message, d: &Delivery) -> Result<(), String> {
        let mut wait = Duration::from_millis(250);
        let mut last = String::new();
        for attempt in 1..=d.attempts.max(1) {
            match self.try_once(m) {
                Ok(()) => return Ok(()),
                Err(f) => {
                    last = f.message;
                    if !f.transient || attempt == d.attempts {
                        break;
                    }
                    std::thread::sleep(pause(f.retry_after, wait));
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
        Err(last)
    }

    fn try_once(&mut self, m: &Message) -> Result<(), Failure> {
        let unreachable =
            |e: outbound::Unreachable| Failure { message: e.to_string(), transient: true, retry_after: None };
        match self {
            Channel::Webhook { url, agent } => {
                let a = outbound::post_json(agent, url.expose(), None, &webhook_body(m)).map_err(unreachable)?;
                if a.ok() { Ok(()) } else { Err(Failure::answer(&a)) }
            }
            Channel::SlackWebhook { url, agent } => {
                let a =
                    outbound::post_json(agent, url.expose(), None, &json!({ "text": m.text })).map_err(unreachable)?;
                if a.ok() { Ok(()) } else { Err(Failure::answer(&a)) }
            }
            Channel::SlackApi { api_url, token, channel, agent, threads } => {
                let incident = m.notice.thread();
                let mut body = json!({ "channel": channel, "text": m.text, "unfurl_links": false });
                if let Some(ts) = threads.get(&incident) {
                    body["thread_ts"] = ts.into();
                }
                let url = format!("{api_url}/chat.postMessage");
                let a = outbound::post_json(agent, &url, Some(token.expose()), &body).map_err(unreachable)?;
                if !a.ok() {
                    return Err(Failure::answer(&a));
                }
                // Slack answers 200 with `ok: false` for its own refusals.
                let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
                if v["ok"] != true {
                    let error: String =
                        v["error"].as_str().unwrap_or("no `ok` in the answer").chars().take(100).collect();
                    let transient = matches!(error.as_str(), "ratelimited" | "internal_error" | "fatal_error");
                    return Err(Failure { message: format!("Slack: {error}"), transient, retry_after: a.retry_after });
                }
                if threads.get(&incident).is_none()
                    && let Some(ts) = v["ts"].as_str()
                {
                    threads.remember(&incident, ts.to_string());
                }
                Ok(())
            }
            Channel::File { path } => {
                use std::io::Write as _;
                let failed = |e: std::io::Error| Failure {
                    message: format!("cannot append to {}: {e}", path.display()),
                    transient: false,
                    retry_after: None,
                };
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(failed)?;
                }
                // One write per line, so concurrent writers (the server, a CLI) never interleave.
                let line = format!("{}\n", webhook_body(m));
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&*path).map_err(failed)?;
                f.write_all(line.as_bytes()).map_err(failed)
            }
            Channel::GithubIssue { forge, threads } => {
                // Opening an issue or commenting is not idempotent, and a timed-out POST may have
                // landed: GitHub gets one try, never a duplicate issue.
                let forge_err = |e: ForgeError| Failure { transient: false, message: e.to_string(), retry_after: None };
                let Some(gh) = forge.github() else {
                    return Err(Failure {
                        message: "github_issue needs forge.kind: github".into(),
                        transient: false,
                        retry_after: None,
                    });
                };
                let incident = m.notice.thread();
                // The proposal's own pull request is where its reviewers are.
                let number = m
                    .notice
                    .pr
                    .as_deref()
                    .and_then(|u| u.rsplit('/').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .or_else(|| threads.get(&incident).and_then(|n| n.parse().ok()));
                match number {
                    Some(n) => gh.comment(n, &m.text).map(|_| ()).map_err(forge_err),
                    None => {
                        let title = m.notice.headline();
                        let labels = ["rollback".to_string(), format!("rollback:{}", m.notice.event)];
                        let url = gh.open_issue(&title, &m.text, &labels).map_err(forge_err)?;
                        if let Some(n) = url.rsplit('/').next().filter(|n| n.parse::<u64>().is_ok()) {
                            threads.remember(&incident, n.to_string());
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}

/// What a webhook (and a file channel) gets: the notice, its text and headline.
fn webhook_body(m: &Message) -> serde_json::Value {
    let mut body = serde_json::to_value(&m.notice).unwrap_or_default();
    if let Some(map) = body.as_object_mut() {
        map.insert("text".into(), m.text.clone().into());
        map.insert("headline".into(), m.notice.headline().into());
    }
    body
}

#[cfg(test)]
mod pause_tests {
    use std::time::Duration;

    #[test]
    fn a_retry_after_past_a_minute_is_waited_out() {
        let backoff = Duration::from_millis(250);
        assert_eq!(super::pause(None, backoff), backoff);
        assert_eq!(super::pause(Some(Duration::from_secs(120)), backoff), Duration::from_secs(120));
        assert_eq!(super::pause(Some(Duration::from_secs(86_400)), backoff), super::MAX_RETRY_AFTER);
    }
}
