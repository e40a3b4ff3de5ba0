//! The programs' logs (aya-log): with `--datapath-log off` (the default) the verifier
//! prunes every log call, so the programs the kernel runs carry no log code at all (they
//! are smaller than the same programs loaded with logging on); with `debug`, a drop is
//! logged with its hook and reason, and with `error` it is not.

mod support;

use std::sync::{Arc, Mutex};

use netd::datapath::DatapathLog;
use support::*;

/// The log records a test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(log::Level, String)>>>);

impl log::Log for Captured {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        self.0
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }

    fn flush(&self) {}
}

/// The size of `program` as the kernel runs it, with the programs logging at `log`.
fn translated_size(log: DatapathLog, program: &str) -> u32 {
    let mut t = TestDatapath::with_log(log);
    let prog = t.dp.program(program).unwrap();
    if prog.fd().is_err() {
        prog.load().unwrap();
    }
    prog.info().unwrap().size_translated().unwrap()
}

#[test]
fn with_logging_off_the_kernel_runs_no_log_code() {
    for program in [
        "endpoint_ingress",
        "uplink_ingress",
        "uplink_egress",
        "overlay_ingress",
    ] {
        let off = translated_size(DatapathLog::Off, program);
        let debug = translated_size(DatapathLog::Debug, program);
        assert!(
            off < debug,
            "{program}: {off} bytes with logging off, {debug} with debug: the log calls were not pruned"
        );
    }
}

/// A frame the guard drops (a source that is not the container's), through a data path
/// logging at `log`: what was logged.
fn logged_for_a_drop(log: DatapathLog) -> Vec<(log::Level, String)> {
    let mut t = standard_node_with(TestDatapath::with_log(log));
    let captured = Captured::default();
    let mut logger = t.dp.take_logger_to(log, captured.clone()).unwrap().unwrap();
    let spoofed = Pkt::tcp(
        std::net::Ipv4Addr::new(172, 17, 0, 99),
        40000,
        REMOTE,
        80,
        SYN,
    )
    .build();
    assert_eq!(t.run("endpoint_ingress", &spoofed).0, TC_ACT_SHOT);
    logger.flush();
    captured.0.lock().unwrap().clone()
}

#[test]
fn a_drop_is_logged_with_its_hook_and_reason_at_debug_only() {
    let debug = logged_for_a_drop(DatapathLog::Debug);
    assert!(
        debug.iter().any(|(level, text)| *level == log::Level::Debug
            && text.contains("EndpointIngress: drop_spoofed_source")),
        "{debug:?}"
    );
    assert!(logged_for_a_drop(DatapathLog::Error).is_empty());
    let mut off = TestDatapath::with_log(DatapathLog::Off);
    assert!(off.dp.take_logger(DatapathLog::Off).unwrap().is_none());
}
