//! Client bytes into a session's frame decoder, whole and cut in pieces, with and without
//! permessage-deflate negotiated (then RSV1 frames are inflated): it must never panic, and where the cuts
//! fall must not change what it decodes or which error ends it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::internals::FrameDecoder;

const MAX_MESSAGE: usize = 1 << 16;
const MAX_FRAMES: u32 = 64;

fn decode(pieces: &[&[u8]], deflate: bool) -> (usize, Option<roomcast::ProtocolError>) {
    let mut decoder = if deflate {
        FrameDecoder::with_deflate()
    } else {
        FrameDecoder::default()
    };
    let mut total = 0;
    for piece in pieces {
        let mut input = piece.to_vec();
        let (bytes, error) = decoder.feed(&mut input, MAX_MESSAGE, MAX_FRAMES);
        total += bytes;
        if error.is_some() {
            return (total, error);
        }
    }
    (total, None)
}

fuzz_target!(|data: &[u8]| {
    // The first byte says where to cut the rest: every `step` bytes.
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step.max(1));
    let pieces: Vec<&[u8]> = stream.chunks(step).collect();
    for deflate in [false, true] {
        assert_eq!(decode(&[stream], deflate), decode(&pieces, deflate));
    }
});
