//! ModuleInit fan-out's series (docs/metrics.md): the copies sent to agents other than the one
//! that answered a module, and the memory of modules replayed to agents that join later.

use metrics::{counter, describe_counter, describe_gauge, gauge};

/// Counts `n` copies of ModuleInits to agents, by how they were sent (`fan_out`, `replay`) and
/// how they ended (`ok`, `error`, `dropped`).
pub(crate) fn module_init_copied(how: &'static str, result: &'static str, n: u64) {
    counter!("sigsci_proxy_module_init_copies_total", "how" => how, "result" => result)
        .increment(n);
}

/// Distinct modules remembered now.
pub(crate) fn modules_known(n: usize) {
    gauge!("sigsci_proxy_modules_known").set(n as f64);
}

/// A ModuleInit not remembered (too large, memory full or versions unreadable).
pub(crate) fn module_unremembered() {
    counter!("sigsci_proxy_modules_unremembered_total").increment(1);
}

/// `# HELP` of these series, and each at zero.
pub(super) fn describe() {
    describe_counter!(
        "sigsci_proxy_module_init_copies_total",
        "Copies of modules' ModuleInit calls sent to agents other than the one that answered the module, by how (fan_out: to every agent at the call; replay: to an agent that joined later) and result (ok, error, dropped: over the bound)."
    );
    describe_gauge!(
        "sigsci_proxy_modules_known",
        "Distinct modules (ModuleVersion, ServerVersion) remembered for agents that join later."
    );
    describe_counter!(
        "sigsci_proxy_modules_unremembered_total",
        "ModuleInit calls not remembered: over 4 KiB (neither remembered nor copied), or of a new module with the memory full or the versions unreadable (copied to current agents all the same)."
    );
    for how in ["fan_out", "replay"] {
        for result in ["ok", "error", "dropped"] {
            module_init_copied(how, result, 0);
        }
    }
    gauge!("sigsci_proxy_modules_known").set(0.0);
    counter!("sigsci_proxy_modules_unremembered_total").increment(0);
}
