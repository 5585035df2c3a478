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
//! - berthd's default `deletion_threshold` is 1 (containerd's 0), so deletes are collected at
//!   once, as berthd always did; see `config::GcConfig`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> SchedulerConfig {
        SchedulerConfig {
            pause_threshold: 0.02,
            deletion_threshold: 0,
            mutation_threshold: 100,
            schedule_delay: Duration::ZERO,
            startup_delay: 100 * MS,
        }
    }

    /// A fake clock: instants relative to a fixed origin.
    struct Clock(Instant);
    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    #[test]
    fn config_is_clamped_like_containerd() {
        let c = SchedulerConfig::from_config(&GcConfig {
            pause_threshold: 0.9,
            deletion_threshold: -3,
            mutation_threshold: -1,
            schedule_delay: "1.5s".into(),
            startup_delay: "0s".into(),
        });
        assert_eq!(
            c,
            SchedulerConfig {
                pause_threshold: 0.5,
                deletion_threshold: 0,
                mutation_threshold: 0,
                schedule_delay: 1500 * MS,
                startup_delay: Duration::ZERO,
            }
        );
        assert_eq!(
            SchedulerConfig::default(),
            SchedulerConfig {
                deletion_threshold: 1,
                ..cfg()
            },
            "berthd's one deviation from containerd's defaults"
        );
    }

    #[test]
    fn startup_check_collects_only_pending_work_after_the_startup_collection() {
        let t = Clock(Instant::now());
        let mut p = Policy::new(cfg(), t.at(0));
        assert_eq!(p.next(), Some(t.at(100)));
        p.collected_at_startup(t.at(5), 2 * MS);
        assert_eq!(p.next(), Some(t.at(100)), "startup check kept");
        // Interval from the pause threshold: 2ms / 0.02 - 2ms = 98ms.
        assert_eq!(p.interval(), 98 * MS);
        // Nothing pending at the startup check: pushed one interval.
        assert!(!p.on_timer(t.at(100)));
        assert_eq!(p.next(), Some(t.at(198)));
        // A deletion with deletion_threshold 0 waits for the pending check.
        p.on_event(Event::Deletion, t.at(150), t.at(150));
        assert_eq!(p.next(), Some(t.at(198)));
        assert!(p.on_timer(t.at(198)), "a deletion is pending");
        p.collected(t.at(200), Some(2 * MS));
        assert_eq!(p.next(), Some(t.at(298)));
        // Events from before the last collection are ignored.
        p.on_event(Event::Deletion, t.at(199), t.at(201));
        assert!(!p.on_timer(t.at(298)));
    }

    #[test]
    fn without_startup_delay_the_first_deletion_schedules_at_once() {
        let t = Clock(Instant::now());
        let mut p = Policy::new(
            SchedulerConfig {
                startup_delay: Duration::ZERO,
                schedule_delay: 30 * MS,
                ..cfg()
            },
            t.at(0),
        );
        assert_eq!(p.next(), None);
        p.on_event(Event::Mutation, t.at(10), t.at(10));
        assert_eq!(p.next(), None, "one mutation is below the threshold");
        p.on_event(Event::Deletion, t.at(20), t.at(20));
        assert_eq!(
            p.next(),
            Some(t.at(50)),
            "schedule_delay after the deletion"
        );
        assert!(p.on_timer(t.at(50)));
    }

    #[test]
    fn deletion_threshold_schedules_even_when_a_check_is_pending() {
        let t = Clock(Instant::now());
        let mut p = Policy::new(
            SchedulerConfig {
                deletion_threshold: 3,
                schedule_delay: 10 * MS,
                startup_delay: 3_600_000 * MS,
                ..cfg()
            },
            t.at(0),
        );
        p.collected_at_startup(t.at(1), MS);
        p.on_event(Event::Deletion, t.at(2), t.at(2));
        p.on_event(Event::Deletion, t.at(3), t.at(3));
        assert_eq!(p.next(), Some(t.at(3_600_000)), "two of three deletions");
        p.on_event(Event::Deletion, t.at(4), t.at(4));
        assert_eq!(p.next(), Some(t.at(14)));
        // An earlier schedule is never pushed back.
        p.on_event(Event::Deletion, t.at(12), t.at(12));
        assert_eq!(p.next(), Some(t.at(14)));
    }

    #[test]
    fn mutation_threshold_and_trigger() {
        let t = Clock(Instant::now());
        let mut p = Policy::new(
            SchedulerConfig {
                mutation_threshold: 3,
                startup_delay: Duration::ZERO,
                schedule_delay: 5 * MS,
                ..cfg()
            },
            t.at(0),
        );
        p.collected_at_startup(t.at(0), MS);
        for i in 1..3 {
            p.on_event(Event::Mutation, t.at(i), t.at(i));
            assert_eq!(p.next(), None);
        }
        p.on_event(Event::Mutation, t.at(3), t.at(3));
        assert_eq!(p.next(), Some(t.at(8)));
        assert!(p.on_timer(t.at(8)));
        p.collected(t.at(9), Some(MS));
        // A trigger (sync delete) always schedules, schedule_delay from now.
        let next = p.next();
        p.on_event(Event::Trigger, t.at(10), t.at(10));
        assert_eq!(p.next(), Some(t.at(15)));
        assert!(next > p.next());
        assert!(p.on_timer(t.at(15)));
    }

    #[test]
    fn pause_threshold_bounds_the_share_of_time_collecting() {
        let t = Clock(Instant::now());
        let mut p = Policy::new(
            SchedulerConfig {
                pause_threshold: 0.5,
                ..cfg()
            },
            t.at(0),
        );
        p.collected(t.at(100), Some(40 * MS));
        assert_eq!(p.interval(), 40 * MS, "40/0.5 - 40");
        p.collected(t.at(200), Some(20 * MS));
        assert_eq!(p.interval(), 30 * MS, "mean 30ms");
        let mut fixed = Policy::new(
            SchedulerConfig {
                pause_threshold: 0.0,
                ..cfg()
            },
            t.at(0),
        );
        fixed.collected(t.at(100), Some(40 * MS));
        assert_eq!(fixed.interval(), Duration::from_secs(1));
        // A failed collection retries one second after the planned gap.
        let mut f = Policy::new(cfg(), t.at(0));
        f.collected(t.at(100), Some(MS));
        assert_eq!(f.next(), Some(t.at(149)));
        f.collected(t.at(150), None);
        assert_eq!(f.next(), Some(t.at(150 + 49 + 1000)));
    }

    struct Fake(AtomicUsize);
    impl Collector for Fake {
        fn collect(&self) -> Result<Stats> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Stats::default())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loop_collects_on_triggers_and_thresholds() {
        let fake = Arc::new(Fake(AtomicUsize::new(0)));
        let s = Scheduler::for_collector(
            Arc::clone(&fake) as Arc<dyn Collector>,
            SchedulerConfig {
                deletion_threshold: 2,
                schedule_delay: 50 * MS,
                startup_delay: Duration::from_secs(3600),
                ..cfg()
            },
        );
        let task = tokio::spawn(s.clone().run());
        s.collect_at_startup().await.unwrap();
        assert_eq!(fake.0.load(Ordering::SeqCst), 1);
        // One deletion of two: nothing before the (hour-long) startup check.
        s.schedule();
        tokio::time::sleep(200 * MS).await;
        assert_eq!(fake.0.load(Ordering::SeqCst), 1);
        // The second reaches the threshold: collected after schedule_delay.
        let t0 = Instant::now();
        s.schedule();
        for _ in 0..100 {
            if fake.0.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(5 * MS).await;
        }
        assert_eq!(fake.0.load(Ordering::SeqCst), 2);
        assert!(t0.elapsed() >= 45 * MS, "{:?}", t0.elapsed());
        // A sync collection waits for its own run.
        s.collect_now().await.unwrap();
        assert_eq!(fake.0.load(Ordering::SeqCst), 3);
        task.abort();
    }
}
