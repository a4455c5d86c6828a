//! Criterion benchmarks of the shared core's hot paths: what every request, frame and broadcast
//! costs before any system call.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use c10k_lab::app::hub::{Encoding, Hub};
use c10k_lab::app::outq::OutQueue;
use c10k_lab::app::route;
use c10k_lab::proto::{http, sse, ws};

const PROBE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

fn http_heads(c: &mut Criterion) {
    c.bench_function("http/parse+route probe request", |b| {
        b.iter(|| {
            let (head, n) = http::parse_request_head(black_box(PROBE)).unwrap().unwrap();
            black_box((route::route(&head), n))
        })
    });
    let mut chunked = Vec::new();
    for _ in 0..64 {
        http::write_chunk(&mut chunked, &[b'x'; 1024]);
    }
    chunked.extend_from_slice(http::LAST_CHUNK);
    let mut g = c.benchmark_group("http/chunked body");
    g.throughput(Throughput::Bytes(chunked.len() as u64));
    g.bench_function("decode 64 x 1 KiB", |b| {
        let mut out = Vec::with_capacity(64 * 1024);
        b.iter(|| {
            out.clear();
            let mut d = http::BodyDecoder::new(http::BodyFraming::Chunked, u64::MAX);
            d.decode(black_box(&chunked), &mut out).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

fn websocket(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws/decode masked text");
    for size in [16usize, 1024, 64 * 1024] {
        let text = "é".repeat(size / 2);
        let mut frame = Vec::new();
        ws::encode_frame(
            &mut frame,
            ws::OpCode::Text,
            text.as_bytes(),
            Some([1, 2, 3, 4]),
        );
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &frame, |b, frame| {
            b.iter(|| {
                let mut d = ws::Decoder::new(ws::Role::Server, 1 << 20);
                black_box(d.decode(black_box(frame)).unwrap())
            })
        });
    }
    g.finish();
    c.bench_function("ws/accept key", |b| {
        b.iter(|| ws::accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
}

fn server_sent_events(c: &mut Criterion) {
    let mut hub = Hub::new(1024, usize::MAX);
    let mut stream = Vec::new();
    for i in 0..100 {
        stream.extend_from_slice(hub.publish_tick(i).bytes(Encoding::Sse));
    }
    let mut g = c.benchmark_group("sse/parse");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("100 tick events", |b| {
        let mut events = Vec::with_capacity(100);
        b.iter(|| {
            events.clear();
            let mut p = sse::Parser::new();
            p.feed(black_box(&stream), &mut events);
            black_box(events.len())
        })
    });
    g.finish();
}

fn broadcast(c: &mut Criterion) {
    c.bench_function("hub/publish and encode for every wire", |b| {
        let mut hub = Hub::new(1024, usize::MAX);
        let mut t = 0;
        b.iter(|| {
            t += 1;
            let event = hub.publish_message("a short chat message", t);
            // Encodings are made when first asked for: ask for each, as subscribers would.
            for encoding in [Encoding::Sse, Encoding::Chunk, Encoding::Ws, Encoding::Json] {
                black_box(event.bytes(encoding));
            }
        })
    });
    let mut g = c.benchmark_group("hub/fan-out one event into N write queues");
    for n in [1_000usize, 10_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let mut hub = Hub::new(1024, usize::MAX);
            let mut queues: Vec<OutQueue> = (0..n).map(|_| OutQueue::default()).collect();
            b.iter(|| {
                let event = hub.publish_tick(1);
                for q in &mut queues {
                    q.push_event(&event, Encoding::Sse);
                }
                for q in &mut queues {
                    q.clear();
                }
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    http_heads,
    websocket,
    server_sent_events,
    broadcast
);
criterion_main!(benches);
