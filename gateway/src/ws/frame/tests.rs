#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;

/// A masked client frame.
fn client(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn reader() -> Reader {
    Reader::new(64 << 10, 4 << 10)
}

#[test]
fn server_frames_are_complete_and_unmasked() {
    assert_eq!(&text(b"hi")[..], b"\x81\x02hi");
    let long = text(&[b'x'; 300]);
    assert_eq!(&long[..4], &[0x81, 126, 1, 44]);
    assert_eq!(long.len(), 304);
    let big = text(&vec![b'y'; 70_000]);
    assert_eq!(&big[..2], &[0x81, 127]);
    assert_eq!(big.len(), 70_010);
    assert_eq!(&pong(b"p")[..], b"\x8a\x01p");
    assert_eq!(&close(Some(4008), "slow")[..], b"\x88\x06\x0f\xa8slow");
    assert_eq!(close(Some(1000), &"é".repeat(100)).len(), 2 + 2 + 122, "cut at a char boundary under 125");
}

#[test]
fn fragments_are_joined_and_control_frames_may_interleave() {
    let mut r = reader();
    let mut wire = client(0x01, b"{\"op\":");
    wire.extend(client(0x89, b"hb"));
    wire.extend(client(0x80, b"\"ping\"}"));
    // Byte by byte: nothing is lost across partial reads.
    let mut got = Vec::new();
    for b in &wire {
        r.buffer().push(*b);
        while let Some(m) = r.next().unwrap() {
            got.push(m);
        }
        r.compact();
    }
    assert_eq!(got, [Incoming::Ping(b"hb".to_vec()), Incoming::Text("{\"op\":\"ping\"}".into())]);
    assert_eq!(r.allocated(), 0, "nothing pending, nothing held");
}

#[test]
fn the_buffer_exists_only_while_bytes_are_pending() {
    let mut r = reader();
    assert_eq!(r.allocated(), 0);
    let wire = client(0x81, b"hello");
    r.buffer().extend_from_slice(&wire[..3]);
    assert!(r.next().unwrap().is_none());
    r.compact();
    assert!(r.allocated() >= 3 && r.allocated() <= 4 << 10, "a partial frame keeps at most one chunk");
    r.buffer().extend_from_slice(&wire[3..]);
    assert_eq!(r.next().unwrap(), Some(Incoming::Text("hello".into())));
    r.compact();
    assert_eq!(r.allocated(), 0);
}

#[test]
fn a_large_frame_grows_the_buffer_to_fit_it() {
    let mut r = reader();
    let wire = client(0x81, &[b'a'; 10_000]);
    let mut got = None;
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let buf = r.buffer();
        let room = (buf.capacity() - buf.len()).min(rest.len());
        buf.extend_from_slice(&rest[..room]);
        rest = &rest[room..];
        if let Some(m) = r.next().unwrap() {
            got = Some(m);
        }
        r.compact();
    }
    assert_eq!(got, Some(Incoming::Text("a".repeat(10_000))));
}

#[test]
fn violations_close_with_their_codes() {
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (client(0x81, &vec![b'a'; (64 << 10) + 1]), 1009),
        (b"\x81\x02hi".to_vec(), 1002),
        (client(0x80, b"x"), 1002),
        (client(0x09, b"x"), 1002),
        (client(0xC1, b"x"), 1002),
        (client(0x81, &[0xff, 0xfe]), 1007),
        (client(0x83, b"x"), 1002),
    ];
    for (wire, code) in cases {
        let mut r = reader();
        r.extend(&wire);
        assert_eq!(r.next().map_err(|v| v.code), Err(code), "{:x?}", &wire[..2]);
    }
    let mut r = reader();
    let mut wire = client(0x01, &vec![b'a'; 40 << 10]);
    wire.extend(client(0x80, &vec![b'a'; 30 << 10]));
    r.extend(&wire);
    assert_eq!(r.next(), Err(TOO_BIG), "the limit holds for the whole fragmented message");
}

#[test]
fn close_and_binary_frames() {
    let mut r = reader();
    r.extend(&client(0x88, &1000u16.to_be_bytes()));
    r.extend(&client(0x88, b""));
    r.extend(&client(0x82, b"\x00"));
    assert_eq!(r.next().unwrap(), Some(Incoming::Close(Some(1000))));
    assert_eq!(r.next().unwrap(), Some(Incoming::Close(None)));
    assert_eq!(r.next().unwrap(), Some(Incoming::Binary));
    assert_eq!(r.next().unwrap(), None);
}
