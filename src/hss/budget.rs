//! The request budget: never more than N calls in any window, shared by every
//! scope that calls the same API from this process.
//!
//! Place in the data flow: the client acquires a [`Permit`] here before every
//! attempt of every call, retries included; nothing else sends calls. The
//! scheduler's lanes wait here in priority order (the malicious lane before
//! sweep pages).
//!
//! The limit is a true sliding window, not a token bucket: a bucket with a
//! burst of 5 can send 10 calls within one minute and be throttled. A call
//! occupies its slot from the moment it is granted until the window has passed
//! since its answer arrived. The server saw the call somewhere between those
//! two instants, so measuring from the answer keeps the exporter under the
//! server's window whatever the network latency. A 429 pauses the whole budget
//! (for `Retry-After` when the server sends one, else one window).
//!
//! A caller that knows when it will need a slot (the malicious lane, whose
//! rounds are periodic) can queue a *reservation* ahead of time with
//! [`Budget::acquire_at`]: from then on, other grants are made only while a
//! slot stays free for the reservation when it comes due, so the reserved
//! call goes out on time even when sweeps keep the budget saturated.
//!
//! A process does not see the calls its predecessor made. Two things keep a
//! restart from drawing 429s: the calls of the last window (and a pause the
//! server asked for) can be saved with [`Budget::record`] and restored with
//! [`Budget::restore`] (the daemon keeps them in its state file), and a
//! budget made [`cautious`](Budget::cautious) grants one call at a time until
//! the first call succeeds, so an unknown window costs at most one 429, after
//! which the pause covers the rest.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::settings::RateLimit;

/// Who is asking: the lower rank goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// The malicious lane and the changes lane's scan-time queries: small,
    /// frequent, detection waits for them.
    High = 0,
    /// The changes lane's update-time queries and the malicious check.
    Medium = 1,
    /// Sweep pages.
    Low = 2,
}

/// The shared budget of one API.
#[derive(Debug)]
pub struct Budget {
    limit: Mutex<RateLimit>,
    /// Slots of any window that sweep pages ([`Priority::Low`]) leave to the
    /// other callers (at most the limit less one).
    reserve: std::sync::atomic::AtomicU32,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Calls that still count: in flight, or answered within the last window.
    calls: VecDeque<Slot>,
    next_slot: u64,
    /// Waiting callers as (priority, arrival order); the first one that is
    /// due is served.
    queue: BTreeSet<(Priority, u64)>,
    /// Reservations: waiting callers that want their slot not before a time.
    not_before: HashMap<u64, Instant>,
    next_ticket: u64,
    paused_until: Option<Instant>,
    granted: u64,
    /// Until a call succeeds, a cautious budget grants one call at a time.
    cautious: bool,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u64,
    /// When the answer arrived (or the attempt ended); `None` while in flight.
    ended: Option<Instant>,
    /// Whether a sweep page ([`Priority::Low`]) holds it.
    low: bool,
}

/// What a waiting caller should do next.
enum Decision {
    Grant(u64),
    WaitUntil(Instant),
    WaitForChange,
}

/// What a budget remembers of the last window, in wall-clock time, so that
/// the next process can honour it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetRecord {
    /// When the calls that still count ended (calls in flight: now).
    pub calls: Vec<SystemTime>,
    /// Until when the server asked for no calls.
    pub paused_until: Option<SystemTime>,
}

/// A snapshot of the budget for `/status` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetStatus {
    /// Calls that currently count against the window.
    pub calls_in_window: usize,
    /// Calls waiting for a slot.
    pub waiting: usize,
    /// Time left of a pause after a 429.
    pub paused_for: Option<Duration>,
    /// Calls granted since start.
    pub granted: u64,
}

impl Budget {
    /// A budget allowing `limit`.
    pub fn new(limit: RateLimit) -> Arc<Self> {
        Arc::new(Self {
            limit: Mutex::new(limit),
            reserve: std::sync::atomic::AtomicU32::new(0),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        })
    }

    /// Grants one call at a time until a call succeeds (see
    /// [`Permit::succeeded`]): for a process that cannot know what its
    /// predecessor sent.
    pub fn cautious(self: Arc<Self>) -> Arc<Self> {
        self.lock().cautious = true;
        self
    }

    /// The calls of the last window and the pause, for the next process.
    pub fn record(&self) -> BudgetRecord {
        let now = Instant::now();
        let wall = SystemTime::now();
        let window = self.limit().window;
        let state = self.lock();
        let at = |instant: Instant| {
            let ago = now.saturating_duration_since(instant);
            wall.checked_sub(ago).unwrap_or(wall)
        };
        BudgetRecord {
            calls: state
                .calls
                .iter()
                .filter(|s| s.ended.is_none_or(|ended| ended + window > now))
                .map(|s| s.ended.map_or(wall, at))
                .collect(),
            paused_until: state
                .paused_until
                .filter(|until| *until > now)
                .map(|until| wall + (until - now)),
        }
    }

    /// Counts the calls a previous process recorded as if this one had made
    /// them, and keeps its pause. Times in the future count as now; calls
    /// older than a window and pauses longer than [`MAX_PAUSE_WINDOWS`]
    /// windows are not kept.
    pub fn restore(&self, record: &BudgetRecord) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let window = self.limit().window;
        {
            let mut state = self.lock();
            for call in &record.calls {
                let ago = wall.duration_since(*call).unwrap_or(Duration::ZERO);
                if ago >= window {
                    continue;
                }
                let ended = now.checked_sub(ago).unwrap_or(now);
                let id = state.next_slot;
                state.next_slot += 1;
                state.calls.push_back(Slot {
                    id,
                    ended: Some(ended),
                    low: false,
                });
            }
            if let Some(until) = record.paused_until
                && let Ok(left) = until.duration_since(wall)
            {
                let left = left.min(max_pause(window));
                let until = now.checked_add(left).unwrap_or(now);
                if state.paused_until.is_none_or(|current| current < until) {
                    state.paused_until = Some(until);
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// The limit this budget enforces.
    pub fn limit(&self) -> RateLimit {
        *self.limit.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enforces `limit` from now on (after a configuration reload). Calls
    /// already made keep counting against the window.
    pub fn set_limit(&self, limit: RateLimit) {
        *self.limit.lock().unwrap_or_else(PoisonError::into_inner) = limit;
        self.changed.notify_waiters();
    }

    /// Keeps `slots` of every window for the lanes that must run on time
    /// (one per scope's round): sweep pages may hold at most the limit less
    /// `slots` (and always at least one), so a round's first calls find a
    /// free slot instead of waiting a window for one a sweep page took.
    pub fn set_reserve(&self, slots: u32) {
        self.reserve
            .store(slots, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a slot and returns it with the time spent waiting. Callers of
    /// higher priority are served first; equal priorities in arrival order.
    /// Cancelling the future gives the place in the queue up.
    pub async fn acquire(self: &Arc<Self>, priority: Priority) -> (Permit, Duration) {
        self.acquire_at(priority, None).await
    }

    /// Like [`acquire`](Self::acquire), but the slot is not granted before
    /// `not_before`; until then the caller holds a reservation that other
    /// grants respect. The time returned counts from `not_before`.
    pub async fn acquire_at(
        self: &Arc<Self>,
        priority: Priority,
        not_before: Option<Instant>,
    ) -> (Permit, Duration) {
        self.wait_for_slot(priority, not_before).await
    }

    /// [`acquire_at`](Self::acquire_at), giving up (`None`) when no slot is
    /// granted by `give_up_at`. A caller with a deadline waits for its slot
    /// only until then; a call once granted is never cut short by it.
    pub async fn acquire_until(
        self: &Arc<Self>,
        priority: Priority,
        not_before: Option<Instant>,
        give_up_at: Option<Instant>,
    ) -> Option<(Permit, Duration)> {
        let wait = self.wait_for_slot(priority, not_before);
        match give_up_at {
            // The wait is polled before the deadline, and a grant returns in
            // the poll that makes it: no permit is lost to the deadline.
            Some(at) => tokio::time::timeout_at(at, wait).await.ok(),
            None => Some(wait.await),
        }
    }

    async fn wait_for_slot(
        self: &Arc<Self>,
        priority: Priority,
        not_before: Option<Instant>,
    ) -> (Permit, Duration) {
        let started = not_before.map_or_else(Instant::now, |at| at.max(Instant::now()));
        let ticket = {
            let mut state = self.lock();
            let ticket = (priority, state.next_ticket);
            state.next_ticket += 1;
            state.queue.insert(ticket);
            if let Some(at) = not_before {
                state.not_before.insert(ticket.1, at);
            }
            ticket
        };
        let mut guard = TicketGuard {
            budget: self,
            ticket,
            active: true,
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let decision = self.decide(ticket, Instant::now());
            match decision {
                Decision::Grant(id) => {
                    guard.active = false;
                    self.changed.notify_waiters();
                    let permit = Permit {
                        budget: Arc::clone(self),
                        id,
                        done: false,
                    };
                    return (permit, Instant::now().saturating_duration_since(started));
                }
                Decision::WaitUntil(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = &mut changed => {}
                    }
                }
                Decision::WaitForChange => changed.await,
            }
        }
    }

    fn decide(&self, ticket: (Priority, u64), now: Instant) -> Decision {
        let mut state = self.lock();
        if let Some(at) = state.not_before.get(&ticket.1).copied()
            && at > now
        {
            return Decision::WaitUntil(at);
        }
        let due = |state: &State, t: &(Priority, u64)| {
            state.not_before.get(&t.1).is_none_or(|at| *at <= now)
        };
        let head = state.queue.iter().find(|t| due(&state, t)).copied();
        if head != Some(ticket) {
            return Decision::WaitForChange;
        }
        if let Some(until) = state.paused_until {
            if until > now {
                return Decision::WaitUntil(until);
            }
            state.paused_until = None;
        }
        let limit = self.limit();
        let window = limit.window;
        state
            .calls
            .retain(|slot| slot.ended.is_none_or(|ended| ended + window > now));
        let limit = limit.calls as usize;
        let in_window = state.calls.len();
        if state.cautious && state.calls.iter().any(|s| s.ended.is_none()) {
            // Nothing proves yet that the server's window has room.
            return Decision::WaitForChange;
        }
        // Sweep pages hold at most the limit less the reserve: the reserved
        // slots stay for the lanes.
        if ticket.0 == Priority::Low {
            let reserve = (self.reserve.load(std::sync::atomic::Ordering::Relaxed) as usize)
                .min(limit.saturating_sub(1));
            let low: Vec<Option<Instant>> = state
                .calls
                .iter()
                .filter(|s| s.low)
                .map(|s| s.ended)
                .collect();
            if low.len() + reserve >= limit {
                // One of the sweep pages must leave the window first.
                return low
                    .iter()
                    .flatten()
                    .min()
                    .map_or(Decision::WaitForChange, |ended| {
                        Decision::WaitUntil(*ended + window)
                    });
            }
        }
        if in_window < limit {
            // Grant only while every reservation still finds a slot when it
            // comes due.
            let reserved: Vec<Instant> = state
                .not_before
                .values()
                .copied()
                .filter(|at| *at > now)
                .collect();
            let room = match reserved.iter().min() {
                None => true,
                Some(first) => {
                    let occupied = state
                        .calls
                        .iter()
                        .filter(|s| s.ended.is_none_or(|ended| ended + window > *first))
                        .count();
                    occupied + 1 + reserved.len() <= limit
                }
            };
            if !room {
                return reserved
                    .iter()
                    .min()
                    .map_or(Decision::WaitForChange, |first| Decision::WaitUntil(*first));
            }
            let id = state.next_slot;
            state.next_slot += 1;
            state.calls.push_back(Slot {
                id,
                ended: None,
                low: ticket.0 == Priority::Low,
            });
            state.queue.remove(&ticket);
            state.not_before.remove(&ticket.1);
            state.granted += 1;
            return Decision::Grant(id);
        }
        // Enough calls must leave the window to bring it under the limit;
        // calls in flight leave only after they end.
        let must_leave = in_window - limit + 1;
        let mut ends: Vec<Instant> = state.calls.iter().filter_map(|s| s.ended).collect();
        if ends.len() < must_leave {
            return Decision::WaitForChange;
        }
        ends.sort_unstable();
        Decision::WaitUntil(ends[must_leave - 1] + window)
    }

    fn finish(&self, id: u64, succeeded: bool) {
        let now = Instant::now();
        {
            let mut state = self.lock();
            if succeeded {
                state.cautious = false;
            }
            if let Some(slot) = state.calls.iter_mut().find(|s| s.id == id) {
                slot.ended = Some(now);
            }
        }
        self.changed.notify_waiters();
    }

    /// Records a call given up before its answer arrived: the request may
    /// still be on its way or waiting in the server, which counts it when
    /// it reads it. Its slot is kept as if the answer came one window from
    /// now, so it leaves the window two windows from now.
    fn abandon(&self, id: u64) {
        let until = Instant::now() + self.limit().window;
        {
            let mut state = self.lock();
            if let Some(slot) = state.calls.iter_mut().find(|s| s.id == id) {
                slot.ended = Some(until);
            }
        }
        self.changed.notify_waiters();
    }

    /// Stops granting for `pause` after the server throttled a call, at most
    /// [`MAX_PAUSE_WINDOWS`] windows. A longer pause already in place is kept.
    pub fn pause(&self, pause: Duration) {
        let now = Instant::now();
        let pause = pause.min(max_pause(self.limit().window));
        let until = now.checked_add(pause).unwrap_or(now);
        {
            let mut state = self.lock();
            if state.paused_until.is_none_or(|current| current < until) {
                state.paused_until = Some(until);
            }
        }
        self.changed.notify_waiters();
    }

    /// The budget's current state.
    pub fn status(&self) -> BudgetStatus {
        let now = Instant::now();
        let window = self.limit().window;
        let state = self.lock();
        BudgetStatus {
            calls_in_window: state
                .calls
                .iter()
                .filter(|s| s.ended.is_none_or(|ended| ended + window > now))
                .count(),
            waiting: state.queue.len(),
            paused_for: state
                .paused_until
                .filter(|until| *until > now)
                .map(|until| until - now),
            granted: state.granted,
        }
    }
}

/// The longest pause a server can impose, in windows: a `Retry-After` of
/// years would otherwise stop the exporter for good.
pub const MAX_PAUSE_WINDOWS: u32 = 5;

fn max_pause(window: Duration) -> Duration {
    window.saturating_mul(MAX_PAUSE_WINDOWS)
}

/// Removes a waiting caller's ticket when its future is dropped.
struct TicketGuard<'a> {
    budget: &'a Budget,
    ticket: (Priority, u64),
    active: bool,
}

impl Drop for TicketGuard<'_> {
    fn drop(&mut self) {
        if self.active {
            let mut state = self.budget.lock();
            state.queue.remove(&self.ticket);
            state.not_before.remove(&self.ticket.1);
            drop(state);
            self.budget.changed.notify_waiters();
        }
    }
}

/// The right to send one call. Finishing it records the end of the call, so
/// the slot leaves the window one window later; dropping it unfinished (the
/// call was cancelled) or [`unanswered`](Permit::unanswered) keeps the slot
/// one window longer, for the server may still count the call.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<Budget>,
    id: u64,
    done: bool,
}

impl Permit {
    /// Records that the answer (or the failure) has arrived.
    pub fn finish(mut self) {
        self.done = true;
        self.budget.finish(self.id, false);
    }

    /// Records that a successful answer has arrived: a cautious budget may
    /// grant calls in parallel from now on.
    pub fn succeeded(mut self) {
        self.done = true;
        self.budget.finish(self.id, true);
    }

    /// Records that the call was given up without an answer (it timed out).
    pub fn unanswered(mut self) {
        self.done = true;
        self.budget.abandon(self.id);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.budget.abandon(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(calls: u32, secs: u64) -> RateLimit {
        RateLimit {
            calls,
            window: Duration::from_secs(secs),
        }
    }

    /// The largest number of grant times inside any half-open window.
    fn max_in_window(times: &[Instant], window: Duration) -> usize {
        let mut best = 0;
        for (i, start) in times.iter().enumerate() {
            let n = times[i..]
                .iter()
                .take_while(|t| **t < *start + window)
                .count();
            best = best.max(n);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_limit_in_any_window() {
        let budget = Budget::new(limit(5, 60));
        let start = Instant::now();
        let mut grants = Vec::new();
        for _ in 0..23 {
            let (permit, _) = budget.acquire(Priority::Low).await;
            grants.push(Instant::now());
            tokio::time::sleep(Duration::from_millis(300)).await; // the call's latency
            permit.finish();
        }
        assert_eq!(max_in_window(&grants, Duration::from_secs(60)), 5);
        // 23 calls need four full windows after the first burst, plus the latency
        // of the calls that opened each window.
        let elapsed = grants[22] - start;
        assert!(elapsed >= Duration::from_secs(240), "{elapsed:?}");
        assert!(elapsed <= Duration::from_secs(242), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_given_up_without_its_answer_keeps_its_slot_a_window_longer() {
        // The server counts a call when it reads it, which may be after the
        // exporter gave up on it (a cancelled listing, a timeout).
        let budget = Budget::new(limit(1, 60));
        let (cancelled, _) = budget.acquire(Priority::High).await;
        drop(cancelled);
        let (_, waited) = budget.acquire(Priority::High).await;
        assert_eq!(waited, Duration::from_secs(120), "dropped unfinished");

        let budget = Budget::new(limit(1, 60));
        budget.acquire(Priority::High).await.0.unanswered();
        let (_, waited) = budget.acquire(Priority::High).await;
        assert_eq!(waited, Duration::from_secs(120), "timed out");

        let budget = Budget::new(limit(1, 60));
        budget.acquire(Priority::High).await.0.finish();
        let (_, waited) = budget.acquire(Priority::High).await;
        assert_eq!(waited, Duration::from_secs(60), "answered");
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_pages_leave_the_reserved_slots_to_the_lanes() {
        let budget = Budget::new(limit(5, 60));
        budget.set_reserve(3);
        // Sweep pages get two slots of the window, not five.
        for _ in 0..2 {
            budget.acquire(Priority::Low).await.0.finish();
        }
        let b = Arc::clone(&budget);
        let sweep = tokio::spawn(async move { b.acquire(Priority::Low).await.1 });
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            !sweep.is_finished(),
            "a third sweep page waits for the window"
        );
        // The lanes' calls find their three slots at once.
        for _ in 0..3 {
            let (permit, waited) = budget.acquire(Priority::High).await;
            assert_eq!(waited, Duration::ZERO);
            permit.finish();
        }
        // The waiting page goes when the first sweep page leaves the window
        // (one minute after it ended), though the window then still holds
        // the lanes' three calls.
        let waited = sweep.await.unwrap();
        assert!(
            (Duration::from_secs(59)..=Duration::from_secs(60)).contains(&waited),
            "{waited:?}"
        );
        // A reserve as large as the limit still leaves sweeps one slot.
        let budget = Budget::new(limit(5, 60));
        budget.set_reserve(9);
        let (_, waited) = budget.acquire(Priority::Low).await;
        assert_eq!(waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_bucket_burst_is_not_allowed() {
        // At 59 s a bucket refilled at 5/min would have ~5 tokens again; the window
        // must still refuse until the first call's answer is 60 s old.
        let budget = Budget::new(limit(5, 60));
        for _ in 0..5 {
            budget.acquire(Priority::Low).await.0.finish();
        }
        tokio::time::advance(Duration::from_secs(59)).await;
        let (_, waited) = budget.acquire(Priority::Low).await;
        assert_eq!(waited, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_flight_holds_its_slot_until_it_ends() {
        let budget = Budget::new(limit(1, 10));
        let (permit, _) = budget.acquire(Priority::Low).await;
        let b = Arc::clone(&budget);
        let waiter = tokio::spawn(async move { b.acquire(Priority::Low).await.1 });
        tokio::time::sleep(Duration::from_secs(30)).await; // a very slow answer
        permit.finish();
        assert_eq!(waiter.await.unwrap(), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn high_priority_goes_first() {
        let budget = Budget::new(limit(1, 10));
        budget.acquire(Priority::Low).await.0.finish();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [
            ("sweep-1", Priority::Low),
            ("sweep-2", Priority::Low),
            ("malicious", Priority::High),
        ] {
            let b = Arc::clone(&budget);
            let order = Arc::clone(&order);
            tasks.push(tokio::spawn(async move {
                let (permit, _) = b.acquire(priority).await;
                order.lock().unwrap().push(name);
                permit.finish();
            }));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["malicious", "sweep-1", "sweep-2"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_stops_every_grant_until_it_ends() {
        let budget = Budget::new(limit(5, 60));
        budget.acquire(Priority::Low).await.0.finish();
        budget.pause(Duration::from_secs(90));
        assert!(budget.status().paused_for.is_some());
        let (_, waited) = budget.acquire(Priority::High).await;
        assert_eq!(waited, Duration::from_secs(90));
        // A shorter pause does not cut a longer one.
        budget.pause(Duration::from_secs(30));
        budget.pause(Duration::from_secs(5));
        let (_, waited) = budget.acquire(Priority::High).await;
        assert_eq!(waited, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_gives_its_place_up() {
        let budget = Budget::new(limit(1, 10));
        let (permit, _) = budget.acquire(Priority::Low).await;
        let b = Arc::clone(&budget);
        let first = tokio::spawn(async move { b.acquire(Priority::High).await });
        tokio::task::yield_now().await;
        first.abort();
        let _ = first.await;
        assert_eq!(budget.status().waiting, 0);
        permit.finish();
        let (_, waited) = budget.acquire(Priority::Low).await;
        assert_eq!(waited, Duration::from_secs(10));
        assert_eq!(budget.status().granted, 2);
    }

    /// Sweeps keep a 5-a-minute budget saturated; a reservation made one
    /// window ahead still gets its slot on time, and the sweep loses nothing.
    #[tokio::test(start_paused = true)]
    async fn a_reservation_is_served_on_time_under_saturation() {
        let budget = Budget::new(limit(5, 60));
        let start = Instant::now();
        let sweep = {
            let b = Arc::clone(&budget);
            tokio::spawn(async move {
                let mut grants = Vec::new();
                for _ in 0..30 {
                    let (permit, _) = b.acquire(Priority::Low).await;
                    grants.push(Instant::now());
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    permit.finish();
                }
                grants
            })
        };
        let mut lateness = Vec::new();
        let mut high = Vec::new();
        for round in 1..=4u64 {
            let due = start + Duration::from_secs(60 * round + 7 * round);
            tokio::time::sleep_until(due - Duration::from_secs(60)).await;
            let (permit, waited) = budget.acquire_at(Priority::High, Some(due)).await;
            lateness.push(Instant::now() - due);
            high.push(Instant::now());
            assert_eq!(waited, Instant::now() - due);
            tokio::time::sleep(Duration::from_millis(300)).await;
            permit.finish();
        }
        let mut all = sweep.await.unwrap();
        assert!(
            lateness.iter().all(|l| *l <= Duration::from_millis(1)),
            "{lateness:?}"
        );
        all.extend(high);
        all.sort_unstable();
        assert_eq!(max_in_window(&all, Duration::from_secs(60)), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_far_reservation_does_not_block_calls_that_fit() {
        let budget = Budget::new(limit(5, 60));
        let due = Instant::now() + Duration::from_secs(30);
        let b = Arc::clone(&budget);
        let reserved =
            tokio::spawn(async move { b.acquire_at(Priority::High, Some(due)).await.0.finish() });
        tokio::task::yield_now().await;
        for _ in 0..4 {
            let (permit, waited) = budget.acquire(Priority::Low).await;
            assert_eq!(waited, Duration::ZERO, "room for the reservation remains");
            permit.finish();
        }
        // A fifth call now would leave no slot for the reservation: it waits.
        let (_, waited) = budget.acquire(Priority::Low).await;
        assert!(waited >= Duration::from_secs(30), "{waited:?}");
        reserved.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_cautious_budget_sends_one_call_at_a_time_until_one_succeeds() {
        let budget = Budget::new(limit(5, 60)).cautious();
        let (first, _) = budget.acquire(Priority::Low).await;
        let b = Arc::clone(&budget);
        let second = tokio::spawn(async move { b.acquire(Priority::Low).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !second.is_finished(),
            "a second call waits for the first answer"
        );
        // A refusal (e.g. 429) proves nothing: still one at a time.
        first.finish();
        let (second, _) = second.await.unwrap();
        let b = Arc::clone(&budget);
        let third = tokio::spawn(async move { b.acquire(Priority::Low).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished());
        second.succeeded();
        let (third, _) = third.await.unwrap();
        // After a success, calls go in parallel.
        let (fourth, waited) = budget.acquire(Priority::Low).await;
        assert_eq!(waited, Duration::ZERO);
        third.finish();
        fourth.finish();
    }

    #[tokio::test(start_paused = true)]
    async fn a_restored_record_fills_the_window_of_the_next_process() {
        let before = Budget::new(limit(5, 60));
        for _ in 0..3 {
            before.acquire(Priority::Low).await.0.finish();
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        before.pause(Duration::from_secs(20));
        let record = before.record();
        assert_eq!(record.calls.len(), 3);
        assert!(record.paused_until.is_some());

        let after = Budget::new(limit(5, 60));
        after.restore(&record);
        assert_eq!(after.status().calls_in_window, 3);
        let (_, waited) = after.acquire(Priority::Low).await;
        assert_eq!(waited, Duration::from_secs(20), "the pause is kept");
        after.acquire(Priority::Low).await.0.finish();
        // Five calls in the window: the sixth waits for the oldest to leave.
        let (_, waited) = after.acquire(Priority::Low).await;
        assert!(waited > Duration::ZERO, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn restored_calls_older_than_a_window_are_dropped() {
        let record = BudgetRecord {
            calls: vec![
                SystemTime::now() - Duration::from_secs(120),
                SystemTime::now() + Duration::from_secs(3600),
            ],
            paused_until: Some(SystemTime::now() + Duration::from_secs(1_000_000_000)),
        };
        let budget = Budget::new(limit(5, 60));
        budget.restore(&record);
        let status = budget.status();
        assert_eq!(status.calls_in_window, 1, "the future call counts as now");
        assert_eq!(status.paused_for, Some(Duration::from_secs(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_pause_is_cut_to_five_windows() {
        let budget = Budget::new(limit(5, 60));
        budget.pause(Duration::MAX);
        assert_eq!(budget.status().paused_for, Some(Duration::from_secs(300)));
        let (_, waited) = budget.acquire(Priority::Low).await;
        assert_eq!(waited, Duration::from_secs(300));
    }
}
