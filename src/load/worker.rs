//! A worker process of the load generator (`c10k load --worker-plan JSON`): its own event loop
//! holding its share of the connections, reporting each second to its parent on stdout.

use super::conns::Conns;
use super::engine::{self, Engine, Role, Schedule};
use super::procs::WorkerPlan;

/// `c10k load --worker-plan JSON`: hold this process's share of the connections.
pub fn worker_main(plan_json: &str) -> Result<(), String> {
    let plan: WorkerPlan = serde_json::from_str(plan_json)
        .map_err(|e| format!("the worker plan is not valid: {e}"))?;
    crate::sys::raise_fd_limit()
        .map_err(|e| format!("could not raise the open file limit: {e}"))?;
    let stop = engine::stop_on_stdin_eof().map_err(|e| format!("could not watch stdin: {e}"))?;
    // Ctrl-C reaches the whole process group: the parent stops its workers through stdin, so a
    // worker leaves SIGINT to it and still reports its last second.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGINT,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let engine = Engine::new(
        plan.start_ns,
        Schedule {
            planned_close_us: plan.close_at_us,
            hold_us: 0,
            latest_close_us: plan.close_at_us,
        },
        Some(Conns::new(plan.conns)),
        Role::Worker,
        Some(stop),
    )
    .map_err(|e| format!("could not start the worker event loop: {e}"))?;
    engine.run_worker()
}
