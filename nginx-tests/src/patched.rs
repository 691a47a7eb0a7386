//! The patched build (`make patched`): whether the suite runs against it, the dynamic modules
//! built beside the module under test, and which workers logged a line.

use std::collections::HashSet;

/// Fails the test unless the suite runs against the patched build: the patched suite's tests
/// are `#[ignore = "needs the patched nginx (make patched-test)"]` (reported as skipped
/// elsewhere), and `make patched-test` runs them with `--include-ignored`, setting
/// `NGX_SUPERVISORD_PATCHED=1` and pointing the harness at `build/patched/`.
#[track_caller]
pub fn require() {
    assert_eq!(
        std::env::var("NGX_SUPERVISORD_PATCHED").as_deref(),
        Ok("1"),
        "this test needs the patched nginx: run it with make patched-test"
    );
}

/// The `load_module` line of `file`, a module `make patched` built next to the module under
/// test (e.g. `ngx_http_upstream_fair_module.so`).
pub fn load_module_beside(file: &str) -> String {
    let module = crate::module_path().parent().unwrap().join(file);
    assert!(
        module.exists(),
        "{} is missing (make patched)",
        module.display()
    );
    format!("load_module {};", module.display())
}

/// The pids of the processes that logged, at `level` (`debug`, `notice`...), a line of `log`
/// containing `needle`.
pub fn pids_logging(log: &str, level: &str, needle: &str) -> HashSet<u32> {
    let marker = format!("[{level}] ");
    log.lines()
        .filter(|line| line.contains(&marker) && line.contains(needle))
        .filter_map(|line| line.split(&marker).nth(1)?.split('#').next()?.parse().ok())
        .collect()
}

/// Whether each of `workers` (pids of `nginx`'s workers) logs, at `debug`, a line containing
/// `needle` after the first `since` bytes of the error log, within 5 s ([`crate::scaled`]): the
/// workers' balancers were told what the test did since.
pub fn every_worker_logged(
    nginx: &crate::Nginx,
    workers: &HashSet<u32>,
    since: usize,
    needle: &str,
) -> bool {
    crate::eventually(5, || {
        let log = nginx.error_log();
        workers.is_subset(&pids_logging(&log[since.min(log.len())..], "debug", needle))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_read_from_lines_of_the_level() {
        let log = "2026/12/05 04:49:12 [debug] 11#11: x backend 1 down=1\n\
                   2026/12/05 04:49:12 [notice] 12#12: x backend 1 down=1\n\
                   2026/12/05 04:49:12 [debug] 13#13: x backend 0 down=1\n";
        assert_eq!(
            pids_logging(log, "debug", "backend 1 down=1"),
            HashSet::from([11])
        );
        assert_eq!(
            pids_logging(log, "notice", "backend 1 down=1"),
            HashSet::from([12])
        );
    }
}
