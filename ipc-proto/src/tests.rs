//! Wire tests: round trips and every kind of bad input, each a typed error, never a panic.

use crate::{
    AgentScope, AnswerMeta, CacheInfo, CacheState, DayZone, FromWorker, GroupBy, Hello, JobStats,
    MemoryReport, Method, ProtoError, RowSort, SortKey, ToWorker, UsageAnswer, UsageQuery, UsageReply,
    WorkerError, WorkerErrorKind, frame, version,
};

fn query() -> UsageQuery {
    UsageQuery {
        method: Method::SessionsUsage,
        start_ms: 0,
        end_ms: 1_800_000_000_000,
        agents: AgentScope::All,
        key: None,
        limit: Some(1000),
        group_by: GroupBy::Instance,
        day_zone: DayZone::FixedOffsetMinutes(330),
        include_context_weight: false,
        offset: Some(25),
        sort: Some(RowSort { key: SortKey::Cost, descending: true }),
        search: Some("main slack".into()),
        entries_only: false,
    }
}

fn answer(data: &str) -> UsageAnswer {
    UsageAnswer {
        meta: AnswerMeta {
            updated_at: Some(1_795_000_000_000),
            cache: Some(CacheInfo {
                state: CacheState::Fresh,
                cached_files: 3,
                pending_files: 0,
                stale_files: 0,
                refreshed_at: 1_795_000_000_001,
            }),
            diagnostics: Some(r#"{"filesParsed":1}"#.into()),
            rows_total: Some(3),
        },
        stats: JobStats { files_total: 3, ..JobStats::default() },
        fingerprint: 0xfeed_beef,
        data_json: data.into(),
    }
}

fn round_trip_to_worker(msg: ToWorker) {
    let bytes = frame::encode(&msg).unwrap();
    let back: ToWorker = frame::decode_frame(&bytes, frame::MAX_REQUEST_FRAME).unwrap();
    assert_eq!(back, msg);
}

fn round_trip_from_worker(msg: FromWorker) {
    let bytes = frame::encode(&msg).unwrap();
    let back: FromWorker = frame::decode_frame(&bytes, frame::MAX_RESPONSE_FRAME).unwrap();
    assert_eq!(back, msg);
}

#[test]
fn every_message_round_trips() {
    round_trip_to_worker(ToWorker::Hello(Hello::ours("test")));
    round_trip_to_worker(ToWorker::Request { id: 7, query: query(), known: Some(42) });
    round_trip_to_worker(ToWorker::Cancel { id: 7 });
    round_trip_to_worker(ToWorker::Ping { seq: u64::MAX });
    round_trip_to_worker(ToWorker::Shutdown);
    round_trip_from_worker(FromWorker::Hello(Hello::ours("test")));
    round_trip_from_worker(FromWorker::Pong { seq: 3, memory: MemoryReport { heap_bytes: 1, rss_bytes: 2 } });
    round_trip_from_worker(FromWorker::Response {
        id: 9,
        result: Ok(UsageReply::Answer(answer(r#""totals":{}"#))),
    });
    round_trip_from_worker(FromWorker::Response {
        id: 11,
        result: Ok(UsageReply::Unchanged { meta: answer("x").meta, stats: JobStats::default() }),
    });
    round_trip_from_worker(FromWorker::Response {
        id: 10,
        result: Err(WorkerError::new(WorkerErrorKind::OverBudget, "too big")),
    });
}

#[test]
fn frames_are_named_maps() {
    // Named maps keep field names on the wire, which is what lets fields be added compatibly.
    let bytes = frame::encode(&ToWorker::Hello(Hello::ours("b"))).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("protocol") && text.contains("pid"), "{text}");
}

#[test]
fn oversize_length_is_refused_before_allocating() {
    let mut bytes = u32::MAX.to_be_bytes().to_vec();
    bytes.extend_from_slice(b"xx");
    let err = frame::decode_frame::<ToWorker>(&bytes, frame::MAX_REQUEST_FRAME).unwrap_err();
    assert!(matches!(err, ProtoError::FrameTooLarge { len, .. } if len == u64::from(u32::MAX)));
}

#[test]
fn garbage_bytes_are_a_decode_error() {
    let garbage = [0xc1u8, 0xff, 0x00, 0x13, 0x37, 0xde, 0xad];
    let mut bytes = (garbage.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&garbage);
    let err = frame::decode_frame::<ToWorker>(&bytes, frame::MAX_REQUEST_FRAME).unwrap_err();
    assert!(matches!(err, ProtoError::Decode(_)), "{err}");
}

#[test]
fn valid_msgpack_of_the_wrong_shape_is_a_decode_error() {
    let bytes = frame::encode(&vec![1u32, 2, 3]).unwrap();
    let err = frame::decode_frame::<FromWorker>(&bytes, frame::MAX_RESPONSE_FRAME).unwrap_err();
    assert!(matches!(err, ProtoError::Decode(_)), "{err}");
}

#[test]
fn truncated_frames_are_typed_errors() {
    let bytes = frame::encode(&ToWorker::Request { id: 1, query: query(), known: None }).unwrap();
    for cut in [0, 2, 4, bytes.len() / 2, bytes.len() - 1] {
        let err = frame::decode_frame::<ToWorker>(&bytes[..cut], frame::MAX_REQUEST_FRAME).unwrap_err();
        assert!(matches!(err, ProtoError::Truncated { .. }), "cut {cut}: {err}");
    }
}

#[tokio::test]
async fn stream_reader_reports_truncation_and_clean_eof() {
    let bytes = frame::encode(&ToWorker::Ping { seq: 1 }).unwrap();
    let mut clean: &[u8] = &bytes;
    let first: Option<ToWorker> = frame::read_msg(&mut clean, frame::MAX_REQUEST_FRAME).await.unwrap();
    assert_eq!(first, Some(ToWorker::Ping { seq: 1 }));
    let eof: Option<ToWorker> = frame::read_msg(&mut clean, frame::MAX_REQUEST_FRAME).await.unwrap();
    assert_eq!(eof, None);

    let mut cut: &[u8] = &bytes[..bytes.len() - 1];
    let err = frame::read_msg::<ToWorker, _>(&mut cut, frame::MAX_REQUEST_FRAME).await.unwrap_err();
    assert!(matches!(err, ProtoError::Truncated { .. }), "{err}");

    let mut huge: &[u8] = &[0xff, 0xff, 0xff, 0xff];
    let err = frame::read_msg::<ToWorker, _>(&mut huge, frame::MAX_REQUEST_FRAME).await.unwrap_err();
    assert!(matches!(err, ProtoError::FrameTooLarge { .. }), "{err}");
}

#[tokio::test]
async fn wrong_version_and_wrong_first_message_fail_the_handshake() {
    let (gateway_end, worker_end) = tokio::io::duplex(1 << 16);
    let worker = tokio::spawn(async move {
        let mut conn = crate::Connection::new(worker_end, frame::MAX_REQUEST_FRAME);
        // A worker from the future announces another version.
        let _ = conn.read::<ToWorker>().await;
        let mut hello = Hello::ours("future");
        hello.protocol = version::CURRENT + 1;
        conn.write(&FromWorker::Hello(hello)).await.unwrap();
    });
    let mut conn = crate::Connection::new(gateway_end, frame::MAX_RESPONSE_FRAME);
    let err = conn.handshake_as_gateway("test").await.unwrap_err();
    assert!(matches!(err, ProtoError::VersionMismatch { theirs, .. } if theirs == version::CURRENT + 1));
    worker.await.unwrap();

    let (gateway_end, worker_end) = tokio::io::duplex(1 << 16);
    let gateway = tokio::spawn(async move {
        let mut conn = crate::Connection::new(gateway_end, frame::MAX_RESPONSE_FRAME);
        conn.write(&ToWorker::Ping { seq: 1 }).await.unwrap();
        let _ = conn.read::<FromWorker>().await;
    });
    let mut conn = crate::Connection::new(worker_end, frame::MAX_REQUEST_FRAME);
    let err = conn.handshake_as_worker("test").await.unwrap_err();
    assert!(matches!(err, ProtoError::NotHello { got: "Ping" }), "{err}");
    gateway.await.unwrap();
}

#[tokio::test]
async fn socket_is_private_and_carries_frames() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    crate::endpoint::ensure_private_dir(&run_dir).unwrap();
    assert_eq!(std::fs::metadata(&run_dir).unwrap().permissions().mode() & 0o777, 0o700);
    let path = run_dir.join("worker.sock");
    // A stale file from a dead gateway is replaced.
    std::fs::write(&path, b"stale").unwrap();
    let listener = crate::endpoint::bind(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let server = tokio::spawn(async move {
        use interprocess::local_socket::traits::tokio::Listener as _;
        let stream = listener.accept().await.unwrap();
        let mut conn = crate::Connection::new(stream, frame::MAX_REQUEST_FRAME);
        conn.handshake_as_worker("srv").await.unwrap();
    });
    let stream = crate::endpoint::connect(&path).await.unwrap();
    let mut conn = crate::Connection::new(stream, frame::MAX_RESPONSE_FRAME);
    let hello = conn.handshake_as_gateway("cli").await.unwrap();
    assert_eq!(hello.build, "srv");
    server.await.unwrap();
}

#[test]
fn a_payload_is_head_data_and_tail() {
    let a = answer(r#""totals":{"input":5}"#);
    let text = a.payload_text();
    assert_eq!(
        text,
        r#"{"updatedAt":1795000000000,"totals":{"input":5},"cacheStatus":{"status":"fresh","cachedFiles":3,"pendingFiles":0,"staleFiles":0,"refreshedAt":1795000000001},"diagnostics":{"filesParsed":1}}"#
    );
    assert!(a.meta.json_tail(Some(CacheState::Stale)).contains(r#""status":"stale""#));
    // Payloads without answer-time fields (timeseries, logs) are just the data in braces.
    let bare = UsageAnswer {
        meta: AnswerMeta { updated_at: None, cache: None, diagnostics: None, rows_total: None },
        ..answer(r#""points":[]"#)
    };
    assert_eq!(bare.payload_text(), r#"{"points":[]}"#);
}

#[test]
fn an_answer_frame_is_its_head_then_its_data() {
    // For every string header size and id size, the head plus the data is exactly the frame
    // `encode` makes of the whole message.
    for len in [1usize, 31, 32, 255, 256, 65_535, 65_536, 300_000] {
        for id in [0u64, 200, u64::MAX - 3] {
            let data: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let a = answer(&data);
            let whole =
                frame::encode(&FromWorker::Response { id, result: Ok(UsageReply::Answer(a.clone())) })
                    .unwrap();
            let mut head =
                frame::answer_frame_head(id, &a.meta, &a.stats, a.fingerprint, data.len()).unwrap();
            head.extend_from_slice(data.as_bytes());
            assert_eq!(head, whole, "len {len}, id {id}");
        }
    }
}

/// The exact bytes of representative messages. A renamed field, a renamed variant or a new
/// required field changes them; a deliberate wire change updates the snapshot AND bumps
/// [`version::CURRENT`] when an older peer could not read the new bytes.
#[test]
fn wire_snapshots() {
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    let hello = Hello { protocol: version::CURRENT, build: "b".into(), pid: 7 };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("hello", frame::encode(&ToWorker::Hello(hello)).unwrap()),
        ("request", frame::encode(&ToWorker::Request { id: 1, query: query(), known: None }).unwrap()),
        (
            "answer",
            frame::encode(&FromWorker::Response {
                id: 2,
                result: Ok(UsageReply::Answer(answer(r#""a":1"#))),
            })
            .unwrap(),
        ),
        (
            "error",
            frame::encode(&FromWorker::Response {
                id: 3,
                result: Err(WorkerError::new(WorkerErrorKind::InvalidRequest, "no")),
            })
            .unwrap(),
        ),
    ];
    let got: Vec<String> = cases.iter().map(|(name, bytes)| format!("{name} {}", hex(bytes))).collect();
    let expected: Vec<&str> = WIRE_SNAPSHOT.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(got, expected, "the wire changed: see the comment above `wire_snapshots`");
}

const WIRE_SNAPSHOT: &str = include_str!("wire_snapshot.txt");

/// Property tests of the frame decoder against bytes from a peer that lies or is corrupt:
/// 256 cases each in CI; a long run: `PROPTEST_CASES=200000 cargo test --release -p ipc-proto fuzz_`.
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn frames() -> Vec<Vec<u8>> {
        vec![
            frame::encode(&ToWorker::Request { id: 1, query: query(), known: Some(9) }).unwrap(),
            frame::encode(&FromWorker::Response {
                id: 2,
                result: Ok(UsageReply::Answer(answer(r#""a":1"#))),
            })
            .unwrap(),
            frame::encode(&FromWorker::Pong { seq: 3, memory: MemoryReport { heap_bytes: 1, rss_bytes: 2 } })
                .unwrap(),
        ]
    }

    proptest! {
        #[test]
        fn fuzz_any_bytes_are_a_typed_error_or_a_message(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = frame::decode_frame::<ToWorker>(&bytes, frame::MAX_REQUEST_FRAME);
            let _ = frame::decode_frame::<FromWorker>(&bytes, frame::MAX_RESPONSE_FRAME);
            if bytes.len() >= 4 {
                let body = bytes::Bytes::copy_from_slice(&bytes[4..]);
                let _ = frame::decode_shared::<FromWorker>(&body);
            }
        }

        #[test]
        fn fuzz_corrupted_frames_never_panic(which in 0..3usize, at in any::<usize>(), flip in 1..=255u8, cut in 0..16usize) {
            let mut f = frames()[which].clone();
            let at = at % f.len();
            f[at] ^= flip;
            f.truncate(f.len().saturating_sub(cut));
            let _ = frame::decode_frame::<ToWorker>(&f, frame::MAX_REQUEST_FRAME);
            let _ = frame::decode_frame::<FromWorker>(&f, frame::MAX_RESPONSE_FRAME);
        }

        /// Whatever bytes a worker sends, reading them as the supervisor does (frame by frame,
        /// then decoded) gives messages, the end, or a frame error, never an I/O error: the
        /// supervisor takes only an I/O error for the connection ending (logged at debug), so
        /// garbage from a lying worker is still reported as a bad frame.
        #[test]
        fn fuzz_bytes_from_a_worker_are_never_an_io_error(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut stream: &[u8] = &bytes;
            let end = rt.block_on(async {
                loop {
                    match frame::read_frame(&mut stream, frame::MAX_RESPONSE_FRAME).await {
                        Ok(Some(body)) => {
                            if let Err(e) = frame::decode_owned::<FromWorker>(body) {
                                return Some(e);
                            }
                        }
                        Ok(None) => return None,
                        Err(e) => return Some(e),
                    }
                }
            });
            prop_assert!(!matches!(end, Some(ProtoError::Io(_))), "{:?}", end);
        }

        #[test]
        fn fuzz_a_huge_length_prefix_allocates_nothing(len in (frame::MAX_REQUEST_FRAME + 1)..u32::MAX) {
            let mut f = len.to_be_bytes().to_vec();
            f.extend_from_slice(&[0x80; 8]);
            let is_too_large = matches!(
                frame::decode_frame::<ToWorker>(&f, frame::MAX_REQUEST_FRAME),
                Err(ProtoError::FrameTooLarge { .. })
            );
            prop_assert!(is_too_large);
        }
    }
}
