//! The model against tmux on generated streams, and repaint round trips.

use crate::oracle::assert_matches_tmux;
use crterm::term_model::{Term, TermParser, model_of};

/// Escape sequences by name, so the streams below read as what they do.
mod seq {
    pub fn cup(line: u16, col: u16) -> String {
        format!("\x1b[{line};{col}H")
    }
    pub fn region(top: u16, bottom: u16) -> String {
        format!("\x1b[{top};{bottom}r")
    }
    pub fn sgr(params: &str) -> String {
        format!("\x1b[{params}m")
    }
    pub const ALT_ON: &str = "\x1b[?1049h";
    pub const ALT_OFF: &str = "\x1b[?1049l";
    pub const SAVE: &str = "\x1b7";
    pub const RESTORE: &str = "\x1b8";
    pub const ORIGIN_ON: &str = "\x1b[?6h";
    pub const WRAP_OFF: &str = "\x1b[?7l";
    pub const INSERT_ON: &str = "\x1b[4h";
    pub const LINE_DRAWING_G0: &str = "\x1b(0";
    pub const ASCII_G0: &str = "\x1b(B";
    pub const CLEAR: &str = "\x1b[2J";
    pub const EL: &str = "\x1b[K";
    pub const RI: &str = "\x1bM";
}

fn numbered_lines(n: usize) -> String {
    (1..=n).map(|i| format!("line {i}\r\n")).collect()
}

pub fn generated_streams() -> Vec<(&'static str, String)> {
    use seq::*;
    vec![
        ("plain text and scrolling", numbered_lines(60)),
        (
            "sgr colours and attributes",
            format!(
                "{}bold{} {}dim{} {}ital{} {}ul{} {}ul2{} {}blink{} {}rev{} {}strike{}\r\n{}red{}bright{}i200{}rgb{}bg{}\r\n{}named bg to eol{}{}",
                sgr("1"), sgr("0"), sgr("2"), sgr("22"), sgr("3"), sgr("23"), sgr("4"),
                sgr("24"), sgr("4:2"), sgr("0"), sgr("5"), sgr("25"), sgr("7"), sgr("27"),
                sgr("9"), sgr("0"), sgr("31"), sgr("91"), sgr("38;5;200"),
                sgr("38;2;10;20;30"), sgr("48;5;17"), sgr("0"), sgr("44"), EL, sgr("0")
            ),
        ),
        (
            "scrolling region like screen's status line",
            format!(
                "{}{}{}status line{}{}{}{}",
                CLEAR,
                cup(24, 1),
                sgr("7"),
                sgr("0"),
                region(1, 23),
                cup(23, 1),
                numbered_lines(40)
            ),
        ),
        (
            "reverse index at the top of a region",
            format!(
                "{}{}{}{}{}{}{}{}",
                numbered_lines(24),
                region(5, 10),
                cup(5, 1),
                RI,
                RI,
                "inserted",
                cup(10, 1),
                "\n\n\nend"
            ),
        ),
        (
            "alternate screen in and out",
            format!(
                "before alt\r\n{}{}in alt{}{}after",
                ALT_ON,
                cup(5, 5),
                ALT_OFF,
                ""
            ),
        ),
        (
            "alternate screen left on",
            format!("primary text\r\n{}{}{}alt text", ALT_ON, cup(3, 3), sgr("1;32")),
        ),
        (
            "wide and combining characters",
            "日本語のテキスト\r\ne\u{301}t\u{e9} cafe\u{301}\r\n\u{1F600}x\r\nab日本\r\n".to_string()
                + &"x".repeat(79)
                + "日\r\n",
        ),
        (
            "autowrap and pending wrap",
            "x".repeat(80) + "y" + &"z".repeat(80) + "\r\n" + &"w".repeat(80),
        ),
        (
            "no autowrap",
            format!("{}{}", WRAP_OFF, "a".repeat(100)),
        ),
        (
            "insert mode and editing",
            format!(
                "hello world{}{}XX{}\x1b[3P\x1b[2@\x1b[4X",
                cup(1, 3),
                INSERT_ON,
                "\x1b[4l"
            ),
        ),
        (
            "line drawing charset",
            format!("{}lqqqk\r\nx   x\r\nmqqqj{} ascii", LINE_DRAWING_G0, ASCII_G0),
        ),
        (
            "saved cursor and origin mode",
            format!(
                "{}{}{}saved{}{}{}origin{}",
                cup(10, 10),
                sgr("1"),
                SAVE,
                region(5, 15),
                ORIGIN_ON,
                cup(2, 2),
                RESTORE
            ),
        ),
        (
            "tabs",
            "a\tb\tc\r\n\x1b[3g\x1b[10G\x1bH\rx\ty\t\tz".to_string(),
        ),
        (
            "modes",
            "\x1b[?1h\x1b=\x1b[?25l\x1b[?1002h\x1b[?1006h\x1b[?2004h\x1b[?1004h\x1b]2;my title\x07\x1b[5 q".to_string(),
        ),
        (
            "erase operations",
            format!(
                "{}{}{}\x1b[1K{}\x1b[J{}\x1b[1J",
                numbered_lines(20),
                sgr("41"),
                cup(3, 4),
                cup(10, 3),
                cup(2, 2)
            ),
        ),
        (
            "screen's window title string is swallowed",
            "before\x1bkwindow title\x1b\\after\r\n\x1bkbel does not end\x07x\x1b\\\x1b[1mbold".to_string(),
        ),
        (
            "delete chars keeps combining marks that move left",
            "abcde\u{301}fg\x1b[1G\x1b[2P\x1b[3G\x1b[2@".to_string(),
        ),
        (
            "insert and delete lines",
            format!(
                "{}{}\x1b[3L{}\x1b[2M",
                numbered_lines(24),
                cup(5, 1),
                cup(12, 1)
            ),
        ),
    ]
}

/// Run `check` on every stream and report all failures together.
fn for_each_stream(streams: Vec<(&'static str, String)>, check: impl Fn(&str, &[u8])) {
    let failures: Vec<String> = streams
        .iter()
        .filter_map(|(name, s)| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(name, s.as_bytes())))
                .err()
                .map(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| format!("{name}: panicked"))
                })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn model_matches_tmux_on_generated_streams() {
    for_each_stream(generated_streams(), |name, bytes| {
        assert_matches_tmux(name, 80, 24, bytes);
    });
}

#[test]
fn repaint_reproduces_model_on_generated_streams() {
    for_each_stream(generated_streams(), |name, bytes| {
        let term = model_of(80, 24, bytes);
        assert_repaint_round_trip(name, &term);
    });
}

/// `model(repaint(model)) == model`, with a readable first difference on failure.
pub fn assert_repaint_round_trip(name: &str, term: &Term) {
    let again = model_of(term.cols, term.lines, &term.repaint());
    if let Some(d) = term_diff(term, &again) {
        panic!("{name}: model(repaint(model)) differs: {d}");
    }
}

pub fn term_diff(a: &Term, b: &Term) -> Option<String> {
    if a == b {
        return None;
    }
    for (which, ga, gb) in [
        ("primary", &a.primary, &b.primary),
        ("alternate", &a.alternate, &b.alternate),
    ] {
        if ga.history.len() != gb.history.len() {
            return Some(format!(
                "{which} history {} vs {} rows",
                ga.history.len(),
                gb.history.len()
            ));
        }
        for (i, (ra, rb)) in ga
            .history
            .iter()
            .chain(ga.rows.iter())
            .zip(gb.history.iter().chain(gb.rows.iter()))
            .enumerate()
        {
            if ra != rb {
                let col = ra
                    .cells
                    .iter()
                    .zip(rb.cells.iter())
                    .position(|(x, y)| x != y);
                return Some(format!(
                    "{which} row {i} (history {}): {:?} vs {:?}; wrapped {} vs {}; first cell diff {:?}: {:?} vs {:?}; combining {:?} vs {:?}",
                    ga.history.len(),
                    crterm::term_model::row_text(ra),
                    crterm::term_model::row_text(rb),
                    ra.wrapped,
                    rb.wrapped,
                    col,
                    col.map(|c| ra.cells[c]),
                    col.map(|c| rb.cells[c]),
                    ra.combining,
                    rb.combining,
                ));
            }
        }
    }
    let strip = |t: &Term| {
        let mut t = t.clone();
        t.primary = crterm::term_model::Grid::new(1, 1, 0);
        t.alternate = crterm::term_model::Grid::new(1, 1, 0);
        format!("{t:?}")
    };
    Some(format!("state:\n {}\n {}", strip(a), strip(b)))
}

#[test]
fn model_never_panics_on_hostile_counts() {
    let mut p = TermParser::new(crterm::term_model::Term::new(10, 5));
    for s in [
        "\x1b[99999999;99999999H",
        "\x1b[65535@",
        "\x1b[65535P",
        "\x1b[65535L",
        "\x1b[65535M",
        "\x1b[65535X",
        "\x1b[65535S",
        "\x1b[65535T",
        "\x1b[65535;1r",
        "\x1b[65535I",
        "\x1b[65535Z",
        "\x1b[65535b",
        "\x1b[0;0r",
        "\x1b[5;2r",
    ] {
        p.advance(s.as_bytes());
        p.advance("日".repeat(20).as_bytes());
    }
    p.term.resize(1, 1);
    p.advance("日本x\u{301}".as_bytes());
    p.term.resize(300, 100);
    p.advance(b"\x1b[?1049h\x1b[?1049h\x1b[?47l\x1b[?1049l");
}

#[test]
fn screen_title_string_split_anywhere() {
    let whole = "ab\x1bktitle\x1b\\cd\x1bkt2\x07x\x1b\\e\x1b[1mf\x1b";
    let expect = model_of(20, 3, b"abcde\x1b[1mf");
    let bytes = whole.as_bytes();
    for cut in 0..=bytes.len() {
        let mut p = TermParser::new(Term::new(20, 3));
        p.advance(&bytes[..cut]);
        p.advance(&bytes[cut..]);
        assert_eq!(term_diff(&expect, &p.term), None, "cut at {cut}");
    }
}

#[test]
fn model_survives_serialization() {
    // postcard is the image format's codec (docs/ARCHITECTURE.md); the model goes into
    // images whole, scrollback, saved cursors and modes included.
    for (name, stream) in generated_streams() {
        let term = model_of(80, 24, stream.as_bytes());
        assert_eq!(term.validate(), Ok(()), "{name}");
        let bytes = postcard::to_allocvec(&term).unwrap();
        let back: Term = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(term_diff(&term, &back), None, "{name}");
    }
}

/// The primary screen and its scrollback are reflowed on a change of width as tmux does:
/// lines that wrapped are joined and wrapped again (a wide character moves whole to the
/// next row), rows come down from the scrollback when there are fewer, and the cursor
/// stays on its character. Before, a narrower terminal cut every line at its width and a
/// wider one left wrapped lines apart.
#[test]
fn the_primary_screen_reflows_on_resize_like_tmux() {
    let mut shell = String::new();
    for i in 0..45 {
        shell.push_str(&format!("$ echo {i}\r\n{i}\r\n"));
        if i % 6 == 0 {
            let long: String = (0..130)
                .map(|k| (b'a' + (k + i) as u8 % 26) as char)
                .collect();
            shell.push_str(&format!("\x1b[1;32m{long}\x1b[m\r\n"));
        }
        if i % 11 == 0 {
            shell.push_str(&"\u{6f22}".repeat(55));
            shell.push_str("end\r\n");
        }
    }
    shell.push_str("$ partly typed command");
    let cases: [&[(u16, u16)]; 5] = [
        &[(80, 30)],
        &[(120, 30)],
        &[(80, 30), (100, 30)],
        &[(61, 20)],
        &[(133, 35), (70, 25)],
    ];
    for sizes in cases {
        crate::oracle::assert_resizes_like_tmux("shell", 100, 30, shell.as_bytes(), sizes);
    }
    // A screen not full yet: nothing comes from a scrollback, the cursor keeps its line.
    crate::oracle::assert_resizes_like_tmux(
        "short",
        100,
        30,
        format!("$ {}\r\n$ ls", "x".repeat(150)).as_bytes(),
        &[(60, 30), (100, 30)],
    );
}
