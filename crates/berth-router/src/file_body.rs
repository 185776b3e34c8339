//! A response body streamed from a file, for static files too large to
//! read whole: 256 KiB at a time, `length` bytes from where the file was
//! positioned (a byte range). A read error, or a read that waits on the
//! disk longer than the stall limit (a stuck disk), ends the body early:
//! the client gets fewer bytes than `Content-Length` promised and drops
//! the answer. (The blocking read itself keeps its thread until the disk
//! answers; the connection is freed.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

/// How much is read per frame.
const CHUNK: usize = 256 * 1024;

/// `length` bytes of an open file.
pub struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buffer: BytesMut,
    /// How long one read may take.
    stall_limit: std::time::Duration,
    /// When the read under way is given up (armed when a read starts to
    /// wait on the disk: a slow client, which stops polling, is not a
    /// stalled disk).
    stalled: Pin<Box<tokio::time::Sleep>>,
    /// Whether a read is waiting on the disk.
    waiting: bool,
}

impl FileBody {
    /// The next `length` bytes of `file`, each read given `stall_limit`.
    pub fn new(file: tokio::fs::File, length: u64, stall_limit: std::time::Duration) -> FileBody {
        FileBody {
            file,
            remaining: length,
            buffer: BytesMut::new(),
            stall_limit,
            stalled: Box::pin(tokio::time::sleep(stall_limit)),
            waiting: false,
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = CHUNK.min(usize::try_from(this.remaining).unwrap_or(CHUNK));
        this.buffer.resize(want, 0);
        let mut read = ReadBuf::new(&mut this.buffer[..want]);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = tokio::time::Instant::now() + this.stall_limit;
                    this.stalled.as_mut().reset(deadline);
                }
                match this.stalled.as_mut().poll(cx) {
                    // The disk is stuck: end here rather than hold on.
                    Poll::Ready(()) => {
                        this.remaining = 0;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            // The file shrank or cannot be read: end here.
            Poll::Ready(Err(_)) => {
                this.waiting = false;
                this.remaining = 0;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => {
                this.waiting = false;
                let filled = read.filled().len();
                if filled == 0 {
                    this.remaining = 0;
                    return Poll::Ready(None);
                }
                this.remaining -= filled as u64;
                let chunk = this.buffer.split_to(filled).freeze();
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    #[tokio::test]
    async fn a_slow_reader_of_the_answer_is_not_a_stalled_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![7u8; CHUNK * 3]).unwrap();
        let file = tokio::fs::File::open(&path).await.unwrap();
        let mut body = FileBody::new(file, (CHUNK * 3) as u64, Duration::from_millis(100));
        let mut received = 0;
        while let Some(frame) = body.frame().await {
            received += frame.unwrap().into_data().unwrap().len();
            // The client takes its time between chunks.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(received, CHUNK * 3);
    }

    #[tokio::test]
    async fn a_read_that_waits_on_the_disk_too_long_ends_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stuck");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // A writer that never writes: every read waits.
        let writer = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let reader = tokio::fs::File::open(&fifo).await.unwrap();
        let mut body = FileBody::new(reader, 10, Duration::from_millis(100));
        let ended = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the stall limit ends it");
        assert!(ended.is_none(), "no bytes, and the end");
        assert!(body.is_end_stream());
        // Let the blocked read go.
        std::io::Write::write_all(&mut &writer, b"x").unwrap();
    }
}
