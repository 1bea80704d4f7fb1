//! Frame decoding (header parse, unmask in place, UTF-8 check) and encoding, 16 B to 64 KiB, in bytes per
//! second. Run: `cargo bench --bench codec`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use loadtest::codec::{push_frame, OpCode};
use roomcast::internals::{encode_text, mask, FrameDecoder};

const SIZES: [usize; 6] = [16, 128, 1024, 4096, 16 * 1024, 64 * 1024];
/// Any masking key will do: the server unmasks whatever the client chose.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_text_frame");
    for size in SIZES {
        let mut frame = Vec::new();
        push_frame(&mut frame, OpCode::Text, "x".repeat(size).as_bytes(), MASK);
        let mut input = frame.clone();
        let mut decoder = FrameDecoder::default();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                // Decoding unmasks in place: restore the masked bytes first (a copy the size of the
                // frame, as a socket read into the shard buffer would be).
                input.copy_from_slice(&frame);
                std::hint::black_box(decoder.decode(&mut input, 1 << 20))
            })
        });
    }
    group.finish();
}

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in SIZES {
        let mut payload = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| mask(std::hint::black_box(&mut payload), [1, 2, 3, 4]))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_text_frame");
    for size in SIZES {
        let text = "x".repeat(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &text, |b, text| {
            b.iter(|| encode_text(std::hint::black_box(text)))
        });
    }
    group.finish();
}

criterion_group!(benches, decode, unmask, encode);
criterion_main!(benches);
