//! Telling people. [`Notifier::send`] renders a [`Notice`] once per kind of channel and queues
//! it for each channel on the policy's route; each channel has its own thread and bounded queue,
//! so a dead receiver delays nothing but its own messages and never a rollback. Delivery is
//! at-least-once: tried `notify.attempts` times with backoff, then given up, counted and logged.
//! One message per incident state change: the same (incident, state) is sent once per process.

mod channel;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::config::{ChannelConfig, NotifyConfig, Secrets};
use crate::domain::notice::{Notice, NoticeKind};
use crate::forge::Forge;
use crate::metrics;
use crate::support::template::{NOTIFY_TEMPLATE, Templates};
use crate::support::text;

pub(crate) use channel::Channel;

/// One notice, ready for one channel.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    pub notice: Notice,
    /// The rendered `notify.txt.j2`, escaped for the channel.
    pub text: String,
}

/// How many (incident, state) pairs are remembered to keep repeats quiet.
const REMEMBERED: usize = 10_000;

/// Hands notices to the channels' threads. Cheap to clone; a notifier without channels
/// does nothing.
#[derive(Clone, Default)]
pub(crate) struct Notifier {
    inner: Option<Arc<Inner>>,
}

/// Each channel's style and queue, by name.
type Queues = BTreeMap<String, (Style, SyncSender<Message>)>;

/// The (incident, state) pairs already told, and the order to forget them in.
#[derive(Default)]
struct Told {
    pairs: HashSet<(String, NoticeKind)>,
    order: VecDeque<(String, NoticeKind)>,
}

struct Inner {
    /// Taken (closing every queue) by [`Notifier::finish`].
    channels: Mutex<Option<Queues>>,
    /// Each channel's thread says here when it has delivered its last message.
    done: Mutex<std::sync::mpsc::Receiver<()>>,
    threads: usize,
    templates: Templates,
    sent: Mutex<Told>,
}

/// How a channel wants its text escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    Slack,
    Markdown,
}

impl Notifier {
    /// Starts one thread per configured channel.
    pub(crate) fn start(
        config: &NotifyConfig,
        secrets: &Secrets,
        templates: &Templates,
        forge: Arc<dyn Forge>,
    ) -> Self {
        if config.channels.is_empty() {
            return Notifier::default();
        }
        let mut channels = BTreeMap::new();
        let (done_tx, done) = std::sync::mpsc::channel();
        for (name, cfg) in &config.channels {
            let secret = secrets.notify.get(name).cloned();
            let Some(channel) = Channel::new(cfg, secret, forge.clone(), config.timeout.as_std()) else {
                // Its env var is unset: `serve` and a reload refuse that, and the CLI says so
                // once per command (one line per channel, not one here as well).
                tracing::debug!(channel = %name, "notification channel has no URL or token; skipped");
                continue;
            };
            let style = match cfg {
                ChannelConfig::Webhook { .. } | ChannelConfig::File { .. } => Style::Plain,
                ChannelConfig::SlackWebhook { .. } | ChannelConfig::SlackApi { .. } => Style::Slack,
                ChannelConfig::GithubIssue {} => Style::Markdown,
            };
            let (tx, rx) = std::sync::mpsc::sync_channel(config.queue);
            let delivery = channel::Delivery { attempts: config.attempts };
            let thread_name = format!("notify-{name}");
            let name = name.clone();
            let spawned = std::thread::Builder::new().name(thread_name).spawn({
                let name = name.clone();
                let done = done_tx.clone();
                move || {
                    run(&name, channel, delivery, rx);
                    let _ = done.send(());
                }
            });
            match spawned {
                Ok(_) => {
                    metrics::notification_channel(&name);
                    channels.insert(name, (style, tx));
                }
                Err(e) => warn!(channel = %name, error = %e, "cannot start the notification thread"),
            }
        }
        let threads = channels.len();
        Notifier {
            inner: Some(Arc::new(Inner {
                channels: Mutex::new(Some(channels)),
                done: Mutex::new(done),
                threads,
                templates: templates.clone(),
                sent: Mutex::default(),
            })),
        }
    }

    /// Closes every queue and waits up to `within` for what is queued to be delivered (a CLI
    /// run exits right after its rollback; its message should still go out).
    pub(crate) fn finish(&self, within: std::time::Duration) {
        let Some(inner) = &self.inner else { return };
        let Some(channels) = inner.channels.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        drop(channels);
        let deadline = std::time::Instant::now() + within;
        let done = inner.done.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..inner.threads {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if done.recv_timeout(left).is_err() {
                warn!("notifications still undelivered at exit were dropped");
                return;
            }
        }
    }

    /// Queues `notice` for each channel on `route`. Never blocks: a full queue drops the
    /// message (counted). A state an incident already announced is not announced again.
    pub(crate) fn send(&self, notice: &Notice, route: &[crate::domain::policy::Route]) {
        let Some(inner) = &self.inner else { return };
        if route.is_empty() || !inner.first_time(notice) {
            return;
        }
        let channels = inner.channels.lock().unwrap_or_else(|e| e.into_inner());
        let Some(channels) = channels.as_ref() else { return };
        let mut rendered: BTreeMap<&'static str, String> = BTreeMap::new();
        for name in route.iter().filter(|r| r.admits(notice.event)).map(|r| r.channel()) {
            let Some((style, tx)) = channels.get(name) else { continue };
            let key = match style {
                Style::Plain => "plain",
                Style::Slack => "slack",
                Style::Markdown => "markdown",
            };
            let text = match rendered.get(key) {
                Some(t) => t.clone(),
                None => match render(&inner.templates, notice, *style) {
                    Ok(t) => rendered.entry(key).or_insert(t).clone(),
                    Err(e) => {
                        warn!(error = %e, "notify.txt.j2 failed to render; sending the headline");
                        notice.headline()
                    }
                },
            };
            match tx.try_send(Message { notice: notice.clone(), text }) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    warn!(channel = %name, event = %notice.event, "notification queue full; message dropped");
                    metrics::notification(name, "dropped");
                }
                Err(TrySendError::Disconnected(_)) => metrics::notification(name, "dropped"),
            }
        }
    }
}

impl Inner {
    fn first_time(&self, notice: &Notice) -> bool {
        let key = (notice.thread(), notice.event);
        let mut told = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if !told.pairs.insert(key.clone()) {
            return false;
        }
        told.order.push_back(key);
        if told.order.len() > REMEMBERED
            && let Some(old) = told.order.pop_front()
        {
            told.pairs.remove(&old);
        }
        true
    }
}

/// The message text: `notify.txt.j2` over the notice, every string in it escaped for `style`.
pub(crate) fn render(
    templates: &Templates,
    notice: &Notice,
    style: Style,
) -> Result<String, crate::support::template::TemplateError> {
    let esc: fn(&str) -> String = match style {
        Style::Plain => |s: &str| s.to_string(),
        Style::Slack => text::slack,
        Style::Markdown => text::markdown,
    };
    let mut ctx =
        serde_json::to_value(notice).map_err(|e| crate::support::template::TemplateError::Render(e.to_string()))?;
    escape_strings(&mut ctx, esc);
    if let Some(map) = ctx.as_object_mut() {
        map.insert("headline".into(), esc(&notice.headline()).into());
    }
    let text = templates.render(NOTIFY_TEMPLATE, &crate::support::template::value(ctx))?;
    Ok(text.trim().to_string())
}

fn escape_strings(v: &mut serde_json::Value, esc: fn(&str) -> String) {
    match v {
        serde_json::Value::String(s) => *s = esc(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| escape_strings(x, esc)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| escape_strings(x, esc)),
        _ => {}
    }
}

/// A channel's thread: delivers its messages in order until the notifier is dropped.
fn run(name: &str, mut channel: Channel, delivery: channel::Delivery, rx: Receiver<Message>) {
    for message in rx {
        match channel.deliver(&message, &delivery) {
            Ok(()) => metrics::notification(name, "sent"),
            Err(e) => {
                // Once per message, which is once per state change.
                warn!(channel = %name, event = %message.notice.event, rollback_id = ?message.notice.rollback_id,
                    error = %e, "notification not delivered");
                metrics::notification(name, "failed");
            }
        }
    }
}
