//! Framing: a u32 big-endian length, then that many bytes of MessagePack (named maps).
//!
//! The length is checked against the reader's maximum before any buffer is allocated, so a
//! hostile or corrupt prefix costs nothing. Requests are small; answers can be tens of MiB
//! (`sessions.usage` with `limit:1000` on a large store), hence two maxima.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    AnswerMeta, FromWorker, Hello, JobStats, JsonText, ProtoError, RequestId, ToWorker, UsageAnswer,
    UsageReply, version,
};

/// Largest gateway-to-worker frame the worker accepts.
pub const MAX_REQUEST_FRAME: u32 = 1 << 20;
/// Largest worker-to-gateway frame the gateway accepts.
pub const MAX_RESPONSE_FRAME: u32 = 512 << 20;

/// Encodes `msg` as one frame, length prefix included.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let mut buf = vec![0u8; 4];
    rmp_serde::encode::write_named(&mut buf, msg)?;
    let len = buf.len() - 4;
    let len32 = u32::try_from(len)
        .map_err(|_| ProtoError::FrameTooLarge { len: len as u64, max: u64::from(u32::MAX) })?;
    buf[..4].copy_from_slice(&len32.to_be_bytes());
    Ok(buf)
}

/// The bytes of the frame `FromWorker::Response { id, result: Ok(UsageReply::Answer(answer)) }`
/// that come before its `data_json` text, for an answer whose data is `data_len` bytes: the
/// frame is this head followed by the data, byte for byte what [`encode`] makes of the whole
/// answer. The worker writes a large answer's data from its shared pieces after this head
/// instead of copying them into one buffer first.
///
/// It works because `data_json` is the last field of the last value of the message: the
/// message encoded with an empty `data_json` ends in that empty string's one byte, which the
/// real string header replaces.
pub fn answer_frame_head(
    id: RequestId,
    meta: &AnswerMeta,
    stats: &JobStats,
    fingerprint: u64,
    data_len: usize,
) -> Result<Vec<u8>, ProtoError> {
    let too_large = || ProtoError::FrameTooLarge { len: data_len as u64, max: u64::from(u32::MAX) };
    let answer =
        UsageAnswer { meta: meta.clone(), stats: *stats, fingerprint, data_json: JsonText::default() };
    let mut head = encode(&FromWorker::Response { id, result: Ok(UsageReply::Answer(answer)) })?;
    // An empty string is the one byte 0xa0, and it is the last thing encoded.
    if head.pop() != Some(0xa0) {
        return Err(ProtoError::Encode(rmp_serde::encode::Error::Syntax(
            "data_json is not the last field of an answer".into(),
        )));
    }
    let len32 = u32::try_from(data_len).map_err(|_| too_large())?;
    rmp::encode::write_str_len(&mut head, len32).map_err(|e| ProtoError::Io(e.into()))?;
    let body = head.len() as u64 - 4 + data_len as u64;
    let body32 = u32::try_from(body).map_err(|_| too_large())?;
    head[..4].copy_from_slice(&body32.to_be_bytes());
    Ok(head)
}

/// Decodes one frame body (without its prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    Ok(rmp_serde::from_slice(body)?)
}

/// Decodes one frame body held as shared bytes: [`crate::JsonText`] fields become slices of it.
pub fn decode_shared<T: DeserializeOwned>(body: &Bytes) -> Result<T, ProtoError> {
    crate::text::decoding_from(body, || decode(body))
}

/// [`decode_shared`] of a body read by [`read_frame`].
pub fn decode_owned<T: DeserializeOwned>(body: Vec<u8>) -> Result<T, ProtoError> {
    decode_shared(&Bytes::from(body))
}

/// Decodes a whole buffer holding exactly one frame, prefix included; for tests and tools.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8], max: u32) -> Result<T, ProtoError> {
    let Some(prefix) = bytes.get(..4) else {
        return Err(ProtoError::Truncated { got: bytes.len() as u64, expected: 4 });
    };
    let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes"));
    if len > max {
        return Err(ProtoError::FrameTooLarge { len: u64::from(len), max: u64::from(max) });
    }
    let body = &bytes[4..];
    if body.len() < len as usize {
        return Err(ProtoError::Truncated { got: body.len() as u64, expected: u64::from(len) });
    }
    decode(&body[..len as usize])
}

/// Reads one frame body. `Ok(None)` is a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
) -> Result<Option<Vec<u8>>, ProtoError> {
    let mut prefix = [0u8; 4];
    let mut got = 0usize;
    while got < 4 {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(ProtoError::Truncated { got: got as u64, expected: 4 });
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix);
    if len > max {
        return Err(ProtoError::FrameTooLarge { len: u64::from(len), max: u64::from(max) });
    }
    let mut body = vec![0u8; len as usize];
    let mut got = 0usize;
    while got < body.len() {
        let n = reader.read(&mut body[got..]).await?;
        if n == 0 {
            return Err(ProtoError::Truncated { got: got as u64, expected: u64::from(len) });
        }
        got += n;
    }
    Ok(Some(body))
}

/// Reads and decodes one message; `Ok(None)` on a clean end of stream.
pub async fn read_msg<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
) -> Result<Option<T>, ProtoError> {
    match read_frame(reader, max).await? {
        None => Ok(None),
        Some(body) => decode_owned(body).map(Some),
    }
}

/// Encodes and writes one message.
pub async fn write_msg<T: Serialize, W: AsyncWrite + Unpin>(
    writer: &mut W,
    msg: &T,
) -> Result<(), ProtoError> {
    let bytes = encode(msg)?;
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

/// One end of a worker connection: a stream plus the maximum frame it accepts.
pub struct Connection<S> {
    stream: S,
    max_incoming: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, max_incoming: u32) -> Connection<S> {
        Connection { stream, max_incoming }
    }

    /// Reads one message; `Ok(None)` when the peer closed cleanly.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ProtoError> {
        read_msg(&mut self.stream, self.max_incoming).await
    }

    /// Writes one message.
    pub async fn write<T: Serialize>(&mut self, msg: &T) -> Result<(), ProtoError> {
        write_msg(&mut self.stream, msg).await
    }

    /// Gateway side of the handshake: send our `Hello`, expect the worker's with our version.
    pub async fn handshake_as_gateway(&mut self, build: &str) -> Result<Hello, ProtoError> {
        self.write(&ToWorker::Hello(Hello::ours(build))).await?;
        match self.read::<FromWorker>().await? {
            Some(FromWorker::Hello(hello)) => check_version(hello),
            Some(other) => Err(ProtoError::NotHello { got: other.kind() }),
            None => Err(ProtoError::Truncated { got: 0, expected: 4 }),
        }
    }

    /// Worker side of the handshake: expect the gateway's `Hello`, then answer with ours. A
    /// mismatched gateway still gets our `Hello`, so it can log which versions disagreed.
    pub async fn handshake_as_worker(&mut self, build: &str) -> Result<Hello, ProtoError> {
        let first = self.read::<ToWorker>().await?;
        self.write(&FromWorker::Hello(Hello::ours(build))).await?;
        match first {
            Some(ToWorker::Hello(hello)) => check_version(hello),
            Some(other) => Err(ProtoError::NotHello { got: other.kind() }),
            None => Err(ProtoError::Truncated { got: 0, expected: 4 }),
        }
    }

    /// Gives the stream back, e.g. to split it into reader and writer tasks.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

fn check_version(hello: Hello) -> Result<Hello, ProtoError> {
    if hello.protocol == version::CURRENT {
        Ok(hello)
    } else {
        Err(ProtoError::VersionMismatch { ours: version::CURRENT, theirs: hello.protocol })
    }
}
