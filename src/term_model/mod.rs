//! crterm's own model of the terminal the session draws on.
//!
//! Every byte the session writes goes through `TermParser::advance` (vte's ANSI parser)
//! into a `Term`: both screens with the primary's scrollback, the cursor, the scrolling
//! region, charsets, tab stops, all modes and the title. A `Term` is serializable (it goes
//! into checkpoint images) and `repaint()` turns it back into the bytes that bring a fresh
//! terminal into the same state. The model never answers queries: the user's real terminal
//! sees the same bytes and answers them.
//!
//! Where terminals disagree, the model follows tmux (the reference terminal of the tests),
//! which in turn mostly follows xterm.

pub mod cell;
pub mod grid;
mod handler;
mod repaint;

pub use cell::{Attrs, Cell, Color, Pen};
pub use grid::{Grid, Row};

use serde::{Deserialize, Serialize};

pub const DEFAULT_HISTORY_LINES: usize = 10_000;

/// G0–G3 designations: only the two sets programs use in practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Charset {
    #[default]
    Ascii,
    LineDrawing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MouseTracking {
    #[default]
    Off,
    /// 9: X10 compatibility, presses only.
    X10,
    /// 1000
    Normal,
    /// 1002
    ButtonMotion,
    /// 1003
    AnyMotion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MouseEncoding {
    #[default]
    Default,
    /// 1005
    Utf8,
    /// 1006
    Sgr,
    /// 1015
    Urxvt,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modes {
    /// IRM (4)
    pub insert: bool,
    /// LNM (20): LF also returns the carriage.
    pub linefeed_newline: bool,
    /// DECOM (?6)
    pub origin: bool,
    /// DECAWM (?7)
    pub autowrap: bool,
    /// DECCKM (?1)
    pub cursor_keys_app: bool,
    /// DECKPAM / DECKPNM (ESC = / ESC >)
    pub keypad_app: bool,
    /// DECTCEM (?25)
    pub cursor_visible: bool,
    /// ?12
    pub cursor_blinking: bool,
    pub mouse_tracking: MouseTracking,
    pub mouse_encoding: MouseEncoding,
    /// ?1004
    pub focus_events: bool,
    /// ?2004
    pub bracketed_paste: bool,
    /// ?2026
    pub synchronized_output: bool,
    /// ?1007
    pub alternate_scroll: bool,
}

impl Default for Modes {
    fn default() -> Self {
        Modes {
            insert: false,
            linefeed_newline: false,
            origin: false,
            autowrap: true,
            cursor_keys_app: false,
            keypad_app: false,
            cursor_visible: true,
            cursor_blinking: false,
            mouse_tracking: MouseTracking::Off,
            mouse_encoding: MouseEncoding::Default,
            focus_events: false,
            bracketed_paste: false,
            synchronized_output: false,
            alternate_scroll: false,
        }
    }
}

/// The cursor. `col == cols` means the last column was just written and the next
/// character wraps first (the "pending wrap" state; tmux keeps it the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub line: usize,
    pub col: usize,
}

/// What DECSC (ESC 7, CSI s) saves and DECRC restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SavedCursor {
    pub cursor: Cursor,
    pub pen: Pen,
    pub charsets: [Charset; 4],
    pub active_charset: u8,
    pub origin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    pub cols: usize,
    pub lines: usize,
    pub primary: Grid,
    pub alternate: Grid,
    pub alt_active: bool,
    pub cursor: Cursor,
    pub pen: Pen,
    pub charsets: [Charset; 4],
    /// Which of G0–G3 is invoked into GL (SI/SO).
    pub active_charset: u8,
    pub saved: Option<SavedCursor>,
    /// The cursor saved by ?1049h, restored by ?1049l.
    pub alt_saved: Option<SavedCursor>,
    /// Scrolling region, inclusive, 0-based.
    pub scroll_top: usize,
    pub scroll_bottom: usize,
    pub tabs: Vec<bool>,
    pub modes: Modes,
    pub title: String,
    pub title_stack: Vec<String>,
    /// DECSCUSR parameter (0 = the terminal's default).
    pub cursor_style: u8,
}

const TITLE_STACK_LIMIT: usize = 16;

impl Term {
    pub fn new(cols: usize, lines: usize) -> Term {
        Term::with_history(cols, lines, DEFAULT_HISTORY_LINES)
    }

    pub fn with_history(cols: usize, lines: usize, history: usize) -> Term {
        let cols = cols.clamp(1, u16::MAX as usize);
        let lines = lines.clamp(1, u16::MAX as usize);
        Term {
            cols,
            lines,
            primary: Grid::new(cols, lines, history),
            alternate: Grid::new(cols, lines, 0),
            alt_active: false,
            cursor: Cursor::default(),
            pen: Pen::default(),
            charsets: [Charset::Ascii; 4],
            active_charset: 0,
            saved: None,
            alt_saved: None,
            scroll_top: 0,
            scroll_bottom: lines - 1,
            tabs: default_tabs(cols),
            modes: Modes::default(),
            title: String::new(),
            title_stack: Vec::new(),
            cursor_style: 0,
        }
    }

    pub fn grid(&self) -> &Grid {
        if self.alt_active {
            &self.alternate
        } else {
            &self.primary
        }
    }

    pub(crate) fn grid_mut(&mut self) -> &mut Grid {
        if self.alt_active {
            &mut self.alternate
        } else {
            &mut self.primary
        }
    }

    pub fn cell(&self, line: usize, col: usize) -> Cell {
        self.grid().row(line).cell(col)
    }

    /// Where a terminal draws the cursor (the pending-wrap column shows on the last one).
    pub fn cursor_position(&self) -> (usize, usize) {
        (self.cursor.line, self.cursor.col.min(self.cols - 1))
    }

    /// Change the size of both screens. The primary screen, when it is the one showing, is
    /// reflowed as tmux does (the height first, then the text rewrapped for the new width,
    /// scrollback included: `Grid::reflow`), and the cursor moves with its character.
    /// Otherwise rows are cut or padded, and the cursor stays on its line of text where
    /// that line remains on screen.
    pub fn resize(&mut self, cols: usize, lines: usize) {
        let cols = cols.clamp(1, u16::MAX as usize);
        let lines = lines.clamp(1, u16::MAX as usize);
        if cols == self.cols && lines == self.lines {
            return;
        }
        let cursor_line = self.cursor.line;
        if !self.alt_active && cols != self.cols {
            let moved = self.primary.resize(self.cols, lines, cursor_line, true);
            let line = self.cursor.line.saturating_sub(moved).min(lines - 1);
            let (line, col) = self.primary.reflow(cols, lines, (line, self.cursor.col));
            self.cursor.line = line.min(lines - 1);
            self.cursor.col = col.min(cols - 1);
            self.alternate.resize(cols, lines, cursor_line, false);
        } else {
            let moved_primary = self.primary.resize(cols, lines, cursor_line, true);
            let moved_alt = self.alternate.resize(cols, lines, cursor_line, false);
            let moved = if self.alt_active {
                moved_alt
            } else {
                moved_primary
            };
            for row in self.primary.history.iter_mut() {
                if row.cells.len() > cols {
                    row.fit(cols);
                }
            }
            self.cursor.line = self.cursor.line.saturating_sub(moved).min(lines - 1);
            self.cursor.col = self.cursor.col.min(cols - 1);
        }
        for saved in [&mut self.saved, &mut self.alt_saved].into_iter().flatten() {
            saved.cursor.line = saved.cursor.line.min(lines - 1);
            saved.cursor.col = saved.cursor.col.min(cols - 1);
        }
        let old_cols = self.cols;
        self.tabs.resize(cols, false);
        for c in old_cols..cols {
            self.tabs[c] = c % 8 == 0;
        }
        self.cols = cols;
        self.lines = lines;
        self.scroll_top = 0;
        self.scroll_bottom = lines - 1;
    }
}

/// The most scrollback a model may keep (the config file's limit too).
pub const MAX_HISTORY_LINES: usize = 1_000_000;

impl Term {
    /// Check a model read from an image (which is never trusted) against what every part
    /// of crterm assumes of one: both screens exactly `lines` rows of `cols` cells,
    /// scrollback rows no wider, the cursors, the scrolling region, charsets and tab stops
    /// inside the screen, combining marks sorted and within their rows. What the parser
    /// makes always passes; an image that does not is refused before anything uses it.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: String| Err(format!("the terminal model: {what}"));
        if !(1..=u16::MAX as usize).contains(&self.cols)
            || !(1..=u16::MAX as usize).contains(&self.lines)
        {
            return bad(format!("a screen of {}x{}", self.cols, self.lines));
        }
        for (name, grid, history) in [
            ("primary", &self.primary, true),
            ("alternate", &self.alternate, false),
        ] {
            if grid.rows.len() != self.lines {
                return bad(format!(
                    "the {name} screen has {} rows for {} lines",
                    grid.rows.len(),
                    self.lines
                ));
            }
            if grid.history_limit > MAX_HISTORY_LINES
                || grid.history.len() > grid.history_limit
                || (!history && !grid.history.is_empty())
            {
                return bad(format!(
                    "the {name} screen's scrollback holds {} of {} lines",
                    grid.history.len(),
                    grid.history_limit
                ));
            }
            for (i, row) in grid.rows.iter().enumerate() {
                if row.cells.len() != self.cols {
                    return bad(format!(
                        "row {i} of the {name} screen has {} cells for {} columns",
                        row.cells.len(),
                        self.cols
                    ));
                }
            }
            for (i, row) in grid.rows.iter().chain(&grid.history).enumerate() {
                if row.cells.len() > self.cols {
                    return bad(format!("a scrollback row of {} cells", row.cells.len()));
                }
                let mut last = None;
                for (col, marks) in &row.combining {
                    let col = *col as usize;
                    if col >= self.cols
                        || last.is_some_and(|l| l >= col)
                        || marks.is_empty()
                        || marks.chars().count() > 16
                    {
                        return bad(format!(
                            "the combining marks of row {i} of the {name} screen"
                        ));
                    }
                    last = Some(col);
                }
            }
        }
        let cursor_ok = |c: &Cursor| c.line < self.lines && c.col <= self.cols;
        if !cursor_ok(&self.cursor) {
            return bad(format!(
                "the cursor at {},{}",
                self.cursor.line, self.cursor.col
            ));
        }
        for saved in [&self.saved, &self.alt_saved].into_iter().flatten() {
            if !cursor_ok(&saved.cursor) || saved.active_charset > 3 {
                return bad("a saved cursor".into());
            }
        }
        if self.scroll_top > self.scroll_bottom || self.scroll_bottom >= self.lines {
            return bad(format!(
                "the scrolling region {}..{}",
                self.scroll_top, self.scroll_bottom
            ));
        }
        if self.active_charset > 3 || self.tabs.len() != self.cols {
            return bad("the charsets or tab stops".into());
        }
        if self.title_stack.len() > TITLE_STACK_LIMIT
            || std::iter::once(&self.title)
                .chain(&self.title_stack)
                .any(|t| t.len() > MAX_TITLE)
        {
            return bad("the titles".into());
        }
        Ok(())
    }
}

/// The longest title kept (a program's longer title is cut).
pub const MAX_TITLE: usize = 4096;

pub(crate) fn default_tabs(cols: usize) -> Vec<bool> {
    (0..cols).map(|c| c % 8 == 0 && c != 0).collect()
}

/// A row as plain text: wide spacers skipped, combining marks kept, trailing blanks cut.
pub fn row_text(row: &Row) -> String {
    let mut s = String::new();
    for (col, cell) in row.cells.iter().enumerate() {
        if cell.is_spacer() {
            continue;
        }
        s.push(cell.ch);
        if let Some(marks) = row.combining_at(col) {
            s.push_str(marks);
        }
    }
    s.truncate(s.trim_end_matches(' ').len());
    s
}

/// Feeds bytes into a `Term` through vte's ANSI parser. The parser's partial-sequence
/// state is not part of the model (it is not serialized): a checkpoint is taken between
/// reads, and a sequence cut there is at worst one lost escape.
pub struct TermParser {
    processor: vte::ansi::Processor<handler::NoSyncBuffering>,
    strings: ScreenTitleFilter,
    pub term: Term,
}

impl TermParser {
    pub fn new(term: Term) -> TermParser {
        TermParser {
            processor: vte::ansi::Processor::new(),
            strings: ScreenTitleFilter::default(),
            term,
        }
    }

    pub fn advance(&mut self, bytes: &[u8]) {
        let TermParser {
            processor,
            strings,
            term,
        } = self;
        strings.filter(bytes, |part| processor.advance(term, part));
    }
}

/// screen's window-title string, `ESC k title ST`, which programs send when TERM
/// is screen or tmux. vte does not know it and would print the title; screen and tmux
/// swallow it, and so does the model.
#[derive(Default)]
struct ScreenTitleFilter {
    state: TitleState,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum TitleState {
    #[default]
    Ground,
    /// An ESC ended the last chunk: whether a `k` follows is not known yet.
    Escape,
    Title,
    TitleEscape,
}

impl ScreenTitleFilter {
    /// Call `out` with the parts of `bytes` that are not title strings.
    fn filter(&mut self, mut bytes: &[u8], mut out: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            match self.state {
                TitleState::Ground => {
                    // Fast path: text without `ESC k` goes to the parser whole.
                    let mut from = 0;
                    loop {
                        match memchr::memchr(0x1b, &bytes[from..]) {
                            None => {
                                out(bytes);
                                return;
                            }
                            Some(i) => {
                                let at = from + i;
                                match bytes.get(at + 1) {
                                    Some(b'k') => {
                                        if at > 0 {
                                            out(&bytes[..at]);
                                        }
                                        self.state = TitleState::Title;
                                        bytes = &bytes[at + 2..];
                                        break;
                                    }
                                    Some(_) => from = at + 1,
                                    None => {
                                        if at > 0 {
                                            out(&bytes[..at]);
                                        }
                                        self.state = TitleState::Escape;
                                        return;
                                    }
                                }
                            }
                        }
                    }
                }
                TitleState::Escape => {
                    if bytes[0] == b'k' {
                        self.state = TitleState::Title;
                        bytes = &bytes[1..];
                    } else {
                        self.state = TitleState::Ground;
                        out(b"\x1b");
                    }
                }
                TitleState::Title => match memchr::memchr(0x1b, bytes) {
                    None => return,
                    Some(i) => {
                        self.state = TitleState::TitleEscape;
                        bytes = &bytes[i + 1..];
                    }
                },
                TitleState::TitleEscape => {
                    // ESC \ ends the string; an ESC starting anything else ends it too and
                    // is parsed as itself. BEL does not end it (as in tmux).
                    self.state = TitleState::Ground;
                    if bytes[0] == b'\\' {
                        bytes = &bytes[1..];
                    } else {
                        out(b"\x1b");
                    }
                }
            }
        }
    }
}

/// Parse `bytes` into a fresh model of the given size.
pub fn model_of(cols: usize, lines: usize, bytes: &[u8]) -> Term {
    let mut p = TermParser::new(Term::new(cols, lines));
    p.advance(bytes);
    p.term
}
