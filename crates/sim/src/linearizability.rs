//! A linearizability checker for histories of a key-value map.
//!
//! The simulator records every client request as an [`Operation`] with the logical time it was
//! invoked and the logical time its response arrived, in a [`History`]. [`check`] then decides
//! whether some total order of the operations (a *linearization*) exists that
//!
//! 1. respects real time: if operation A completed before operation B was invoked, A comes first;
//! 2. and explains every response: replaying the order on a single in-memory map gives exactly
//!    the values the clients saw.
//!
//! If no such order exists, the cluster returned a result that no correct, atomic key-value store
//! could have returned: a stale read, a lost write, a double-applied compare-and-swap.
//!
//! # Model
//!
//! Keys and values are `u64` ([`Key`], [`Value`]). Rationale: the checker compares values for
//! equality and never looks inside them, so the simulator can map its byte-string keys and values
//! to integers when it records them, and the search hashes and copies integers instead of
//! buffers. Every key starts absent. Three operations are modelled: [`Operation::Put`],
//! [`Operation::Get`] (returns `Option<Value>`) and [`Operation::CompareAndSwap`] (returns
//! whether the swap happened).
//!
//! An operation either completed with a [`Response`], or is [`Outcome::Indeterminate`]: the
//! client gave up (timeout, leader lost) and does not know whether the operation took effect.
//! An indeterminate operation is treated as completing at +infinity and as optional: it may be
//! placed anywhere after its invocation, or nowhere. An indeterminate `Get` has no effect and no
//! result to explain, so it is dropped before the search.
//!
//! # Results
//!
//! [`CheckResult::Unknown`] means the search gave up after its step budget
//! ([`CheckerConfig::partition_search_steps_max`]) without an answer. **Callers MUST treat
//! `Unknown` as a failure**, exactly like `NotLinearizable`: a checker that silently passes
//! histories it could not check hides bugs. [`CheckResult::is_ok`] returns `true` only for
//! [`CheckResult::Linearizable`].
//!
//! # Algorithm
//!
//! Wing and Gong's search with Lowe's memoization (G. Lowe, "Testing for linearizability", 2017;
//! the same design as Porcupine): walk the history's invocation and completion events in time
//! order; at each point, try to linearize one of the operations that have been invoked; when an
//! operation's completion is reached before it was linearized, undo the last choice. A cache of
//! (set of linearized operations, map state) pairs that were already explored and failed stops
//! the search from exploring the same configuration twice.
//!
//! Rationale for splitting by key: these operations each touch one key, so the history is
//! linearizable exactly when each key's sub-history is (linearizability is compositional). Each
//! partition is searched on its own, which keeps the linearized-operation sets small.
//!
//! Three reductions keep the search small:
//!
//! * A read (a `Get`, or a `CompareAndSwap` that failed) whose result matches the current state
//!   is linearized at once, with no other branch tried: moving a read earlier, while it is
//!   invocable, never invalidates a linearization, because it changes nothing.
//! * A written value that no read and no compare-and-swap ever mentions is indistinguishable from
//!   any other such value, so all of them become one "unobserved" state.
//! * At any point, two open indeterminate operations that would produce the same state are
//!   interchangeable (both are optional and open until +infinity), so only the first is tried;
//!   and an indeterminate operation that would not change the state is never placed, because
//!   leaving it open keeps strictly more options.
//!
//! # Performance
//!
//! Give every write a value that no other write uses (a counter is enough). With repeated
//! values, a read cannot tell which write it saw and the search may have to try many
//! combinations.
//!
//! The search is exponential in the number of operations *on one key* that overlap in time, as
//! every exact checker is in the worst case. Measured on histories of a real atomic map, with
//! the default budget: 10,000 operations from 8 clients over 16 keys check in about 3 ms in
//! release (65 ms in debug); 5,000 operations from 16 clients all on one key, with operations
//! lasting up to 50 ticks, in about a second; 32 such clients on one key exhaust even a 20
//! million step budget ([`CheckResult::Unknown`]). Spread the simulator's workload over enough
//! keys that a few operations, not dozens, overlap on each. The example `checker_speed` times
//! a 10,000-operation history:
//! `cargo run --release -p flotilla-sim --example checker_speed`.
//!
//! # Example
//!
//! ```
//! use sim::linearizability::{check, History, Operation, Response};
//!
//! let mut history = History::new();
//! let put = history.invoke(1, Operation::Put { key: 7, value: 1 });
//! let get = history.invoke(2, Operation::Get { key: 7 });
//! history.complete(put, Response::Put);
//! // The get was concurrent with the put, so it may see the put or not.
//! history.complete(get, Response::Get(None));
//! assert!(check(&history).is_ok());
//!
//! // A get invoked after the put was acknowledged must see it.
//! let stale = history.invoke(2, Operation::Get { key: 7 });
//! history.complete(stale, Response::Get(None));
//! assert!(!check(&history).is_ok());
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// A key of the modelled map. Byte-string keys are mapped to integers when recorded.
pub type Key = u64;

/// A value of the modelled map. Byte-string values are mapped to integers when recorded.
pub type Value = u64;

/// Identifies the client that issued an operation. Only used to describe violations: the checker
/// does not require a client to wait for one operation before invoking the next.
pub type ClientId = u64;

/// A logical time. Operation A happened before operation B when A's completion time is strictly
/// less than B's invocation time; equal times mean the two were concurrent.
pub type Timestamp = u64;

/// The index of an operation in its [`History`], returned by [`History::invoke`] and
/// [`History::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(pub usize);

impl fmt::Display for OperationId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "#{}", self.0)
    }
}

/// A request to the key-value map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Set `key` to `value`. Answered by [`Response::Put`].
    Put {
        /// The key written.
        key: Key,
        /// The value written.
        value: Value,
    },
    /// Read `key`. Answered by [`Response::Get`] with the value, or `None` if the key is absent.
    Get {
        /// The key read.
        key: Key,
    },
    /// Set `key` to `new` if its current value is `expected` (`None`: the key is absent).
    /// Answered by [`Response::CompareAndSwap`] saying whether the swap happened.
    CompareAndSwap {
        /// The key compared and written.
        key: Key,
        /// The value the key must hold for the swap to happen; `None` means absent.
        expected: Option<Value>,
        /// The value written if the comparison succeeds.
        new: Value,
    },
}

impl Operation {
    /// The key this operation reads or writes.
    pub fn key(&self) -> Key {
        match *self {
            Operation::Put { key, .. }
            | Operation::Get { key }
            | Operation::CompareAndSwap { key, .. } => key,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Operation::Put { key, value } => write!(formatter, "put(key {key}, {value})"),
            Operation::Get { key } => write!(formatter, "get(key {key})"),
            Operation::CompareAndSwap { key, expected, new } => write!(
                formatter,
                "compare-and-swap(key {key}, {} -> {new})",
                describe_value(expected)
            ),
        }
    }
}

/// What the map answered to an [`Operation`] that completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// The put was applied.
    Put,
    /// The value read, or `None` if the key was absent.
    Get(Option<Value>),
    /// Whether the compare-and-swap found the expected value and wrote the new one.
    CompareAndSwap(bool),
}

impl Response {
    /// Whether this is the kind of response `operation` gets (a `Get` response for a `Get`...).
    pub fn answers(&self, operation: &Operation) -> bool {
        matches!(
            (self, operation),
            (Response::Put, Operation::Put { .. })
                | (Response::Get(_), Operation::Get { .. })
                | (
                    Response::CompareAndSwap(_),
                    Operation::CompareAndSwap { .. }
                )
        )
    }
}

impl fmt::Display for Response {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Response::Put => write!(formatter, "ok"),
            Response::Get(value) => write!(formatter, "{}", describe_value(value)),
            Response::CompareAndSwap(true) => write!(formatter, "swapped"),
            Response::CompareAndSwap(false) => write!(formatter, "not swapped"),
        }
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client received `response` at `completed_at`.
    Completed {
        /// The map's answer.
        response: Response,
        /// When the client received the answer; not earlier than the invocation.
        completed_at: Timestamp,
    },
    /// The client does not know whether the operation took effect (timeout, leader lost, or the
    /// history ended while it was in flight). It is checked as completing at +infinity and as
    /// optional: it may take effect at any point after its invocation, or never.
    Indeterminate,
}

/// One operation of a [`History`]: who invoked what, when, and how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordedOperation {
    /// The client that invoked the operation.
    pub client: ClientId,
    /// The request.
    pub operation: Operation,
    /// When the client sent the request.
    pub invoked_at: Timestamp,
    /// The response and its time, or indeterminate.
    pub outcome: Outcome,
}

impl RecordedOperation {
    /// The completion time, or `None` if the outcome is indeterminate (+infinity).
    pub fn completed_at(&self) -> Option<Timestamp> {
        match self.outcome {
            Outcome::Completed { completed_at, .. } => Some(completed_at),
            Outcome::Indeterminate => None,
        }
    }

    /// The response, or `None` if the outcome is indeterminate.
    pub fn response(&self) -> Option<Response> {
        match self.outcome {
            Outcome::Completed { response, .. } => Some(response),
            Outcome::Indeterminate => None,
        }
    }
}

impl fmt::Display for RecordedOperation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "client {} {}", self.client, self.operation)?;
        match self.outcome {
            Outcome::Completed {
                response,
                completed_at,
            } => write!(
                formatter,
                " -> {response}, invoked at {} and completed at {completed_at}",
                self.invoked_at
            ),
            Outcome::Indeterminate => write!(
                formatter,
                " -> indeterminate, invoked at {}",
                self.invoked_at
            ),
        }
    }
}

/// A record of the operations clients invoked and how each ended, built as the simulation runs.
///
/// [`invoke`](History::invoke), [`complete`](History::complete) and
/// [`indeterminate`](History::indeterminate) stamp events with an internal logical clock that
/// advances by one per call, so the order of the calls is the real-time order the checker uses.
/// Call `invoke` when the client sends the request and `complete` when it receives the response,
/// not later: recording late only widens the interval and can hide a violation.
///
/// An operation that is invoked and never completed is indeterminate, which is what it is: a
/// history that ends with requests in flight needs no further calls.
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<RecordedOperation>,
    /// Whether each operation got its outcome, to catch completing an operation twice.
    resolved: Vec<bool>,
    /// The time the next event gets.
    clock: Timestamp,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` sent `operation` now. Its outcome is indeterminate until
    /// [`complete`](History::complete) is called.
    pub fn invoke(&mut self, client: ClientId, operation: Operation) -> OperationId {
        let invoked_at = self.tick();
        self.operations.push(RecordedOperation {
            client,
            operation,
            invoked_at,
            outcome: Outcome::Indeterminate,
        });
        self.resolved.push(false);
        OperationId(self.operations.len() - 1)
    }

    /// Records that the operation `id` completed now with `response`.
    ///
    /// # Panics
    /// If `id` was already completed or declared indeterminate, or if `response` is not the kind
    /// of response its operation gets: both are bugs in the recording code.
    pub fn complete(&mut self, id: OperationId, response: Response) {
        self.resolve(id);
        let completed_at = self.tick();
        let recorded = &mut self.operations[id.0];
        assert!(
            response.answers(&recorded.operation),
            "{response:?} does not answer {:?}",
            recorded.operation
        );
        recorded.outcome = Outcome::Completed {
            response,
            completed_at,
        };
    }

    /// Records that the client gave up on the operation `id` without knowing whether it took
    /// effect. Optional (an operation never completed is indeterminate anyway); calling it makes
    /// a double completion panic.
    ///
    /// # Panics
    /// If `id` was already completed or declared indeterminate.
    pub fn indeterminate(&mut self, id: OperationId) {
        self.resolve(id);
    }

    /// Appends an operation with explicit times, for hand-written histories and for recorders
    /// with their own clock. Events recorded afterwards with [`invoke`](History::invoke) and
    /// [`complete`](History::complete) are stamped later than every time recorded here.
    ///
    /// # Panics
    /// If the operation completes before it was invoked, or its response does not answer it.
    pub fn record(&mut self, recorded: RecordedOperation) -> OperationId {
        let mut latest = recorded.invoked_at;
        if let Outcome::Completed {
            response,
            completed_at,
        } = recorded.outcome
        {
            assert!(
                completed_at >= recorded.invoked_at,
                "{recorded:?} completes before it is invoked"
            );
            assert!(
                response.answers(&recorded.operation),
                "{response:?} does not answer {:?}",
                recorded.operation
            );
            latest = completed_at;
        }
        self.clock = self.clock.max(latest.saturating_add(1));
        self.operations.push(recorded);
        self.resolved.push(true);
        OperationId(self.operations.len() - 1)
    }

    /// All operations, indexed by [`OperationId`].
    pub fn operations(&self) -> &[RecordedOperation] {
        &self.operations
    }

    /// The operation `id`.
    pub fn operation(&self, id: OperationId) -> &RecordedOperation {
        &self.operations[id.0]
    }

    /// The number of operations recorded.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether no operation was recorded.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    fn tick(&mut self) -> Timestamp {
        let now = self.clock;
        self.clock += 1;
        now
    }

    fn resolve(&mut self, id: OperationId) {
        assert!(
            !self.resolved[id.0],
            "operation {id} already has its outcome"
        );
        self.resolved[id.0] = true;
    }
}

/// Limits for [`check_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckerConfig {
    /// The most search steps spent on one key's operations before giving up with
    /// [`CheckResult::Unknown`]. Bounds time and memory too: the cache grows by at most one
    /// entry (a bit per operation of the key, plus the value) per step.
    pub partition_search_steps_max: u64,
}

impl Default for CheckerConfig {
    /// One million steps per key: a well-behaved history needs a few steps per operation, and
    /// the cache stays in the low hundreds of megabytes even for keys with thousands of
    /// operations.
    fn default() -> Self {
        Self {
            partition_search_steps_max: 1_000_000,
        }
    }
}

/// The verdict on a [`History`].
///
/// `Unknown` is not a pass: use [`is_ok`](CheckResult::is_ok), which is `true` only for
/// `Linearizable`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a history that is not linearizable is a bug; Unknown must fail the test too"]
pub enum CheckResult {
    /// Some order of the operations respects real time and explains every response.
    Linearizable,
    /// The operations on `key` cannot be ordered; the other keys were not all necessarily
    /// checked.
    NotLinearizable {
        /// The key whose operations could not be ordered.
        key: Key,
        /// Where the search got stuck.
        explanation: Explanation,
    },
    /// The search on `key` used up its step budget without deciding. Treat as a failure: raise
    /// [`CheckerConfig::partition_search_steps_max`] or shrink the history.
    Unknown {
        /// The key whose search gave up.
        key: Key,
        /// The steps spent on it.
        steps: u64,
    },
}

impl CheckResult {
    /// `true` only for [`CheckResult::Linearizable`]; `Unknown` counts as a failure.
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Linearizable => write!(formatter, "linearizable"),
            CheckResult::NotLinearizable { key, explanation } => {
                write!(formatter, "key {key} is not linearizable: {explanation}")
            }
            CheckResult::Unknown { key, steps } => write!(
                formatter,
                "unknown: the search on key {key} gave up after {steps} steps (counts as a failure)"
            ),
        }
    }
}

/// Why a key's operations could not be ordered: the longest valid order the search found, and
/// the operations none of which could come after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The longest prefix of a linearization the search found, in order.
    pub linearized_prefix: Vec<OperationId>,
    /// The completed operations that were invoked by the end of that prefix and not in it: none
    /// of them can come next, and at least one of them must (it had completed by then).
    pub could_not_follow: Vec<OperationId>,
    /// The same, rendered for a person: the last operations of the prefix, the value they leave,
    /// and each operation that could not follow.
    pub text: String,
}

impl fmt::Display for Explanation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

/// Checks `history` with the default [`CheckerConfig`].
pub fn check(history: &History) -> CheckResult {
    check_with(history, &CheckerConfig::default())
}

/// Checks `history`, one key at a time, in key order. Returns the first key found not
/// linearizable; otherwise the first key whose search gave up; otherwise `Linearizable`.
pub fn check_with(history: &History, config: &CheckerConfig) -> CheckResult {
    let mut partitions: BTreeMap<Key, Vec<OperationId>> = BTreeMap::new();
    for (index, recorded) in history.operations().iter().enumerate() {
        let is_indeterminate_read = matches!(recorded.operation, Operation::Get { .. })
            && recorded.outcome == Outcome::Indeterminate;
        // An indeterminate get changes nothing and has no result to explain.
        if !is_indeterminate_read {
            partitions
                .entry(recorded.operation.key())
                .or_default()
                .push(OperationId(index));
        }
    }
    let mut first_unknown = None;
    for (key, ids) in partitions {
        match Search::new(history, &ids, config.partition_search_steps_max).run() {
            SearchResult::Linearizable => {}
            SearchResult::Stuck(dead_end) => {
                let explanation = dead_end.explain(history, ids.len());
                return CheckResult::NotLinearizable { key, explanation };
            }
            SearchResult::GaveUp { steps } => {
                first_unknown.get_or_insert(CheckResult::Unknown { key, steps });
            }
        }
    }
    first_unknown.unwrap_or(CheckResult::Linearizable)
}

/// The value of one key during the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RegisterState {
    Absent,
    /// A value that some read or compare-and-swap of this key mentions.
    Observed(Value),
    /// Any value no read or compare-and-swap mentions: such values behave identically.
    Unobserved,
}

/// An operation of one partition, translated to [`RegisterState`]s.
#[derive(Clone, Copy, Debug)]
enum Transition {
    Write {
        new: RegisterState,
    },
    Read {
        seen: RegisterState,
    },
    CompareAndSwap {
        expected: RegisterState,
        new: RegisterState,
        /// `None` for an indeterminate compare-and-swap: it swaps if and only if it matches.
        swapped: Option<bool>,
    },
}

impl Transition {
    /// Whether applying this operation never changes the state, whatever the state.
    fn never_writes(self) -> bool {
        matches!(
            self,
            Transition::Read { .. }
                | Transition::CompareAndSwap {
                    swapped: Some(false),
                    ..
                }
        )
    }

    /// The state after applying this operation to `state`, or `None` if its response is
    /// impossible from `state`.
    fn apply(self, state: RegisterState) -> Option<RegisterState> {
        match self {
            Transition::Write { new } => Some(new),
            Transition::Read { seen } => (state == seen).then_some(state),
            Transition::CompareAndSwap {
                expected,
                new,
                swapped,
            } => {
                let matches = state == expected;
                match swapped {
                    Some(true) => matches.then_some(new),
                    Some(false) => (!matches).then_some(state),
                    None => Some(if matches { new } else { state }),
                }
            }
        }
    }
}

struct PartitionOperation {
    id: OperationId,
    transition: Transition,
    determinate: bool,
}

/// An event of the doubly linked list the search walks: an operation's invocation or completion.
#[derive(Clone, Copy)]
struct Event {
    /// Index into the partition's operations; unused for the sentinel.
    operation: usize,
    is_completion: bool,
    previous: usize,
    next: usize,
}

/// Index of the sentinel event that closes the circular event list.
const SENTINEL: usize = 0;

/// The operations linearized so far, one bit per operation of the partition.
#[derive(Clone, PartialEq, Eq, Hash)]
struct OperationSet(Vec<u64>);

impl OperationSet {
    fn new(size: usize) -> Self {
        Self(vec![0; size.div_ceil(64)])
    }

    fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    fn remove(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
}

/// A linearized operation on the search stack, with what is needed to undo it.
struct Frame {
    operation: usize,
    state_before: RegisterState,
    /// The states already tried by indeterminate operations at the level below this frame.
    tried_before: Vec<RegisterState>,
    /// Whether this was a read that the level had to take (see [`Search::applicable_read`]):
    /// if it fails, the level below fails too, with no alternatives to try.
    forced: bool,
}

/// The deepest point where the search had to back up.
struct DeadEnd {
    prefix: Vec<OperationId>,
    could_not_follow: Vec<OperationId>,
}

enum SearchResult {
    Linearizable,
    Stuck(DeadEnd),
    GaveUp { steps: u64 },
}

/// Wing and Gong's search with Lowe's cache, over the operations of one key.
///
/// A *level* is a configuration: the operations linearized so far (`linearized`, in order on
/// `stack`) and the resulting `state`. At each level the search tries the open operations whose
/// invocation comes before the first open completion, in event order; linearizing one enters a
/// new level, and reaching that completion means the level is a dead end.
struct Search {
    operations: Vec<PartitionOperation>,
    /// `events[SENTINEL]` links the first and last events; linearizing an operation unlinks its
    /// two events, and undoing relinks them (in reverse order, so the links are still valid).
    events: Vec<Event>,
    invocation_event: Vec<usize>,
    completion_event: Vec<usize>,
    linearized: OperationSet,
    stack: Vec<Frame>,
    state: RegisterState,
    /// Lowe's cache: every configuration entered. One that is entered again failed before
    /// (a configuration that succeeds ends the search).
    explored: HashSet<(OperationSet, RegisterState)>,
    /// States that indeterminate operations already produced at this level: another
    /// indeterminate operation producing the same state is interchangeable with the first.
    tried_here: Vec<RegisterState>,
    determinate_left: usize,
    steps: u64,
    steps_max: u64,
}

impl Search {
    fn new(history: &History, ids: &[OperationId], steps_max: u64) -> Self {
        let observed = observed_values(history, ids);
        let state_of = |value: Value| {
            if observed.contains(&value) {
                RegisterState::Observed(value)
            } else {
                RegisterState::Unobserved
            }
        };
        let operations: Vec<PartitionOperation> = ids
            .iter()
            .map(|&id| {
                let recorded = history.operation(id);
                let response = recorded.response();
                let transition = match (recorded.operation, response) {
                    (Operation::Put { value, .. }, _) => Transition::Write {
                        new: state_of(value),
                    },
                    (Operation::Get { .. }, Some(Response::Get(seen))) => Transition::Read {
                        seen: seen.map_or(RegisterState::Absent, RegisterState::Observed),
                    },
                    (Operation::CompareAndSwap { expected, new, .. }, response) => {
                        Transition::CompareAndSwap {
                            expected: expected
                                .map_or(RegisterState::Absent, RegisterState::Observed),
                            new: state_of(new),
                            swapped: match response {
                                Some(Response::CompareAndSwap(swapped)) => Some(swapped),
                                _ => None,
                            },
                        }
                    }
                    (Operation::Get { .. }, _) => {
                        unreachable!("indeterminate gets are dropped before the search")
                    }
                };
                PartitionOperation {
                    id,
                    transition,
                    determinate: response.is_some(),
                }
            })
            .collect();

        // Sort by time; at equal times invocations come first, because equal times mean
        // concurrent: an operation completing at t does not precede one invoked at t.
        let mut order: Vec<(Timestamp, bool, usize)> = Vec::with_capacity(2 * ids.len());
        for (index, &id) in ids.iter().enumerate() {
            let recorded = history.operation(id);
            order.push((recorded.invoked_at, false, index));
            let completed_at = recorded.completed_at().unwrap_or(Timestamp::MAX);
            order.push((completed_at, true, index));
        }
        order.sort_unstable();

        let count = order.len() + 1;
        let mut events = Vec::with_capacity(count);
        events.push(Event {
            operation: usize::MAX,
            is_completion: false,
            previous: count - 1,
            next: 1 % count,
        });
        let mut invocation_event = vec![0; ids.len()];
        let mut completion_event = vec![0; ids.len()];
        for (position, &(_, is_completion, operation)) in order.iter().enumerate() {
            let index = position + 1;
            if is_completion {
                completion_event[operation] = index;
            } else {
                invocation_event[operation] = index;
            }
            events.push(Event {
                operation,
                is_completion,
                previous: index - 1,
                next: (index + 1) % count,
            });
        }
        let determinate_left = operations.iter().filter(|o| o.determinate).count();
        Self {
            linearized: OperationSet::new(operations.len()),
            operations,
            events,
            invocation_event,
            completion_event,
            stack: Vec::new(),
            state: RegisterState::Absent,
            explored: HashSet::new(),
            tried_here: Vec::new(),
            determinate_left,
            steps: 0,
            steps_max,
        }
    }

    fn run(mut self) -> SearchResult {
        let mut deepest: Option<DeadEnd> = None;
        // `None`: this level is a dead end.
        let mut cursor = self.enter_level();
        loop {
            // Open indeterminate operations are optional: leaving them out is a linearization.
            if self.determinate_left == 0 {
                return SearchResult::Linearizable;
            }
            if self.steps >= self.steps_max {
                return SearchResult::GaveUp { steps: self.steps };
            }
            self.steps += 1;
            match cursor {
                Some(event) if !self.events[event].is_completion => {
                    cursor = if self.try_linearize(self.events[event].operation, false) {
                        self.enter_level()
                    } else {
                        Some(self.events[event].next)
                    };
                }
                _ => {
                    if cursor.is_some()
                        && deepest
                            .as_ref()
                            .is_none_or(|d| self.stack.len() > d.prefix.len())
                    {
                        deepest = Some(self.dead_end());
                    }
                    let Some(resume_at) = self.backtrack() else {
                        return SearchResult::Stuck(deepest.expect("a completion was reached"));
                    };
                    cursor = Some(resume_at);
                }
            }
        }
    }

    /// Starts a level: takes the reads it must take, and returns the first event to try, or
    /// `None` if a read it must take leads to a configuration that already failed.
    fn enter_level(&mut self) -> Option<usize> {
        // Within the budget: `run` stops the search once it is spent.
        while self.steps < self.steps_max {
            let Some(read) = self.applicable_read() else {
                break;
            };
            self.steps += 1;
            if !self.try_linearize(read, true) {
                return None;
            }
        }
        // A determinate operation is open, so its completion lies ahead: the list is not empty.
        Some(self.events[SENTINEL].next)
    }

    /// An open determinate operation that never changes the state (a get, or a compare-and-swap
    /// that failed) and is consistent with the current state, if any.
    ///
    /// Rationale: such a read can be linearized now without losing any linearization. Take one
    /// that placed it later: the state is the same now as then minus the operations in between,
    /// none of which it changes, so moving it here keeps every response right; and moving an
    /// operation earlier, while it is invocable, breaks no real-time order. So the level needs
    /// no other branch, which removes most of the search on read-heavy histories.
    fn applicable_read(&self) -> Option<usize> {
        let mut event = self.events[SENTINEL].next;
        while event != SENTINEL && !self.events[event].is_completion {
            let index = self.events[event].operation;
            let operation = &self.operations[index];
            if operation.determinate
                && operation.transition.never_writes()
                && operation.transition.apply(self.state).is_some()
            {
                return Some(index);
            }
            event = self.events[event].next;
        }
        None
    }

    /// Linearizes the open operation `index` if its response is possible now, it is worth
    /// trying, and the configuration it leads to was not explored. Returns whether it did.
    fn try_linearize(&mut self, index: usize, forced: bool) -> bool {
        let operation = &self.operations[index];
        let Some(next_state) = operation.transition.apply(self.state) else {
            return false;
        };
        let determinate = operation.determinate;
        if !determinate {
            // Never place an indeterminate operation that changes nothing: leaving it open
            // keeps more options. Nor one interchangeable with one tried already.
            if next_state == self.state || self.tried_here.contains(&next_state) {
                return false;
            }
            self.tried_here.push(next_state);
        }
        self.linearized.insert(index);
        if !self.explored.insert((self.linearized.clone(), next_state)) {
            self.linearized.remove(index);
            return false;
        }
        self.stack.push(Frame {
            operation: index,
            state_before: self.state,
            tried_before: std::mem::take(&mut self.tried_here),
            forced,
        });
        if determinate {
            self.determinate_left -= 1;
        }
        self.state = next_state;
        self.unlink(index);
        true
    }

    /// Undoes linearizations until a level with alternatives left, and returns the event after
    /// the undone operation's invocation, where that level's scan resumes; `None` if the stack
    /// ran out: no linearization exists.
    fn backtrack(&mut self) -> Option<usize> {
        loop {
            let frame = self.stack.pop()?;
            self.state = frame.state_before;
            self.tried_here = frame.tried_before;
            self.linearized.remove(frame.operation);
            if self.operations[frame.operation].determinate {
                self.determinate_left += 1;
            }
            self.relink(frame.operation);
            if !frame.forced {
                return Some(self.events[self.invocation_event[frame.operation]].next);
            }
        }
    }

    fn unlink(&mut self, operation: usize) {
        for event in [
            self.invocation_event[operation],
            self.completion_event[operation],
        ] {
            let Event { previous, next, .. } = self.events[event];
            self.events[previous].next = next;
            self.events[next].previous = previous;
        }
    }

    fn relink(&mut self, operation: usize) {
        for event in [
            self.completion_event[operation],
            self.invocation_event[operation],
        ] {
            let Event { previous, next, .. } = self.events[event];
            self.events[previous].next = event;
            self.events[next].previous = event;
        }
    }

    /// Describes the current level, stuck at its first open completion: every completed
    /// operation invoked before that is open and could not be linearized next.
    fn dead_end(&self) -> DeadEnd {
        let mut could_not_follow = Vec::new();
        let mut event = self.events[SENTINEL].next;
        while event != SENTINEL {
            let operation = &self.operations[self.events[event].operation];
            if !self.events[event].is_completion && operation.determinate {
                could_not_follow.push(operation.id);
            }
            if self.events[event].is_completion {
                break;
            }
            event = self.events[event].next;
        }
        DeadEnd {
            prefix: self
                .stack
                .iter()
                .map(|frame| self.operations[frame.operation].id)
                .collect(),
            could_not_follow,
        }
    }
}

impl DeadEnd {
    fn explain(self, history: &History, partition_size: usize) -> Explanation {
        /// How many operations of the prefix to show: the ones that set the state matter most.
        const PREFIX_SHOWN_MAX: usize = 5;
        let mut text = format!(
            "the longest valid order found places {} of the key's {} operations",
            self.prefix.len(),
            partition_size
        );
        let shown_from = self.prefix.len().saturating_sub(PREFIX_SHOWN_MAX);
        if !self.prefix.is_empty() {
            text.push_str(if shown_from == 0 { ":" } else { ", ending:" });
            for &id in &self.prefix[shown_from..] {
                text.push_str(&format!("\n  {id} {}", history.operation(id)));
            }
            text.push_str(&format!(
                "\nand leaves {}.",
                describe_state(replay(history, &self.prefix))
            ));
        } else {
            text.push_str(", starting from the key absent.");
        }
        text.push_str("\nNone of these operations can come next, and one of them must:");
        for &id in &self.could_not_follow {
            text.push_str(&format!("\n  {id} {}", history.operation(id)));
        }
        Explanation {
            linearized_prefix: self.prefix,
            could_not_follow: self.could_not_follow,
            text,
        }
    }
}

/// The values some operation of the partition compares against: what gets returned and what
/// compare-and-swaps expect. Any other value can only be overwritten or make a
/// compare-and-swap fail, whatever it is.
fn observed_values(history: &History, ids: &[OperationId]) -> HashSet<Value> {
    let mut observed = HashSet::new();
    for &id in ids {
        let recorded = history.operation(id);
        if let Some(Response::Get(Some(value))) = recorded.response() {
            observed.insert(value);
        }
        if let Operation::CompareAndSwap {
            expected: Some(value),
            ..
        } = recorded.operation
        {
            observed.insert(value);
        }
    }
    observed
}

/// The value of the key after applying `order`, a valid linearization prefix, from absent.
/// Rationale: the search merges unobserved values, but a person wants to see the real one.
fn replay(history: &History, order: &[OperationId]) -> Option<Value> {
    let mut current = None;
    for &id in order {
        match history.operation(id).operation {
            Operation::Put { value, .. } => current = Some(value),
            Operation::Get { .. } => {}
            Operation::CompareAndSwap { expected, new, .. } => {
                if current == expected {
                    current = Some(new);
                }
            }
        }
    }
    current
}

fn describe_state(value: Option<Value>) -> String {
    match value {
        Some(value) => format!("the value {value}"),
        None => "the key absent".to_string(),
    }
}

fn describe_value(value: Option<Value>) -> String {
    match value {
        Some(value) => value.to_string(),
        None => "absent".to_string(),
    }
}

/// A seeded generator of histories that are linearizable by construction: clients issue
/// overlapping operations against one real atomic map, each operation taking effect at a random
/// instant inside its interval. For testing the checker and timing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtomicMapWorkload {
    /// The number of clients; each has one operation in flight at a time (an indeterminate one
    /// stays in flight forever while the client moves on).
    pub clients: u64,
    /// The number of distinct keys, `0..keys`.
    pub keys: u64,
    /// The number of operations in the history.
    pub operations: usize,
    /// The share of operations, in percent, that end indeterminate. Half of the indeterminate
    /// writes take effect (possibly after the client gave up), half never do.
    pub indeterminate_percent: u64,
    /// The longest an operation takes from invocation to completion.
    pub operation_ticks_max: u64,
}

impl AtomicMapWorkload {
    /// A history of `self.operations` operations, the same for the same `seed`. Every write
    /// uses a fresh value.
    pub fn generate(&self, seed: u64) -> History {
        assert!(self.clients > 0);
        assert!(self.keys > 0);
        assert!(self.operation_ticks_max > 0);
        let mut random = SplitMix64(seed);
        let planned = self.plan(&mut random);

        // Apply the operations in the order of their instants to a real map.
        let mut by_instant: Vec<usize> = (0..planned.len()).collect();
        by_instant.sort_by_key(|&index| (planned[index].instant, index));
        let mut map: BTreeMap<Key, Value> = BTreeMap::new();
        let mut next_value: Value = 1;
        let mut recorded: Vec<RecordedOperation> = Vec::with_capacity(planned.len());
        let mut invoked_order: Vec<(Timestamp, usize)> = Vec::with_capacity(planned.len());
        for index in by_instant {
            let plan = &planned[index];
            let current = map.get(&plan.key).copied();
            let (operation, response) = match plan.kind {
                PlannedKind::Put => {
                    next_value += 1;
                    let value = next_value;
                    (
                        Operation::Put {
                            key: plan.key,
                            value,
                        },
                        Response::Put,
                    )
                }
                PlannedKind::Get => (Operation::Get { key: plan.key }, Response::Get(current)),
                PlannedKind::CompareAndSwap => {
                    next_value += 1;
                    // Half the time expect the current value, so that swaps do succeed;
                    // otherwise some earlier value, which usually fails.
                    let expected = if random.below(2) == 0 {
                        current
                    } else {
                        Some(1 + random.below(next_value))
                    };
                    let operation = Operation::CompareAndSwap {
                        key: plan.key,
                        expected,
                        new: next_value,
                    };
                    (operation, Response::CompareAndSwap(expected == current))
                }
            };
            let written = match (operation, response) {
                (Operation::Put { value, .. }, _) => Some(value),
                (Operation::CompareAndSwap { new, .. }, Response::CompareAndSwap(true)) => {
                    Some(new)
                }
                _ => None,
            };
            if let (Some(value), true) = (written, plan.takes_effect) {
                map.insert(plan.key, value);
            }
            let outcome = match plan.completed_at {
                Some(completed_at) => Outcome::Completed {
                    response,
                    completed_at,
                },
                None => Outcome::Indeterminate,
            };
            invoked_order.push((plan.invoked_at, recorded.len()));
            recorded.push(RecordedOperation {
                client: plan.client,
                operation,
                invoked_at: plan.invoked_at,
                outcome,
            });
        }

        // Record in invocation order, which reads naturally when printed.
        invoked_order.sort_unstable();
        let mut history = History::new();
        for (_, index) in invoked_order {
            let _ = history.record(recorded[index]);
        }
        history
    }

    /// The operations' clients, keys, kinds, intervals and instants of effect, before results.
    fn plan(&self, random: &mut SplitMix64) -> Vec<PlannedOperation> {
        let mut client_free_at: Vec<Timestamp> =
            (0..self.clients).map(|_| random.below(3)).collect();
        let mut planned = Vec::with_capacity(self.operations);
        for index in 0..self.operations {
            let client = index as u64 % self.clients;
            let invoked_at = client_free_at[client as usize];
            let duration = random.below(self.operation_ticks_max + 1);
            let kind = match random.below(100) {
                0..40 => PlannedKind::Get,
                40..75 => PlannedKind::Put,
                _ => PlannedKind::CompareAndSwap,
            };
            let indeterminate = random.below(100) < self.indeterminate_percent;
            // A request that timed out may still be applied later, after the client gave up.
            let effect_window = if indeterminate {
                3 * duration
            } else {
                duration
            };
            planned.push(PlannedOperation {
                client,
                key: random.below(self.keys),
                kind,
                invoked_at,
                completed_at: (!indeterminate).then_some(invoked_at + duration),
                instant: invoked_at + random.below(effect_window + 1),
                takes_effect: !indeterminate || random.below(2) == 0,
            });
            client_free_at[client as usize] = invoked_at + duration + 1 + random.below(2);
        }
        planned
    }
}

#[derive(Clone, Copy)]
enum PlannedKind {
    Put,
    Get,
    CompareAndSwap,
}

struct PlannedOperation {
    client: ClientId,
    key: Key,
    kind: PlannedKind,
    invoked_at: Timestamp,
    /// `None` for an indeterminate operation.
    completed_at: Option<Timestamp>,
    /// When the operation takes effect on the map, if it does.
    instant: Timestamp,
    takes_effect: bool,
}

/// Steele, Lea and Flood's SplitMix64: a tiny seeded generator, so the workload needs no
/// dependency. Not for cryptography.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..bound`. The modulo bias is negligible for the small bounds used here.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Records a completed operation by hand.
    fn completed(
        history: &mut History,
        client: ClientId,
        interval: (Timestamp, Timestamp),
        operation: Operation,
        response: Response,
    ) -> OperationId {
        history.record(RecordedOperation {
            client,
            operation,
            invoked_at: interval.0,
            outcome: Outcome::Completed {
                response,
                completed_at: interval.1,
            },
        })
    }

    /// Records an operation whose client gave up on it.
    fn timed_out(
        history: &mut History,
        client: ClientId,
        invoked_at: Timestamp,
        operation: Operation,
    ) -> OperationId {
        history.record(RecordedOperation {
            client,
            operation,
            invoked_at,
            outcome: Outcome::Indeterminate,
        })
    }

    fn put(key: Key, value: Value) -> Operation {
        Operation::Put { key, value }
    }

    fn get(key: Key) -> Operation {
        Operation::Get { key }
    }

    fn compare_and_swap(key: Key, expected: Option<Value>, new: Value) -> Operation {
        Operation::CompareAndSwap { key, expected, new }
    }

    /// Checks, and returns the explanation if the history is not linearizable on `key`.
    fn violation_on(history: &History, key: Key) -> Explanation {
        match check(history) {
            CheckResult::NotLinearizable {
                key: found,
                explanation,
            } => {
                assert_eq!(found, key);
                explanation
            }
            other => panic!("expected a violation on key {key}, got {other}"),
        }
    }

    // ---- Linearizable histories ----

    #[test]
    fn an_empty_history_is_linearizable() {
        assert_eq!(check(&History::new()), CheckResult::Linearizable);
    }

    #[test]
    fn reads_concurrent_with_a_put_may_see_the_old_or_the_new_value() {
        let mut history = History::new();
        completed(&mut history, 1, (0, 10), put(1, 5), Response::Put);
        completed(&mut history, 2, (1, 4), get(1), Response::Get(None));
        completed(&mut history, 2, (5, 8), get(1), Response::Get(Some(5)));
        completed(&mut history, 3, (2, 9), get(1), Response::Get(None));
        assert_eq!(check(&history), CheckResult::Linearizable);
    }

    #[test]
    fn sequential_operations_are_linearizable() {
        let mut history = History::new();
        let steps = [
            (put(1, 1), Response::Put),
            (get(1), Response::Get(Some(1))),
            (put(1, 2), Response::Put),
            (get(1), Response::Get(Some(2))),
            (
                compare_and_swap(1, Some(2), 3),
                Response::CompareAndSwap(true),
            ),
            (
                compare_and_swap(1, Some(2), 4),
                Response::CompareAndSwap(false),
            ),
            (get(1), Response::Get(Some(3))),
            (get(2), Response::Get(None)),
        ];
        for (operation, response) in steps {
            let id = history.invoke(1, operation);
            history.complete(id, response);
        }
        assert_eq!(check(&history), CheckResult::Linearizable);
    }

    #[test]
    fn an_indeterminate_put_may_be_observed_later() {
        let mut history = History::new();
        timed_out(&mut history, 1, 0, put(1, 7));
        completed(&mut history, 2, (1, 2), get(1), Response::Get(None));
        completed(&mut history, 2, (50, 51), get(1), Response::Get(Some(7)));
        assert_eq!(check(&history), CheckResult::Linearizable);
    }

    #[test]
    fn an_indeterminate_put_may_never_take_effect() {
        let mut history = History::new();
        completed(&mut history, 1, (0, 1), put(1, 1), Response::Put);
        timed_out(&mut history, 1, 2, put(1, 2));
        completed(&mut history, 2, (3, 4), get(1), Response::Get(Some(1)));
        completed(&mut history, 2, (90, 91), get(1), Response::Get(Some(1)));
        assert_eq!(check(&history), CheckResult::Linearizable);
    }

    #[test]
    fn an_unobserved_indeterminate_put_may_explain_a_failed_compare_and_swap() {
        // The swap from 1 fails although the key held 1 before it: only the timed-out put of 2,
        // which no read ever returns, can have changed the value in between.
        let mut history = History::new();
        completed(&mut history, 1, (0, 1), put(1, 1), Response::Put);
        timed_out(&mut history, 1, 2, put(1, 2));
        let swap = compare_and_swap(1, Some(1), 3);
        completed(
            &mut history,
            2,
            (3, 4),
            swap,
            Response::CompareAndSwap(false),
        );
        completed(&mut history, 2, (5, 6), put(1, 5), Response::Put);
        completed(&mut history, 3, (7, 8), get(1), Response::Get(Some(5)));
        assert_eq!(check(&history), CheckResult::Linearizable);
    }

    #[test]
    fn an_indeterminate_get_is_ignored() {
        let mut history = History::new();
        completed(&mut history, 1, (0, 1), put(1, 1), Response::Put);
        let abandoned = history.invoke(2, get(1));
        history.indeterminate(abandoned);
        assert_eq!(check(&history), CheckResult::Linearizable);
    }

    #[test]
    fn a_chain_of_concurrent_compare_and_swaps_is_linearizable() {
        let mut history = History::new();
        let swapped = Response::CompareAndSwap(true);
        let not_swapped = Response::CompareAndSwap(false);
        completed(
            &mut history,
            1,
            (0, 3),
            compare_and_swap(1, None, 1),
            swapped,
        );
        // Two clients race to replace 1: one wins, the other sees 2 and fails.
        completed(
            &mut history,
            2,
            (4, 9),
            compare_and_swap(1, Some(1), 2),
            swapped,
        );
        completed(
            &mut history,
            3,
            (5, 8),
            compare_and_swap(1, Some(1), 3),
            not_swapped,
        );
        // A swap from 2 concurrent with the winner must come after it.
        completed(
            &mut history,
            1,
            (6, 12),
            compare_and_swap(1, Some(2), 4),
            swapped,
        );
        timed_out(&mut history, 3, 13, compare_and_swap(1, Some(4), 5));
        completed(&mut history, 2, (14, 15), get(1), Response::Get(Some(5)));
        assert_eq!(check(&history), CheckResult::Linearizable);
    }

    #[test]
    fn keys_are_checked_independently() {
        // Per key this is fine; a single global register would reject it.
        let mut history = History::new();
        completed(&mut history, 1, (0, 1), put(1, 1), Response::Put);
        completed(&mut history, 2, (2, 3), put(2, 2), Response::Put);
        completed(&mut history, 1, (4, 5), get(1), Response::Get(Some(1)));
        completed(&mut history, 2, (4, 5), get(2), Response::Get(Some(2)));
        assert_eq!(check(&history), CheckResult::Linearizable);
    }

    // ---- Histories that are not linearizable ----

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_rejected() {
        let mut history = History::new();
        let write = history.invoke(1, put(1, 1));
        history.complete(write, Response::Put);
        let read = history.invoke(2, get(1));
        history.complete(read, Response::Get(None));

        let explanation = violation_on(&history, 1);
        assert_eq!(explanation.linearized_prefix, vec![write]);
        assert_eq!(explanation.could_not_follow, vec![read]);
        assert!(
            explanation.text.contains("leaves the value 1"),
            "{explanation}"
        );
    }

    #[test]
    fn two_compare_and_swaps_from_the_same_value_cannot_both_succeed() {
        let mut history = History::new();
        let swapped = Response::CompareAndSwap(true);
        completed(&mut history, 1, (0, 1), put(1, 1), Response::Put);
        completed(
            &mut history,
            2,
            (2, 5),
            compare_and_swap(1, Some(1), 2),
            swapped,
        );
        completed(
            &mut history,
            3,
            (3, 6),
            compare_and_swap(1, Some(1), 3),
            swapped,
        );
        violation_on(&history, 1);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_rejected() {
        let mut history = History::new();
        completed(&mut history, 1, (0, 5), put(1, 1), Response::Put);
        let read = completed(&mut history, 2, (1, 4), get(1), Response::Get(Some(9)));
        let explanation = violation_on(&history, 1);
        assert!(explanation.could_not_follow.contains(&read));
    }

    #[test]
    fn a_read_cannot_see_a_write_invoked_after_it_completed() {
        let mut history = History::new();
        completed(&mut history, 1, (0, 1), get(1), Response::Get(Some(1)));
        completed(&mut history, 2, (2, 3), put(1, 1), Response::Put);
        violation_on(&history, 1);
    }

    #[test]
    fn an_indeterminate_write_cannot_be_observed_before_it_was_invoked() {
        let mut history = History::new();
        completed(&mut history, 1, (0, 1), get(1), Response::Get(Some(1)));
        timed_out(&mut history, 2, 2, put(1, 1));
        violation_on(&history, 1);
    }

    #[test]
    fn the_violation_names_the_broken_key_only() {
        let mut history = History::new();
        completed(&mut history, 1, (0, 1), put(1, 1), Response::Put);
        completed(&mut history, 1, (2, 3), get(1), Response::Get(Some(1)));
        completed(&mut history, 2, (0, 1), put(2, 2), Response::Put);
        completed(&mut history, 2, (2, 3), get(2), Response::Get(Some(3)));
        let result = check(&history);
        assert!(!result.is_ok());
        assert!(result.to_string().starts_with("key 2 is not linearizable"));
    }

    #[test]
    fn an_exhausted_search_is_unknown_and_not_ok() {
        let workload = AtomicMapWorkload {
            clients: 4,
            keys: 1,
            operations: 100,
            indeterminate_percent: 0,
            operation_ticks_max: 5,
        };
        let config = CheckerConfig {
            partition_search_steps_max: 10,
        };
        let result = check_with(&workload.generate(7), &config);
        assert_eq!(result, CheckResult::Unknown { key: 0, steps: 10 });
        assert!(!result.is_ok());
    }

    // ---- The recorder ----

    #[test]
    fn the_recorder_orders_events_by_call() {
        let mut history = History::new();
        let first = history.invoke(1, put(1, 1));
        let second = history.invoke(2, get(1));
        history.complete(second, Response::Get(Some(1)));
        history.complete(first, Response::Put);
        let never_answered = history.invoke(3, put(1, 2));

        assert_eq!(history.operation(first).invoked_at, 0);
        assert_eq!(history.operation(second).invoked_at, 1);
        assert_eq!(history.operation(second).completed_at(), Some(2));
        assert_eq!(history.operation(first).completed_at(), Some(3));
        assert_eq!(history.operation(never_answered).completed_at(), None);
        assert_eq!(check(&history), CheckResult::Linearizable);
    }

    #[test]
    #[should_panic(expected = "already has its outcome")]
    fn completing_an_operation_twice_panics() {
        let mut history = History::new();
        let id = history.invoke(1, put(1, 1));
        history.complete(id, Response::Put);
        history.complete(id, Response::Put);
    }

    #[test]
    #[should_panic(expected = "does not answer")]
    fn a_response_of_the_wrong_kind_panics() {
        let mut history = History::new();
        let id = history.invoke(1, put(1, 1));
        history.complete(id, Response::Get(None));
    }

    // ---- Properties ----

    /// A deliberately dumb checker: tries every order of every subset of the indeterminate
    /// operations. Only for a handful of operations.
    fn brute_force_is_linearizable(history: &History) -> bool {
        fn search(
            operations: &[RecordedOperation],
            placed: &mut [bool],
            map: &BTreeMap<Key, Value>,
        ) -> bool {
            let all_determinate_placed = operations
                .iter()
                .zip(placed.iter())
                .all(|(recorded, &placed)| placed || recorded.completed_at().is_none());
            if all_determinate_placed {
                return true;
            }
            for candidate in 0..operations.len() {
                if placed[candidate] {
                    continue;
                }
                let invoked_at = operations[candidate].invoked_at;
                let must_wait = operations.iter().enumerate().any(|(other, recorded)| {
                    !placed[other] && recorded.completed_at().is_some_and(|at| at < invoked_at)
                });
                if must_wait {
                    continue;
                }
                if let Some(next) = apply_to_map(map, &operations[candidate]) {
                    placed[candidate] = true;
                    if search(operations, placed, &next) {
                        return true;
                    }
                    placed[candidate] = false;
                }
            }
            false
        }
        let mut placed = vec![false; history.len()];
        search(history.operations(), &mut placed, &BTreeMap::new())
    }

    /// The map after `recorded`, or `None` if its response is impossible.
    fn apply_to_map(
        map: &BTreeMap<Key, Value>,
        recorded: &RecordedOperation,
    ) -> Option<BTreeMap<Key, Value>> {
        let mut next = map.clone();
        let response = recorded.response();
        match recorded.operation {
            Operation::Put { key, value } => {
                next.insert(key, value);
            }
            Operation::Get { key } => {
                if let Some(Response::Get(seen)) = response {
                    if map.get(&key).copied() != seen {
                        return None;
                    }
                }
            }
            Operation::CompareAndSwap { key, expected, new } => {
                let matches = map.get(&key).copied() == expected;
                if let Some(Response::CompareAndSwap(swapped)) = response {
                    if swapped != matches {
                        return None;
                    }
                }
                if matches {
                    next.insert(key, new);
                }
            }
        }
        Some(next)
    }

    /// Small random histories with random responses and repeated values: a mix of
    /// linearizable and not.
    fn arbitrary_small_history() -> impl Strategy<Value = History> {
        let operation = (
            0u64..2,
            0u8..3,
            0u64..4,
            0u64..4,
            0u64..12,
            0u64..6,
            0u8..5,
            any::<bool>(),
        );
        proptest::collection::vec(operation, 0..8).prop_map(|operations| {
            let mut history = History::new();
            for (index, parts) in operations.into_iter().enumerate() {
                let (key, kind, value, other, invoked_at, duration, outcome_roll, flag) = parts;
                // Zero stands for "absent" in the value slots that can be absent.
                let optional = |value: u64| (value != 0).then_some(value);
                let value = value.max(1);
                let (operation, response) = match kind {
                    0 => (put(key, value), Response::Put),
                    1 => (get(key), Response::Get(optional(other))),
                    _ => (
                        compare_and_swap(key, optional(other), value),
                        Response::CompareAndSwap(flag),
                    ),
                };
                let outcome = if outcome_roll == 0 {
                    Outcome::Indeterminate
                } else {
                    Outcome::Completed {
                        response,
                        completed_at: invoked_at + duration,
                    }
                };
                history.record(RecordedOperation {
                    client: index as u64,
                    operation,
                    invoked_at,
                    outcome,
                });
            }
            history
        })
    }

    fn arbitrary_workload() -> impl Strategy<Value = (AtomicMapWorkload, u64)> {
        (
            1u64..6,
            1u64..4,
            1usize..80,
            0u64..30,
            1u64..6,
            any::<u64>(),
        )
            .prop_map(
                |(clients, keys, operations, indeterminate_percent, ticks, seed)| {
                    let workload = AtomicMapWorkload {
                        clients,
                        keys,
                        operations,
                        indeterminate_percent,
                        operation_ticks_max: ticks,
                    };
                    (workload, seed)
                },
            )
    }

    /// `history` with the `choice`-th completed get (modulo their number) answering a value
    /// no operation wrote, or `None` if it has no completed get.
    fn with_impossible_read(history: &History, choice: usize) -> Option<(History, Key)> {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&index| {
                matches!(
                    history.operations()[index].response(),
                    Some(Response::Get(_))
                )
            })
            .collect();
        let target = *reads.get(choice % reads.len().max(1))?;
        let mut mutated = History::new();
        for (index, &recorded) in history.operations().iter().enumerate() {
            let mut recorded = recorded;
            if index == target {
                let completed_at = recorded.completed_at().expect("a completed get");
                recorded.outcome = Outcome::Completed {
                    response: Response::Get(Some(Value::MAX)),
                    completed_at,
                };
            }
            mutated.record(recorded);
        }
        Some((mutated, history.operations()[target].operation.key()))
    }

    proptest! {
        #[test]
        fn agrees_with_brute_force_on_small_histories(history in arbitrary_small_history()) {
            let expected = brute_force_is_linearizable(&history);
            let result = check(&history);
            prop_assert_eq!(result.is_ok(), expected, "{}", result);
        }

        #[test]
        fn histories_of_an_atomic_map_are_linearizable((workload, seed) in arbitrary_workload()) {
            let history = workload.generate(seed);
            prop_assert_eq!(check(&history), CheckResult::Linearizable);
        }

        #[test]
        fn a_read_of_a_value_never_written_is_always_caught(
            (workload, seed) in arbitrary_workload(),
            choice in any::<usize>(),
        ) {
            let history = workload.generate(seed);
            if let Some((mutated, key)) = with_impossible_read(&history, choice) {
                let result = check(&mutated);
                let is_violation_on_key =
                    matches!(result, CheckResult::NotLinearizable { key: found, .. } if found == key);
                prop_assert!(is_violation_on_key, "{}", result);
            }
        }
    }

    // ---- Speed ----

    #[test]
    fn checks_ten_thousand_operations_of_an_atomic_map() {
        // Prints the time (run with --nocapture); no assertion on it, machines differ. The
        // example `checker_speed` is the figure to quote, measured in release.
        let workload = AtomicMapWorkload {
            clients: 8,
            keys: 16,
            operations: 10_000,
            indeterminate_percent: 3,
            operation_ticks_max: 10,
        };
        let history = workload.generate(42);
        let started = std::time::Instant::now();
        let result = check(&history);
        println!(
            "checked {} operations in {} ms",
            history.len(),
            started.elapsed().as_millis()
        );
        assert_eq!(result, CheckResult::Linearizable);
    }
}
