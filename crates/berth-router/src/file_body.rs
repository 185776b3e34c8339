//! A response body streamed from a file, for static files too large to
//! read whole: 256 KiB at a time, `length` bytes from where the file was
//! positioned (a byte range). A read error ends the body early; the client
//! sees fewer bytes than `Content-Length` promised and drops the answer.

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
}

impl FileBody {
    /// The next `length` bytes of `file`.
    pub fn new(file: tokio::fs::File, length: u64) -> FileBody {
        FileBody {
            file,
            remaining: length,
            buffer: BytesMut::new(),
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
            Poll::Pending => Poll::Pending,
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
