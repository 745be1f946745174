//! The rows of one screen (primary or alternate) and, for the primary, its scrollback.
//!
//! Rows sit in ring buffers: scrolling the whole screen moves one row from the visible
//! ring into the history ring, nothing is copied.

use super::cell::{Cell, Pen};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub cells: Vec<Cell>,
    /// Combining marks attached to the character in a column, in arrival order.
    pub combining: Vec<(u16, String)>,
    /// The text ran past the last column into the next row (autowrap happened here).
    pub wrapped: bool,
}

impl Row {
    pub fn new(cols: usize, pen: Pen) -> Row {
        Row {
            cells: vec![Cell::blank(pen); cols],
            combining: Vec::new(),
            wrapped: false,
        }
    }

    pub fn reset(&mut self, cols: usize, pen: Pen) {
        self.cells.clear();
        self.cells.resize(cols, Cell::blank(pen));
        self.combining.clear();
        self.wrapped = false;
    }

    pub fn combining_at(&self, col: usize) -> Option<&str> {
        self.combining
            .iter()
            .find(|(c, _)| *c as usize == col)
            .map(|(_, s)| s.as_str())
    }

    pub fn push_combining(&mut self, col: usize, mark: char) {
        if let Some((_, s)) = self.combining.iter_mut().find(|(c, _)| *c as usize == col) {
            // A bound on marks per cell keeps hostile input from growing a row forever.
            if s.chars().count() < 16 {
                s.push(mark);
            }
        } else {
            // Kept sorted by column: one state, one representation.
            let at = self.combining.partition_point(|(c, _)| (*c as usize) < col);
            self.combining.insert(at, (col as u16, mark.to_string()));
        }
    }

    /// Forget combining marks of columns in `from..to` (their base characters changed).
    pub fn clear_combining(&mut self, from: usize, to: usize) {
        if !self.combining.is_empty() {
            self.combining
                .retain(|(c, _)| (*c as usize) < from || (*c as usize) >= to);
        }
    }

    /// Shift the combining marks of columns >= `from` by `delta`, dropping those that leave
    /// `0..cols`. (Marks of the columns a shift overwrites are cleared by the caller.)
    pub fn shift_combining(&mut self, from: usize, delta: isize, cols: usize) {
        if self.combining.is_empty() {
            return;
        }
        self.combining.retain_mut(|(c, _)| {
            let col = *c as usize;
            if col < from {
                return true;
            }
            let moved = col as isize + delta;
            if moved < 0 || moved >= cols as isize {
                return false;
            }
            *c = moved as u16;
            true
        });
    }

    /// Copy the first `used` cells (see `used_len`) into `into`, reusing its allocation.
    pub fn copy_trimmed_into(&self, into: &mut Row, used: usize) {
        into.cells.clear();
        into.cells.extend_from_slice(&self.cells[..used]);
        into.combining.clone_from(&self.combining);
        into.wrapped = self.wrapped;
    }

    /// How many cells matter: up to the last one that is not a default blank (or carries a
    /// combining mark).
    pub fn used_len(&self) -> usize {
        let keep = self
            .cells
            .iter()
            .rposition(|c| !c.is_default_blank())
            .map_or(0, |p| p + 1);
        keep.max(
            self.combining
                .iter()
                .map(|(c, _)| *c as usize + 1)
                .max()
                .unwrap_or(0),
        )
    }

    /// Drop trailing default blanks (rows in the scrollback keep only what they hold).
    pub fn trim(&mut self) {
        let keep = self.used_len();
        self.cells.truncate(keep);
        self.cells.shrink_to_fit();
    }

    pub fn cell(&self, col: usize) -> Cell {
        self.cells.get(col).copied().unwrap_or_default()
    }

    /// Make the row exactly `cols` wide, without splitting a wide character.
    pub fn fit(&mut self, cols: usize) {
        self.cells.resize(cols, Cell::default());
        if let Some(last) = self.cells.last_mut()
            && last.is_wide()
        {
            *last = Cell::blank(last.pen());
        }
        self.combining.retain(|(c, _)| (*c as usize) < cols);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    pub rows: VecDeque<Row>,
    /// Oldest first. Only the primary screen has one.
    pub history: VecDeque<Row>,
    pub history_limit: usize,
}

impl Grid {
    pub fn new(cols: usize, lines: usize, history_limit: usize) -> Grid {
        Grid {
            rows: (0..lines).map(|_| Row::new(cols, Pen::default())).collect(),
            history: VecDeque::new(),
            history_limit,
        }
    }

    pub fn row(&self, line: usize) -> &Row {
        &self.rows[line]
    }

    pub fn row_mut(&mut self, line: usize) -> &mut Row {
        &mut self.rows[line]
    }

    /// Scroll rows `top..=bottom` up by `n`, new blank rows appear at the bottom.
    /// With `to_history`, the rows leaving the top are kept in the scrollback.
    pub fn scroll_up(
        &mut self,
        top: usize,
        bottom: usize,
        n: usize,
        cols: usize,
        pen: Pen,
        to_history: bool,
    ) {
        let n = n.min(bottom + 1 - top);
        let whole = top == 0 && bottom + 1 == self.rows.len();
        for _ in 0..n {
            let mut row = if whole {
                self.rows.pop_front().expect("screen has rows")
            } else {
                self.rows.remove(top).expect("row in region")
            };
            if to_history && self.history_limit > 0 {
                let dropped = if self.history.len() >= self.history_limit {
                    self.history.pop_front()
                } else {
                    None
                };
                let used = row.used_len();
                if used * 2 >= row.cells.capacity() {
                    // Mostly full: the row itself goes into the history, and the row the
                    // history dropped (or a new one) becomes the blank screen row.
                    row.cells.truncate(used);
                    let spare = dropped.unwrap_or_else(|| Row::new(0, Pen::default()));
                    self.history.push_back(std::mem::replace(&mut row, spare));
                } else {
                    // Mostly blank: keep an exact copy, so the history holds at most twice
                    // what its rows use.
                    let mut kept = dropped.unwrap_or_else(|| Row::new(0, Pen::default()));
                    row.copy_trimmed_into(&mut kept, used);
                    self.history.push_back(kept);
                }
            }
            row.reset(cols, pen);
            if whole {
                self.rows.push_back(row);
            } else {
                self.rows.insert(bottom, row);
            }
        }
    }

    /// Scroll rows `top..=bottom` down by `n`, new blank rows appear at the top.
    pub fn scroll_down(&mut self, top: usize, bottom: usize, n: usize, cols: usize, pen: Pen) {
        let n = n.min(bottom + 1 - top);
        for _ in 0..n {
            let mut row = self.rows.remove(bottom).expect("row in region");
            row.reset(cols, pen);
            self.rows.insert(top, row);
        }
    }

    pub fn clear_history(&mut self) {
        self.history.clear();
    }

    /// Change the size without reflowing text: rows are cut or padded on the right; when
    /// the screen gets shorter, rows above the cursor go to the history first (as xterm
    /// and tmux keep the cursor's line on screen). Returns how many rows moved up.
    pub fn resize(
        &mut self,
        cols: usize,
        lines: usize,
        cursor_line: usize,
        keep_history: bool,
    ) -> usize {
        for row in self.rows.iter_mut() {
            row.fit(cols);
        }
        let mut moved = 0;
        while self.rows.len() > lines {
            // Drop blank rows below the cursor first, then push rows from the top.
            if self.rows.len() - 1 > cursor_line.saturating_sub(moved)
                && self
                    .rows
                    .back()
                    .is_some_and(|r| r.cells.iter().all(|c| c.is_default_blank()))
            {
                self.rows.pop_back();
                continue;
            }
            let mut row = self.rows.pop_front().expect("rows");
            moved += 1;
            if keep_history && self.history_limit > 0 {
                row.trim();
                if self.history.len() >= self.history_limit {
                    self.history.pop_front();
                }
                self.history.push_back(row);
            }
        }
        while self.rows.len() < lines {
            self.rows.push_back(Row::new(cols, Pen::default()));
        }
        moved
    }
}
