//! MLLP framing: `0x0B` message `0x1C 0x0D`.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

pub const START: u8 = 0x0B;
pub const END: [u8; 2] = [0x1C, 0x0D];

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("connection closed inside a message")]
    Truncated,
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
}

/// The next framed message, or `None` when the peer closed between messages. Bytes outside a
/// frame (line noise, keep-alive newlines) are skipped.
pub async fn read<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut skipped = Vec::new();
    loop {
        skipped.clear();
        // Bounded: noise before a start byte cannot grow without limit either.
        let n = (&mut *reader)
            .take(max_bytes as u64)
            .read_until(START, &mut skipped)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        if skipped.last() == Some(&START) {
            break;
        }
        if n as u64 >= max_bytes as u64 {
            continue;
        }
        return Ok(None);
    }
    let mut message = Vec::new();
    loop {
        // Room for the content, the 0x1C, and one byte more to notice an oversized message.
        let limit = (max_bytes + 2).saturating_sub(message.len()) as u64;
        let n = (&mut *reader)
            .take(limit)
            .read_until(END[0], &mut message)
            .await?;
        let content = message.len() - usize::from(message.last() == Some(&END[0]));
        if content > max_bytes {
            return Err(FrameError::TooLarge(max_bytes));
        }
        if n == 0 || message.last() != Some(&END[0]) {
            return Err(FrameError::Truncated);
        }
        let mut next = [0u8; 1];
        match reader.read_exact(&mut next).await {
            Ok(_) if next[0] == END[1] => {
                message.pop();
                return Ok(Some(message));
            }
            // A 0x1C not followed by 0x0D is content (it should not occur, but is not ours to drop).
            Ok(_) => message.push(next[0]),
            Err(_) => return Err(FrameError::Truncated),
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

    #[tokio::test]
    async fn frames_noise_and_truncation() {
        let mut input = b"\r\n".to_vec();
        input.extend(wrap(b"MSH|one"));
        input.extend(b"junk");
        input.extend(wrap(b"MSH|two\x1cX"));
        let mut r = tokio::io::BufReader::new(&input[..]);
        assert_eq!(read(&mut r, 100).await.unwrap().unwrap(), b"MSH|one");
        assert_eq!(read(&mut r, 100).await.unwrap().unwrap(), b"MSH|two\x1cX");
        assert!(read(&mut r, 100).await.unwrap().is_none());

        let mut r = tokio::io::BufReader::new(&b"\x0bMSH|cut"[..]);
        assert!(matches!(
            read(&mut r, 100).await,
            Err(FrameError::Truncated)
        ));
        let big = wrap(&[b'x'; 50]);
        let mut r = tokio::io::BufReader::new(&big[..]);
        assert!(matches!(
            read(&mut r, 10).await,
            Err(FrameError::TooLarge(10))
        ));
        let ok = wrap(&[b'x'; 10]);
        let mut r = tokio::io::BufReader::new(&ok[..]);
        assert_eq!(read(&mut r, 10).await.unwrap().unwrap().len(), 10);
    }
}
