//! A response body streamed from a file, for static files too large to
//! read whole: 256 KiB at a time, `length` bytes from where the file was
//! positioned (a byte range). A read error, or a read that takes longer
//! than the stall limit (a stuck disk), ends the body early: the client
//! gets fewer bytes than `Content-Length` promised and drops the answer.

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
    /// When the read under way is given up.
    stalled: Pin<Box<tokio::time::Sleep>>,
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
            Poll::Pending => match this.stalled.as_mut().poll(cx) {
                // The disk is stuck: end here rather than hold on.
                Poll::Ready(()) => {
                    this.remaining = 0;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
            // The file shrank or cannot be read: end here.
            Poll::Ready(Err(_)) => {
                this.remaining = 0;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => {
                let filled = read.filled().len();
                if filled == 0 {
                    this.remaining = 0;
                    return Poll::Ready(None);
                }
                this.remaining -= filled as u64;
                let next = tokio::time::Instant::now() + this.stall_limit;
                this.stalled.as_mut().reset(next);
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
