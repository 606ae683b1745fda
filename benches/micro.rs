//! Micro-benchmarks of the two hot paths the I/O models share: cutting lines out of a read
//! buffer ([`LineFramer`]) and one fan-out step of the chat core (a message to a room of N
//! members, handled by `Core::handle` and rendered once with `protocol::line::render`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pollchat::config::Config;
use pollchat::core::{ClientId, Command, Core, CoreLimits, MsgKind, Outbox};
use pollchat::framer::{Frame, LineFramer};
use pollchat::protocol::line;

fn framer(c: &mut Criterion) {
    let mut input = Vec::new();
    while input.len() < 64 * 1024 {
        input.extend_from_slice(
            b"pb 1 2 3 1234567890 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n",
        );
    }
    let mut group = c.benchmark_group("framer");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("64 KiB of 64-byte lines", |b| {
        let mut framer = LineFramer::default();
        b.iter(|| {
            let mut rest = &input[..];
            let mut n = 0;
            while let Some(frame) = framer.next_frame(&mut rest, 4096) {
                if let Frame::Line(l) = frame {
                    n += l.len();
                }
            }
            black_box(n)
        })
    });
    // A client that sends one long line a byte per segment: each read adds one byte to the
    // unfinished line, which must not be rescanned every time (that was O(n²)).
    let long = vec![b'x'; 64 * 1024];
    group.bench_function("a 64 KiB line a byte per read", |b| {
        b.iter(|| {
            let mut framer = LineFramer::default();
            for byte in long.chunks(1) {
                let mut rest = byte;
                black_box(framer.next_frame(&mut rest, 1 << 20).is_some());
                black_box(framer.has_backlog());
            }
            let mut end: &[u8] = b"\n";
            black_box(framer.next_frame(&mut end, 1 << 20).is_some())
        })
    });
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("core fan-out");
    for members in [10usize, 100, 1000] {
        let mut core = Core::new(
            CoreLimits {
                history: 50,
                max_rooms: 32,
                big_room: Config::default().big_room,
                room_history_bytes: usize::MAX,
                history_bytes: usize::MAX,
                max_total_rooms: usize::MAX,
                nick_delay: 0,
            },
            0,
        );
        let mut out = Outbox::default();
        for id in 0..members {
            core.connect(
                ClientId(id),
                std::net::Ipv4Addr::LOCALHOST.into(),
                0,
                &mut Outbox::default(),
            );
            core.handle(ClientId(id), Command::Join("#bench".into()), 0, &mut out);
        }
        out.clear();
        let text = "x".repeat(64);
        // Stands in for the recipients' output queues: one pointer push per recipient.
        let mut queued: Vec<std::rc::Rc<[u8]>> = Vec::with_capacity(members);
        group.throughput(Throughput::Elements(members as u64 - 1));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                let say = Command::Say {
                    room: None,
                    text: text.clone(),
                    kind: MsgKind::Normal,
                    echo: false,
                    tags: None,
                };
                core.handle(ClientId(0), say, 1, &mut out);
                for (event, to) in out.iter() {
                    let bytes: std::rc::Rc<[u8]> = line::render(event).into();
                    queued.extend(to.iter().map(|_| std::rc::Rc::clone(&bytes)));
                }
                out.clear();
                let n = black_box(queued.len());
                queued.clear();
                n
            })
        });
    }
    group.finish();
}

criterion_group!(benches, framer, fan_out);
criterion_main!(benches);
