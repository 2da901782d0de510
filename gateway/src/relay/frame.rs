//! WebSocket frames (RFC 6455 §5.2) as the relay sees them: headers parsed from a byte stream,
//! payloads passed by as they arrive, never collected into messages.
//!
//! Why not tungstenite here: it reads whole messages (a 25 MiB OpenClaw frame would be buffered
//! before a byte of it went on) and re-encodes what it forwards. The relay forwards the bytes it
//! read, header and payload, exactly as they came (client frames stay masked with the client's
//! key), and only needs to know where frames and messages begin and end: to insert its own
//! answers between messages, and to read the few messages routing looks at.

use thiserror::Error;

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The longest header: 2 bytes, an 8-byte length, a 4-byte mask.
pub const MAX_HEADER: usize = 14;

/// A stream the relay cannot frame: it is closed, never guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame length {0} has its most significant bit set")]
    LengthOverflow(u64),
    #[error("control frame (opcode {0:#x}) is fragmented or longer than 125 bytes")]
    BadControl(u8),
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("a continuation frame outside a message")]
    StrayContinuation,
    #[error("a new data frame inside an unfinished message")]
    MessageNotFinished,
}

/// One frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// RSV1-3 as the three low bits (set only when an extension was negotiated).
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

impl Header {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// Parses a header at the start of `buf`: `Ok(None)` when more bytes are needed, else the
    /// header and its length in bytes.
    pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, FrameError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let (len, mut at) = match b1 & 0x7f {
            126 if buf.len() < 4 => return Ok(None),
            126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() < 10 => return Ok(None),
            127 => {
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(FrameError::LengthOverflow(len));
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        let mask = if b1 & 0x80 != 0 {
            let Some(key) = buf.get(at..at + 4) else { return Ok(None) };
            at += 4;
            Some(key.try_into().expect("4 bytes"))
        } else {
            None
        };
        let header = Header { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 0x7, opcode: b0 & 0xf, mask, len };
        match header.opcode {
            CONTINUATION | TEXT | BINARY => {}
            CLOSE | PING | PONG if header.fin && header.len <= 125 => {}
            CLOSE | PING | PONG => return Err(FrameError::BadControl(header.opcode)),
            other => return Err(FrameError::UnknownOpcode(other)),
        }
        Ok(Some((header, at)))
    }

    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_HEADER);
        out.push(u8::from(self.fin) << 7 | (self.rsv & 0x7) << 4 | self.opcode & 0xf);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        match self.len {
            len @ 0..=125 => out.push(mask_bit | len as u8),
            len @ 126..=0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        if let Some(key) = self.mask {
            out.extend_from_slice(&key);
        }
        out
    }
}

/// XORs `data` with `key`, `data` starting `offset` bytes into its frame's payload.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    let shift = (offset % 4) as usize;
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(shift + i) % 4];
    }
}

/// A whole frame as bytes: for the relay's own frames (answers, closes).
pub fn encode_frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let header = Header { fin, rsv: 0, opcode, mask, len: payload.len() as u64 };
    let mut out = header.encode();
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// A close frame's payload: the code and a reason cut to what a close frame holds.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let reason = crate::ws::connect::close_reason(reason);
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// What [`FrameReader::read`] found in the bytes it consumed.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// The start of a header, kept until the rest arrives.
    Partial,
    /// A complete header; `ends`: the frame has no payload, so it ends here too.
    Header { header: Header, ends: bool },
    /// Payload bytes of the frame `header` heads, as on the wire (masked if the frame is),
    /// `offset` bytes into its payload; `ends`: the frame ends with them.
    Payload { header: Header, bytes: &'a [u8], offset: u64, ends: bool },
}

/// Follows a stream of frames and the messages they make up.
#[derive(Debug, Default)]
pub struct FrameReader {
    head: [u8; MAX_HEADER],
    have: usize,
    /// The frame being read and how much of its payload is left.
    current: Option<(Header, u64)>,
    /// Inside a fragmented data message (its first frame had no FIN).
    in_message: bool,
}

impl FrameReader {
    /// Between frames: bytes written up to here end a frame (or nothing was written).
    pub fn between_frames(&self) -> bool {
        self.current.is_none() && self.have == 0
    }

    /// Between messages: a frame of the relay's own may be written here.
    pub fn between_messages(&self) -> bool {
        self.between_frames() && !self.in_message
    }

    /// The header of the frame being read.
    pub fn current(&self) -> Option<Header> {
        self.current.map(|(header, _)| header)
    }

    /// Consumes the next piece of `data` (not empty): how many bytes, and what they were.
    pub fn read<'a>(&mut self, data: &'a [u8]) -> Result<(usize, Piece<'a>), FrameError> {
        if let Some((header, remaining)) = self.current {
            let take = remaining.min(data.len() as u64) as usize;
            let remaining = remaining - take as u64;
            let offset = header.len - remaining - take as u64;
            let ends = remaining == 0;
            self.current = if ends { None } else { Some((header, remaining)) };
            if ends {
                self.frame_ended(header);
            }
            return Ok((take, Piece::Payload { header, bytes: &data[..take], offset, ends }));
        }
        let take = (MAX_HEADER - self.have).min(data.len());
        self.head[self.have..self.have + take].copy_from_slice(&data[..take]);
        let Some((header, len)) = Header::parse(&self.head[..self.have + take])? else {
            self.have += take;
            return Ok((take, Piece::Partial));
        };
        let consumed = len - self.have;
        self.have = 0;
        if !header.is_control() {
            match (header.opcode == CONTINUATION, self.in_message) {
                (true, false) => return Err(FrameError::StrayContinuation),
                (false, true) => return Err(FrameError::MessageNotFinished),
                _ => {}
            }
            self.in_message = true;
        }
        let ends = header.len == 0;
        if ends {
            self.frame_ended(header);
        } else {
            self.current = Some((header, header.len));
        }
        Ok((consumed, Piece::Header { header, ends }))
    }

    fn frame_ended(&mut self, header: Header) {
        if !header.is_control() && header.fin {
            self.in_message = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece of `stream` fed in `chunk`-byte reads.
    fn pieces(stream: &[u8], chunk: usize) -> Vec<(Option<Header>, Vec<u8>, bool)> {
        let mut reader = FrameReader::default();
        let mut out = Vec::new();
        for part in stream.chunks(chunk) {
            let mut at = 0;
            while at < part.len() {
                let (n, piece) = reader.read(&part[at..]).expect("valid stream");
                assert!(n > 0, "progress");
                at += n;
                match piece {
                    Piece::Partial => {}
                    Piece::Header { header, ends } => out.push((Some(header), Vec::new(), ends)),
                    Piece::Payload { bytes, ends, .. } => out.push((None, bytes.to_vec(), ends)),
                }
            }
        }
        assert!(reader.between_messages());
        out
    }

    #[test]
    fn headers_round_trip() {
        for len in [0u64, 1, 125, 126, 65535, 65536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let header = Header { fin: len % 2 == 0, rsv: 0, opcode: BINARY, mask, len };
                let bytes = header.encode();
                assert_eq!(Header::parse(&bytes), Ok(Some((header, bytes.len()))));
                for short in 0..bytes.len() {
                    assert_eq!(Header::parse(&bytes[..short]), Ok(None), "{len} cut at {short}");
                }
            }
        }
        let huge = Header { fin: true, rsv: 0, opcode: TEXT, mask: None, len: 1 << 63 }.encode();
        assert!(matches!(Header::parse(&huge), Err(FrameError::LengthOverflow(_))));
        assert_eq!(Header::parse(&[0x83, 0]), Err(FrameError::UnknownOpcode(3)));
        assert_eq!(Header::parse(&[0x09, 0]), Err(FrameError::BadControl(PING)), "fragmented ping");
        assert_eq!(Header::parse(&[0x89, 126, 0, 200]), Err(FrameError::BadControl(PING)));
    }

    #[test]
    fn masking_is_positional() {
        let key = [0xa, 0xb, 0xc, 0xd];
        let text = b"hello, relay".to_vec();
        let framed = encode_frame(TEXT, true, &text, Some(key));
        let mut payload = framed[6..].to_vec();
        // Unmasking in two parts gives the text back, whatever the split.
        let (a, b) = payload.split_at_mut(5);
        apply_mask(a, key, 0);
        apply_mask(b, key, 5);
        assert_eq!(payload, text);
    }

    #[test]
    fn frames_and_messages_are_followed_across_any_split() {
        let mut stream = Vec::new();
        stream.extend(encode_frame(TEXT, false, b"{\"a\":", Some([9, 8, 7, 6])));
        stream.extend(encode_frame(PING, true, b"p", Some([1, 1, 1, 1])));
        stream.extend(encode_frame(CONTINUATION, true, &[b'1'; 300], Some([5, 5, 5, 5])));
        stream.extend(encode_frame(BINARY, true, b"", None));
        stream.extend(encode_frame(CLOSE, true, &close_payload(1000, "bye"), None));
        let whole = pieces(&stream, stream.len());
        for chunk in [1, 2, 3, 7, 64] {
            let split = pieces(&stream, chunk);
            // Payload pieces may be split; joined per frame they are the same.
            let join = |list: &[(Option<Header>, Vec<u8>, bool)]| {
                let mut frames: Vec<(Header, Vec<u8>)> = Vec::new();
                for (header, bytes, _) in list {
                    match header {
                        Some(h) => frames.push((*h, Vec::new())),
                        None => frames.last_mut().expect("payload after a header").1.extend(bytes),
                    }
                }
                frames
            };
            assert_eq!(join(&split), join(&whole), "chunk {chunk}");
        }
        let opcodes: Vec<u8> = whole.iter().filter_map(|(h, _, _)| h.map(|h| h.opcode)).collect();
        assert_eq!(opcodes, [TEXT, PING, CONTINUATION, BINARY, CLOSE]);
    }

    #[test]
    fn message_boundaries() {
        let mut reader = FrameReader::default();
        let first = encode_frame(TEXT, false, b"ab", None);
        let ping = encode_frame(PING, true, b"", None);
        let last = encode_frame(CONTINUATION, true, b"c", None);
        let feed = |reader: &mut FrameReader, bytes: &[u8]| {
            let mut at = 0;
            while at < bytes.len() {
                at += reader.read(&bytes[at..]).expect("valid").0;
            }
        };
        assert!(reader.between_messages());
        feed(&mut reader, &first[..3]);
        assert!(!reader.between_frames());
        feed(&mut reader, &first[3..]);
        assert!(reader.between_frames() && !reader.between_messages(), "inside a fragmented message");
        feed(&mut reader, &ping);
        assert!(!reader.between_messages(), "a ping does not end the message");
        feed(&mut reader, &last);
        assert!(reader.between_messages());
        assert_eq!(reader.read(&last), Err(FrameError::StrayContinuation));
        let mut reader = FrameReader::default();
        feed(&mut reader, &first);
        assert_eq!(reader.read(&first), Err(FrameError::MessageNotFinished));
    }
}
