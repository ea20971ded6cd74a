//! MLLP framing: `0x0B` message `0x1C 0x0D`, read in bounded memory whatever the peer sends.
//! One implementation for ingest's listener and hiectl's sender.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

pub const START: u8 = 0x0B;
pub const END: [u8; 2] = [0x1C, 0x0D];
/// What is kept of an oversized frame: enough for its MSH, to address the refusal.
pub const HEAD_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed inside a message")]
    Truncated,
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Vec<u8>),
    /// Longer than the limit: read to its end but not kept, apart from its first bytes.
    TooLarge {
        head: Vec<u8>,
    },
}

/// The next frame, or `None` when the peer closed between frames. Bytes outside a frame (line
/// noise, keep-alive newlines) are skipped without being buffered. A frame over `max_bytes` is
/// consumed to its end (so the connection can go on) and returned as `TooLarge`.
pub async fn read<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<Frame>, FrameError> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(None);
        }
        match buf.iter().position(|b| *b == START) {
            Some(i) => {
                reader.consume(i + 1);
                break;
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
    let mut content = Content {
        message: Vec::new(),
        max_bytes,
        oversized: false,
    };
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Err(FrameError::Truncated);
        }
        let Some(i) = buf.iter().position(|b| *b == END[0]) else {
            let n = buf.len();
            content.push(buf);
            reader.consume(n);
            continue;
        };
        content.push(&buf[..i]);
        reader.consume(i + 1);
        // After a 0x1C: 0x0D ends the frame; another 0x1C may still be the end's first byte;
        // anything else means the 0x1C was content (it should not occur, but is not ours to drop).
        loop {
            let buf = reader.fill_buf().await?;
            match buf.first() {
                None => return Err(FrameError::Truncated),
                Some(&b) if b == END[1] => {
                    reader.consume(1);
                    return Ok(Some(content.finish()));
                }
                Some(&b) if b == END[0] => {
                    content.push(&[END[0]]);
                    reader.consume(1);
                }
                Some(_) => {
                    content.push(&[END[0]]);
                    break;
                }
            }
        }
    }
}

struct Content {
    message: Vec<u8>,
    max_bytes: usize,
    oversized: bool,
}

impl Content {
    fn push(&mut self, bytes: &[u8]) {
        if !self.oversized && self.message.len() + bytes.len() > self.max_bytes {
            self.oversized = true;
            self.message.truncate(HEAD_BYTES);
            self.message.shrink_to_fit();
        }
        if self.oversized {
            let room = HEAD_BYTES.saturating_sub(self.message.len());
            self.message
                .extend_from_slice(&bytes[..room.min(bytes.len())]);
        } else {
            self.message.extend_from_slice(bytes);
        }
    }

    fn finish(self) -> Frame {
        if self.oversized {
            Frame::TooLarge { head: self.message }
        } else {
            Frame::Message(self.message)
        }
    }
}

pub fn wrap(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message);
    out.extend_from_slice(&END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8], max: usize) -> (Vec<Frame>, Option<FrameError>) {
        // A tiny buffer, so frames straddle reads.
        let mut r = tokio::io::BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        loop {
            match read(&mut r, max).await {
                Ok(Some(f)) => out.push(f),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn msg(m: &[u8]) -> Frame {
        Frame::Message(m.to_vec())
    }

    #[tokio::test]
    async fn frames_noise_and_truncation() {
        let mut input = b"\r\n".to_vec();
        input.extend(wrap(b"MSH|one"));
        input.extend(b"junk");
        input.extend(wrap(b"MSH|two\x1cX"));
        input.extend(wrap(b"three\x1c"));
        input.extend(wrap(b""));
        let (f, e) = frames(&input, 100).await;
        assert_eq!(
            f,
            vec![
                msg(b"MSH|one"),
                msg(b"MSH|two\x1cX"),
                msg(b"three\x1c"),
                msg(b"")
            ]
        );
        assert!(e.is_none());

        let (f, e) = frames(b"\x0bMSH|cut", 100).await;
        assert!(f.is_empty() && matches!(e, Some(FrameError::Truncated)));
        let (_, e) = frames(b"\x0bMSH|cut\x1c", 100).await;
        assert!(matches!(e, Some(FrameError::Truncated)));

        let ok = wrap(&[b'x'; 10]);
        assert_eq!(frames(&ok, 10).await.0, vec![msg(&[b'x'; 10])]);
    }

    #[tokio::test]
    async fn an_oversized_frame_is_consumed_and_the_next_one_read() {
        let mut input = wrap(&[b'x'; 50]);
        input.extend(wrap(b"next"));
        let (f, e) = frames(&input, 10).await;
        assert!(e.is_none());
        assert_eq!(
            f,
            vec![
                Frame::TooLarge {
                    head: vec![b'x'; 50]
                },
                msg(b"next")
            ]
        );
        // Only the head is kept of a large one.
        let big = wrap(&vec![b'y'; HEAD_BYTES * 3]);
        let (f, _) = frames(&big, HEAD_BYTES).await;
        assert_eq!(
            f,
            vec![Frame::TooLarge {
                head: vec![b'y'; HEAD_BYTES]
            }]
        );
    }
}
