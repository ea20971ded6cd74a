//! Peak memory of each process (VmHWM) beside its baseline process's, for the stages that ran.

use anyhow::Result;

use super::Bench;
use crate::report::{Report, Row};
use crate::stack;

pub async fn run(b: &mut Bench, r: &mut Report) -> Result<()> {
    r.describe(
        "**peak memory**: `VmHWM` from `/proc/<pid>/status` of each process just before it is stopped."
            .into(),
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    let s = &b.services;
    if let Some((kib, input_mib)) = b.peaks.bare_producer {
        r.push(Row::lower(
            "peak memory",
            "MiB VmHWM, ingest".into(),
            mib(s.ingest.peak_kib().unwrap_or(0)),
            &format!("bare producer process (holds its {input_mib:.0} MiB of input)"),
            mib(kib),
            "",
        ));
    }
    if let Some(copy) = b.peaks.bare_copy {
        let copy_process = "bare COPY process (holds the rows it copies)";
        r.push(Row::lower(
            "peak memory",
            "MiB VmHWM, projector (live)".into(),
            mib(s.projector.peak_kib().unwrap_or(0)),
            copy_process,
            mib(copy),
            "",
        ));
        r.push(Row::lower(
            "peak memory",
            "MiB VmHWM, projector (replay)".into(),
            mib(b.peaks.projector_replay.unwrap_or(0)),
            copy_process,
            mib(copy),
            "",
        ));
    }
    if let Some(bare) = b.bare_server_peak_kib() {
        r.push(Row::lower(
            "peak memory",
            "MiB VmHWM, query-api".into(),
            mib(s.query.peak_kib().unwrap_or(0)),
            "bare axum server process",
            mib(bare),
            "",
        ));
    }
    if let Some(kib) = stack::broker_pid(b.broker.port).and_then(stack::peak_kib_of) {
        r.note(format!(
            "Broker (hie-log) peak memory: {:.0} MiB.",
            mib(kib)
        ));
    }
    Ok(())
}
