//! The Kafka protocol over TCP: the requests librdkafka's producers, consumers and admin client
//! send to a single broker. Each connection's requests are read and appended in order and answered
//! in order; a produce waits for its sync (and a fetch for data) without holding up the reading of
//! the requests behind it, so a producer's pipelined requests share one fsync.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::batch;
use crate::partition::AppendError;
use crate::topics::{TopicError, Topics};

mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const INVALID_TOPIC: i16 = 17;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REQUEST: i16 = 42;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
}

/// The API versions served: each capped below the ones that name topics by id only.
const VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
];

pub struct Settings {
    pub node_id: i32,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub cluster_id: String,
    /// The largest record batch taken (a producer's message.max.bytes must not exceed it).
    pub max_message_bytes: usize,
    /// The largest request frame read.
    pub max_request_bytes: usize,
}

pub struct Broker {
    pub settings: Settings,
    pub topics: Topics,
    pub data: Arc<tokio::sync::Notify>,
    next_producer_id: AtomicI64,
    /// Committed group offsets, in memory only: nothing here relies on them (the projector keeps
    /// its offsets with its views).
    group_offsets: Mutex<HashMap<(String, String, i32), i64>>,
}

type Reply = Pin<Box<dyn Future<Output = Option<BytesMut>> + Send>>;

impl Broker {
    pub fn new(settings: Settings, topics: Topics, data: Arc<tokio::sync::Notify>) -> Broker {
        // Producer ids unique across restarts without storing a counter: the start time's
        // milliseconds, shifted, leave room for 2^20 producers a run.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        Broker {
            settings,
            topics,
            data,
            next_producer_id: AtomicI64::new((now_ms & ((1 << 42) - 1)) << 20),
            group_offsets: Mutex::new(HashMap::new()),
        }
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let broker = self.clone();
            tokio::spawn(async move {
                if let Err(e) = broker.connection(stream).await {
                    tracing::debug!(%peer, error = %e, "connection closed");
                }
            });
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) -> anyhow::Result<()> {
        let (mut rd, mut wr) = stream.into_split();
        // Replies in request order; at most 32 requests ahead of the one being answered.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Reply>(32);
        let writer = tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                // None: a produce with acks=0, which is not answered.
                let Some(frame) = reply.await else { continue };
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let result = async {
            loop {
                let mut len = [0u8; 4];
                if rd.read_exact(&mut len).await.is_err() {
                    return Ok(());
                }
                let len = i32::from_be_bytes(len);
                if len < 8 || len as usize > self.settings.max_request_bytes {
                    anyhow::bail!("request frame of {len} bytes refused");
                }
                let mut buf = BytesMut::zeroed(len as usize);
                rd.read_exact(&mut buf).await?;
                let reply = self.request(buf.freeze())?;
                if tx.send(reply).await.is_err() {
                    return Ok(());
                }
            }
        }
        .await;
        drop(tx);
        let _ = writer.await;
        result
    }

    /// Decodes one request and does what must happen in order (appends); returns its reply.
    fn request(self: &Arc<Self>, mut buf: Bytes) -> anyhow::Result<Reply> {
        let key = buf.clone().get_i16();
        let version = buf.clone().slice(2..).get_i16();
        let api = ApiKey::try_from(key).map_err(|_| anyhow::anyhow!("unknown API key {key}"))?;
        let supported = VERSIONS
            .iter()
            .find(|(k, _, _)| *k == api)
            .map(|(_, lo, hi)| (*lo..=*hi).contains(&version));
        if api == ApiKey::ApiVersions && supported != Some(true) {
            // Answered at v0 so any client can read that it should ask again lower.
            let header = RequestHeader::decode(&mut buf, 1)?;
            let body = self.api_versions(code::UNSUPPORTED_VERSION);
            return Ok(ready(frame(header.correlation_id, 0, &body, 0)));
        }
        if supported != Some(true) {
            anyhow::bail!("{api:?} v{version} is not served");
        }
        let header = RequestHeader::decode(&mut buf, api.request_header_version(version))?;
        let id = header.correlation_id;
        let rh = api.response_header_version(version);
        let broker = self.clone();
        Ok(match api {
            ApiKey::ApiVersions => ready(frame(id, rh, &self.api_versions(code::NONE), version)),
            ApiKey::Metadata => {
                let req = MetadataRequest::decode(&mut buf, version)?;
                ready(frame(id, rh, &self.metadata(req), version))
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut buf, version)?;
                let (acks, pending) = self.produce(req);
                Box::pin(async move {
                    let resp = pending.await;
                    // acks=0: the producer reads no answer.
                    (acks != 0).then(|| frame(id, rh, &resp, version))
                })
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut buf, version)?;
                Box::pin(async move { Some(frame(id, rh, &broker.fetch(req).await, version)) })
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut buf, version)?;
                ready(frame(id, rh, &self.list_offsets(req), version))
            }
            ApiKey::CreateTopics => {
                let req = CreateTopicsRequest::decode(&mut buf, version)?;
                ready(frame(id, rh, &self.create_topics(req), version))
            }
            ApiKey::DeleteTopics => {
                let req = DeleteTopicsRequest::decode(&mut buf, version)?;
                ready(frame(id, rh, &self.delete_topics(req, version), version))
            }
            ApiKey::InitProducerId => {
                let req = InitProducerIdRequest::decode(&mut buf, version)?;
                ready(frame(id, rh, &self.init_producer_id(req), version))
            }
            ApiKey::FindCoordinator => {
                let req = FindCoordinatorRequest::decode(&mut buf, version)?;
                ready(frame(id, rh, &self.find_coordinator(req), version))
            }
            ApiKey::OffsetCommit => {
                let req = OffsetCommitRequest::decode(&mut buf, version)?;
                ready(frame(id, rh, &self.offset_commit(req), version))
            }
            ApiKey::OffsetFetch => {
                let req = OffsetFetchRequest::decode(&mut buf, version)?;
                ready(frame(id, rh, &self.offset_fetch(req), version))
            }
            _ => anyhow::bail!("{api:?} is not served"),
        })
    }

    fn api_versions(&self, error_code: i16) -> ApiVersionsResponse {
        let mut resp = ApiVersionsResponse::default();
        resp.error_code = error_code;
        resp.api_keys = VERSIONS
            .iter()
            .map(|(k, lo, hi)| {
                let mut v = api_versions_response::ApiVersion::default();
                v.api_key = *k as i16;
                v.min_version = *lo;
                v.max_version = *hi;
                v
            })
            .collect();
        resp
    }

    fn metadata(&self, req: MetadataRequest) -> MetadataResponse {
        let s = &self.settings;
        let mut resp = MetadataResponse::default();
        let mut b = metadata_response::MetadataResponseBroker::default();
        b.node_id = s.node_id.into();
        b.host = StrBytes::from_string(s.advertised_host.clone());
        b.port = s.advertised_port;
        resp.brokers = vec![b];
        resp.cluster_id = Some(StrBytes::from_string(s.cluster_id.clone()));
        resp.controller_id = s.node_id.into();
        let wanted: Option<Vec<String>> = req.topics.map(|ts| {
            ts.into_iter()
                .filter_map(|t| t.name.map(|n| n.0.as_str().to_string()))
                .collect()
        });
        let names: Vec<String> = match wanted {
            Some(names) => names,
            None => self
                .topics
                .all()
                .iter()
                .map(|t| t.meta.name.clone())
                .collect(),
        };
        for name in names {
            let mut t = metadata_response::MetadataResponseTopic::default();
            t.name = Some(TopicName(StrBytes::from_string(name.clone())));
            match self.topics.get(&name) {
                Some(topic) => {
                    t.topic_id = topic.meta.id;
                    t.partitions = (0..topic.meta.partitions)
                        .map(|p| {
                            let mut mp = metadata_response::MetadataResponsePartition::default();
                            mp.partition_index = p;
                            mp.leader_id = s.node_id.into();
                            mp.leader_epoch = 0;
                            mp.replica_nodes = vec![s.node_id.into()];
                            mp.isr_nodes = vec![s.node_id.into()];
                            mp
                        })
                        .collect();
                }
                None => t.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
            }
            resp.topics.push(t);
        }
        resp
    }

    /// Appends now, in request order; the returned future answers once what was appended is durable.
    fn produce(
        self: &Arc<Self>,
        req: ProduceRequest,
    ) -> (i16, Pin<Box<dyn Future<Output = ProduceResponse> + Send>>) {
        let acks = req.acks;
        if req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty())
        {
            let mut resp = ProduceResponse::default();
            for t in req.topic_data {
                let mut tr = produce_response::TopicProduceResponse::default();
                tr.name = t.name;
                for p in t.partition_data {
                    let mut pr = produce_response::PartitionProduceResponse::default();
                    pr.index = p.index;
                    pr.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
                    tr.partition_responses.push(pr);
                }
                resp.responses.push(tr);
            }
            return (acks, Box::pin(async move { resp }));
        }
        // (topic response, partition response, what to sync)
        let mut results = Vec::new();
        for t in req.topic_data {
            let name = t.name.0.as_str().to_string();
            for p in t.partition_data {
                let mut pr = produce_response::PartitionProduceResponse::default();
                pr.index = p.index;
                pr.base_offset = -1;
                pr.log_append_time_ms = -1;
                pr.log_start_offset = 0;
                let mut sync = None;
                match self.topics.partition(&name, p.index) {
                    None => pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                    Some(part) => {
                        let records = p.records.unwrap_or_default();
                        match batch::split(&records) {
                            Err(e) => {
                                tracing::warn!(topic = %name, partition = p.index, error = %e, "produce refused");
                                pr.error_code = code::CORRUPT_MESSAGE;
                            }
                            Ok(parts) if parts.is_empty() => pr.error_code = code::INVALID_REQUEST,
                            Ok(parts)
                                if parts.iter().any(|(h, _)| {
                                    h.total_len() > self.settings.max_message_bytes
                                }) =>
                            {
                                pr.error_code = code::MESSAGE_TOO_LARGE;
                            }
                            Ok(parts) => {
                                let mut bytes = records.to_vec();
                                match part.append(&mut bytes, &parts) {
                                    Ok(a) => {
                                        pr.base_offset = a.base_offset;
                                        if a.duplicates > 0 {
                                            tracing::debug!(topic = %name, partition = p.index, batches = a.duplicates, "retried batches answered, not written again");
                                        }
                                        sync = Some((part.clone(), a.end));
                                    }
                                    Err(AppendError::FencedEpoch { got, current }) => {
                                        tracing::warn!(topic = %name, partition = p.index, got, current, "produce from a fenced producer epoch");
                                        pr.error_code = code::INVALID_PRODUCER_EPOCH;
                                    }
                                    Err(e) => {
                                        tracing::error!(topic = %name, partition = p.index, error = %e, "append failed");
                                        pr.error_code = code::KAFKA_STORAGE_ERROR;
                                    } // Already checked by `split`.
                                }
                            }
                        }
                    }
                }
                results.push((t.name.clone(), pr, sync));
            }
        }
        let fut = async move {
            let mut by_topic: Vec<produce_response::TopicProduceResponse> = Vec::new();
            for (name, mut pr, sync) in results {
                if let Some((part, end)) = sync {
                    if let Err(e) = part.sync_to(end).await {
                        tracing::error!(log = %part.path().display(), error = %e, "fdatasync failed");
                        pr.error_code = code::KAFKA_STORAGE_ERROR;
                        pr.base_offset = -1;
                    }
                }
                match by_topic.iter_mut().find(|t| t.name == name) {
                    Some(t) => t.partition_responses.push(pr),
                    None => {
                        let mut t = produce_response::TopicProduceResponse::default();
                        t.name = name;
                        t.partition_responses.push(pr);
                        by_topic.push(t);
                    }
                }
            }
            let mut resp = ProduceResponse::default();
            resp.responses = by_topic;
            resp
        };
        (acks, Box::pin(fut))
    }

    async fn fetch(&self, req: FetchRequest) -> FetchResponse {
        let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
        let min_bytes = req.min_bytes.max(1) as usize;
        let max_bytes = if req.max_bytes <= 0 {
            usize::MAX
        } else {
            req.max_bytes as usize
        };
        loop {
            // Registered before reading, so a sync between the read and the wait is not missed.
            let arrived = self.data.notified();
            let (resp, bytes) = self.fetch_once(&req, max_bytes);
            let now = Instant::now();
            if bytes >= min_bytes || now >= deadline {
                return resp;
            }
            let _ = tokio::time::timeout(deadline - now, arrived).await;
        }
    }

    fn fetch_once(&self, req: &FetchRequest, max_bytes: usize) -> (FetchResponse, usize) {
        let mut resp = FetchResponse::default();
        let mut total = 0usize;
        for t in &req.topics {
            let name = t.topic.0.as_str();
            let mut tr = fetch_response::FetchableTopicResponse::default();
            tr.topic = t.topic.clone();
            tr.topic_id = t.topic_id;
            for p in &t.partitions {
                let mut pd = fetch_response::PartitionData::default();
                pd.partition_index = p.partition;
                pd.aborted_transactions = Some(Vec::new());
                match self.topics.partition(name, p.partition) {
                    None => {
                        pd.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
                        pd.high_watermark = -1;
                    }
                    Some(part) => {
                        let hw = part.high_watermark();
                        pd.high_watermark = hw;
                        pd.last_stable_offset = hw;
                        pd.log_start_offset = part.log_start();
                        if p.fetch_offset < part.log_start() || p.fetch_offset > part.log_end() {
                            pd.error_code = code::OFFSET_OUT_OF_RANGE;
                        } else if p.fetch_offset < hw {
                            let room = if total == 0 {
                                (p.partition_max_bytes.max(0) as usize).min(max_bytes)
                            } else {
                                (p.partition_max_bytes.max(0) as usize)
                                    .min(max_bytes.saturating_sub(total))
                            };
                            // Past the response's limit only the first batch of all is sent.
                            if total == 0 || room > 0 {
                                match part.read(p.fetch_offset, room) {
                                    Ok(bytes) if !bytes.is_empty() => {
                                        total += bytes.len();
                                        pd.records = Some(Bytes::from(bytes));
                                    }
                                    Ok(_) => {}
                                    Err(e) => {
                                        tracing::error!(log = %part.path().display(), error = %e, "read failed");
                                        pd.error_code = code::KAFKA_STORAGE_ERROR;
                                    }
                                }
                            }
                        }
                    }
                }
                tr.partitions.push(pd);
            }
            resp.responses.push(tr);
        }
        (resp, total)
    }

    fn list_offsets(&self, req: ListOffsetsRequest) -> ListOffsetsResponse {
        let mut resp = ListOffsetsResponse::default();
        for t in req.topics {
            let mut tr = list_offsets_response::ListOffsetsTopicResponse::default();
            for p in t.partitions {
                let mut pr = list_offsets_response::ListOffsetsPartitionResponse::default();
                pr.partition_index = p.partition_index;
                pr.timestamp = -1;
                pr.leader_epoch = 0;
                match self.topics.partition(t.name.0.as_str(), p.partition_index) {
                    None => {
                        pr.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
                        pr.offset = -1;
                    }
                    Some(part) => {
                        pr.offset = match p.timestamp {
                            -1 | -3 => part.high_watermark(),
                            -2 | -4 => part.log_start(),
                            ts => part.offset_for_time(ts).unwrap_or(-1),
                        };
                    }
                }
                tr.partitions.push(pr);
            }
            tr.name = t.name;
            resp.topics.push(tr);
        }
        resp
    }

    fn create_topics(&self, req: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut resp = CreateTopicsResponse::default();
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.as_str().to_string(), v.as_str().to_string()))
                })
                .collect();
            let mut r = create_topics_response::CreatableTopicResult::default();
            r.name = t.name.clone();
            r.num_partitions = -1;
            r.replication_factor = -1;
            match self.topics.create(
                &name,
                t.num_partitions,
                t.replication_factor,
                configs,
                req.validate_only,
            ) {
                Ok(topic) => {
                    r.topic_id = topic.meta.id;
                    r.num_partitions = topic.meta.partitions;
                    r.replication_factor = 1;
                }
                Err(e) => {
                    r.error_code = match e {
                        TopicError::InvalidName(_) => code::INVALID_TOPIC,
                        TopicError::Exists(_) => code::TOPIC_ALREADY_EXISTS,
                        TopicError::Partitions { .. } => code::INVALID_PARTITIONS,
                        TopicError::Replication(_) => code::INVALID_REPLICATION_FACTOR,
                        _ => code::KAFKA_STORAGE_ERROR,
                    };
                    if !matches!(e, TopicError::Exists(_)) {
                        tracing::warn!(topic = %name, error = %e, "create topic refused");
                    }
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            }
            resp.topics.push(r);
        }
        resp
    }

    fn delete_topics(&self, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
        let names: Vec<TopicName> = if version >= 6 {
            req.topics.into_iter().filter_map(|t| t.name).collect()
        } else {
            req.topic_names
        };
        let mut resp = DeleteTopicsResponse::default();
        for name in names {
            let mut r = delete_topics_response::DeletableTopicResult::default();
            match self.topics.delete(name.0.as_str()) {
                Ok(meta) => r.topic_id = meta.id,
                Err(TopicError::Unknown(_)) => r.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Err(e) => {
                    tracing::error!(topic = %name.0.as_str(), error = %e, "delete topic failed");
                    r.error_code = code::KAFKA_STORAGE_ERROR;
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            }
            r.name = Some(name);
            resp.responses.push(r);
        }
        resp
    }

    /// A new idempotent producer gets a fresh id; one that asks with its id and epoch (KIP-360:
    /// librdkafka does after a timed-out request) gets the next epoch of the same id.
    fn init_producer_id(&self, req: InitProducerIdRequest) -> InitProducerIdResponse {
        let mut resp = InitProducerIdResponse::default();
        if req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty())
        {
            resp.error_code = code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
            resp.producer_id = (-1).into();
            resp.producer_epoch = -1;
            return resp;
        }
        if req.producer_id.0 >= 0 && req.producer_epoch >= 0 {
            resp.producer_id = req.producer_id;
            resp.producer_epoch = req.producer_epoch.checked_add(1).unwrap_or(0);
            if resp.producer_epoch == 0 {
                // Epoch exhausted: a new id, as Kafka does.
                resp.producer_id = self.next_producer_id.fetch_add(1, Ordering::Relaxed).into();
            }
        } else {
            resp.producer_id = self.next_producer_id.fetch_add(1, Ordering::Relaxed).into();
            resp.producer_epoch = 0;
        }
        resp
    }

    /// Every group's coordinator is this one broker.
    fn find_coordinator(&self, _req: FindCoordinatorRequest) -> FindCoordinatorResponse {
        let s = &self.settings;
        let mut resp = FindCoordinatorResponse::default();
        resp.node_id = s.node_id.into();
        resp.host = StrBytes::from_string(s.advertised_host.clone());
        resp.port = s.advertised_port;
        resp
    }

    fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let group = req.group_id.0.as_str().to_string();
        let mut offsets = self.group_offsets.lock().unwrap();
        let mut resp = OffsetCommitResponse::default();
        for t in req.topics {
            let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
            for p in t.partitions {
                offsets.insert(
                    (
                        group.clone(),
                        t.name.0.as_str().to_string(),
                        p.partition_index,
                    ),
                    p.committed_offset,
                );
                let mut pr = offset_commit_response::OffsetCommitResponsePartition::default();
                pr.partition_index = p.partition_index;
                tr.partitions.push(pr);
            }
            tr.name = t.name;
            resp.topics.push(tr);
        }
        resp
    }

    fn offset_fetch(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let group = req.group_id.0.as_str().to_string();
        let offsets = self.group_offsets.lock().unwrap();
        let mut resp = OffsetFetchResponse::default();
        for t in req.topics.unwrap_or_default() {
            let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
            for p in t.partition_indexes {
                let mut pr = offset_fetch_response::OffsetFetchResponsePartition::default();
                pr.partition_index = p;
                pr.committed_offset = offsets
                    .get(&(group.clone(), t.name.0.as_str().to_string(), p))
                    .copied()
                    .unwrap_or(-1);
                pr.committed_leader_epoch = -1;
                tr.partitions.push(pr);
            }
            tr.name = t.name;
            resp.topics.push(tr);
        }
        resp
    }
}

fn ready(frame: BytesMut) -> Reply {
    Box::pin(async move { Some(frame) })
}

/// Size, response header, body.
fn frame<M: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &M,
    version: i16,
) -> BytesMut {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0; 4]);
    header
        .encode(&mut out, header_version)
        .expect("response header encodes");
    body.encode(&mut out, version)
        .expect("a response built here encodes at the version it was asked at");
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}
