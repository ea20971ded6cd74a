//! Requests librdkafka sends only in corner cases, spoken raw over TCP to a broker in this process.

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn broker() -> (TcpStream, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = eventlog::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        advertised: None,
        dir: dir.path().to_path_buf(),
        max_message_bytes: 1 << 20,
    };
    let (broker, listener) = eventlog::start(&config).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(broker.serve(listener));
    (TcpStream::connect(addr).await.unwrap(), dir)
}

async fn call<Req: Encodable, Resp: Decodable>(
    conn: &mut TcpStream,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 7;
    header.client_id = Some(StrBytes::from_static_str("test"));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    conn.write_all(&(buf.len() as i32).to_be_bytes())
        .await
        .unwrap();
    conn.write_all(&buf).await.unwrap();
    let len = conn.read_i32().await.unwrap();
    let mut resp = BytesMut::zeroed(len as usize);
    conn.read_exact(&mut resp).await.unwrap();
    let mut resp = resp.freeze();
    let header = ResponseHeader::decode(&mut resp, key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    let body = Resp::decode(&mut resp, version).unwrap();
    assert_eq!(resp.remaining(), 0, "the whole response was read");
    body
}

#[tokio::test]
async fn a_producer_that_bumps_its_own_epoch_gets_the_next_epoch_of_its_id() {
    let (mut conn, _dir) = broker().await;
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.producer_id = (-1).into();
    req.producer_epoch = -1;
    req.transaction_timeout_ms = 60_000;
    let first: InitProducerIdResponse = call(&mut conn, ApiKey::InitProducerId, 4, &req).await;
    assert_eq!(first.error_code, 0);
    assert!(first.producer_id.0 >= 0);
    assert_eq!(first.producer_epoch, 0);
    // KIP-360: librdkafka asks again with its id and epoch after a timed-out request.
    req.producer_id = first.producer_id;
    req.producer_epoch = first.producer_epoch;
    let bumped: InitProducerIdResponse = call(&mut conn, ApiKey::InitProducerId, 4, &req).await;
    assert_eq!(bumped.error_code, 0);
    assert_eq!(bumped.producer_id, first.producer_id);
    assert_eq!(bumped.producer_epoch, 1);
    // A transactional producer is told no (nothing here writes transactions).
    req.transactional_id = Some(TransactionalId(StrBytes::from_static_str("tx")));
    let tx: InitProducerIdResponse = call(&mut conn, ApiKey::InitProducerId, 4, &req).await;
    assert_ne!(tx.error_code, 0);
}

#[tokio::test]
async fn metadata_names_an_unknown_topic_and_api_versions_answers_every_version_asked() {
    let (mut conn, _dir) = broker().await;
    let versions: ApiVersionsResponse = call(
        &mut conn,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    )
    .await;
    assert_eq!(versions.error_code, 0);
    assert!(versions
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16 && k.max_version >= 7));
    let mut req = MetadataRequest::default();
    let mut t = metadata_request::MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_static_str("nope")));
    req.topics = Some(vec![t]);
    let md: MetadataResponse = call(&mut conn, ApiKey::Metadata, 12, &req).await;
    assert_eq!(md.topics.len(), 1);
    assert_eq!(md.topics[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    assert!(md.cluster_id.is_some());
    assert_eq!(md.brokers.len(), 1);
}
