//! Activity: what Triton has done (cumulative counters) and holds now (work in flight), of one
//! model or of the whole page. One type, read by two rules that differ on purpose:
//!
//! - **progress** ([`Activity::progressed_since`]), the gauges' stall rule: a request completed,
//!   an execution ended (failed executions included: a backend that errors on every request is
//!   broken, not stalled), or a TensorRT-LLM iteration ran (streams complete only at their end,
//!   while tokens flow every iteration). Failures that never executed (REJECTED, CANCELED) are
//!   not progress: under overload they arrive fast while nothing runs, and must not hide a stall.
//! - **movement** ([`Activity::moved_since`]), the drain's idle rule: any counter moved,
//!   failures included. A rejected request still arrived, so something still sends to this pod
//!   and it is not quiet yet. Iterations count here too: a stream generating tokens is work.

use crate::triton::snapshot::{ModelCounters, Snapshot};

/// Cumulative work counters and the work in flight now. Compare two with the rules above; read
/// the fields by name.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Activity {
    /// Requests that succeeded (`nv_inference_request_success`).
    pub success: f64,
    /// Requests that failed (`nv_inference_request_failure`), rejected ones included.
    pub failure: f64,
    /// Executions, batched or not (`nv_inference_exec_count`).
    pub executions: f64,
    /// TensorRT-LLM iterations (`nv_trt_llm_general_metrics{general_type="iteration_counter"}`);
    /// `None` where no model reports them.
    pub iterations: Option<f64>,
    /// Waiting plus executing work the backends report now: Triton's pending count, TensorRT-LLM
    /// waiting and active requests, vLLM waiting and running. (Triton's own pending leaves
    /// executing requests out, so this is a lower bound for Triton's other backends.)
    pub in_flight: f64,
}

impl Activity {
    /// One model's activity on a page.
    pub fn of_model(m: &ModelCounters) -> Activity {
        Activity {
            success: m.success,
            failure: m.failure,
            executions: m.exec_count,
            iterations: m.trtllm_iterations,
            in_flight: m.pending_total()
                + m.trtllm_active.unwrap_or(0.0)
                + m.vllm_running.unwrap_or(0.0),
        }
    }

    /// The page's activity: every model's, summed, and the vLLM series that name no model.
    pub fn of_page(s: &Snapshot) -> Activity {
        let mut a = Activity {
            in_flight: s.in_flight(),
            ..Activity::default()
        };
        for m in s.models.values() {
            a.success += m.success;
            a.failure += m.failure;
            a.executions += m.exec_count;
            if let Some(i) = m.trtllm_iterations {
                a.iterations = Some(a.iterations.unwrap_or(0.0) + i);
            }
        }
        a
    }

    /// The gauges' rule: success, executions or iterations grew since `old`.
    pub fn progressed_since(&self, old: &Activity) -> bool {
        self.success > old.success
            || self.executions > old.executions
            || matches!((old.iterations, self.iterations), (Some(a), Some(b)) if b > a)
    }

    /// The drain's rule: any counter differs from `old` (failures and iterations included;
    /// down counts too, a restart is not quiet).
    pub fn moved_since(&self, old: &Activity) -> bool {
        self.success != old.success
            || self.failure != old.failure
            || self.executions != old.executions
            || self.iterations != old.iterations
    }

    /// Requests that ended since `old`, successes and failures (what a drain reports as the
    /// requests it saw).
    pub fn requests_since(&self, old: &Activity) -> f64 {
        (self.success - old.success) + (self.failure - old.failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(success: f64, failure: f64, executions: f64, iterations: Option<f64>) -> Activity {
        Activity {
            success,
            failure,
            executions,
            iterations,
            in_flight: 0.0,
        }
    }

    #[test]
    fn the_two_rules_differ_only_on_failures() {
        let old = a(10.0, 5.0, 4.0, Some(100.0));
        // (case, new, progressed, moved)
        let cases = [
            ("nothing", a(10.0, 5.0, 4.0, Some(100.0)), false, false),
            ("a success", a(11.0, 5.0, 4.0, Some(100.0)), true, true),
            ("an execution", a(10.0, 5.0, 5.0, Some(100.0)), true, true),
            ("an iteration", a(10.0, 5.0, 4.0, Some(101.0)), true, true),
            (
                "only rejections",
                a(10.0, 9.0, 4.0, Some(100.0)),
                false,
                true,
            ),
        ];
        for (case, new, progressed, moved) in cases {
            assert_eq!(new.progressed_since(&old), progressed, "{case}: progress");
            assert_eq!(new.moved_since(&old), moved, "{case}: movement");
        }
        assert_eq!(a(12.0, 6.0, 4.0, None).requests_since(&old), 3.0);
    }
}
