//! [`JsonText`]: an answer's JSON text that shares the frame it was read from.
//!
//! A `sessions.usage` answer can be 8 MB. Decoded into a `String` it would be copied once more
//! while the frame is still alive, and the gateway's peak memory would hold both. `read_msg`
//! instead keeps the frame as [`Bytes`] and a `JsonText` decoded from it is a slice of that
//! frame: no copy, and the gateway passes the same bytes on to every client.

use std::{cell::RefCell, fmt, ops::Deref};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Visitor};

/// UTF-8 text in shared bytes (cheap to clone).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct JsonText(Bytes);

impl JsonText {
    /// The text's bytes, shared.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor takes a `str` or `String`, or a slice of a frame that the
        // decoder handed us as `&str` (validated UTF-8); the bytes are immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl Deref for JsonText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for JsonText {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for JsonText {
    fn from(text: String) -> JsonText {
        JsonText(Bytes::from(text))
    }
}

impl From<&str> for JsonText {
    fn from(text: &str) -> JsonText {
        JsonText(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl fmt::Debug for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.as_str();
        let cut = text.char_indices().nth(80).map_or(text.len(), |(i, _)| i);
        write!(f, "JsonText({} bytes: {:?}…)", text.len(), &text[..cut])
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

thread_local! {
    /// The frame being decoded on this thread, if it was read as shared bytes.
    static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `frame` as the buffer that decoded `JsonText`s may share.
pub(crate) fn decoding_from<R>(frame: &Bytes, decode: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            FRAME.with(|slot| slot.borrow_mut().take());
        }
    }
    FRAME.with(|slot| *slot.borrow_mut() = Some(frame.clone()));
    let _reset = Reset;
    decode()
}

/// `text` as a slice of the frame being decoded, when it lies inside it.
fn shared(text: &str) -> Option<Bytes> {
    FRAME.with(|slot| {
        let slot = slot.borrow();
        let frame = slot.as_ref()?;
        let (start, at) = (frame.as_ptr() as usize, text.as_ptr() as usize);
        (at >= start && at + text.len() <= start + frame.len()).then(|| frame.slice_ref(text.as_bytes()))
    })
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonText, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = JsonText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<JsonText, E> {
                Ok(shared(text).map_or_else(|| JsonText::from(text), JsonText))
            }
            fn visit_str<E>(self, text: &str) -> Result<JsonText, E> {
                Ok(JsonText::from(text))
            }
            fn visit_string<E>(self, text: String) -> Result<JsonText, E> {
                Ok(JsonText::from(text))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnswerMeta, FromWorker, JobStats, UsageAnswer, UsageReply, frame};

    #[test]
    fn a_decoded_answer_shares_its_frame() {
        let text = format!(r#"{{"rows":"{}"}}"#, "x".repeat(100_000));
        let msg = FromWorker::Response {
            id: 7,
            result: Ok(UsageReply::Answer(UsageAnswer {
                meta: AnswerMeta { updated_at: None, cache: None, diagnostics: None, rows_total: None },
                stats: JobStats::default(),
                fingerprint: 1,
                data_json: text.clone().into(),
            })),
        };
        let encoded = frame::encode(&msg).unwrap();
        let body = Bytes::copy_from_slice(&encoded[4..]);
        let decoded: FromWorker = frame::decode_shared(&body).unwrap();
        let FromWorker::Response { result: Ok(UsageReply::Answer(answer)), .. } = decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!(answer.data_json.as_str(), text);
        let bytes = answer.data_json.into_bytes();
        let inside = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        assert!(inside.contains(&(bytes.as_ptr() as usize)), "the text was copied out of the frame");
        // Outside `decode_shared` nothing is shared, and a later decode does not see the frame.
        let copied: FromWorker = frame::decode(&body).unwrap();
        let FromWorker::Response { result: Ok(UsageReply::Answer(answer)), .. } = copied else { panic!() };
        assert!(!inside.contains(&(answer.data_json.into_bytes().as_ptr() as usize)));
    }
}
