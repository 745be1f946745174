//! `repaint`: the bytes that bring a fresh terminal into the state of a `Term`, and
//! `leave_sequence`: the bytes that take the user's terminal out of the session's modes
//! when a client detaches.
//!
//! The output is plain ECMA-48/xterm that any terminal crterm runs in understands. Painting
//! the primary screen writes the scrollback first and lets it scroll off the top, so the
//! outer terminal's own history gets the session's history too.

use super::cell::{Attrs, Cell, Color, Pen};
use super::grid::{Grid, Row};
use super::{Charset, MouseEncoding, MouseTracking, SavedCursor, Term, default_tabs};
use std::fmt::Write;

struct Painter {
    out: String,
    pen: Pen,
}

impl Painter {
    fn esc(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn goto(&mut self, line: usize, col: usize) {
        let _ = write!(self.out, "\x1b[{};{}H", line + 1, col + 1);
    }

    fn set_pen(&mut self, pen: Pen) {
        if pen == self.pen {
            return;
        }
        self.out.push_str(&sgr(pen));
        self.pen = pen;
    }

    /// Write one row's cells from column 0; `full` writes every column (needed where the
    /// row wraps into the next one), else up to the last cell that is not a default blank,
    /// but at least `min` cells.
    fn row(&mut self, row: &Row, cols: usize, full: bool, min: usize) -> usize {
        let len = if full {
            cols
        } else {
            row.cells
                .iter()
                .rposition(|c| !c.is_default_blank())
                .map_or(0, |p| p + 1)
                .max(
                    row.combining
                        .iter()
                        .map(|(c, _)| *c as usize + 1)
                        .max()
                        .unwrap_or(0),
                )
                .max(min)
                .min(cols)
        };
        for col in 0..len {
            let cell = row.cell(col);
            if cell.is_spacer() && col > 0 && row.cell(col - 1).is_wide() {
                continue;
            }
            self.cell(&cell, row.combining_at(col));
        }
        len
    }

    /// Write the last glyph of a row again (the whole wide character if it ends there),
    /// which leaves the cursor in the pending-wrap state.
    fn rewrite_last_glyph(&mut self, screen_line: usize, row: &Row) {
        let last = row.cells.len().saturating_sub(1);
        let start = if last > 0 && row.cell(last).is_spacer() && row.cell(last - 1).is_wide() {
            last - 1
        } else {
            last
        };
        self.goto(screen_line, start);
        self.cell(&row.cell(start), row.combining_at(start));
    }

    fn cell(&mut self, cell: &Cell, marks: Option<&str>) {
        self.set_pen(cell.pen());
        self.out.push(cell.ch);
        if let Some(m) = marks {
            self.out.push_str(m);
        }
    }
}

pub fn sgr(pen: Pen) -> String {
    let mut s = String::from("\x1b[0");
    let a = pen.attrs;
    for (bit, code) in [
        (Attrs::BOLD, "1"),
        (Attrs::DIM, "2"),
        (Attrs::ITALIC, "3"),
        (Attrs::UNDERLINE, "4"),
        (Attrs::DOUBLE_UNDERLINE, "4:2"),
        (Attrs::CURLY_UNDERLINE, "4:3"),
        (Attrs::DOTTED_UNDERLINE, "4:4"),
        (Attrs::DASHED_UNDERLINE, "4:5"),
        (Attrs::BLINK, "5"),
        (Attrs::REVERSE, "7"),
        (Attrs::HIDDEN, "8"),
        (Attrs::STRIKE, "9"),
    ] {
        if a.has(bit) {
            s.push(';');
            s.push_str(code);
        }
    }
    color_params(&mut s, pen.fg, 30);
    color_params(&mut s, pen.bg, 40);
    s.push('m');
    s
}

fn color_params(s: &mut String, c: Color, base: u8) {
    match c {
        Color::Default => {}
        Color::Named(n) if n < 8 => {
            let _ = write!(s, ";{}", base + n);
        }
        Color::Named(n) => {
            let _ = write!(s, ";{}", base + 60 + (n & 7));
        }
        Color::Indexed(i) => {
            let _ = write!(s, ";{};5;{}", base + 8, i);
        }
        Color::Rgb(r, g, b) => {
            let _ = write!(s, ";{};2;{};{};{}", base + 8, r, g, b);
        }
    }
}

fn designate(charsets: &[Charset; 4], active: u8) -> String {
    let mut s = String::new();
    for (slot, cs) in charsets.iter().enumerate() {
        let inter = ['(', ')', '*', '+'][slot];
        let fin = match cs {
            Charset::Ascii => 'B',
            Charset::LineDrawing => '0',
        };
        let _ = write!(s, "\x1b{inter}{fin}");
    }
    s.push(if active == 1 { '\x0e' } else { '\x0f' });
    s
}

/// Text a title may hold in an OSC string: no control characters.
fn clean_title(t: &str) -> String {
    t.chars().filter(|c| !c.is_control()).collect::<String>()
}

impl Term {
    /// The bytes that make a fresh terminal of the same size show and behave as this model:
    /// scrollback, both screens, cursor and saved cursors, scrolling region, tab stops,
    /// charsets, SGR pen, every mode and the title.
    pub fn repaint(&self) -> Vec<u8> {
        self.repaint_with(true)
    }

    /// Like `repaint`, without the scrollback: for redrawing a terminal that already
    /// holds the history (after an overlay), so it is not appended twice.
    pub fn repaint_screen(&self) -> Vec<u8> {
        self.repaint_with(false)
    }

    fn repaint_with(&self, history: bool) -> Vec<u8> {
        let mut p = Painter {
            out: String::with_capacity(self.cols * self.lines * 2),
            pen: Pen::default(),
        };
        // Start from a known state: primary screen, no region, no origin, autowrap on,
        // replace mode, ASCII, default pen, cleared screen.
        p.esc("\x1b[?2026h\x1b[?1049l\x1b[?47l\x1b[0m\x1b[r\x1b[?6l\x1b[?7h\x1b[4l\x1b[20l");
        p.esc("\x1b(B\x1b)B\x1b*B\x1b+B\x0f\x1b[H\x1b[2J");

        // The primary screen: history, then the visible rows, written top to bottom so
        // that the history scrolls off into the terminal's own scrollback.
        let history_rows = if history {
            self.primary.history.len()
        } else {
            0
        };
        let primary: Vec<&Row> = self
            .primary
            .history
            .range(self.primary.history.len() - history_rows..)
            .chain(self.primary.rows.iter())
            .collect();
        self.paint_sequential(&mut p, &primary, true);

        if self.alt_active {
            match self.alt_saved {
                Some(saved) => {
                    self.place_saved(&mut p, &self.primary, &saved);
                    p.esc("\x1b[?1049h");
                    p.esc(&designate(&[Charset::Ascii; 4], 0));
                    p.esc("\x1b[?6l");
                }
                None => p.esc("\x1b[?1047h"),
            }
            let rows: Vec<&Row> = self.alternate.rows.iter().collect();
            p.esc("\x1b[H");
            self.paint_sequential(&mut p, &rows, false);
        } else if let Some(saved) = self.alt_saved {
            // Saved by ?1049h, then left with ?47l: the save is still pending.
            self.place_saved(&mut p, &self.primary, &saved);
            p.esc("\x1b[?1049h\x1b[?47l");
            p.esc(&designate(&[Charset::Ascii; 4], 0));
            p.esc("\x1b[?6l");
        }

        if self.tabs != default_tabs(self.cols) {
            p.esc("\x1b[3g");
            for (col, _) in self.tabs.iter().enumerate().filter(|(_, t)| **t) {
                p.goto(0, col);
                p.esc("\x1bH");
            }
        }
        for t in &self.title_stack {
            let _ = write!(p.out, "\x1b]2;{}\x1b\\\x1b[22t", clean_title(t));
        }
        if !self.title.is_empty() || !self.title_stack.is_empty() {
            let _ = write!(p.out, "\x1b]2;{}\x1b\\", clean_title(&self.title));
        }
        // DECSC's state is placed while the region is still the whole screen, so that a
        // cursor saved outside the region (the region changed later) is reachable.
        if let Some(saved) = self.saved {
            self.place_saved(&mut p, self.grid(), &saved);
            p.esc("\x1b7");
            p.esc(&designate(&[Charset::Ascii; 4], 0));
            p.esc("\x1b[?6l");
        }
        if self.scroll_top != 0 || self.scroll_bottom != self.lines - 1 {
            let _ = write!(
                p.out,
                "\x1b[{};{}r",
                self.scroll_top + 1,
                self.scroll_bottom + 1
            );
        }

        // The cursor, in the origin mode it lives in, and its pending wrap.
        if self.modes.origin {
            p.esc("\x1b[?6h");
        }
        self.place_cursor(
            &mut p,
            self.grid(),
            self.cursor.line,
            self.cursor.col,
            self.modes.origin,
        );
        p.set_pen(self.pen);
        if self.pen == Pen::default() {
            p.esc("\x1b[0m");
        }
        if self.charsets != [Charset::Ascii; 4] || self.active_charset != 0 {
            p.esc(&designate(&self.charsets, self.active_charset));
        }

        let m = &self.modes;
        let mut modes = String::new();
        let mut flag = |on: bool, seq: &str| {
            if on {
                modes.push_str(seq)
            }
        };
        flag(m.insert, "\x1b[4h");
        flag(m.linefeed_newline, "\x1b[20h");
        flag(!m.autowrap, "\x1b[?7l");
        flag(m.cursor_keys_app, "\x1b[?1h");
        flag(m.keypad_app, "\x1b=");
        flag(!m.cursor_visible, "\x1b[?25l");
        flag(m.cursor_blinking, "\x1b[?12h");
        flag(m.focus_events, "\x1b[?1004h");
        flag(m.bracketed_paste, "\x1b[?2004h");
        flag(m.alternate_scroll, "\x1b[?1007h");
        p.esc(&modes);
        match m.mouse_tracking {
            MouseTracking::Off => {}
            MouseTracking::X10 => p.esc("\x1b[?9h"),
            MouseTracking::Normal => p.esc("\x1b[?1000h"),
            MouseTracking::ButtonMotion => p.esc("\x1b[?1002h"),
            MouseTracking::AnyMotion => p.esc("\x1b[?1003h"),
        }
        match m.mouse_encoding {
            MouseEncoding::Default => {}
            MouseEncoding::Utf8 => p.esc("\x1b[?1005h"),
            MouseEncoding::Sgr => p.esc("\x1b[?1006h"),
            MouseEncoding::Urxvt => p.esc("\x1b[?1015h"),
        }
        if self.cursor_style != 0 {
            let _ = write!(p.out, "\x1b[{} q", self.cursor_style);
        }
        p.esc("\x1b[?2026l");
        if m.synchronized_output {
            p.esc("\x1b[?2026h");
        }
        p.out.into_bytes()
    }

    /// Paint rows from the cursor's line downwards. Rows that wrapped are written in full
    /// so that the next row's first character wraps them again (the wrap flag is state
    /// too); other rows end with CR LF (`scroll`) or are reached by cursor addressing.
    fn paint_sequential(&self, p: &mut Painter, rows: &[&Row], scroll: bool) {
        let cols = self.cols;
        let first_visible = rows.len().saturating_sub(self.lines);
        for (i, row) in rows.iter().enumerate() {
            let prev_wrapped = i > 0 && rows[i - 1].wrapped;
            if i > 0 && !prev_wrapped {
                if scroll {
                    // A line feed that scrolls fills the new row with the pen's background.
                    p.set_pen(Pen::default());
                    p.esc("\r\n");
                } else {
                    p.goto(i - first_visible, 0);
                }
            }
            let written = p.row(row, cols, row.wrapped, usize::from(prev_wrapped));
            // Likewise the wrap into this row may have scrolled in a row filled with the
            // first cell's background: erase what the row does not cover.
            if prev_wrapped && written < cols && row.cell(0).bg != Color::Default {
                p.set_pen(Pen::default());
                p.esc("\x1b[K");
            }
        }
        // A wrapped last row has no next row to wrap into: make it wrap in place, with the
        // region shrunk so the wrap does not scroll, then put its first cell back. (On a
        // screen of one or two lines no such region exists and the flag is lost.)
        if let Some(last) = rows.last()
            && last.wrapped
            && self.lines > 2
        {
            let _ = write!(p.out, "\x1b[1;{}r", self.lines - 1);
            p.rewrite_last_glyph(self.lines - 1, last);
            p.set_pen(Pen::default());
            p.out.push(' ');
            p.goto(self.lines - 1, 0);
            p.cell(&last.cell(0), last.combining_at(0));
            p.esc("\x1b[r");
        }
    }

    /// Move to a cursor position; a pending wrap (`col == cols`) is made by writing the
    /// last cell of that line again. With `origin`, lines count from the region's top; a
    /// cursor outside the region in origin mode (only DECRC puts it there) cannot be
    /// addressed and lands on the region's nearest line.
    fn place_cursor(&self, p: &mut Painter, grid: &Grid, line: usize, col: usize, origin: bool) {
        let line = line.min(self.lines - 1);
        let screen_line = |l: usize| {
            if origin {
                l.saturating_sub(self.scroll_top)
            } else {
                l
            }
        };
        if col >= self.cols {
            p.rewrite_last_glyph(screen_line(line), grid.row(line));
        } else {
            p.goto(screen_line(line), col);
        }
    }

    /// Put the terminal into the state a saved cursor holds (for ESC 7 or ?1049h). Called
    /// while the region is the whole screen, so positions are absolute either way.
    fn place_saved(&self, p: &mut Painter, grid: &Grid, saved: &SavedCursor) {
        if saved.origin {
            p.esc("\x1b[?6h");
        }
        self.place_cursor(p, grid, saved.cursor.line, saved.cursor.col, false);
        p.set_pen(saved.pen);
        p.esc(&designate(&saved.charsets, saved.active_charset));
    }

    /// The bytes that take a terminal out of this session's modes (alternate screen,
    /// mouse, paste, keypad, hidden cursor, region, charsets), for a client that detaches.
    pub fn leave_sequence(&self) -> Vec<u8> {
        let mut s = String::from("\x1b[?2026l");
        if self.alt_active {
            s.push_str("\x1b[?1049l");
        }
        s.push_str("\x1b[r\x1b[0m\x1b[4l\x1b[20l\x1b[?7h\x1b[?1l\x1b>\x1b[?25h\x1b[?12l");
        s.push_str("\x1b[?9l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l\x1b[?1015l");
        s.push_str("\x1b[?1004l\x1b[?2004l\x1b[?1007l\x1b[0 q\x1b(B\x1b)B\x0f");
        let _ = write!(s, "\x1b[{};1H\r\n", self.lines);
        s.into_bytes()
    }
}
