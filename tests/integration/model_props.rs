//! Property tests: the model never panics, and repaint reproduces it exactly, also after
//! more bytes arrive.

use crate::model::term_diff;
use crterm::term_model::{Term, TermParser, model_of};
use proptest::prelude::*;

/// Pieces of terminal output: text, controls, and escape sequences with parameters, plus
/// raw garbage, so that random streams reach deep into the model's state.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let csi_final = prop::sample::select(vec![
        'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'J', 'K', 'L', 'M', 'P', 'S', 'T', 'X', '@', 'd',
        'f', 'g', 'm', 'r', 's', 'u', 'I', 'Z', 'b',
    ]);
    let private_mode = prop::sample::select(vec![
        1u16, 6, 7, 9, 12, 25, 47, 1000, 1002, 1003, 1004, 1005, 1006, 1007, 1015, 1047, 1049,
        2004, 2026,
    ]);
    prop_oneof![
        4 => "[a-zA-Z0-9 .,:/-]{1,12}".prop_map(|s| s.into_bytes()),
        1 => prop::sample::select(vec!["日本", "語", "e\u{301}", "\u{1F600}", "\u{300}", "ﾊ", "ä"])
            .prop_map(|s| s.as_bytes().to_vec()),
        3 => prop::sample::select(vec!["\r", "\n", "\x08", "\t", "\r\n", "\x0e", "\x0f", "\x0b"])
            .prop_map(|s| s.as_bytes().to_vec()),
        4 => (csi_final, prop::collection::vec(0u16..30, 0..3)).prop_map(|(f, ps)| {
            let ps: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
            format!("\x1b[{}{}", ps.join(";"), f).into_bytes()
        }),
        2 => (prop::collection::vec(prop::sample::select(vec![0u16, 1, 2, 3, 4, 5, 7, 8, 9, 22, 24, 27, 31, 42, 39, 49, 91, 104]), 0..4))
            .prop_map(|ps| {
                let ps: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
                format!("\x1b[{}m", ps.join(";")).into_bytes()
            }),
        1 => prop::sample::select(vec!["\x1b[38;5;123m", "\x1b[48;2;1;2;3m", "\x1b[4:3m"])
            .prop_map(|s| s.as_bytes().to_vec()),
        3 => (private_mode, any::<bool>()).prop_map(|(m, on)| {
            format!("\x1b[?{}{}", m, if on { 'h' } else { 'l' }).into_bytes()
        }),
        1 => prop::sample::select(vec![4u16, 20]).prop_flat_map(|m| any::<bool>().prop_map(move |on| {
            format!("\x1b[{}{}", m, if on { 'h' } else { 'l' }).into_bytes()
        })),
        3 => prop::sample::select(vec![
            "\x1b7", "\x1b8", "\x1bM", "\x1bD", "\x1bE", "\x1bH", "\x1b=", "\x1b>", "\x1b(0",
            "\x1b(B", "\x1b)0", "\x1b#8", "\x1b]2;title\x07", "\x1b[22t", "\x1b[23t",
            "\x1b[3 q", "\x1b[3g", "\x1b[?5W", "\x1bc",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 1..8),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(token(), 0..80).prop_map(|ts| ts.concat())
}

fn size() -> impl Strategy<Value = (usize, usize)> {
    (1usize..40, 1usize..14)
}

fn advanced(term: Term, bytes: &[u8]) -> Term {
    let mut p = TermParser::new(term);
    p.advance(bytes);
    p.term
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever bytes make of a model, and a resize after them, the model is one an image
    /// may hold (`Term::validate`, which a resume applies, accepts it).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), (c, l) in size()) {
        let mut t = model_of(c, l, &bytes);
        prop_assert_eq!(t.validate(), Ok(()));
        t.resize(l + 3, c.saturating_sub(2));
        prop_assert_eq!(t.validate(), Ok(()));
        // And back, the text reflowed twice.
        t.resize(c, l);
        prop_assert_eq!(t.validate(), Ok(()));
        let _ = t.repaint();
        let _ = t.leave_sequence();
    }

    // Three lines at least: on a one- or two-line screen a wrapped last row cannot be
    // made without scrolling (DECSTBM needs two lines), a limit documented in repaint.rs.
    #[test]
    fn repaint_round_trips(bytes in stream(), more in stream(), c in 1usize..40, l in 3usize..14) {
        let show = |b: &[u8]| String::from_utf8_lossy(b).escape_debug().to_string();
        let ctx = format!("size {c}x{l} bytes \"{}\" more \"{}\"", show(&bytes), show(&more));
        let term = model_of(c, l, &bytes);
        let cursor_outside_region_in_origin_mode = term.modes.origin
            && (term.cursor.line < term.scroll_top || term.cursor.line > term.scroll_bottom);
        // The one state repaint documents it cannot reach (see place_cursor).
        prop_assume!(!cursor_outside_region_in_origin_mode);
        let again = model_of(c, l, &term.repaint());
        if let Some(d) = term_diff(&term, &again) {
            return Err(TestCaseError::fail(format!("right after: {d}\n{ctx}")));
        }
        let (a, b) = (advanced(term, &more), advanced(again, &more));
        if let Some(d) = term_diff(&a, &b) {
            return Err(TestCaseError::fail(format!("after continuation: {d}\n{ctx}")));
        }
    }
}
