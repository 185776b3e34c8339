//! The terminal protocol of `berth run` with a terminal attached: framed
//! messages over the connection `POST /v1/apps/{app}/run/terminal`
//! upgrades to (`Upgrade: berth-terminal`).
//!
//! Each frame is one kind byte, a 4-byte big-endian payload length, and
//! the payload. The client sends keystrokes ([`Frame::Input`]), window
//! sizes ([`Frame::Resize`]) and the end of its input ([`Frame::EndOfInput`]);
//! the server sends the terminal's output ([`Frame::Output`]) and, last,
//! how the command ended ([`Frame::Exit`]). Ctrl-C needs no frame of its
//! own: it is the byte 0x03 the terminal turns into SIGINT, as on any
//! terminal.

use serde::{Deserialize, Serialize};

/// The value of the `Upgrade` header that asks for the terminal protocol.
pub const TERMINAL_UPGRADE: &str = "berth-terminal";

/// The largest payload a frame carries.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TerminalSize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl Default for TerminalSize {
    /// The classic 80×24.
    fn default() -> Self {
        TerminalSize { cols: 80, rows: 24 }
    }
}

/// One message of the terminal protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → server: bytes typed.
    Input(Vec<u8>),
    /// Client → server: the window's new size.
    Resize(TerminalSize),
    /// Client → server: no more input (its stdin closed); the terminal
    /// gets an end-of-file character.
    EndOfInput,
    /// Server → client: bytes the command wrote to its terminal.
    Output(Vec<u8>),
    /// Server → client, last: the exit code (or 128 + the signal that
    /// killed it) and why, when it did not exit by itself.
    Exit {
        /// The code the client exits with.
        code: i32,
        /// What ended it, when not a plain exit ("timed out", "cancelled").
        message: String,
    },
}

mod kind {
    pub const INPUT: u8 = 0;
    pub const RESIZE: u8 = 1;
    pub const END_OF_INPUT: u8 = 2;
    pub const OUTPUT: u8 = 3;
    pub const EXIT: u8 = 4;
}

/// A frame that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad terminal frame: {}", self.0)
    }
}

impl std::error::Error for FrameError {}

impl Frame {
    /// The frame's bytes on the wire. Input and output longer than
    /// [`MAX_FRAME_PAYLOAD`] must be split by the caller (see
    /// [`Frame::data_frames`]).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Input(bytes) => (kind::INPUT, bytes.into()),
            Frame::Resize(size) => {
                let mut payload = size.cols.to_be_bytes().to_vec();
                payload.extend(size.rows.to_be_bytes());
                (kind::RESIZE, payload.into())
            }
            Frame::EndOfInput => (kind::END_OF_INPUT, Vec::new().into()),
            Frame::Output(bytes) => (kind::OUTPUT, bytes.into()),
            Frame::Exit { code, message } => {
                let mut payload = code.to_be_bytes().to_vec();
                payload.extend(message.as_bytes());
                (kind::EXIT, payload.into())
            }
        };
        let mut wire = Vec::with_capacity(5 + payload.len());
        wire.push(kind);
        wire.extend((payload.len() as u32).to_be_bytes());
        wire.extend(payload.iter());
        wire
    }

    /// `bytes` as [`Frame::Output`] (or, with `input`, [`Frame::Input`])
    /// frames of at most [`MAX_FRAME_PAYLOAD`] each, encoded.
    pub fn data_frames(bytes: &[u8], input: bool) -> Vec<u8> {
        let mut wire = Vec::with_capacity(bytes.len() + 5);
        for chunk in bytes.chunks(MAX_FRAME_PAYLOAD) {
            let frame = if input {
                Frame::Input(chunk.to_vec())
            } else {
                Frame::Output(chunk.to_vec())
            };
            wire.extend(frame.encode());
        }
        wire
    }
}

/// Reads frames out of a byte stream as it arrives.
#[derive(Debug, Default)]
pub struct FrameReader {
    buffer: Vec<u8>,
}

impl FrameReader {
    /// A reader with nothing buffered.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Adds bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some((&kind, rest)) = self.buffer.split_first() else {
            return Ok(None);
        };
        let Some(length) = rest.get(..4) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
        if length > MAX_FRAME_PAYLOAD {
            return Err(FrameError(format!(
                "a payload of {length} bytes (at most {MAX_FRAME_PAYLOAD})"
            )));
        }
        if rest.len() < 4 + length {
            return Ok(None);
        }
        let payload = rest[4..4 + length].to_vec();
        self.buffer.drain(..5 + length);
        let frame = match kind {
            kind::INPUT => Frame::Input(payload),
            kind::OUTPUT => Frame::Output(payload),
            kind::END_OF_INPUT => Frame::EndOfInput,
            kind::RESIZE => {
                let [c0, c1, r0, r1] = payload[..] else {
                    return Err(FrameError(format!(
                        "a resize of {} bytes (4 expected)",
                        payload.len()
                    )));
                };
                Frame::Resize(TerminalSize {
                    cols: u16::from_be_bytes([c0, c1]),
                    rows: u16::from_be_bytes([r0, r1]),
                })
            }
            kind::EXIT => {
                let Some((code, message)) = payload.split_first_chunk::<4>() else {
                    return Err(FrameError("an exit without its code".into()));
                };
                Frame::Exit {
                    code: i32::from_be_bytes(*code),
                    message: String::from_utf8_lossy(message).into_owned(),
                }
            }
            other => return Err(FrameError(format!("unknown kind {other}"))),
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_reads_back_across_any_split() {
        let frames = vec![
            Frame::Input(b"ls -l\r".to_vec()),
            Frame::Resize(TerminalSize {
                cols: 132,
                rows: 43,
            }),
            Frame::EndOfInput,
            Frame::Output(vec![0x1b, b'[', b'0', b'm', 0xff]),
            Frame::Exit {
                code: 130,
                message: "cancelled".into(),
            },
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        for split in 0..wire.len() {
            let mut reader = FrameReader::new();
            let mut read = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                reader.push(part);
                while let Some(frame) = reader.next_frame().unwrap() {
                    read.push(frame);
                }
            }
            assert_eq!(read, frames, "split at {split}");
        }
    }

    #[test]
    fn long_output_is_split_into_frames_that_fit() {
        let bytes = vec![7u8; MAX_FRAME_PAYLOAD * 2 + 10];
        let mut reader = FrameReader::new();
        reader.push(&Frame::data_frames(&bytes, false));
        let mut total = 0;
        while let Some(Frame::Output(chunk)) = reader.next_frame().unwrap() {
            assert!(chunk.len() <= MAX_FRAME_PAYLOAD);
            total += chunk.len();
        }
        assert_eq!(total, bytes.len());
    }

    #[test]
    fn an_oversized_or_unknown_frame_is_an_error() {
        let mut reader = FrameReader::new();
        reader.push(&[kind::OUTPUT, 0xff, 0xff, 0xff, 0xff]);
        assert!(reader.next_frame().unwrap_err().0.contains("at most"));
        let mut reader = FrameReader::new();
        reader.push(&[9, 0, 0, 0, 0]);
        assert!(
            reader
                .next_frame()
                .unwrap_err()
                .0
                .contains("unknown kind 9")
        );
        let mut reader = FrameReader::new();
        reader.push(&[kind::RESIZE, 0, 0, 0, 1, 5]);
        assert!(reader.next_frame().unwrap_err().0.contains("4 expected"));
    }
}
