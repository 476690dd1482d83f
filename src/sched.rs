//! CPU priority of bulk work (imports, rebuilds) beside requests. Below `ingest` and
//! `app`, which both use it.

/// The nice value of bulk work (Linux: per thread; 0 is normal, 19 the lowest): layer
/// rebuilds and `riskmap import`. Requests come first, but bulk work is not starved:
/// against a thread drawing tiles (nice 5) it gets a quarter of a core (weights 110
/// against 335), against one answering requests (nice 0) a tenth.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to `nice` (on Linux `setpriority` applies
/// to the calling thread only; threads it starts inherit it). Never raises it, and a
/// refusal only costs priority, so it is logged and ignored.
pub fn lower_thread_priority(nice: i32) {
    let now = rustix::process::getpriority_process(None).unwrap_or(0);
    if nice > now {
        if let Err(e) = rustix::process::setpriority_process(None, nice) {
            tracing::debug!(error = %e, nice, "cannot lower this thread's priority");
        }
    }
}

/// Runs `f` on a thread of its own under Linux's `SCHED_IDLE` policy and returns what it
/// returns (a panic in `f` is resumed here). For CPU-bound bulk work that takes no lock a
/// reader or another writer waits on (parsing, validating and deriving a large feature,
/// encoding its answer, building a layer's index beside the live one).
///
/// Why not a nice value: measured on the 2-core machine under a closed loop of tile
/// reads, a CPU-bound thread at nice 19 still took the tile p99 from 13.5 to 19.3 ms
/// (EEVDF gives every task the same slice, so a low-weight task, once picked, still runs
/// its 3 ms before a woken reader preempts it); under `SCHED_IDLE` a woken reader
/// preempts it at once, and the p99 stayed at 15.0 ms. Why a thread of its own: an
/// unprivileged thread cannot leave `SCHED_IDLE` again (its nice value would have to be
/// within `RLIMIT_NICE`), and what follows the bulk work (the commit, under the writers'
/// lock) must not run at idle priority, or other writers would wait on it.
/// Where the policy is refused (not Linux), the thread runs at [`BACKGROUND_NICE`].
pub fn on_idle_thread<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    // Lent to the thread, so that the work is still here if no thread can be started.
    let work = parking_lot::Mutex::new(Some(f));
    let in_place = || work.lock().take().map(|f| f());
    let done = std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(s, || {
                lower_thread_priority(BACKGROUND_NICE);
                idle_thread_policy();
                in_place()
            });
        match spawned {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(e) => {
                tracing::debug!(error = %e, "no thread for bulk work; doing it in place");
                None
            }
        }
    });
    match done {
        Some(t) => t,
        None => in_place().expect("the work was neither done by the thread nor taken by it"),
    }
}

/// Puts the calling thread under `SCHED_IDLE` (it runs only when no other thread of
/// normal policy wants its core). A refusal only costs priority: logged and ignored.
pub fn idle_thread_policy() {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::debug!(error = ?e, "cannot put this thread under SCHED_IDLE");
    }
}
