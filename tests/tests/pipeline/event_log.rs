//! The event log itself (issue 21), through librdkafka with the services' own client settings,
//! against the broker `deploy/local/up` runs (hie-log): what Tansu 0.6 failed. A topic deleted by
//! an operator costs no other topic a record; a 16 MiB record is read back whole and the partition
//! moves on past it; a `kill -9` mid-load loses nothing that was acknowledged and writes nothing
//! twice; the log's identity (cluster id) survives a restart and differs between two logs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hie_tests::Broker;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schemas::topics::TopicSpec;

fn spec(name: &str, partitions: i32) -> &'static TopicSpec {
    Box::leak(Box::new(TopicSpec {
        name: Box::leak(name.to_string().into_boxed_str()),
        partitions,
    }))
}

async fn create(broker: &Broker, topics: &[(&str, i32)]) {
    let specs: Vec<&TopicSpec> = topics.iter().map(|(n, p)| spec(n, *p)).collect();
    platform::kafka::ensure_topics(&broker.address(), &specs)
        .await
        .unwrap();
}

/// The services' producer: idempotent, acks=all.
fn producer(broker: &Broker) -> FutureProducer {
    platform::kafka::producer(&broker.address(), Duration::from_secs(5)).unwrap()
}

async fn send(p: &FutureProducer, topic: &str, partition: i32, payload: &[u8]) -> i64 {
    let delivery = p
        .send(
            FutureRecord::<str, [u8]>::to(topic)
                .partition(partition)
                .key("k")
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    delivery.offset
}

/// Every (offset, payload) of one partition, read to the end the broker reports.
fn read_all(broker: &Broker, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
    let consumer: BaseConsumer = platform::kafka::client_config(&broker.address())
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", (64 << 20).to_string())
        .set("receive.message.max.bytes", (80 << 20).to_string())
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap();
    let mut out = Vec::new();
    if high == 0 {
        return out;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.last().map(|(o, _)| *o + 1) != Some(high) {
        assert!(
            Instant::now() < deadline,
            "{topic}/{partition}: read {} of {high}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((m.offset(), m.payload().unwrap_or_default().to_vec())),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("{topic}/{partition}: {e}"),
        }
    }
    out
}

fn topic_names(broker: &Broker) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut names: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn deleting_one_topic_keeps_every_other_topics_records() {
    let mut broker = Broker::start();
    create(&broker, &[("keep-a", 3), ("keep-b", 1), ("scratch", 2)]).await;
    let p = producer(&broker);
    for i in 0..50u32 {
        let body = i.to_be_bytes();
        send(&p, "keep-a", (i % 3) as i32, &body).await;
        send(&p, "keep-b", 0, &body).await;
        send(&p, "scratch", (i % 2) as i32, &body).await;
    }
    // As `kafka-topics --delete --topic scratch` asks it.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    let results = admin
        .delete_topics(&["scratch"], &AdminOptions::new())
        .await
        .unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(topic_names(&broker), ["keep-a", "keep-b"]);
    let count = |b: &Broker| {
        (0..3)
            .map(|p| read_all(b, "keep-a", p).len())
            .sum::<usize>()
            + read_all(b, "keep-b", 0).len()
    };
    assert_eq!(count(&broker), 100);
    // And after a restart, from disk.
    broker.restart();
    assert_eq!(topic_names(&broker), ["keep-a", "keep-b"]);
    assert_eq!(count(&broker), 100);
}

#[tokio::test]
async fn a_16_mib_record_is_read_back_whole_and_the_partition_moves_on() {
    let broker = Broker::start();
    create(&broker, &[("big", 1)]).await;
    let p = producer(&broker);
    let small = send(&p, "big", 0, b"before").await;
    // 16 MiB, not compressible by accident: every byte differs from its neighbours.
    let large: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let big = send(&p, "big", 0, &large).await;
    let after = send(&p, "big", 0, b"after").await;
    assert_eq!((small, big, after), (0, 1, 2));
    let read = read_all(&broker, "big", 0);
    assert_eq!(read.len(), 3);
    assert_eq!(read[0].1, b"before");
    assert!(read[1].1 == large, "the 16 MiB record came back changed");
    assert_eq!(read[2].1, b"after");
}

#[tokio::test]
async fn a_killed_broker_loses_nothing_it_acknowledged_and_writes_nothing_twice() {
    let mut broker = Broker::start();
    create(&broker, &[("load", 3)]).await;
    let p = producer(&broker);
    // Writers keep sending while the broker is killed and started again; each payload is unique,
    // and a send counts as acknowledged only when its delivery report says so.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i32, Vec<u8>)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let (p, acked, stop) = (p.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u32;
            let mut refused = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload = format!("w{w}-{i}").into_bytes();
                let partition = (i % 3) as i32;
                let sent = p
                    .send(
                        FutureRecord::<str, [u8]>::to("load")
                            .partition(partition)
                            .key("k")
                            .payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await;
                match sent {
                    Ok(_) => acked.lock().unwrap().push((partition, payload)),
                    Err(_) => refused += 1,
                }
                i += 1;
            }
            refused
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.restart(); // SIGKILL, then the same directory
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} records acknowledged",
        acked.len()
    );
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for partition in 0..3 {
        for (_, payload) in read_all(&broker, "load", partition) {
            *seen.entry(payload).or_default() += 1;
        }
    }
    let lost: Vec<_> = acked
        .iter()
        .filter(|(_, p)| !seen.contains_key(p))
        .collect();
    assert!(lost.is_empty(), "{} acknowledged records lost", lost.len());
    let doubled = seen.values().filter(|n| **n > 1).count();
    assert_eq!(doubled, 0, "records written twice");
}

#[tokio::test]
async fn the_log_keeps_its_cluster_id_across_restarts_and_another_log_has_another() {
    let cluster_id = |b: &Broker| {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", b.address())
            .create()
            .unwrap();
        c.client()
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        c.client()
            .fetch_cluster_id(Duration::from_secs(10))
            .unwrap()
    };
    let mut a = Broker::start();
    let b = Broker::start();
    let id = cluster_id(&a);
    a.restart();
    assert_eq!(cluster_id(&a), id);
    assert_ne!(cluster_id(&b), id);
}
