//! Whether the broker answers, known all the time rather than found out by the next request: a
//! Metadata request for one of our topics every [`PROBE_EVERY`] (the broker reads its storage to
//! answer it, so a broker whose storage died fails it too). The result is `/healthz`'s answer,
//! the gauge `hie_kafka_broker_up`, and a log line when it changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};
use rdkafka::producer::{FutureProducer, Producer};

pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// Longer than a loaded broker takes to answer metadata, short enough to notice within seconds.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// While the broker stays down, the error is logged again this often.
const REPEAT_EVERY: Duration = Duration::from_secs(30);

static UP: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "hie_kafka_broker_up",
        "1 when the broker answered the last metadata probe (every 2 s), 0 otherwise"
    )
    .expect("metric registers once")
});

static FAILED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "hie_kafka_broker_probe_failures_total",
        "Metadata probes the broker did not answer in time or answered with an error"
    )
    .expect("metric registers once")
});

#[derive(Clone)]
pub struct BrokerWatch {
    up: Arc<AtomicBool>,
}

impl BrokerWatch {
    /// Probe through `producer`'s connections, asking for `topic` (one the service created).
    /// Runs until the process stops.
    pub fn spawn(producer: FutureProducer, topic: &'static str) -> BrokerWatch {
        let up = Arc::new(AtomicBool::new(false));
        UP.set(0);
        let watch = BrokerWatch { up: up.clone() };
        tokio::spawn(async move {
            let mut down_since: Option<Instant> = None;
            let mut last_logged = Instant::now();
            // A service starts healthy as soon as the broker first answers, without a log line.
            let mut first = true;
            loop {
                match probe(producer.clone(), topic).await {
                    Ok(()) => {
                        if let Some(since) = down_since.take() {
                            tracing::info!(
                                down_seconds = since.elapsed().as_secs(),
                                "broker answering again"
                            );
                        }
                        up.store(true, Ordering::Release);
                        UP.set(1);
                    }
                    Err(error) => {
                        FAILED.inc();
                        up.store(false, Ordering::Release);
                        UP.set(0);
                        match down_since {
                            None => {
                                down_since = Some(Instant::now());
                                last_logged = Instant::now();
                                if first {
                                    tracing::warn!(%error, "broker not answering yet");
                                } else {
                                    tracing::error!(%error, "broker not answering");
                                }
                            }
                            Some(since) if last_logged.elapsed() >= REPEAT_EVERY => {
                                last_logged = Instant::now();
                                tracing::error!(
                                    %error,
                                    down_seconds = since.elapsed().as_secs(),
                                    "broker still not answering"
                                );
                            }
                            Some(_) => {}
                        }
                    }
                }
                first = false;
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
        watch
    }

    /// Whether the broker answered the last probe.
    pub fn answers(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
}

async fn probe(producer: FutureProducer, topic: &'static str) -> Result<(), String> {
    let answered = tokio::task::spawn_blocking(move || {
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), PROBE_TIMEOUT)
            .map_err(|e| e.to_string())?;
        match metadata.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
            Some(t) => Err(format!("metadata for {topic}: {:?}", t.error())),
            None => Err(format!("metadata without {topic}")),
        }
    })
    .await;
    answered.unwrap_or_else(|e| Err(e.to_string()))
}
