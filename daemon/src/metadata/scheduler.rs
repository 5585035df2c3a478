//! When garbage collection runs: containerd's `gc/scheduler`, driven by
//! `[plugins."io.containerd.gc.v1.scheduler"]`.
//!
//! - Every committed metadata change is a *mutation* ([`Db::set_mutation_callback`]); deletes
//!   that leave garbage are *deletions* ([`Scheduler::schedule`]); `sync` deletes *trigger* a
//!   collection and wait for it ([`Scheduler::collect_now`], containerd's `ScheduleAndWait`).
//! - A trigger, `deletion_threshold > 0` deletions, or — when no collection is pending — one
//!   deletion (`deletion_threshold = 0`) or `mutation_threshold` mutations schedule a
//!   collection `schedule_delay` from now (unless one is due sooner).
//! - After each collection the next check is `interval` later, where
//!   `interval = avg / pause_threshold - avg` (`avg` = mean collection time), so collections
//!   take at most `pause_threshold` (0..0.5) of the time; at that check a collection runs only
//!   if something is pending, otherwise the check is pushed another interval.
//! - `startup_delay`: the first check. containerd's first collection runs then, whatever
//!   happened; berthd already collects once before serving (to reclaim what a crash left
//!   behind before any client can race with it), and counts that one, so the startup check
//!   collects only if there is work — a deletion before it waits for it.
//!
//! The decisions live in [`Policy`], a pure state machine over explicit instants (tested with
//! a fake clock); [`Scheduler::run`] drives it with tokio timers and a [`Collector`].

use super::gc::Stats;
use super::{Db, Error, Result};
use crate::config::GcConfig;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The scheduler's settings, clamped as containerd clamps them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// Largest share of time spent collecting, 0..=0.5 (0: fixed 1 s interval).
    pub pause_threshold: f64,
    /// Deletions that schedule a collection (0: one, when none is pending).
    pub deletion_threshold: usize,
    /// Mutations that schedule a collection when none is pending (0: never).
    pub mutation_threshold: usize,
    /// From scheduling to collecting.
    pub schedule_delay: Duration,
    /// From start to the first check (0: none).
    pub startup_delay: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self::from_config(&GcConfig::default())
    }
}

impl SchedulerConfig {
    /// From the config section (durations were validated at load; unparsable ones are 0).
    pub fn from_config(c: &GcConfig) -> Self {
        let dur = |s: &str| crate::config::parse_go_duration(s).unwrap_or_default();
        Self {
            pause_threshold: if c.pause_threshold.is_nan() {
                0.0
            } else {
                c.pause_threshold.clamp(0.0, 0.5)
            },
            deletion_threshold: usize::try_from(c.deletion_threshold).unwrap_or(0),
            mutation_threshold: usize::try_from(c.mutation_threshold).unwrap_or(0),
            schedule_delay: dur(&c.schedule_delay),
            startup_delay: dur(&c.startup_delay),
        }
    }
}

/// What happened in the metadata store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A committed change.
    Mutation,
    /// A delete that leaves something to collect.
    Deletion,
    /// A caller wants a collection now (sync delete).
    Trigger,
}

/// containerd's scheduling decisions, over explicit instants.
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: SchedulerConfig,
    last: Option<Instant>,
    next: Option<Instant>,
    interval: Duration,
    gc_time: Duration,
    collections: u32,
    triggered: bool,
    deletions: usize,
    mutations: usize,
}

impl Policy {
    /// Starts at `now`: the first check is `startup_delay` away (none if 0).
    pub fn new(cfg: SchedulerConfig, now: Instant) -> Self {
        Self {
            cfg,
            last: None,
            next: (!cfg.startup_delay.is_zero()).then(|| now + cfg.startup_delay),
            interval: Duration::from_secs(1),
            gc_time: Duration::ZERO,
            collections: 0,
            triggered: false,
            deletions: 0,
            mutations: 0,
        }
    }

    /// When the next check is due.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// The current interval between checks.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// `ev`, which happened at `at`, seen at `now`.
    pub fn on_event(&mut self, ev: Event, at: Instant, now: Instant) {
        // Already covered by the last collection.
        if self.last.is_some_and(|l| l > at) {
            return;
        }
        match ev {
            Event::Mutation => self.mutations += 1,
            Event::Deletion => self.deletions += 1,
            Event::Trigger => self.triggered = true,
        }
        let c = &self.cfg;
        let due = self.triggered
            || (c.deletion_threshold > 0 && self.deletions >= c.deletion_threshold)
            || (self.next.is_none()
                && ((c.deletion_threshold == 0 && self.deletions > 0)
                    || (c.mutation_threshold > 0 && self.mutations >= c.mutation_threshold)));
        if due {
            let at = now + c.schedule_delay;
            if self.next.is_none_or(|n| n > at) {
                self.next = Some(at);
            }
        }
    }

    /// The check due at [`Policy::next`] fired at `now`: true means collect now; false means
    /// nothing is pending and the check moved one interval on.
    pub fn on_timer(&mut self, now: Instant) -> bool {
        let c = &self.cfg;
        if !self.triggered
            && self.last.is_some()
            && self.deletions == 0
            && (c.mutation_threshold == 0 || self.mutations < c.mutation_threshold)
        {
            self.next = Some(now + self.interval);
            return false;
        }
        true
    }

    fn account(&mut self, elapsed: Duration, now: Instant) {
        self.gc_time += elapsed;
        self.collections += 1;
        self.triggered = false;
        self.deletions = 0;
        self.mutations = 0;
        if self.cfg.pause_threshold > 0.0 {
            let avg = self.gc_time.as_secs_f64() / f64::from(self.collections);
            let secs = avg / self.cfg.pause_threshold - avg;
            self.interval = Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(1));
        }
        self.last = Some(now);
    }

    /// A collection ended at `now`: `Some(elapsed)` if it succeeded. After a failure the
    /// next try is one second later than the gap containerd had planned.
    pub fn collected(&mut self, now: Instant, elapsed: Option<Duration>) {
        match elapsed {
            Some(el) => {
                self.account(el, now);
                self.next = Some(now + self.interval);
            }
            None => {
                let gap = match (self.next, self.last) {
                    (Some(n), Some(l)) => n.saturating_duration_since(l),
                    _ => Duration::ZERO,
                };
                self.last = Some(now);
                self.next = Some(now + gap + Duration::from_secs(1));
            }
        }
    }

    /// The collection berthd runs before serving: counted like any other, but the startup
    /// check stays where it is.
    pub fn collected_at_startup(&mut self, now: Instant, elapsed: Duration) {
        self.account(elapsed, now);
    }
}

/// What the scheduler runs: the metadata store's full collection (blocking).
pub trait Collector: Send + Sync + 'static {
    /// One collection.
    fn collect(&self) -> Result<Stats>;
}

impl Collector for Db {
    fn collect(&self) -> Result<Stats> {
        self.garbage_collect()
    }
}

enum Msg {
    Event(Event, Instant),
    Wait(oneshot::Sender<std::result::Result<Stats, String>>),
    StartupCollected(Instant, Duration),
}

/// Handle to the GC loop. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    collector: Arc<dyn Collector>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<Msg>>>>,
    cfg: SchedulerConfig,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

async fn run_collect(c: Arc<dyn Collector>) -> Result<Stats> {
    match tokio::task::spawn_blocking(move || c.collect()).await {
        Ok(r) => r,
        Err(e) => Err(Error::Precondition(format!("gc worker failed: {e}"))),
    }
}

impl Scheduler {
    /// A scheduler for `db` with containerd's default settings; call [`Scheduler::run`] once.
    pub fn new(db: &Arc<Db>) -> Self {
        Self::with_config(db, SchedulerConfig::default())
    }

    /// A scheduler for `db` that counts its mutations; call [`Scheduler::run`] once.
    pub fn with_config(db: &Arc<Db>, cfg: SchedulerConfig) -> Self {
        let s = Self::for_collector(Arc::clone(db) as Arc<dyn Collector>, cfg);
        let tx = s.tx.clone();
        db.set_mutation_callback(Box::new(move || {
            let _ = tx.send(Msg::Event(Event::Mutation, Instant::now()));
        }));
        s
    }

    /// A scheduler over any collector (tests use a fake one).
    pub fn for_collector(collector: Arc<dyn Collector>, cfg: SchedulerConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            collector,
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
            cfg,
        }
    }

    /// The settings in use.
    pub fn config(&self) -> SchedulerConfig {
        self.cfg
    }

    /// Reports a delete that left something to collect.
    pub fn schedule(&self) {
        let _ = self.tx.send(Msg::Event(Event::Deletion, Instant::now()));
    }

    /// Reports a committed change (what the metadata store's callback does).
    pub fn mutated(&self) {
        let _ = self.tx.send(Msg::Event(Event::Mutation, Instant::now()));
    }

    /// Triggers a collection and waits for it (after `schedule_delay`, as containerd's).
    pub async fn collect_now(&self) -> Result<Stats> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Wait(tx)).is_err() {
            return Err(Error::Precondition("gc scheduler is not running".into()));
        }
        match rx.await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Error::Precondition(format!(
                "garbage collection failed: {e}"
            ))),
            Err(_) => Err(Error::Precondition("gc scheduler stopped".into())),
        }
    }

    /// Collects once right away, outside the schedule (berthd's start-up collection), and
    /// tells the loop about it.
    pub async fn collect_at_startup(&self) -> Result<Stats> {
        let t0 = Instant::now();
        let r = run_collect(Arc::clone(&self.collector)).await;
        if r.is_ok() {
            let _ = self
                .tx
                .send(Msg::StartupCollected(Instant::now(), t0.elapsed()));
        }
        r
    }

    /// The loop: events adjust the policy; when the check is due and work is pending, it
    /// collects and answers every waiter. Returns when every handle is gone or a second
    /// `run` is attempted.
    pub async fn run(self) {
        let Some(mut rx) = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            log::error!("gc scheduler: run called twice");
            return;
        };
        let policy = Policy::new(self.cfg, Instant::now());
        let collector = Arc::clone(&self.collector);
        drop(self);
        Self::drive(collector, &mut rx, policy).await;
    }

    async fn drive(
        collector: Arc<dyn Collector>,
        rx: &mut mpsc::UnboundedReceiver<Msg>,
        mut policy: Policy,
    ) {
        let mut waiters: Vec<oneshot::Sender<std::result::Result<Stats, String>>> = Vec::new();
        loop {
            let due = policy.next();
            let msg = match due {
                Some(at) => tokio::select! {
                    m = rx.recv() => m,
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {
                        if !policy.on_timer(Instant::now()) {
                            continue;
                        }
                        let t0 = Instant::now();
                        let r = run_collect(Arc::clone(&collector)).await;
                        let now = Instant::now();
                        match &r {
                            Ok(s) => {
                                log::debug!("gc: {s:?} in {:?}", t0.elapsed());
                                policy.collected(now, Some(t0.elapsed()));
                            }
                            Err(e) => {
                                log::error!("garbage collection failed: {e}");
                                policy.collected(now, None);
                            }
                        }
                        for w in waiters.drain(..) {
                            let _ = w.send(r.as_ref().map(|s| *s).map_err(ToString::to_string));
                        }
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(msg) = msg else {
                return;
            };
            let now = Instant::now();
            match msg {
                Msg::Event(ev, at) => policy.on_event(ev, at, now),
                Msg::Wait(w) => {
                    waiters.push(w);
                    policy.on_event(Event::Trigger, now, now);
                }
                Msg::StartupCollected(at, el) => policy.collected_at_startup(at, el),
            }
        }
    }
}
