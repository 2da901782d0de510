//! Wire tests: round trips and every kind of bad input, each a typed error, never a panic.

use crate::{
    AgentScope, DayZone, FromWorker, GroupBy, Hello, JobStats, MemoryReport, Method, ProtoError, ToWorker,
    UsageAnswer, UsageQuery, WorkerError, WorkerErrorKind, frame, version,
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
    round_trip_to_worker(ToWorker::Request { id: 7, query: query() });
    round_trip_to_worker(ToWorker::Cancel { id: 7 });
    round_trip_to_worker(ToWorker::Ping { seq: u64::MAX });
    round_trip_to_worker(ToWorker::Shutdown);
    round_trip_from_worker(FromWorker::Hello(Hello::ours("test")));
    round_trip_from_worker(FromWorker::Pong { seq: 3, memory: MemoryReport { heap_bytes: 1, rss_bytes: 2 } });
    round_trip_from_worker(FromWorker::Response {
        id: 9,
        result: Ok(UsageAnswer {
            payload_json: r#"{"totals":{}}"#.into(),
            stats: JobStats { files_total: 3, ..JobStats::default() },
        }),
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
    let bytes = frame::encode(&ToWorker::Request { id: 1, query: query() }).unwrap();
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
