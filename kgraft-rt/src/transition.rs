//! The transition state machine: when a change starts, when its stragglers are kicked, when it
//! settles, and how it turns around.
//!
//! A transition moves every task from one universe to the other: universe 0 runs the original
//! code, universe 1 the patch's. What "moving a task" means is the host's business, behind
//! [`Backend`]: the kernel engine redirects each changed function through a reality check,
//! migrates tasks at kernel entry and exit or by their stacks, and kicks sleepers with a fake
//! signal. This module only decides the order, in one place, so that every host follows the
//! same rules:
//!
//! - a transition starts from a stable universe and ends in the other one;
//! - stragglers are first kicked [`KICK_AFTER_MS`] after the start, then every
//!   [`KICK_EVERY_MS`];
//! - a transition reversed midway goes back to where it started, and completes like any other;
//! - the backend settles (drops its reality check) only once no task is left behind.

/// Milliseconds from the start of a transition to the first kick of its stragglers.
pub const KICK_AFTER_MS: u64 = 1_000;

/// Milliseconds between two kicks.
pub const KICK_EVERY_MS: u64 = 1_000;

/// Milliseconds between two polls of a transition.
pub const POLL_EVERY_MS: u32 = 100;

/// A universe: `false` runs the original code, `true` the patch's.
pub type Universe = bool;

/// What a host does for the state machine.
pub trait Backend {
    /// The host's error, a negative errno in the kernel.
    type Error;

    /// Starts moving every task to `goal`: each changed function decides by the universe of its
    /// caller from now on, and every task is in the other universe. On error nothing changed.
    fn begin(&mut self, goal: Universe) -> Result<(), Self::Error>;

    /// Moves what can move now; returns how many tasks (and CPUs) are still behind.
    fn migrate(&mut self) -> usize;

    /// Wakes the stragglers so that they pass a point where they can move.
    fn kick(&mut self);

    /// Turns the transition around: the goal becomes the universe it started from.
    fn reverse(&mut self);

    /// Every task is in the goal: the changed functions run the goal's code without deciding.
    fn settle(&mut self, goal: Universe);
}

/// Where the patch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No transition: every task runs `Universe`.
    Stable(Universe),
    /// Tasks are moving to `goal`.
    Moving {
        /// The universe the tasks move to.
        goal: Universe,
        /// When the transition started (ms).
        started: u64,
        /// When the stragglers were last kicked (ms), if they were.
        kicked: Option<u64>,
        /// Whether the transition was turned around.
        reversed: bool,
    },
}

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Nothing is moving.
    Idle,
    /// `left` tasks (and CPUs) are still behind: poll again.
    Pending {
        /// How many.
        left: usize,
    },
    /// The transition completed in `goal`; `reversed` says whether it had been turned around.
    Done {
        /// The universe every task now runs.
        goal: Universe,
        /// Whether it was a reversal.
        reversed: bool,
    },
}

/// A refused request.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<E> {
    /// A transition is in progress (reverse it instead).
    Busy,
    /// Every task already runs the requested universe.
    AlreadyThere,
    /// The backend could not start; nothing changed.
    Backend(E),
}

/// The state machine of one patch.
#[derive(Debug)]
pub struct Transition {
    phase: Phase,
}

impl Default for Transition {
    fn default() -> Self {
        Transition::new()
    }
}

impl Transition {
    /// A patch not applied: every task runs the original code.
    pub const fn new() -> Transition {
        Transition { phase: Phase::Stable(false) }
    }

    /// Returns where the patch stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Starts the transition to `goal` at time `now` (ms).
    pub fn start<B: Backend>(&mut self, backend: &mut B, goal: Universe, now: u64) -> Result<(), Refused<B::Error>> {
        match self.phase {
            Phase::Moving { .. } => Err(Refused::Busy),
            Phase::Stable(u) if u == goal => Err(Refused::AlreadyThere),
            Phase::Stable(_) => {
                backend.begin(goal).map_err(Refused::Backend)?;
                self.phase = Phase::Moving { goal, started: now, kicked: None, reversed: false };
                Ok(())
            }
        }
    }

    /// Turns a transition in progress around, at time `now`: the tasks go back.
    pub fn reverse<B: Backend>(&mut self, backend: &mut B, now: u64) -> Result<(), Refused<B::Error>> {
        let Phase::Moving { goal, reversed, .. } = self.phase else { return Err(Refused::AlreadyThere) };
        backend.reverse();
        self.phase = Phase::Moving { goal: !goal, started: now, kicked: None, reversed: !reversed };
        Ok(())
    }

    /// Moves what can move at time `now`, kicks stragglers when it is time, and settles once no
    /// task is left behind.
    pub fn poll<B: Backend>(&mut self, backend: &mut B, now: u64) -> Poll {
        let Phase::Moving { goal, started, kicked, reversed } = self.phase else { return Poll::Idle };
        let left = backend.migrate();
        if left == 0 {
            backend.settle(goal);
            self.phase = Phase::Stable(goal);
            return Poll::Done { goal, reversed };
        }
        let due = match kicked {
            None => now.saturating_sub(started) >= KICK_AFTER_MS,
            Some(at) => now.saturating_sub(at) >= KICK_EVERY_MS,
        };
        if due {
            backend.kick();
            self.phase = Phase::Moving { goal, started, kicked: Some(now), reversed };
        }
        Poll::Pending { left }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate alloc;
    use alloc::vec::Vec;

    /// A host whose tasks are a list of universes; a task moves when it is not "stuck".
    #[derive(Default)]
    struct Fake {
        tasks: Vec<(Universe, bool)>,
        goal: Option<Universe>,
        log: Vec<&'static str>,
        fail_begin: bool,
    }

    impl Backend for Fake {
        type Error = i32;

        fn begin(&mut self, goal: Universe) -> Result<(), i32> {
            if self.fail_begin {
                return Err(-16);
            }
            self.goal = Some(goal);
            self.log.push("begin");
            Ok(())
        }

        fn migrate(&mut self) -> usize {
            let goal = self.goal.expect("migrate only during a transition");
            for t in &mut self.tasks {
                if !t.1 {
                    t.0 = goal;
                }
            }
            self.tasks.iter().filter(|t| t.0 != goal).count()
        }

        fn kick(&mut self) {
            self.log.push("kick");
        }

        fn reverse(&mut self) {
            self.goal = self.goal.map(|g| !g);
            self.log.push("reverse");
        }

        fn settle(&mut self, goal: Universe) {
            assert!(self.tasks.iter().all(|t| t.0 == goal), "settled with a task behind");
            self.goal = None;
            self.log.push("settle");
        }
    }

    fn fake(tasks: &[bool]) -> Fake {
        Fake { tasks: tasks.iter().map(|&stuck| (false, stuck)).collect(), ..Fake::default() }
    }

    #[test]
    fn free_tasks_complete_at_the_first_poll() {
        let mut b = fake(&[false, false]);
        let mut t = Transition::new();
        t.start(&mut b, true, 0).unwrap();
        assert_eq!(t.poll(&mut b, 10), Poll::Done { goal: true, reversed: false });
        assert_eq!(t.phase(), Phase::Stable(true));
        assert_eq!(b.log, ["begin", "settle"]);
    }

    #[test]
    fn stragglers_are_kicked_after_a_second_then_every_second() {
        let mut b = fake(&[false, true]);
        let mut t = Transition::new();
        t.start(&mut b, true, 0).unwrap();
        assert_eq!(t.poll(&mut b, 500), Poll::Pending { left: 1 });
        assert_eq!(b.log, ["begin"]);
        t.poll(&mut b, 1_000);
        t.poll(&mut b, 1_500);
        t.poll(&mut b, 2_000);
        assert_eq!(b.log, ["begin", "kick", "kick"]);
        b.tasks[1].1 = false;
        assert_eq!(t.poll(&mut b, 2_100), Poll::Done { goal: true, reversed: false });
    }

    #[test]
    fn a_reversed_transition_goes_back_and_says_so() {
        let mut b = fake(&[false, true]);
        let mut t = Transition::new();
        t.start(&mut b, true, 0).unwrap();
        t.poll(&mut b, 100);
        t.reverse(&mut b, 200).unwrap();
        // The stuck task never left universe 0, the other one comes back.
        assert_eq!(t.poll(&mut b, 300), Poll::Done { goal: false, reversed: true });
        assert_eq!(t.phase(), Phase::Stable(false));
        assert_eq!(b.log, ["begin", "reverse", "settle"]);
    }

    #[test]
    fn requests_out_of_turn_are_refused_and_change_nothing() {
        let mut b = fake(&[true]);
        let mut t = Transition::new();
        assert_eq!(t.start(&mut b, false, 0), Err(Refused::AlreadyThere));
        assert_eq!(t.reverse(&mut b, 0), Err(Refused::AlreadyThere));
        t.start(&mut b, true, 0).unwrap();
        assert_eq!(t.start(&mut b, false, 0), Err(Refused::Busy));
        assert_eq!(t.poll(&mut b, 1), Poll::Pending { left: 1 });
        assert_eq!(b.log, ["begin"]);
    }

    #[test]
    fn a_backend_that_cannot_begin_leaves_the_patch_where_it_was() {
        let mut b = Fake { fail_begin: true, ..fake(&[false]) };
        let mut t = Transition::new();
        assert_eq!(t.start(&mut b, true, 0), Err(Refused::Backend(-16)));
        assert_eq!(t.phase(), Phase::Stable(false));
        assert_eq!(t.poll(&mut b, 0), Poll::Idle);
    }
}
