//! Arbitrary bytes, in arbitrary chunks, through the frame decoder. Invariants: no panic; every
//! byte fed is either in a decoded frame or still buffered (frames are exact slices of the input,
//! in order); chunking does not change the outcome; every decoded frame re-parses to the same
//! frame, and rewriting its msgid/RequestID yields a frame that parses to what rewrite reported.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sigsci_proxy_fuzz::codec::{Frame, FrameCodec, Limits};
use tokio_util::codec::Decoder;

/// Decodes `input` fed in chunks of the given sizes (cycled); returns the frames, whether an error
/// stopped decoding, and how many bytes were left buffered.
fn run(input: &[u8], chunks: &[u8], limits: Limits) -> (Vec<Frame>, bool, usize) {
    let mut codec = FrameCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    while fed < input.len() {
        let size = sizes.next().map_or(input.len(), |&s| usize::from(s) + 1);
        let to = (fed + size).min(input.len());
        buf.extend_from_slice(&input[fed..to]);
        fed = to;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true, buf.len()),
            }
        }
    }
    (frames, false, buf.len())
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let (chunks, input) = rest.split_at(usize::from(ctl & 0x07).min(rest.len()));
    let limits = if ctl & 0x08 == 0 {
        Limits::default()
    } else {
        Limits { max_frame_bytes: 256, max_depth: 4 }
    };

    let (frames, failed, left) = run(input, chunks, limits);
    let one_shot = run(input, &[], limits);
    // Same frames and same verdict however the bytes arrive (an error may come before the rest of
    // the input is fed, so the leftover count is compared only when decoding did not fail).
    assert_eq!((&frames, failed), (&one_shot.0, one_shot.1), "chunking changed the outcome");
    if !failed {
        assert_eq!(left, one_shot.2, "chunking changed what is left buffered");
    }

    let mut at = 0;
    for frame in &frames {
        let len = frame.as_bytes().len();
        assert!(len <= limits.max_frame_bytes);
        assert_eq!(frame.as_bytes(), &input[at..at + len], "frame is not the next input slice");
        at += len;
        let reparsed = Frame::parse(Bytes::copy_from_slice(frame.as_bytes()), &limits).expect("re-parse");
        assert_eq!(&reparsed, frame);

        if frame.msgid().is_some() {
            let id = frame.request_id().map(|id| [id, b".tok"].concat());
            let new = frame.rewrite(Some(u64::from(ctl) << 40), id.as_deref()).expect("rewrite");
            let big = Limits { max_frame_bytes: usize::MAX, ..limits };
            assert_eq!(Frame::parse(new.clone().into_bytes(), &big).expect("rewritten parses"), new);
            assert_eq!(new.msgid(), Some(u64::from(ctl) << 40));
            assert_eq!(new.request_id(), id.as_deref());
            assert_eq!(new.method_name(), frame.method_name());
        }
    }
    if !failed {
        assert_eq!(at + left, input.len(), "bytes lost or invented");
    } else {
        assert!(at + left <= input.len());
    }
});
