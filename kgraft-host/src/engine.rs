//! The host's engine: resolves a patch's targets, runs transitions, keeps the patch stack.
//!
//! Applying or removing a patch is a transition. It starts by pointing every changed site at a
//! reality-check trampoline (one batch of pokes), then moves the goal universe; threads follow
//! at their safe points. [`Engine::poll`] reports the threads still in the old universe and
//! finishes the transition once there are none: the sites then jump straight to the goal's
//! code (a second batch) and, after a grace period, the trampolines are freed.
//!
//! The order of those steps (start, kick, reverse, settle) is `kgraft_rt::transition`'s state
//! machine, which the kernel engine runs too; this file is its [`Backend`] for the host: a
//! universe is the value of the goal flag `GOAL`, which each transition flips.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use kgraft_rt::engine::poke::{self, Poke};
use kgraft_rt::engine::site::{NOP5, SITE_LEN, encode_jmp};
use kgraft_rt::engine::stack::{Change, Layer, Stack};
use kgraft_rt::engine::universe::{encode_thunk, encode_trampoline};
use kgraft_rt::transition::{self as machine, Backend, Kicks};
use kgraft_rt::{Callbacks, ModuleState, Object, Patch};

use crate::elf::Symbols;
use crate::loader::Library;
use crate::pool::Pool;
use crate::text::HostText;
use crate::threads::{self, GOAL};
use crate::{ffi, shadow};

/// The only module the host has, built into the host program.
pub const BUILTIN_MODULE: &str = "kgraft_testmod";

/// A target function: its object (`None` for vmlinux), name and sympos.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FuncKey {
    /// The object, `None` for vmlinux.
    pub object: Option<String>,
    /// The function's name.
    pub name: String,
    /// The symbol position.
    pub sympos: u32,
}

/// The state of one site the engine has touched.
#[derive(Debug, Clone, Copy)]
struct SiteState {
    site: usize,
    bytes: [u8; SITE_LEN],
    /// The thunk the site jumps through, when its target is out of reach.
    thunk: Option<usize>,
}

/// A patch the engine knows about.
struct Applied {
    id: u64,
    patch: &'static Patch,
    lib: Option<Library>,
}

/// Which way a transition goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Applying a patch.
    Patch,
    /// Removing a patch.
    Unpatch,
}

/// The data of the transition in progress (its phase is the engine's `machine`).
struct Transition {
    /// The patch being applied or removed.
    id: u64,
    direction: Direction,
    /// The stack each universe runs.
    stacks: [Stack<FuncKey>; 2],
    /// The universe the transition started from.
    from: u8,
    /// The changed functions with their trampoline.
    tramps: Vec<(FuncKey, usize)>,
    /// The patches `replace_all` removes when the transition completes.
    replaced: Vec<u64>,
    started: Instant,
}

/// What [`Engine::begin`] hands to the backend's `begin`.
struct Pending {
    id: u64,
    direction: Direction,
    next: Stack<FuncKey>,
    replaced: Vec<u64>,
}

/// A thread that has not reached the goal universe yet.
#[derive(Debug, Clone)]
pub struct Straggler {
    /// The thread's name.
    pub name: String,
    /// Its kernel thread id.
    pub tid: i32,
    /// How long since it last passed a safe point.
    pub since_safe_point: Duration,
    /// Whether it is asleep in a system call.
    pub asleep: bool,
}

/// What [`Engine::poll`] found.
#[derive(Debug)]
pub enum Progress {
    /// No transition is in progress.
    Idle,
    /// The transition waits for these threads.
    Waiting {
        /// The patch's name.
        patch: String,
        /// Which way the transition goes.
        direction: Direction,
        /// Time since the transition started.
        elapsed: Duration,
        /// The registered threads.
        threads: usize,
        /// The threads still in the old universe.
        stragglers: Vec<Straggler>,
    },
    /// The transition has just completed.
    Done {
        /// The patch's name.
        patch: String,
        /// Which way the transition went (after any reversal).
        direction: Direction,
        /// Time from start to completion.
        elapsed: Duration,
    },
}

/// How the engine changes sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// kGraft's way: trampolines and per-thread universes.
    Universes,
    /// Straight to the new code, no consistency model (for showing why universes matter).
    Direct,
}

/// The engine.
pub struct Engine {
    text: HostText,
    pool: Pool,
    syms: Symbols,
    tls_offset: i32,
    stack: Stack<FuncKey>,
    sites: BTreeMap<FuncKey, SiteState>,
    applied: Vec<Applied>,
    transition: Option<Transition>,
    /// Where the transitions stand, and when stragglers are kicked.
    machine: machine::Transition,
    /// The transition [`Backend::begin`] is to start.
    pending: Option<Pending>,
    /// What the last settled transition was, for [`Engine::poll`]'s report.
    finished: Option<(Direction, Duration)>,
    graveyard: Vec<usize>,
    libs_to_close: Vec<Library>,
    next_id: u64,
    /// How sites change; [`Mode::Universes`] unless a test says otherwise.
    pub mode: Mode,
    /// How often stragglers are kicked.
    pub kick_interval: Duration,
}

/// Returns the engine, created on first use.
///
/// # Errors
///
/// A message when the platform cannot be set up (no `/proc/self/mem`, no `membarrier`).
pub fn engine() -> Result<MutexGuard<'static, Engine>, String> {
    Ok(cell()?.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Returns the engine if it can be had within `wait`, `Ok(None)` when another thread held it
/// all that time (a patch callback that does not return holds it for ever).
///
/// # Errors
///
/// As [`engine`].
pub fn engine_within(wait: Duration) -> Result<Option<MutexGuard<'static, Engine>>, String> {
    let m = cell()?;
    let start = Instant::now();
    loop {
        match m.try_lock() {
            Ok(guard) => return Ok(Some(guard)),
            Err(std::sync::TryLockError::Poisoned(e)) => return Ok(Some(e.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) if start.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
        }
    }
}

/// Returns the callbacks of each object of `patch` with the object, in the kernel's order:
/// vmlinux, then the declared modules (all built into the host, so always loaded and live).
fn hooks(patch: &'static Patch) -> Vec<(&'static Callbacks, Object)> {
    let mut out = vec![(&patch.callbacks, Object::VMLINUX)];
    for o in patch.objects {
        out.push((&o.callbacks, Object { name: Some(o.name), state: Some(ModuleState::Live) }));
    }
    out
}

/// Returns the engine's mutex, creating the engine on first use.
fn cell() -> Result<&'static Mutex<Engine>, String> {
    static ENGINE: OnceLock<Result<Mutex<Engine>, String>> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new().map(Mutex::new)).as_ref().map_err(Clone::clone)
}

/// Converts a C string of a descriptor to text.
fn text_of(s: &CStr) -> String {
    s.to_string_lossy().into_owned()
}

impl Engine {
    fn new() -> Result<Engine, String> {
        std::hint::black_box(shadow::exports());
        let syms = Symbols::load()?;
        let text = HostText::new()?;
        let pool = Pool::new(ffi::kgt_encode as *const () as usize)?;
        // SAFETY: reads the calling thread's thread pointer; no memory is touched.
        let tls = unsafe { ffi::kgt_universe_tpoff() };
        let tls_offset = i32::try_from(tls).map_err(|_| "the universe flag is not in static TLS".to_string())?;
        threads::registry();
        Ok(Engine {
            text,
            pool,
            syms,
            tls_offset,
            stack: Stack::default(),
            sites: BTreeMap::new(),
            applied: Vec::new(),
            transition: None,
            machine: machine::Transition::default(),
            pending: None,
            finished: None,
            graveyard: Vec::new(),
            libs_to_close: Vec::new(),
            next_id: 1,
            mode: Mode::Universes,
            kick_interval: Duration::from_millis(20),
        })
    }

    /// Returns the host's symbols and sites.
    pub fn symbols(&self) -> &Symbols {
        &self.syms
    }

    /// Returns the number of core syncs so far.
    pub fn syncs(&self) -> u64 {
        self.text.syncs()
    }

    /// Returns the names of the applied patches, oldest first, with whether each is in
    /// transition.
    pub fn list(&self) -> Vec<(String, bool)> {
        self.applied
            .iter()
            .map(|a| (text_of(a.patch.name), self.transition.as_ref().is_some_and(|t| t.id == a.id)))
            .collect()
    }

    /// Describes every site the engine has touched: function, address, bytes, and what they do.
    pub fn sites_report(&self) -> Vec<String> {
        let tramps: Vec<usize> = self.transition.iter().flat_map(|t| t.tramps.iter().map(|&(_, a)| a)).collect();
        self.sites
            .iter()
            .map(|(key, st)| {
                let bytes = self.read_site(st.site).unwrap_or([0; SITE_LEN]);
                let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let what = match kgraft_rt::engine::site::decode_jmp(st.site, bytes) {
                    None if bytes == NOP5 => "the fentry NOP: the original runs".to_string(),
                    None => "unexpected bytes".to_string(),
                    Some(t) if tramps.contains(&t) => format!("JMP {t:#x}: the reality-check trampoline"),
                    Some(t) if st.thunk == Some(t) => {
                        let mut b = [0u8; 8];
                        let _ = poke::Text::read(&self.text, t + 6, &mut b);
                        format!("JMP {t:#x}: a thunk to {:#x}", usize::from_le_bytes(b))
                    }
                    Some(t) => format!("JMP {t:#x}: the replacement"),
                };
                format!("{} at {:#x}: {} ({what})", key.name, st.site, hex.join(" "))
            })
            .collect()
    }

    /// Returns the site of a function of the host, for tests and benchmarks.
    ///
    /// # Errors
    ///
    /// As for the lookup of a patch's targets.
    pub fn site_of(&self, name: &str) -> Result<usize, String> {
        let sym = self.syms.lookup(name, 0)?;
        self.syms.site_of(sym)
    }

    /// Resolves a target to its key and site.
    fn resolve(&self, f: &kgraft_rt::Func) -> Result<(FuncKey, usize), String> {
        let object = f.object.map(text_of);
        if let Some(m) = &object {
            if m != BUILTIN_MODULE {
                return Err(format!(
                    "module `{m}` is not loaded in the host: the host has only the built-in module `{BUILTIN_MODULE}`"
                ));
            }
        }
        let name = text_of(f.name);
        let sym = self.syms.lookup(&name, f.sympos)?;
        let site = self.syms.site_of(sym)?;
        Ok((FuncKey { object, name, sympos: f.sympos }, site))
    }

    /// Starts applying `patch`; `lib` is the shared object it came from, closed when the patch
    /// is removed.
    ///
    /// Nothing has changed when this fails, including a refusal by the `pre_patch` callback.
    ///
    /// # Errors
    ///
    /// A message saying why the patch was refused.
    pub fn begin_apply(&mut self, patch: &'static Patch, lib: Option<Library>) -> Result<(), String> {
        let name = text_of(patch.name);
        if self.transition.is_some() {
            return Err("another transition is in progress; wait for it or reverse it".into());
        }
        if self.applied.iter().any(|a| text_of(a.patch.name) == name) {
            return Err(format!("a patch named `{name}` is already applied"));
        }
        let mut funcs = Vec::new();
        for f in patch.funcs {
            let (key, site) = self.resolve(f).map_err(|e| format!("patch `{name}`: {e}"))?;
            if funcs.iter().any(|(k, _)| *k == key) {
                return Err(format!("patch `{name}` replaces `{}` twice", key.name));
            }
            self.sites.entry(key.clone()).or_insert(SiteState { site, bytes: NOP5, thunk: None });
            funcs.push((key, f.new_fn as usize));
        }
        for o in patch.objects {
            if o.name.to_bytes() != BUILTIN_MODULE.as_bytes() {
                return Err(format!(
                    "patch `{name}`: module `{}` is not loaded in the host: the host has only the built-in module `{BUILTIN_MODULE}`",
                    text_of(o.name)
                ));
            }
        }
        crate::state::compatible(patch, self.applied.iter().map(|a| a.patch))?;
        crate::state::register(patch);
        let objects = hooks(patch);
        for (i, (c, obj)) in objects.iter().enumerate() {
            let Some(pre) = c.pre_patch else { continue };
            // SAFETY: the patch's callbacks are sound to call from the engine at this point, the
            // contract of `Callbacks`.
            let ret = unsafe { pre(obj) };
            if ret != 0 {
                // As the kernel does: the objects whose pre_patch passed get their post_unpatch.
                for (c, obj) in &objects[..i] {
                    if let Some(post) = c.post_unpatch {
                        // SAFETY: as above.
                        unsafe { post(obj) };
                    }
                }
                crate::state::unregister(patch);
                return Err(format!("patch `{name}`: pre_patch refused the patch (error {ret})"));
            }
        }
        let replace_all = patch.replaces_all();
        let id = self.next_id;
        let replaced: Vec<u64> = if replace_all { self.applied.iter().map(|a| a.id).collect() } else { Vec::new() };
        let next = self.stack.pushed(Layer { id, funcs }, replace_all);
        self.applied.push(Applied { id, patch, lib });
        if let Err(e) = self.begin(id, Direction::Patch, next, replaced) {
            let a = self.applied.pop().expect("pushed just above");
            for (c, obj) in hooks(a.patch) {
                if let Some(post) = c.post_unpatch {
                    // SAFETY: as for pre_patch; the kernel also calls post_unpatch when a
                    // patch that passed pre_patch fails to apply.
                    unsafe { post(&obj) };
                }
            }
            crate::state::unregister(a.patch);
            if let Some(lib) = a.lib {
                lib.close();
            }
            return Err(format!("patch `{name}`: {e}"));
        }
        self.next_id += 1;
        Ok(())
    }

    /// Starts removing the patch `name`.
    ///
    /// # Errors
    ///
    /// A message when there is no such patch or a transition is in progress.
    pub fn begin_remove(&mut self, name: &str) -> Result<(), String> {
        if self.transition.is_some() {
            return Err("another transition is in progress; wait for it or reverse it".into());
        }
        let a = self
            .applied
            .iter()
            .find(|a| text_of(a.patch.name) == name)
            .ok_or_else(|| format!("no patch named `{name}` is applied"))?;
        let (id, patch) = (a.id, a.patch);
        let next = self.stack.removed(id).expect("every applied patch has a layer");
        crate::state::removing(patch);
        for (c, obj) in hooks(patch) {
            if let Some(pre) = c.pre_unpatch {
                // SAFETY: as in `begin_apply`.
                unsafe { pre(&obj) };
            }
        }
        let begun = self.begin(id, Direction::Unpatch, next, Vec::new());
        if begun.is_err() {
            crate::state::settled();
        }
        begun
    }

    /// Starts the change to `next`: in [`Mode::Direct`] at once, otherwise as a transition of
    /// the state machine, whose backend calls [`Engine::redirect`].
    fn begin(&mut self, id: u64, direction: Direction, next: Stack<FuncKey>, replaced: Vec<u64>) -> Result<(), String> {
        if self.mode == Mode::Direct {
            let changes = self.stack.changes(&next);
            let pokes = self.final_pokes(&changes)?;
            return self.commit_direct(id, direction, next, replaced, &changes, pokes);
        }
        self.pending = Some(Pending { id, direction, next, replaced });
        let goal = GOAL.get() == 0;
        let started = self.drive(|m, e| m.start(e, goal, now_ms()));
        self.pending = None;
        started.map_err(|r| match r {
            machine::Refused::Backend(e) => e,
            machine::Refused::Busy => "another transition is in progress; wait for it or reverse it".into(),
            machine::Refused::AlreadyThere => "the engine's universes are out of step".into(),
        })
    }

    /// Runs `f` on the state machine with the engine as its backend.
    fn drive<R>(&mut self, f: impl FnOnce(&mut machine::Transition, &mut Engine) -> R) -> R {
        let ki = u64::try_from(self.kick_interval.as_millis()).unwrap_or(u64::MAX);
        let mut m = std::mem::take(&mut self.machine);
        m.set_kicks(Kicks { first_after: ki, every: ki });
        let out = f(&mut m, self);
        self.machine = m;
        out
    }

    /// Points the changed sites of the pending change at trampolines and moves the goal
    /// universe.
    fn redirect(&mut self, pending: Pending) -> Result<(), String> {
        let Pending { id, direction, next, replaced } = pending;
        let changes = self.stack.changes(&next);
        let from = GOAL.get();
        let to = from ^ 1;
        let mut tramps = Vec::new();
        let mut pokes = Vec::new();
        for c in &changes {
            let st = self.sites[&c.key];
            let body = st.site + SITE_LEN;
            let mut targets = [0usize; 2];
            targets[from as usize] = c.from.unwrap_or(body);
            targets[to as usize] = c.to.unwrap_or(body);
            let tls = self.tls_offset;
            let Some(tramp) = self.pool.alloc_with(|at| encode_trampoline(at, tls, targets)) else {
                tramps.iter().for_each(|&(_, t)| self.pool.free(t));
                return Err("the trampoline pool is full".into());
            };
            tramps.push((c.key.clone(), tramp));
            let new = encode_jmp(st.site, tramp).expect("the pool is in reach of the text");
            pokes.push(Poke { site: st.site, old: st.bytes, new });
        }
        if let Err(e) = poke::apply(&self.text, &pokes) {
            tramps.iter().for_each(|&(_, t)| self.pool.free(t));
            return Err(e.to_string());
        }
        for (p, c) in pokes.iter().zip(&changes) {
            let st = self.sites.get_mut(&c.key).expect("resolved above");
            st.bytes = p.new;
            if let Some(thunk) = st.thunk.take() {
                self.graveyard.push(thunk);
            }
        }
        let mut stacks = [Stack::default(), Stack::default()];
        stacks[from as usize] = self.stack.clone();
        stacks[to as usize] = next;
        GOAL.set(to);
        self.transition = Some(Transition { id, direction, stacks, from, tramps, replaced, started: Instant::now() });
        self.kick();
        Ok(())
    }

    /// Returns the pokes that send each changed site straight to its new code.
    fn final_pokes(&mut self, changes: &[Change<FuncKey>]) -> Result<Vec<(Poke, Option<usize>)>, String> {
        let mut out = Vec::new();
        for c in changes {
            let st = self.sites[&c.key];
            let (new, thunk) = match c.to {
                None => (NOP5, None),
                Some(to) => match encode_jmp(st.site, to) {
                    Some(b) => (b, None),
                    None => {
                        let Some(t) = self.pool.alloc(&encode_thunk(to)) else {
                            out.iter().filter_map(|(_, t)| *t).for_each(|t| self.pool.free(t));
                            return Err("the trampoline pool is full".into());
                        };
                        (encode_jmp(st.site, t).expect("the pool is in reach of the text"), Some(t))
                    }
                },
            };
            out.push((Poke { site: st.site, old: st.bytes, new }, thunk));
        }
        Ok(out)
    }

    /// Applies final pokes and records the new site states; old thunks go to the graveyard.
    fn apply_final(&mut self, changes: &[Change<FuncKey>], pokes: Vec<(Poke, Option<usize>)>) -> Result<(), String> {
        let plain: Vec<Poke> = pokes.iter().map(|(p, _)| *p).collect();
        if let Err(e) = poke::apply(&self.text, &plain) {
            pokes.iter().filter_map(|(_, t)| *t).for_each(|t| self.pool.free(t));
            return Err(e.to_string());
        }
        for ((p, thunk), c) in pokes.into_iter().zip(changes) {
            let st = self.sites.get_mut(&c.key).expect("resolved before");
            st.bytes = p.new;
            if let Some(old) = std::mem::replace(&mut st.thunk, thunk) {
                self.graveyard.push(old);
            }
        }
        Ok(())
    }

    /// Finishes a change in direct mode: no trampolines, no universes.
    fn commit_direct(
        &mut self,
        id: u64,
        direction: Direction,
        next: Stack<FuncKey>,
        replaced: Vec<u64>,
        changes: &[Change<FuncKey>],
        pokes: Vec<(Poke, Option<usize>)>,
    ) -> Result<(), String> {
        self.apply_final(changes, pokes)?;
        self.stack = next;
        self.settle(id, direction, &replaced);
        Ok(())
    }

    /// Sends the kick signal to every thread still in the old universe.
    fn kick(&self) {
        let goal = GOAL.get();
        let reg = threads::registry().lock().unwrap_or_else(|e| e.into_inner());
        for r in reg.iter().filter(|r| r.pending(goal)) {
            r.kick();
        }
    }

    /// Checks the transition in progress, kicking stragglers and finishing it when none are left.
    ///
    /// # Errors
    ///
    /// A message when the final batch of pokes failed; the transition then stays in progress
    /// (the sites still hold their trampolines, which keep every thread consistent).
    pub fn poll(&mut self) -> Result<Progress, String> {
        let Some(t) = &self.transition else { return Ok(Progress::Idle) };
        let name = self.name_of(t.id);
        match self.drive(|m, e| m.poll(e, now_ms()))? {
            machine::Poll::Done { .. } => {
                let (direction, elapsed) = self.finished.take().expect("a settled transition says how it went");
                return Ok(Progress::Done { patch: name, direction, elapsed });
            }
            machine::Poll::Pending { .. } | machine::Poll::Idle => {}
        }
        let Some(t) = &self.transition else { return Ok(Progress::Idle) };
        let goal = GOAL.get();
        let now_ns = threads::now_ns();
        let reg = threads::registry().lock().unwrap_or_else(|e| e.into_inner());
        let stragglers: Vec<Straggler> = reg
            .iter()
            .filter(|r| r.pending(goal))
            .map(|r| Straggler {
                name: r.name.clone(),
                tid: r.tid,
                since_safe_point: Duration::from_nanos(now_ns.saturating_sub(r.last_safe_ns.load(Ordering::Relaxed))),
                asleep: r.asleep.load(Ordering::Acquire),
            })
            .collect();
        Ok(Progress::Waiting {
            patch: name,
            direction: t.direction,
            elapsed: t.started.elapsed(),
            threads: reg.len(),
            stragglers,
        })
    }

    /// Returns the name of the applied patch `id`.
    fn name_of(&self, id: u64) -> String {
        self.applied.iter().find(|a| a.id == id).map(|a| text_of(a.patch.name)).unwrap_or_default()
    }

    /// Ends the transition: sites straight to the goal's code, trampolines freed after a grace
    /// period, callbacks run, removed patches dropped.
    fn complete(&mut self) -> Result<(Direction, Duration), String> {
        let t = self.transition.as_ref().expect("a transition is in progress");
        let goal = GOAL.get();
        let next = t.stacks[goal as usize].clone();
        let changes = self.stack_changes_for(t);
        let pokes = self.final_pokes(&changes)?;
        self.apply_final(&changes, pokes)?;
        let t = self.transition.take().expect("checked above");
        for (_, tramp) in &t.tramps {
            self.graveyard.push(*tramp);
        }
        let reached_target = goal != t.from;
        self.stack = next;
        let direction = match (t.direction, reached_target) {
            (d, true) => d,
            (Direction::Patch, false) => Direction::Unpatch,
            (Direction::Unpatch, false) => Direction::Patch,
        };
        let replaced = if reached_target { t.replaced.clone() } else { Vec::new() };
        self.settle(t.id, direction, &replaced);
        Ok((direction, t.started.elapsed()))
    }

    /// Returns the changes from the sites' trampolines to the goal universe's code.
    fn stack_changes_for(&self, t: &Transition) -> Vec<Change<FuncKey>> {
        let goal = GOAL.get() as usize;
        let targets = t.stacks[goal].targets();
        t.tramps.iter().map(|(key, _)| Change { key: key.clone(), from: None, to: targets.get(key).copied() }).collect()
    }

    /// Runs the callbacks of a finished change and drops patches that are gone.
    fn settle(&mut self, id: u64, direction: Direction, replaced: &[u64]) {
        let mut gone: Vec<u64> = replaced.iter().copied().filter(|&r| r != id).collect();
        if direction == Direction::Unpatch {
            gone.push(id);
        }
        if let Some(a) = self.applied.iter().find(|a| a.id == id) {
            for (cbs, obj) in hooks(a.patch) {
                let cb = if direction == Direction::Patch { cbs.post_patch } else { cbs.post_unpatch };
                if let Some(cb) = cb {
                    // SAFETY: as in `begin_apply`.
                    unsafe { cb(&obj) };
                }
            }
        }
        let removed: Vec<Applied> = {
            let (out, keep): (Vec<Applied>, Vec<Applied>) =
                std::mem::take(&mut self.applied).into_iter().partition(|a| gone.contains(&a.id));
            self.applied = keep;
            out
        };
        crate::state::settled();
        for a in removed {
            crate::state::unregister(a.patch);
            for decl in a.patch.shadows.iter().filter(|d| d.owned) {
                let shared = self.applied.iter().any(|b| b.patch.shadows.iter().any(|d| d.id == decl.id));
                if !shared {
                    // SAFETY: the patch is gone and no thread runs its code any more, so nobody
                    // holds a reference into its shadow data; the destructor is the patch's own.
                    unsafe { shadow::SHADOW.free_all(decl.id, Some(decl.dtor)) };
                }
            }
            if let Some(lib) = a.lib {
                self.libs_to_close.push(lib);
            }
        }
        if self.grace() {
            for lib in std::mem::take(&mut self.libs_to_close) {
                lib.close();
            }
        }
    }

    /// Waits until every thread has passed a safe point (or sleeps, or runs in user mode), then
    /// frees the graveyard.
    ///
    /// Returns whether the grace period ended.
    fn grace(&mut self) -> bool {
        if self.graveyard.is_empty() && self.libs_to_close.is_empty() {
            return true;
        }
        let snapshot: Vec<(std::sync::Arc<threads::ThreadRec>, u64)> = {
            let reg = threads::registry().lock().unwrap_or_else(|e| e.into_inner());
            reg.iter().map(|r| (r.clone(), r.safe_points.load(Ordering::Acquire))).collect()
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let done = snapshot.iter().all(|(r, n)| {
                r.safe_points.load(Ordering::Acquire) != *n
                    || r.asleep.load(Ordering::Acquire)
                    || !r.in_kernel.load(Ordering::SeqCst)
            });
            if done {
                break;
            }
            if Instant::now() > deadline {
                // A thread is stuck outside any safe point; keep the slots for a later grace.
                return false;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        for slot in std::mem::take(&mut self.graveyard) {
            self.pool.free(slot);
        }
        true
    }

    /// Reverses the transition in progress: the goal goes back to where it started.
    ///
    /// # Errors
    ///
    /// A message when no transition is in progress.
    pub fn reverse(&mut self) -> Result<(), String> {
        if self.transition.is_none() {
            return Err("no transition is in progress".into());
        }
        self.drive(|m, e| m.reverse(e, now_ms())).map_err(|_| "no transition is in progress".to_string())
    }

    /// Polls until the transition ends or `timeout` passes, calling `report` on each wait.
    ///
    /// # Errors
    ///
    /// As for [`Engine::poll`].
    pub fn wait(&mut self, timeout: Duration, mut report: impl FnMut(&Progress)) -> Result<Progress, String> {
        let start = Instant::now();
        loop {
            let p = self.poll()?;
            match p {
                Progress::Waiting { .. } if start.elapsed() < timeout => {
                    report(&p);
                    std::thread::sleep(Duration::from_micros(200));
                }
                _ => return Ok(p),
            }
        }
    }

    /// Reads the bytes of a site.
    ///
    /// # Errors
    ///
    /// The error code of the read.
    pub fn read_site(&self, site: usize) -> Result<[u8; SITE_LEN], i32> {
        poke::read_site(&self.text, site)
    }

    /// Gives direct access to the text, for tests that need to damage a site.
    pub fn text(&self) -> &HostText {
        &self.text
    }
}

/// The host's clock for the state machine, in milliseconds.
fn now_ms() -> u64 {
    threads::now_ns() / 1_000_000
}

/// The host as the shared state machine sees it: a universe is the value of `GOAL`.
impl Backend for Engine {
    type Error = String;

    fn begin(&mut self, goal: bool) -> Result<(), String> {
        debug_assert_eq!(GOAL.get() ^ 1, u8::from(goal), "a transition flips the goal flag");
        let pending = self.pending.take().ok_or("no change is pending")?;
        self.redirect(pending)
    }

    fn migrate(&mut self) -> usize {
        // Threads move themselves, at their safe points: count those still behind.
        let goal = GOAL.get();
        let reg = threads::registry().lock().unwrap_or_else(|e| e.into_inner());
        reg.iter().filter(|r| r.pending(goal)).count()
    }

    fn kick(&mut self) {
        Engine::kick(self);
    }

    fn reverse(&mut self) {
        GOAL.set(GOAL.get() ^ 1);
        Engine::kick(self);
    }

    fn settle(&mut self, _goal: bool) -> Result<(), String> {
        self.finished = Some(self.complete()?);
        Ok(())
    }
}
