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

    /// Rewrap the text of the screen and its scrollback for `cols` columns, as tmux does
    /// on a change of width: the rows of a line that wrapped are joined into one line and
    /// split again at the new width (a wide character is not split: it moves to the next
    /// row), and a row too long for the new width wraps. The screen is the last `lines`
    /// rows of the result (rows from the scrollback come down when there are fewer);
    /// `cursor` (line on the screen, column) moves with the character it was on, and is
    /// returned in the new screen's terms (the top left when its line went into the
    /// scrollback).
    pub fn reflow(&mut self, cols: usize, lines: usize, cursor: (usize, usize)) -> (usize, usize) {
        let cursor_row = self.history.len() + cursor.0;
        let all: Vec<Row> = self.history.drain(..).chain(self.rows.drain(..)).collect();
        // Logical lines: their cells and combining marks (by offset in the line), and the
        // cursor's line and offset.
        // (cells, combining marks by offset in the line)
        type Line = (Vec<Cell>, Vec<(usize, String)>);
        let mut logical: Vec<Line> = Vec::new();
        let mut current: Line = (Vec::new(), Vec::new());
        let mut at = (0usize, 0usize);
        for (i, row) in all.iter().enumerate() {
            if i == cursor_row {
                at = (logical.len(), current.0.len() + cursor.1);
            }
            let mut take = if row.wrapped {
                row.cells.len()
            } else {
                row.used_len()
            };
            // A wide character that did not fit left its row's last column blank.
            if row.wrapped
                && take > 0
                && row.cells[take - 1].is_default_blank()
                && all.get(i + 1).is_some_and(|n| n.cell(0).is_wide())
            {
                take -= 1;
            }
            let base = current.0.len();
            current
                .0
                .extend_from_slice(&row.cells[..take.min(row.cells.len())]);
            current.1.extend(
                row.combining
                    .iter()
                    .map(|(c, m)| (base + *c as usize, m.clone())),
            );
            if !row.wrapped {
                logical.push(std::mem::take(&mut current));
            }
        }
        if !current.0.is_empty() || !current.1.is_empty() {
            logical.push(current);
        }
        // Split again.
        let mut out: Vec<Row> = Vec::new();
        let mut new_cursor = (0usize, 0usize);
        for (li, (cells, marks)) in logical.into_iter().enumerate() {
            let first = out.len();
            let mut row = Row::new(0, Pen::default());
            // Where each cell of the line went: (row, column).
            let mut placed = Vec::with_capacity(cells.len());
            for cell in cells {
                if row.cells.len() == cols
                    || (cell.is_wide() && !row.cells.is_empty() && row.cells.len() + 1 == cols)
                {
                    row.cells.resize(cols, Cell::default());
                    row.wrapped = true;
                    out.push(std::mem::replace(&mut row, Row::new(0, Pen::default())));
                }
                placed.push((out.len(), row.cells.len()));
                row.cells.push(cell);
            }
            row.cells.resize(cols, Cell::default());
            out.push(row);
            for (off, mark) in marks {
                if let Some(&(r, c)) = placed.get(off) {
                    out[r].combining.push((c as u16, mark));
                }
            }
            if li == at.0 {
                let (r, c) = match placed.get(at.1) {
                    Some(&p) => p,
                    None => {
                        // Past the text: as far past its end as it was.
                        let end = placed.last().map_or((first, 0), |&(r, c)| (r, c + 1));
                        let off = end.1 + (at.1 - placed.len());
                        (end.0 + off / cols.max(1), off % cols.max(1))
                    }
                };
                while out.len() <= r {
                    out.last_mut().expect("a row").wrapped = true;
                    out.push(Row::new(cols, Pen::default()));
                }
                new_cursor = (r, c);
            }
        }
        while out.len() < lines {
            out.push(Row::new(cols, Pen::default()));
        }
        let hsize = out.len() - lines;
        let mut rest = out.split_off(hsize);
        for row in &mut out {
            row.trim();
            row.combining.sort_by_key(|(c, _)| *c);
        }
        let drop = out.len().saturating_sub(self.history_limit);
        self.history = out.into_iter().skip(drop).collect();
        for row in &mut rest {
            row.combining.sort_by_key(|(c, _)| *c);
        }
        self.rows = rest.into();
        if new_cursor.0 < hsize {
            (0, 0)
        } else {
            (new_cursor.0 - hsize, new_cursor.1)
        }
    }
}
