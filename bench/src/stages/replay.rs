//! Projector replay: a new database and projector rebuild the views from offset 0, vs a bare binary
//! `COPY` of the same `records` rows.

use anyhow::Result;

use super::{wait_projected, Bench};
use crate::report::{Report, Row};
use crate::{baseline, say, stack};

pub async fn run(b: &mut Bench, r: &mut Report) -> Result<()> {
    r.describe(
        "**projector replay**: a new database and a new projector process start from offset 0 of every\n\
         \x20 topic; events/s = events applied (sum of `projection_offsets.next_offset`) ÷ time from the\n\
         \x20 process start (migrations included) until the offsets pass every position ingest returned\n\
         \x20 (Tansu's ListOffsets can report a partition's end too low, so ends come from produce results).\n\
         \x20 Baseline: the `records` rows the replay produced, copied out and written back with one binary\n\
         \x20 `COPY` into a table `LIKE records INCLUDING ALL` (same primary key and index), from a separate\n\
         \x20 process."
            .into(),
    );
    say("replay: a new projector and database rebuild the views from offset 0");
    let replay_db = hie_tests::TestDb::create().await;
    let replay = stack::projector(
        "projector-replay",
        &b.brokers,
        &replay_db.url(),
        &b.db.url(),
        false,
    )?;
    let (events, replay_secs) = wait_projected(&replay, &replay_db, &b.written).await?;
    b.peaks.projector_replay = replay.peak_kib();
    drop(replay);
    let copy = baseline::run_child(&["bare-copy".into(), "--db".into(), replay_db.url()]).await?;
    b.peaks.bare_copy = Some(copy.peak_kib);
    r.push(Row::higher(
        "projector replay",
        format!("events/s, {events} events from offset 0 into empty views"),
        events as f64 / replay_secs,
        "bare COPY (binary) of the same records rows into a table like records",
        copy.per_sec(),
        &format!("{} rows copied", copy.count),
    ));
    Ok(())
}
