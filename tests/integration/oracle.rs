//! Feeding the same bytes to tmux (a real terminal) and to crterm's model.

use crate::common::{CapCell, TempDir, Tmux, parse_capture, trim_cells};
use crterm::term_model::{Attrs, Color, MouseEncoding, MouseTracking, Term, model_of};
use std::time::Duration;

pub fn color_name(c: Color) -> Option<String> {
    match c {
        Color::Default => None,
        Color::Named(n) => Some(format!("n{n}")),
        Color::Indexed(i) => Some(format!("i{i}")),
        Color::Rgb(r, g, b) => Some(format!("rgb{r},{g},{b}")),
    }
}

/// The model's visible screen in the shape `parse_capture` gives tmux's.
pub fn model_cells(term: &Term) -> Vec<Vec<CapCell>> {
    grid_cells(term, term.grid())
}

/// One screen of the model (visible or not) in the shape `parse_capture` gives tmux's.
pub fn grid_cells(term: &Term, grid: &crterm::term_model::Grid) -> Vec<Vec<CapCell>> {
    let mut rows = Vec::new();
    for line in 0..term.lines {
        let row = grid.row(line);
        let mut cells = Vec::new();
        for col in 0..term.cols {
            let cell = row.cell(col);
            if cell.is_spacer() {
                continue;
            }
            let mut text = cell.ch.to_string();
            if let Some(m) = row.combining_at(col) {
                text.push_str(m);
            }
            let a = cell.attrs;
            let mut names: Vec<&str> = Vec::new();
            for (bit, name) in [
                (Attrs::BOLD, "bold"),
                (Attrs::DIM, "dim"),
                (Attrs::ITALIC, "italic"),
                (Attrs::UNDERLINE, "ul"),
                (Attrs::DOUBLE_UNDERLINE, "ul2"),
                (Attrs::CURLY_UNDERLINE, "ul3"),
                (Attrs::DOTTED_UNDERLINE, "ul4"),
                (Attrs::DASHED_UNDERLINE, "ul5"),
                (Attrs::BLINK, "blink"),
                (Attrs::REVERSE, "reverse"),
                (Attrs::HIDDEN, "hidden"),
                (Attrs::STRIKE, "strike"),
            ] {
                if a.has(bit) {
                    names.push(name);
                }
            }
            names.sort();
            let mut sgr = String::new();
            for n in names {
                sgr.push_str(n);
                sgr.push(' ');
            }
            if let Some(f) = color_name(cell.fg) {
                sgr.push_str(&format!("fg={f} "));
            }
            if let Some(b) = color_name(cell.bg) {
                sgr.push_str(&format!("bg={b} "));
            }
            cells.push(CapCell {
                text,
                sgr: sgr.trim_end().to_string(),
            });
        }
        trim_cells(&mut cells);
        rows.push(cells);
    }
    rows
}

/// The modes and cursor tmux reports, in a comparable line.
const STATE_FORMAT: &str = "cursor=#{cursor_x},#{cursor_y} alt=#{alternate_on} \
    show=#{cursor_flag} insert=#{insert_flag} ckm=#{keypad_cursor_flag} kp=#{keypad_flag} \
    wrap=#{wrap_flag} origin=#{origin_flag} mouse=#{mouse_standard_flag}#{mouse_button_flag}#{mouse_all_flag} \
    sgr=#{mouse_sgr_flag} utf8=#{mouse_utf8_flag} region=#{scroll_region_upper},#{scroll_region_lower}";

pub fn model_state(t: &Term) -> String {
    let m = &t.modes;
    let b = |x: bool| u8::from(x);
    // tmux keeps the pending-wrap column one past the last, as the model does.
    format!(
        "cursor={},{} alt={} show={} insert={} ckm={} kp={} wrap={} origin={} mouse={}{}{} sgr={} utf8={} region={},{}",
        t.cursor.col,
        t.cursor.line,
        b(t.alt_active),
        b(m.cursor_visible),
        b(m.insert),
        b(m.cursor_keys_app),
        b(m.keypad_app),
        b(m.autowrap),
        b(m.origin),
        b(m.mouse_tracking == MouseTracking::Normal),
        b(m.mouse_tracking == MouseTracking::ButtonMotion),
        b(m.mouse_tracking == MouseTracking::AnyMotion),
        b(m.mouse_encoding == MouseEncoding::Sgr),
        b(m.mouse_encoding == MouseEncoding::Utf8),
        t.scroll_top,
        t.scroll_bottom,
    )
}

/// What tmux holds after reading `bytes`.
pub struct TmuxView {
    pub screen: Vec<Vec<CapCell>>,
    /// The primary screen kept under the alternate screen, when that is showing.
    pub saved_primary: Option<Vec<Vec<CapCell>>>,
    pub state: String,
    pub title: String,
    /// The scrollback's text, a line per row (trailing blanks dropped), oldest first.
    pub history: Vec<String>,
}

/// What tmux shows after reading `bytes`: its screen cells and its state line.
pub fn tmux_view(cols: u16, lines: u16, bytes: &[u8]) -> TmuxView {
    tmux_view_resized(cols, lines, bytes, &[])
}

/// What tmux shows after reading `bytes` in a pane of `cols` x `lines`, then being resized
/// to each of `sizes` in turn; with the whole scrollback's text (`history`), joined rows
/// not (one line per row), oldest first, when `sizes` is not empty.
pub fn tmux_view_resized(cols: u16, lines: u16, bytes: &[u8], sizes: &[(u16, u16)]) -> TmuxView {
    let dir = TempDir::new("crterm-oracle");
    let file = dir.path().join("bytes");
    let done = dir.path().join("done");
    std::fs::write(&file, bytes).unwrap();
    let tmux = Tmux::new();
    let cmd = format!(
        "stty raw -echo; cat {}; touch {}; exec sleep 100000",
        file.display(),
        done.display()
    );
    tmux.start("o", cols, lines, &cmd);
    crate::common::wait_for("the bytes to be written", Duration::from_secs(20), || {
        done.exists().then_some(())
    });
    tmux.settle("o");
    for (c, l) in sizes {
        tmux.ok(&[
            "resize-window",
            "-t",
            "o",
            "-x",
            &c.to_string(),
            "-y",
            &l.to_string(),
        ]);
    }
    let cap = tmux.settle("o");
    let state = tmux.display("o", STATE_FORMAT);
    let hsize: usize = tmux
        .display("o", "#{history_size}")
        .trim()
        .parse()
        .unwrap_or(0);
    let history = if hsize == 0 {
        Vec::new()
    } else {
        tmux.ok(&["capture-pane", "-p", "-S", "-", "-E", "-1", "-t", "o"])
            .lines()
            .take(hsize)
            .map(|l| l.trim_end().to_string())
            .collect()
    };
    let title = tmux.display("o", "#{pane_title}");
    let mut screen = parse_capture(&cap);
    screen.truncate(lines as usize);
    let saved_primary = (tmux.display("o", "#{alternate_on}") == "1").then(|| {
        let cap = tmux.ok(&["capture-pane", "-p", "-e", "-N", "-a", "-t", "o"]);
        let mut rows = parse_capture(&cap);
        rows.truncate(lines as usize);
        rows
    });
    TmuxView {
        screen,
        saved_primary,
        state,
        title,
        history,
    }
}

fn diff_rows(a: &[Vec<CapCell>], b: &[Vec<CapCell>]) -> Option<String> {
    for (i, (ra, rb)) in a.iter().zip(b.iter()).enumerate() {
        if ra != rb {
            let col = ra
                .iter()
                .zip(rb.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(ra.len().min(rb.len()));
            let text = |r: &[CapCell]| r.iter().map(|c| c.text.as_str()).collect::<String>();
            return Some(format!(
                "row {i} differs at cell {col}:\n tmux:  {:?}\n model: {:?}\n tmux cell:  {:?}\n model cell: {:?}",
                text(ra),
                text(rb),
                ra.get(col),
                rb.get(col)
            ));
        }
    }
    None
}

/// The scrollback's text as `TmuxView::history` has tmux's.
pub fn model_history(term: &Term) -> Vec<String> {
    term.primary
        .history
        .iter()
        .map(|r| {
            let text: String = r
                .cells
                .iter()
                .filter(|c| !c.is_spacer())
                .map(|c| c.ch)
                .collect();
            text.trim_end().to_string()
        })
        .collect()
}

/// Assert that the model, fed `bytes` at `cols` x `lines` and then resized to each of
/// `sizes`, shows what tmux shows after the same (screen, cursor and modes, scrollback).
pub fn assert_resizes_like_tmux(
    name: &str,
    cols: u16,
    lines: u16,
    bytes: &[u8],
    sizes: &[(u16, u16)],
) {
    let view = tmux_view_resized(cols, lines, bytes, sizes);
    let mut term = model_of(cols as usize, lines as usize, bytes);
    for &(c, l) in sizes {
        term.resize(c as usize, l as usize);
    }
    if let Some(d) = diff_rows(&view.screen, &model_cells(&term)) {
        panic!("{name}: model and tmux differ after resizing to {sizes:?}\n{d}");
    }
    assert_eq!(
        view.state,
        model_state(&term),
        "{name}: cursor and modes after {sizes:?}"
    );
    assert_eq!(
        view.history,
        model_history(&term),
        "{name}: scrollback after {sizes:?}"
    );
}

/// Assert that the model shows what tmux shows for `bytes`; returns the model.
pub fn assert_matches_tmux(name: &str, cols: u16, lines: u16, bytes: &[u8]) -> Term {
    let view = tmux_view(cols, lines, bytes);
    let term = model_of(cols as usize, lines as usize, bytes);
    let model_rows = model_cells(&term);
    if let Some(d) = diff_rows(&view.screen, &model_rows) {
        panic!("{name}: model and tmux differ\n{d}");
    }
    if let Some(saved) = &view.saved_primary
        && let Some(d) = diff_rows(saved, &grid_cells(&term, &term.primary))
    {
        panic!("{name}: the primary screen under the alternate one differs\n{d}");
    }
    assert_eq!(view.state, model_state(&term), "{name}: cursor and modes");
    if !term.title.is_empty() {
        assert_eq!(view.title, term.title, "{name}: title");
    }
    term
}

/// The shortest prefix of `bytes` on which the model and tmux differ (for investigating a
/// failing stream: `cargo run --example bisect_stream -- FILE`).
#[allow(dead_code)] // the tool's, not a test's
pub fn first_divergence(cols: u16, lines: u16, bytes: &[u8]) -> Option<usize> {
    let differs = |n: usize| {
        let b = &bytes[..n];
        std::panic::catch_unwind(|| {
            assert_matches_tmux("bisect", cols, lines, b);
        })
        .is_err()
    };
    if !differs(bytes.len()) {
        return None;
    }
    // Later bytes can hide an earlier difference, so scan forward in steps before
    // bisecting inside the first step that differs.
    let step = 64;
    let mut good = 0;
    let mut bad = bytes.len();
    let mut at = step;
    while at < bytes.len() {
        if differs(at) {
            bad = at;
            break;
        }
        good = at;
        at += step;
    }
    while bad - good > 1 {
        let mid = (good + bad) / 2;
        if differs(mid) {
            bad = mid;
        } else {
            good = mid;
        }
    }
    Some(bad)
}
