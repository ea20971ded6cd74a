//! Reading a file line by line in bounded memory: a line longer than the limit is skipped to its
//! end and reported, never buffered whole.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

pub enum Line {
    Text(Vec<u8>),
    TooLong,
}

pub struct Lines<R> {
    reader: R,
    /// `\r` ends a line too (HL7 segments); `\r\n` then counts as one end.
    carriage_return_ends: bool,
    max_bytes: usize,
    /// 1-based number of the line last returned.
    pub number: usize,
    after_cr: bool,
}

impl<R: AsyncBufRead + Unpin> Lines<R> {
    pub fn new(reader: R, carriage_return_ends: bool, max_bytes: usize) -> Self {
        Lines {
            reader,
            carriage_return_ends,
            max_bytes,
            number: 0,
            after_cr: false,
        }
    }

    pub async fn next(&mut self) -> std::io::Result<Option<Line>> {
        let mut line = Vec::new();
        let mut too_long = false;
        let mut read_any = false;
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                if !read_any {
                    return Ok(None);
                }
                break;
            }
            if self.after_cr && buf[0] == b'\n' {
                self.reader.consume(1);
                self.after_cr = false;
                continue;
            }
            self.after_cr = false;
            read_any = true;
            let end = buf
                .iter()
                .position(|b| *b == b'\n' || (self.carriage_return_ends && *b == b'\r'));
            let take = end.unwrap_or(buf.len());
            if !too_long {
                if line.len() + take > self.max_bytes {
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(&buf[..take]);
                }
            }
            match end {
                Some(i) => {
                    self.after_cr = buf[i] == b'\r';
                    self.reader.consume(i + 1);
                    break;
                }
                None => {
                    let n = buf.len();
                    self.reader.consume(n);
                }
            }
        }
        self.number += 1;
        Ok(Some(if too_long {
            Line::TooLong
        } else {
            Line::Text(line)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], cr: bool, max: usize) -> Vec<Option<String>> {
        let mut lines = Lines::new(tokio::io::BufReader::with_capacity(4, input), cr, max);
        let mut out = Vec::new();
        while let Some(line) = lines.next().await.unwrap() {
            out.push(match line {
                Line::Text(t) => Some(String::from_utf8(t).unwrap()),
                Line::TooLong => None,
            });
        }
        out
    }

    #[tokio::test]
    async fn splits_and_bounds() {
        assert_eq!(
            all(b"ab\ncdefgh\n\nij", false, 5).await,
            vec![Some("ab".into()), None, Some("".into()), Some("ij".into())]
        );
        assert_eq!(
            all(b"MSH|1\r\nPID|2\rOBX\n", true, 100).await,
            vec![
                Some("MSH|1".into()),
                Some("PID|2".into()),
                Some("OBX".into())
            ]
        );
        assert_eq!(all(b"a\rb\n", false, 100).await, vec![Some("a\rb".into())]);
    }
}
