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
//! - stragglers are kicked on a schedule ([`Kicks`]): a first time some time after the start
//!   (or the reversal), then at a fixed interval;
//! - a transition reversed midway goes back to where it started, and completes like any other;
//! - the backend settles (drops its reality check) only once no task is left behind, and a
//!   transition whose settling failed stays in progress, consistent, to be polled again.
//!
//! The user-mode host (`kgraft-host`'s engine) and the kernel engine (`kernel::kgraft`) both run
//! their transitions through [`Transition`].

/// When stragglers are kicked, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kicks {
    /// From the start (or the reversal) of a transition to the first kick.
    pub first_after: u64,
    /// Between two kicks.
    pub every: u64,
}

/// The kernel's schedule: a task gets a second to pass a kernel exit by itself before a fake
/// signal wakes it, as the livepatch core waits a second between its checks.
pub const KERNEL_KICKS: Kicks = Kicks { first_after: 1_000, every: 1_000 };

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
    /// On error the transition stays in progress, every function still deciding.
    fn settle(&mut self, goal: Universe) -> Result<(), Self::Error>;
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

/// The state machine of one patch (the kernel engine) or of a patch stack (the user-mode host).
#[derive(Debug)]
pub struct Transition {
    phase: Phase,
    kicks: Kicks,
}

impl Default for Transition {
    fn default() -> Self {
        Transition::new(KERNEL_KICKS)
    }
}

impl Transition {
    /// Nothing applied: every task runs the original code. Stragglers are kicked on `kicks`.
    pub const fn new(kicks: Kicks) -> Transition {
        Transition { phase: Phase::Stable(false), kicks }
    }

    /// Changes the kick schedule, from the next kick on.
    pub fn set_kicks(&mut self, kicks: Kicks) {
        self.kicks = kicks;
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

    /// Another patch took every function of this one over (`replace_all`): it is off, without
    /// a transition of its own. Returns whether it was applied.
    pub fn taken_over(&mut self) -> bool {
        let applied = self.phase == Phase::Stable(true);
        if applied {
            self.phase = Phase::Stable(false);
        }
        applied
    }

    /// Moves what can move at time `now`, kicks stragglers when it is time, and settles once no
    /// task is left behind.
    ///
    /// # Errors
    ///
    /// The backend's error when settling failed; the transition stays in progress.
    pub fn poll<B: Backend>(&mut self, backend: &mut B, now: u64) -> Result<Poll, B::Error> {
        let Phase::Moving { goal, started, kicked, reversed } = self.phase else { return Ok(Poll::Idle) };
        let left = backend.migrate();
        if left == 0 {
            backend.settle(goal)?;
            self.phase = Phase::Stable(goal);
            return Ok(Poll::Done { goal, reversed });
        }
        let due = match kicked {
            None => now.saturating_sub(started) >= self.kicks.first_after,
            Some(at) => now.saturating_sub(at) >= self.kicks.every,
        };
        if due {
            backend.kick();
            self.phase = Phase::Moving { goal, started, kicked: Some(now), reversed };
        }
        Ok(Poll::Pending { left })
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
        fail_settle: bool,
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

        fn settle(&mut self, goal: Universe) -> Result<(), i32> {
            assert!(self.tasks.iter().all(|t| t.0 == goal), "settled with a task behind");
            if self.fail_settle {
                return Err(-5);
            }
            self.goal = None;
            self.log.push("settle");
            Ok(())
        }
    }

    fn fake(tasks: &[bool]) -> Fake {
        Fake { tasks: tasks.iter().map(|&stuck| (false, stuck)).collect(), ..Fake::default() }
    }

    #[test]
    fn free_tasks_complete_at_the_first_poll() {
        let mut b = fake(&[false, false]);
        let mut t = Transition::default();
        t.start(&mut b, true, 0).unwrap();
        assert_eq!(t.poll(&mut b, 10), Ok(Poll::Done { goal: true, reversed: false }));
        assert_eq!(t.phase(), Phase::Stable(true));
        assert_eq!(b.log, ["begin", "settle"]);
    }

    #[test]
    fn stragglers_are_kicked_after_a_second_then_every_second() {
        let mut b = fake(&[false, true]);
        let mut t = Transition::default();
        t.start(&mut b, true, 0).unwrap();
        assert_eq!(t.poll(&mut b, 500), Ok(Poll::Pending { left: 1 }));
        assert_eq!(b.log, ["begin"]);
        t.poll(&mut b, 1_000).unwrap();
        t.poll(&mut b, 1_500).unwrap();
        t.poll(&mut b, 2_000).unwrap();
        assert_eq!(b.log, ["begin", "kick", "kick"]);
        b.tasks[1].1 = false;
        assert_eq!(t.poll(&mut b, 2_100), Ok(Poll::Done { goal: true, reversed: false }));
    }

    #[test]
    fn a_reversed_transition_goes_back_and_says_so() {
        let mut b = fake(&[false, true]);
        let mut t = Transition::default();
        t.start(&mut b, true, 0).unwrap();
        t.poll(&mut b, 100).unwrap();
        t.reverse(&mut b, 200).unwrap();
        // The stuck task never left universe 0, the other one comes back.
        assert_eq!(t.poll(&mut b, 300), Ok(Poll::Done { goal: false, reversed: true }));
        assert_eq!(t.phase(), Phase::Stable(false));
        assert_eq!(b.log, ["begin", "reverse", "settle"]);
    }

    #[test]
    fn requests_out_of_turn_are_refused_and_change_nothing() {
        let mut b = fake(&[true]);
        let mut t = Transition::default();
        assert_eq!(t.start(&mut b, false, 0), Err(Refused::AlreadyThere));
        assert_eq!(t.reverse(&mut b, 0), Err(Refused::AlreadyThere));
        t.start(&mut b, true, 0).unwrap();
        assert_eq!(t.start(&mut b, false, 0), Err(Refused::Busy));
        assert_eq!(t.poll(&mut b, 1), Ok(Poll::Pending { left: 1 }));
        assert_eq!(b.log, ["begin"]);
    }

    #[test]
    fn a_failed_settle_keeps_the_transition_in_progress_for_the_next_poll() {
        let mut b = Fake { fail_settle: true, ..fake(&[false]) };
        let mut t = Transition::default();
        t.start(&mut b, true, 0).unwrap();
        assert_eq!(t.poll(&mut b, 10), Err(-5));
        assert!(matches!(t.phase(), Phase::Moving { goal: true, .. }));
        b.fail_settle = false;
        assert_eq!(t.poll(&mut b, 20), Ok(Poll::Done { goal: true, reversed: false }));
    }

    #[test]
    fn the_kick_schedule_is_the_hosts_choice() {
        let mut b = fake(&[true]);
        let mut t = Transition::new(Kicks { first_after: 20, every: 20 });
        t.start(&mut b, true, 0).unwrap();
        t.poll(&mut b, 19).unwrap();
        t.poll(&mut b, 20).unwrap();
        t.poll(&mut b, 39).unwrap();
        t.poll(&mut b, 40).unwrap();
        assert_eq!(b.log, ["begin", "kick", "kick"]);
    }

    #[test]
    fn a_patch_taken_over_is_off_and_can_be_applied_again() {
        let mut b = fake(&[false]);
        let mut t = Transition::default();
        assert!(!t.taken_over(), "nothing applied yet");
        t.start(&mut b, true, 0).unwrap();
        assert!(!t.taken_over(), "a transition in progress is not taken over");
        t.poll(&mut b, 1).unwrap();
        assert!(t.taken_over());
        assert_eq!(t.phase(), Phase::Stable(false));
        assert_eq!(t.start(&mut b, true, 2), Ok(()));
    }

    #[test]
    fn a_backend_that_cannot_begin_leaves_the_patch_where_it_was() {
        let mut b = Fake { fail_begin: true, ..fake(&[false]) };
        let mut t = Transition::default();
        assert_eq!(t.start(&mut b, true, 0), Err(Refused::Backend(-16)));
        assert_eq!(t.phase(), Phase::Stable(false));
        assert_eq!(t.poll(&mut b, 0), Ok(Poll::Idle));
    }
}
