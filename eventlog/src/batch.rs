//! Kafka record batches (magic 2) as producers send them. The log stores them byte for byte; it
//! reads only the fixed header and rewrites only the base offset, which the CRC does not cover.

use std::ops::Range;

/// Bytes before the records: base offset (8), batch length (4), leader epoch (4), magic (1),
/// CRC (4), attributes (2), last offset delta (4), first and max timestamp (8 + 8), producer id (8),
/// producer epoch (2), base sequence (4), record count (4).
pub const HEADER_LEN: usize = 61;
/// The base offset and the batch length: what precedes the part the batch length counts.
pub const LOG_OVERHEAD: usize = 12;
const CRC_FROM: usize = 21;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the first `LOG_OVERHEAD`.
    pub batch_len: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: i32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("record batch truncated: {have} of {need} bytes")]
    Truncated { have: usize, need: usize },
    #[error("record batch magic {0} (only 2 is accepted)")]
    Magic(i8),
    #[error("record batch length {0} is impossible")]
    Length(i32),
    #[error("record batch CRC mismatch")]
    Crc,
    #[error("record batch says {records} records but its offsets span {span}")]
    Count { records: i32, span: i64 },
    #[error("transactional and control batches are not supported")]
    Transactional,
}

impl BatchHeader {
    /// The whole batch's size on the wire and on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_len as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Sequence numbers wrap at i32::MAX (KIP-98).
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }

    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    /// Reads the header of the batch at the start of `buf` (which may hold more after it).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                have: buf.len(),
                need: HEADER_LEN,
            });
        }
        let i64_at = |at: usize| i64::from_be_bytes(buf[at..at + 8].try_into().unwrap());
        let i32_at = |at: usize| i32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
        let i16_at = |at: usize| i16::from_be_bytes(buf[at..at + 2].try_into().unwrap());
        let header = BatchHeader {
            base_offset: i64_at(0),
            batch_len: i32_at(8),
            magic: buf[16] as i8,
            crc: u32::from_be_bytes(buf[17..21].try_into().unwrap()),
            attributes: i16_at(21),
            last_offset_delta: i32_at(23),
            first_timestamp: i64_at(27),
            max_timestamp: i64_at(35),
            producer_id: i64_at(43),
            producer_epoch: i16_at(51),
            base_sequence: i32_at(53),
            records: i32_at(57),
        };
        if header.magic != 2 {
            return Err(BatchError::Magic(header.magic));
        }
        if (header.batch_len as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::Length(header.batch_len));
        }
        if header.last_offset_delta < 0 || header.records != header.last_offset_delta + 1 {
            return Err(BatchError::Count {
                records: header.records,
                span: i64::from(header.last_offset_delta) + 1,
            });
        }
        Ok(header)
    }

    /// Checks the CRC-32C over `batch` (exactly this batch's bytes).
    pub fn verify(&self, batch: &[u8]) -> Result<(), BatchError> {
        if batch.len() != self.total_len() {
            return Err(BatchError::Truncated {
                have: batch.len(),
                need: self.total_len(),
            });
        }
        if crc32c::crc32c(&batch[CRC_FROM..]) != self.crc {
            return Err(BatchError::Crc);
        }
        Ok(())
    }
}

/// Splits a produce request's records into batches, each checked whole (header and CRC).
/// Transactional and control batches are refused: nothing here writes transactions.
pub fn split(buf: &[u8]) -> Result<Vec<(BatchHeader, Range<usize>)>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let header = BatchHeader::parse(&buf[at..])?;
        let end = at + header.total_len();
        if end > buf.len() {
            return Err(BatchError::Truncated {
                have: buf.len() - at,
                need: header.total_len(),
            });
        }
        header.verify(&buf[at..end])?;
        if header.attributes & 0b11_0000 != 0 {
            return Err(BatchError::Transactional);
        }
        out.push((header, at..end));
        at = end;
    }
    Ok(out)
}

/// Writes `base_offset` into a batch's first eight bytes.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid batch of `records` empty-bodied records (the records' bytes are opaque here).
    pub fn batch(records: i32, producer_id: i64, epoch: i16, base_sequence: i32) -> Vec<u8> {
        let body = vec![7u8; 10 * records as usize];
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + body.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(records - 1).to_be_bytes());
        b.extend_from_slice(&1_000i64.to_be_bytes());
        b.extend_from_slice(&2_000i64.to_be_bytes());
        b.extend_from_slice(&producer_id.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(&base_sequence.to_be_bytes());
        b.extend_from_slice(&records.to_be_bytes());
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b[CRC_FROM..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn splits_batches_and_reads_their_headers() {
        let mut buf = batch(3, 9, 1, 10);
        buf.extend(batch(1, -1, -1, -1));
        let parts = split(&buf).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0.records, 3);
        assert_eq!(parts[0].0.last_sequence(), 12);
        assert!(parts[0].0.is_idempotent());
        assert!(!parts[1].0.is_idempotent());
        assert_eq!(parts[1].1.end, buf.len());
    }

    #[test]
    fn the_base_offset_is_outside_the_crc() {
        let mut b = batch(2, -1, -1, -1);
        set_base_offset(&mut b, 4711);
        let parts = split(&b).unwrap();
        assert_eq!(parts[0].0.base_offset, 4711);
        assert_eq!(parts[0].0.last_offset(), 4712);
    }

    #[test]
    fn refuses_corrupt_truncated_and_foreign_batches() {
        let mut b = batch(2, -1, -1, -1);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert_eq!(split(&b), Err(BatchError::Crc));
        let b = batch(2, -1, -1, -1);
        assert!(matches!(
            split(&b[..b.len() - 1]),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(split(&b[..20]), Err(BatchError::Truncated { .. })));
        let mut b = batch(1, -1, -1, -1);
        b[16] = 1;
        assert_eq!(split(&b), Err(BatchError::Magic(1)));
        let mut b = batch(1, 5, 0, 0);
        b[22] |= 0b1_0000; // transactional
        let crc = crc32c::crc32c(&b[CRC_FROM..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(split(&b), Err(BatchError::Transactional));
    }

    #[test]
    fn sequences_wrap() {
        let mut h = BatchHeader::parse(&batch(3, 1, 0, i32::MAX - 1)).unwrap();
        assert_eq!(h.last_sequence(), 0);
        h.base_sequence = -1;
        assert_eq!(h.last_sequence(), -1);
    }
}
