//! The dispatcher: vte's `Handler` calls turned into changes of the `Term`.
//!
//! Semantics follow tmux's `screen-write.c`/`input.c` where tmux and xterm differ, since
//! tmux is the terminal the model is tested against. Every count and coordinate that
//! comes from the byte stream is clamped before use: the model must not panic on any
//! input.

use super::cell::{Attrs, Cell, Color, Pen};
use super::{
    Charset, Cursor, MouseEncoding, MouseTracking, SavedCursor, TITLE_STACK_LIMIT, Term,
    default_tabs,
};
use unicode_width::UnicodeWidthChar;
use vte::ansi::{
    Attr, CharsetIndex, ClearMode, CursorStyle, Handler, LineClearMode, Mode, NamedColor,
    NamedMode, NamedPrivateMode, PrivateMode, StandardCharset, TabulationClearMode, Timeout,
};

/// A `Timeout` that never reports a pending synchronized update, so vte's `Processor`
/// never holds bytes back: the model must be current whenever a checkpoint is taken.
/// Synchronized output (?2026) is still tracked as a mode.
#[derive(Default)]
pub struct NoSyncBuffering;

impl Timeout for NoSyncBuffering {
    fn set_timeout(&mut self, _: std::time::Duration) {}
    fn clear_timeout(&mut self) {}
    fn pending_timeout(&self) -> bool {
        false
    }
}

impl Term {
    fn erase_pen(&self) -> Pen {
        self.pen.erased()
    }

    /// Blank both halves of a wide character that the column boundary before `col` would
    /// split (a write or erase starting or ending there).
    fn split_wide(&mut self, line: usize, col: usize) {
        let cols = self.cols;
        if col == 0 || col >= cols {
            return;
        }
        let row = self.grid_mut().row_mut(line);
        if row.cells[col].is_spacer() {
            let blank = Cell::blank(Pen {
                attrs: Attrs::default(),
                ..row.cells[col - 1].pen()
            });
            row.cells[col - 1] = blank;
            row.cells[col] = blank;
            row.clear_combining(col - 1, col + 1);
        }
    }

    /// Fill `from..to` of a line with erased cells.
    fn erase_cells(&mut self, line: usize, from: usize, to: usize) {
        let to = to.min(self.cols);
        if from >= to {
            return;
        }
        self.split_wide(line, from);
        self.split_wide(line, to);
        let blank = Cell::blank(self.erase_pen());
        let row = self.grid_mut().row_mut(line);
        row.cells[from..to].fill(blank);
        row.clear_combining(from, to);
    }

    fn erase_lines(&mut self, from: usize, to: usize) {
        let cols = self.cols;
        let pen = self.erase_pen();
        for line in from..to.min(self.lines) {
            self.grid_mut().row_mut(line).reset(cols, pen);
        }
    }

    /// The last line IL and DL move: the region's bottom with the cursor inside the
    /// region; outside it, the screen's (tmux; xterm ignores IL and DL there).
    fn lines_bottom(&self) -> usize {
        if self.cursor.line >= self.scroll_top && self.cursor.line <= self.scroll_bottom {
            self.scroll_bottom
        } else {
            self.lines - 1
        }
    }

    fn scroll_region_up(&mut self, n: usize) {
        let (top, bottom, cols) = (self.scroll_top, self.scroll_bottom, self.cols);
        let pen = self.erase_pen();
        let to_history = !self.alt_active && top == 0;
        self.grid_mut()
            .scroll_up(top, bottom, n, cols, pen, to_history);
    }

    fn scroll_region_down(&mut self, n: usize) {
        let (top, bottom, cols) = (self.scroll_top, self.scroll_bottom, self.cols);
        let pen = self.erase_pen();
        self.grid_mut().scroll_down(top, bottom, n, cols, pen);
    }

    fn do_linefeed(&mut self, wrapped: bool) {
        if wrapped {
            let line = self.cursor.line;
            self.grid_mut().row_mut(line).wrapped = true;
        }
        if self.cursor.line == self.scroll_bottom {
            self.scroll_region_up(1);
        } else if self.cursor.line < self.lines - 1 {
            self.cursor.line += 1;
        }
    }

    fn save_cursor(&self) -> SavedCursor {
        SavedCursor {
            cursor: self.cursor,
            pen: self.pen,
            charsets: self.charsets,
            active_charset: self.active_charset,
            origin: self.modes.origin,
        }
    }

    fn restore_cursor(&mut self, saved: SavedCursor) {
        self.cursor = Cursor {
            line: saved.cursor.line.min(self.lines - 1),
            col: saved.cursor.col.min(self.cols),
        };
        self.pen = saved.pen;
        self.charsets = saved.charsets;
        self.active_charset = saved.active_charset.min(3);
        self.modes.origin = saved.origin;
    }

    /// The first and last line the cursor may move to vertically from where it is.
    fn vertical_limits(&self) -> (usize, usize) {
        let top = if self.cursor.line >= self.scroll_top {
            self.scroll_top
        } else {
            0
        };
        let bottom = if self.cursor.line <= self.scroll_bottom {
            self.scroll_bottom
        } else {
            self.lines - 1
        };
        (top, bottom)
    }

    /// ?47/?1047 (`save_cursor` false) and ?1049 (true). Leaving with ?1049l restores the
    /// cursor saved by the last ?1049h even when the primary screen is already showing,
    /// and the save is kept (xterm and tmux both behave so).
    fn set_alt_screen(&mut self, on: bool, save_cursor: bool) {
        if on {
            if self.alt_active {
                return;
            }
            if save_cursor {
                self.alt_saved = Some(self.save_cursor());
            }
            self.alt_active = true;
            let (cols, lines) = (self.cols, self.lines);
            self.alternate = super::Grid::new(cols, lines, 0);
        } else {
            if save_cursor && let Some(saved) = self.alt_saved {
                self.restore_cursor(saved);
            }
            if !self.alt_active {
                return;
            }
            // The alternate screen is cleared when entered, so what it held is gone for
            // good once it is left: drop it now so equal-looking states compare equal.
            self.alt_active = false;
            let (cols, lines) = (self.cols, self.lines);
            self.alternate = super::Grid::new(cols, lines, 0);
        }
    }

    fn set_private(&mut self, mode: PrivateMode, on: bool) {
        match mode.raw() {
            1 => self.modes.cursor_keys_app = on,
            6 => {
                self.modes.origin = on;
                self.cursor = Cursor {
                    line: if on { self.scroll_top } else { 0 },
                    col: 0,
                };
            }
            7 => self.modes.autowrap = on,
            12 => self.modes.cursor_blinking = on,
            25 => self.modes.cursor_visible = on,
            9 | 1000 | 1002 | 1003 => {
                self.modes.mouse_tracking = if !on {
                    MouseTracking::Off
                } else {
                    match mode.raw() {
                        9 => MouseTracking::X10,
                        1000 => MouseTracking::Normal,
                        1002 => MouseTracking::ButtonMotion,
                        _ => MouseTracking::AnyMotion,
                    }
                }
            }
            1005 | 1006 | 1015 => {
                let enc = match mode.raw() {
                    1005 => MouseEncoding::Utf8,
                    1006 => MouseEncoding::Sgr,
                    _ => MouseEncoding::Urxvt,
                };
                if on {
                    self.modes.mouse_encoding = enc;
                } else if self.modes.mouse_encoding == enc {
                    self.modes.mouse_encoding = MouseEncoding::Default;
                }
            }
            1004 => self.modes.focus_events = on,
            1007 => self.modes.alternate_scroll = on,
            2004 => self.modes.bracketed_paste = on,
            2026 => self.modes.synchronized_output = on,
            47 | 1047 => self.set_alt_screen(on, false),
            1049 => self.set_alt_screen(on, true),
            _ => {}
        }
    }

    fn put_char(&mut self, c: char) {
        let c = match self.charsets[self.active_charset as usize] {
            Charset::Ascii => c,
            Charset::LineDrawing => StandardCharset::SpecialCharacterAndLineDrawing.map(c),
        };
        let width = if (' '..'\u{7f}').contains(&c) {
            1
        } else {
            match c.width() {
                Some(w) => w,
                None => return,
            }
        };
        let cols = self.cols;
        if width == 0 {
            self.put_combining(c);
            return;
        }
        if self.modes.autowrap && self.cursor.col + width > cols {
            self.do_linefeed(true);
            self.cursor.col = 0;
        }
        if self.cursor.col + width > cols {
            return;
        }
        let (line, col) = (self.cursor.line, self.cursor.col);
        if self.modes.insert {
            self.insert_cells(width);
        }
        self.split_wide(line, col);
        self.split_wide(line, col + width);
        let pen = self.pen;
        let row = self.grid_mut().row_mut(line);
        let mut attrs = pen.attrs;
        attrs.set(Attrs::WIDE, width == 2);
        row.cells[col] = Cell {
            ch: c,
            fg: pen.fg,
            bg: pen.bg,
            attrs,
        };
        if width == 2 {
            row.cells[col + 1] = Cell {
                ch: ' ',
                fg: pen.fg,
                bg: pen.bg,
                attrs: Attrs(pen.attrs.0 | Attrs::WIDE_SPACER),
            };
        }
        row.clear_combining(col, col + width);
        let stick = usize::from(!self.modes.autowrap);
        self.cursor.col = if col + width <= cols - stick {
            col + width
        } else {
            cols - stick
        };
    }

    /// A zero-width character joins the character before the cursor.
    fn put_combining(&mut self, c: char) {
        let line = self.cursor.line;
        let mut col = self.cursor.col;
        if col == 0 {
            return;
        }
        col -= 1;
        let row = self.grid_mut().row_mut(line);
        if row.cells[col].is_spacer() && col > 0 {
            col -= 1;
        }
        row.push_combining(col, c);
    }

    /// Shift cells from the cursor right by `n` (ICH and insert mode).
    fn insert_cells(&mut self, n: usize) {
        let (line, col, cols) = (self.cursor.line, self.cursor.col, self.cols);
        if col >= cols {
            return;
        }
        let n = n.min(cols - col);
        self.split_wide(line, col);
        self.split_wide(line, cols - n);
        let blank = Cell::blank(self.erase_pen());
        let row = self.grid_mut().row_mut(line);
        row.cells[col..].rotate_right(n);
        row.cells[col..col + n].fill(blank);
        row.shift_combining(col, n as isize, cols);
    }
}

fn named_color(c: vte::ansi::Color) -> Color {
    match c {
        vte::ansi::Color::Named(n) => match n {
            NamedColor::Foreground | NamedColor::Background => Color::Default,
            n if (n as usize) < 16 => Color::Named(n as u8),
            _ => Color::Default,
        },
        vte::ansi::Color::Indexed(i) => Color::Indexed(i),
        vte::ansi::Color::Spec(rgb) => Color::Rgb(rgb.r, rgb.g, rgb.b),
    }
}

impl Handler for Term {
    fn set_title(&mut self, title: Option<String>) {
        let mut t = title.unwrap_or_default();
        t.truncate(
            t.char_indices()
                .nth(1024)
                .map(|(i, _)| i)
                .unwrap_or(t.len()),
        );
        self.title = t;
    }

    fn set_cursor_style(&mut self, style: Option<CursorStyle>) {
        use vte::ansi::CursorShape::*;
        self.cursor_style = match style {
            None => 0,
            Some(s) => {
                let base = match s.shape {
                    Underline => 3,
                    Beam => 5,
                    _ => 1,
                };
                if s.blinking { base } else { base + 1 }
            }
        };
    }

    #[inline]
    fn input(&mut self, c: char) {
        // Fast path for the common case: printable ASCII in the ASCII charset, replacing a
        // narrow cell that is not the last of the line, no insert mode.
        if (' '..'\u{7f}').contains(&c)
            && self.charsets[(self.active_charset & 3) as usize] == Charset::Ascii
            && !self.modes.insert
            && self.cursor.col + 1 < self.cols
        {
            let (line, col, pen) = (self.cursor.line, self.cursor.col, self.pen);
            let row = self.grid_mut().row_mut(line);
            let cell = &mut row.cells[col];
            if cell.attrs.0 & (Attrs::WIDE | Attrs::WIDE_SPACER) == 0 && row.combining.is_empty() {
                *cell = Cell {
                    ch: c,
                    fg: pen.fg,
                    bg: pen.bg,
                    attrs: pen.attrs,
                };
                self.cursor.col = col + 1;
                return;
            }
        }
        self.put_char(c);
    }

    fn goto(&mut self, line: i32, col: usize) {
        let (top, bottom) = if self.modes.origin {
            (self.scroll_top, self.scroll_bottom)
        } else {
            (0, self.lines - 1)
        };
        let line = (line.max(0) as usize).saturating_add(top).min(bottom);
        self.cursor = Cursor {
            line,
            col: col.min(self.cols - 1),
        };
    }

    fn goto_line(&mut self, line: i32) {
        let col = self.cursor.col.min(self.cols - 1);
        self.goto(line, col);
    }

    fn goto_col(&mut self, col: usize) {
        self.cursor.col = col.min(self.cols - 1);
    }

    fn insert_blank(&mut self, n: usize) {
        self.insert_cells(n.max(1));
    }

    fn move_up(&mut self, n: usize) {
        let (top, _) = self.vertical_limits();
        self.cursor.line = self.cursor.line.saturating_sub(n.max(1)).max(top);
        self.cursor.col = self.cursor.col.min(self.cols - 1);
    }

    fn move_down(&mut self, n: usize) {
        let (_, bottom) = self.vertical_limits();
        self.cursor.line = self.cursor.line.saturating_add(n.max(1)).min(bottom);
        self.cursor.col = self.cursor.col.min(self.cols - 1);
    }

    fn move_forward(&mut self, n: usize) {
        let col = self.cursor.col.min(self.cols - 1);
        self.cursor.col = col.saturating_add(n.max(1)).min(self.cols - 1);
    }

    fn move_backward(&mut self, n: usize) {
        let col = self.cursor.col.min(self.cols - 1);
        self.cursor.col = col.saturating_sub(n.max(1));
    }

    fn move_down_and_cr(&mut self, n: usize) {
        self.move_down(n);
        self.cursor.col = 0;
    }

    fn move_up_and_cr(&mut self, n: usize) {
        self.move_up(n);
        self.cursor.col = 0;
    }

    fn put_tab(&mut self, count: u16) {
        for _ in 0..count.max(1) {
            if self.cursor.col + 1 >= self.cols {
                break;
            }
            loop {
                self.cursor.col += 1;
                if self.tabs[self.cursor.col] || self.cursor.col + 1 >= self.cols {
                    break;
                }
            }
        }
    }

    fn backspace(&mut self) {
        if self.cursor.col == 0 {
            let line = self.cursor.line;
            if line > 0 && self.grid().row(line - 1).wrapped {
                self.cursor.line -= 1;
                self.cursor.col = self.cols - 1;
            }
        } else {
            self.cursor.col -= 1;
        }
    }

    fn carriage_return(&mut self) {
        self.cursor.col = 0;
    }

    fn linefeed(&mut self) {
        self.do_linefeed(false);
        if self.modes.linefeed_newline {
            self.cursor.col = 0;
        }
    }

    fn newline(&mut self) {
        self.do_linefeed(false);
        self.cursor.col = 0;
    }

    fn set_horizontal_tabstop(&mut self) {
        let col = self.cursor.col.min(self.cols - 1);
        self.tabs[col] = true;
    }

    fn scroll_up(&mut self, n: usize) {
        self.scroll_region_up(n.max(1));
    }

    fn scroll_down(&mut self, n: usize) {
        self.scroll_region_down(n.max(1));
    }

    fn insert_blank_lines(&mut self, n: usize) {
        let (line, bottom, cols) = (self.cursor.line, self.lines_bottom(), self.cols);
        let pen = self.erase_pen();
        // The cursor stays where it is (tmux; xterm returns it to the first column).
        self.grid_mut()
            .scroll_down(line, bottom, n.max(1), cols, pen);
    }

    fn delete_lines(&mut self, n: usize) {
        let (line, bottom, cols) = (self.cursor.line, self.lines_bottom(), self.cols);
        let pen = self.erase_pen();
        self.grid_mut()
            .scroll_up(line, bottom, n.max(1), cols, pen, false);
    }

    fn erase_chars(&mut self, n: usize) {
        let (line, col) = (self.cursor.line, self.cursor.col);
        self.erase_cells(line, col, col.saturating_add(n.max(1)));
    }

    fn delete_chars(&mut self, n: usize) {
        let (line, col, cols) = (self.cursor.line, self.cursor.col, self.cols);
        if col >= cols {
            return;
        }
        let n = n.max(1).min(cols - col);
        self.split_wide(line, col);
        self.split_wide(line, col + n);
        let blank = Cell::blank(self.erase_pen());
        let row = self.grid_mut().row_mut(line);
        row.clear_combining(col, col + n);
        row.cells[col..].rotate_left(n);
        row.cells[cols - n..].fill(blank);
        row.shift_combining(col + n, -(n as isize), cols);
    }

    fn move_backward_tabs(&mut self, count: u16) {
        for _ in 0..count.max(1) {
            let mut col = self.cursor.col.min(self.cols - 1);
            while col > 0 {
                col -= 1;
                if self.tabs[col] {
                    break;
                }
            }
            self.cursor.col = col;
        }
    }

    fn move_forward_tabs(&mut self, count: u16) {
        self.put_tab(count);
    }

    fn save_cursor_position(&mut self) {
        self.saved = Some(self.save_cursor());
    }

    fn restore_cursor_position(&mut self) {
        let saved = self.saved.unwrap_or_default();
        self.restore_cursor(saved);
    }

    fn clear_line(&mut self, mode: LineClearMode) {
        let (line, col, cols) = (self.cursor.line, self.cursor.col, self.cols);
        match mode {
            LineClearMode::Right => self.erase_cells(line, col, cols),
            LineClearMode::Left => self.erase_cells(line, 0, col.saturating_add(1)),
            LineClearMode::All => self.erase_cells(line, 0, cols),
        }
    }

    fn clear_screen(&mut self, mode: ClearMode) {
        let (line, col, cols, lines) = (self.cursor.line, self.cursor.col, self.cols, self.lines);
        match mode {
            ClearMode::Below => {
                self.erase_cells(line, col, cols);
                self.erase_lines(line + 1, lines);
            }
            ClearMode::Above => {
                self.erase_lines(0, line);
                self.erase_cells(line, 0, col.saturating_add(1));
            }
            ClearMode::All => self.erase_lines(0, lines),
            ClearMode::Saved => self.primary.clear_history(),
        }
    }

    fn clear_tabs(&mut self, mode: TabulationClearMode) {
        match mode {
            TabulationClearMode::Current => {
                let col = self.cursor.col.min(self.cols - 1);
                self.tabs[col] = false;
            }
            TabulationClearMode::All => self.tabs.fill(false),
        }
    }

    fn set_tabs(&mut self, _interval: u16) {
        self.tabs = default_tabs(self.cols);
    }

    /// RIS: modes, pen, charsets, tabs, region and DECSC state back to their defaults,
    /// the current screen cleared, cursor home. As in tmux, the screen in use stays in use
    /// (a later ?1049l still brings the primary back), and title and scrollback stay.
    fn reset_state(&mut self) {
        self.modes = super::Modes::default();
        self.pen = Pen::default();
        self.charsets = [Charset::Ascii; 4];
        self.active_charset = 0;
        self.saved = None;
        self.cursor_style = 0;
        self.tabs = default_tabs(self.cols);
        self.scroll_top = 0;
        self.scroll_bottom = self.lines - 1;
        let lines = self.lines;
        self.erase_lines(0, lines);
        self.cursor = Cursor::default();
    }

    fn reverse_index(&mut self) {
        if self.cursor.line == self.scroll_top {
            self.scroll_region_down(1);
        } else if self.cursor.line > 0 {
            self.cursor.line -= 1;
        }
    }

    fn terminal_attribute(&mut self, attr: Attr) {
        let a = &mut self.pen.attrs;
        match attr {
            Attr::Reset => self.pen = Pen::default(),
            Attr::Bold => a.set(Attrs::BOLD, true),
            Attr::Dim => a.set(Attrs::DIM, true),
            Attr::Italic => a.set(Attrs::ITALIC, true),
            Attr::Underline => {
                a.set(Attrs::ANY_UNDERLINE, false);
                a.set(Attrs::UNDERLINE, true)
            }
            Attr::DoubleUnderline => {
                a.set(Attrs::ANY_UNDERLINE, false);
                a.set(Attrs::DOUBLE_UNDERLINE, true)
            }
            Attr::Undercurl => {
                a.set(Attrs::ANY_UNDERLINE, false);
                a.set(Attrs::CURLY_UNDERLINE, true)
            }
            Attr::DottedUnderline => {
                a.set(Attrs::ANY_UNDERLINE, false);
                a.set(Attrs::DOTTED_UNDERLINE, true)
            }
            Attr::DashedUnderline => {
                a.set(Attrs::ANY_UNDERLINE, false);
                a.set(Attrs::DASHED_UNDERLINE, true)
            }
            Attr::BlinkSlow | Attr::BlinkFast => a.set(Attrs::BLINK, true),
            Attr::Reverse => a.set(Attrs::REVERSE, true),
            Attr::Hidden => a.set(Attrs::HIDDEN, true),
            Attr::Strike => a.set(Attrs::STRIKE, true),
            // vte reports SGR 21 (and only 21) as CancelBold; ECMA-48, xterm and tmux
            // take 21 as "doubly underlined".
            Attr::CancelBold => {
                a.set(Attrs::ANY_UNDERLINE, false);
                a.set(Attrs::DOUBLE_UNDERLINE, true)
            }
            Attr::CancelBoldDim => a.set(Attrs::BOLD | Attrs::DIM, false),
            Attr::CancelItalic => a.set(Attrs::ITALIC, false),
            Attr::CancelUnderline => a.set(Attrs::ANY_UNDERLINE, false),
            Attr::CancelBlink => a.set(Attrs::BLINK, false),
            Attr::CancelReverse => a.set(Attrs::REVERSE, false),
            Attr::CancelHidden => a.set(Attrs::HIDDEN, false),
            Attr::CancelStrike => a.set(Attrs::STRIKE, false),
            Attr::Foreground(c) => self.pen.fg = named_color(c),
            Attr::Background(c) => self.pen.bg = named_color(c),
            Attr::UnderlineColor(_) => {}
        }
    }

    fn set_mode(&mut self, mode: Mode) {
        match mode {
            Mode::Named(NamedMode::Insert) => self.modes.insert = true,
            Mode::Named(NamedMode::LineFeedNewLine) => self.modes.linefeed_newline = true,
            Mode::Unknown(_) => {}
        }
    }

    fn unset_mode(&mut self, mode: Mode) {
        match mode {
            Mode::Named(NamedMode::Insert) => self.modes.insert = false,
            Mode::Named(NamedMode::LineFeedNewLine) => self.modes.linefeed_newline = false,
            Mode::Unknown(_) => {}
        }
    }

    fn set_private_mode(&mut self, mode: PrivateMode) {
        self.set_private(mode, true);
    }

    fn unset_private_mode(&mut self, mode: PrivateMode) {
        if mode == PrivateMode::Named(NamedPrivateMode::SyncUpdate) {
            self.modes.synchronized_output = false;
            return;
        }
        self.set_private(mode, false);
    }

    fn set_scrolling_region(&mut self, top: usize, bottom: Option<usize>) {
        let top = top.max(1) - 1;
        let bottom = bottom
            .map_or(self.lines - 1, |b| b.max(1) - 1)
            .min(self.lines - 1);
        if top >= bottom {
            return;
        }
        self.scroll_top = top;
        self.scroll_bottom = bottom;
        self.cursor = Cursor {
            line: if self.modes.origin { top } else { 0 },
            col: 0,
        };
    }

    fn set_keypad_application_mode(&mut self) {
        self.modes.keypad_app = true;
    }

    fn unset_keypad_application_mode(&mut self) {
        self.modes.keypad_app = false;
    }

    fn set_active_charset(&mut self, index: CharsetIndex) {
        self.active_charset = charset_slot(index);
    }

    fn configure_charset(&mut self, index: CharsetIndex, charset: StandardCharset) {
        self.charsets[charset_slot(index) as usize] = match charset {
            StandardCharset::Ascii => Charset::Ascii,
            StandardCharset::SpecialCharacterAndLineDrawing => Charset::LineDrawing,
        };
    }

    fn decaln(&mut self) {
        let cols = self.cols;
        for line in 0..self.lines {
            let row = self.grid_mut().row_mut(line);
            row.reset(cols, Pen::default());
            row.cells.fill(Cell {
                ch: 'E',
                ..Cell::default()
            });
        }
        self.scroll_top = 0;
        self.scroll_bottom = self.lines - 1;
        self.cursor = Cursor::default();
    }

    fn push_title(&mut self) {
        if self.title_stack.len() >= TITLE_STACK_LIMIT {
            self.title_stack.remove(0);
        }
        self.title_stack.push(self.title.clone());
    }

    fn pop_title(&mut self) {
        if let Some(t) = self.title_stack.pop() {
            self.title = t;
        }
    }
}

fn charset_slot(index: CharsetIndex) -> u8 {
    match index {
        CharsetIndex::G0 => 0,
        CharsetIndex::G1 => 1,
        CharsetIndex::G2 => 2,
        CharsetIndex::G3 => 3,
    }
}
