//! The JSON frames clawgate writes (`res`, `event`), built as text around payloads that are
//! already JSON (worker answers are spliced in, never re-serialised), and the fragmenting of
//! large messages into WebSocket frames that share the answer's memory.

use bytes::Bytes;
use serde_json::Value;
use tungstenite::{
    Message, Utf8Bytes,
    protocol::frame::{
        Frame,
        coding::{Data as OpData, OpCode},
    },
};

use super::FRAGMENT;
use crate::{api::Reply, error::ApiError};

/// A JSON string literal.
pub fn quote(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// `{"type":"res","id":…,"ok":false,"error":…}`.
pub fn res_error(id: &str, error: &Value) -> String {
    format!(r#"{{"type":"res","id":{},"ok":false,"error":{error}}}"#, quote(id))
}

/// `{"type":"res","id":…,"ok":true,"payload":…}` from JSON text.
pub fn res_ok(id: &str, payload_json: &str) -> String {
    format!(r#"{{"type":"res","id":{},"ok":true,"payload":{payload_json}}}"#, quote(id))
}

/// A `res` frame around a worker answer's pieces, which are shared, not copied.
pub fn res_ok_chunks(id: &str, chunks: Vec<Bytes>) -> Vec<Bytes> {
    let head = format!(r#"{{"type":"res","id":{},"ok":true,"payload":"#, quote(id));
    let mut pieces = Vec::with_capacity(chunks.len() + 2);
    pieces.push(Bytes::from(head));
    pieces.extend(chunks);
    pieces.push(Bytes::from_static(b"}"));
    pieces
}

/// Renders a method's reply as the pieces of a `res` frame.
pub fn render_reply(id: &str, reply: &Result<Reply, ApiError>) -> Vec<Bytes> {
    match reply {
        Ok(Reply::Json(payload)) => vec![Bytes::from(res_ok(id, &payload.to_string()))],
        Ok(Reply::Usage(served)) => res_ok_chunks(id, served.chunks()),
        Err(error) => vec![Bytes::from(res_error(id, &error.body()))],
    }
}

/// Splits a message's pieces into WebSocket frames of at most [`FRAGMENT`] bytes: one text frame,
/// or a text frame and continuations. The slices share the pieces' memory. Fragments may cut a
/// UTF-8 sequence; RFC 6455 checks text only once the message is whole.
pub fn fragments(pieces: Vec<Bytes>) -> Result<Vec<Message>, std::str::Utf8Error> {
    let total: usize = pieces.iter().map(Bytes::len).sum();
    if total <= FRAGMENT {
        let text = match <[Bytes; 1]>::try_from(pieces) {
            Ok([one]) => one,
            Err(pieces) => Bytes::from(pieces.concat()),
        };
        return Ok(vec![Message::Text(Utf8Bytes::try_from(text)?)]);
    }
    let mut slices = Vec::with_capacity(total / FRAGMENT + pieces.len() + 1);
    for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
        let mut at = 0;
        while at < piece.len() {
            let end = (at + FRAGMENT).min(piece.len());
            slices.push(piece.slice(at..end));
            at = end;
        }
    }
    let last = slices.len() - 1;
    Ok(slices
        .into_iter()
        .enumerate()
        .map(|(i, slice)| {
            let opcode = if i == 0 { OpCode::Data(OpData::Text) } else { OpCode::Data(OpData::Continue) };
            Message::Frame(Frame::message(slice, opcode, i == last))
        })
        .collect())
}

/// `{"type":"event","event":…,"payload":…,"seq":…}`.
pub fn event(name: &str, payload_json: &str, seq: u64) -> String {
    format!(r#"{{"type":"event","event":{},"payload":{payload_json},"seq":{seq}}}"#, quote(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_splice_payload_text() {
        let chunks = vec![Bytes::from_static(br#"{"a":"#), Bytes::from_static(b"1}")];
        let frame = res_ok_chunks("x\"1", chunks).concat();
        let v: Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(v, json!({"type": "res", "id": "x\"1", "ok": true, "payload": {"a": 1}}));
        let e: Value = serde_json::from_str(&res_error("7", &json!({"code": "UNAVAILABLE"}))).unwrap();
        assert_eq!(e["ok"], false);
        let ev: Value = serde_json::from_str(&event("tick", r#"{"ts":1}"#, 3)).unwrap();
        assert_eq!(ev, json!({"type": "event", "event": "tick", "payload": {"ts": 1}, "seq": 3}));
    }

    #[test]
    fn large_messages_go_out_as_fragments_that_share_the_answer() {
        let answer = Bytes::from(format!(r#"{{"rows":"{}é"}}"#, "x".repeat(3 * FRAGMENT)));
        let pieces = res_ok_chunks("7", vec![answer.clone()]);
        let whole = pieces.concat();
        let frames = fragments(pieces).expect("UTF-8");
        assert_eq!(frames.len(), 1 + answer.len().div_ceil(FRAGMENT) + 1, "head, answer slices, tail");
        let mut joined = Vec::new();
        for (i, message) in frames.iter().enumerate() {
            let Message::Frame(frame) = message else { panic!("frame {i} is not a raw frame") };
            let header = frame.header();
            let first = i == 0;
            assert_eq!(
                header.opcode,
                if first { OpCode::Data(OpData::Text) } else { OpCode::Data(OpData::Continue) }
            );
            assert_eq!(header.is_final, i == frames.len() - 1);
            assert!(frame.payload().len() <= FRAGMENT);
            joined.extend_from_slice(frame.payload());
        }
        assert_eq!(joined, whole);
        // The answer's slices point into the answer itself: no copy per client.
        let Message::Frame(second) = &frames[1] else { unreachable!() };
        assert_eq!(second.payload().as_ptr(), answer.as_ptr());
        // Small messages are one text frame; text that is not UTF-8 is refused.
        let small = fragments(vec![Bytes::from_static(b"{\"a\":"), Bytes::from_static(b"1}")]).unwrap();
        assert!(matches!(&small[..], [Message::Text(t)] if t.as_str() == r#"{"a":1}"#));
        assert!(fragments(vec![Bytes::from_static(b"\xff")]).is_err());
    }
}
