//! One character cell and the pen (SGR state) it was drawn with.
//!
//! A cell is kept to 16 bytes: the scrollback holds many of them. Combining marks live
//! beside the row (see `grid::Row::combining`), not in every cell.

use serde::{Deserialize, Serialize};

/// A colour as the program asked for it. `Named` (SGR 30–37, 90–97) and `Indexed`
/// (SGR 38;5;n) are kept apart because terminals (tmux among them) render and report
/// them differently, and repaint must reproduce the same request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Color {
    #[default]
    Default,
    /// 0–7 normal, 8–15 bright.
    Named(u8),
    Indexed(u8),
    Rgb(u8, u8, u8),
}

/// SGR attribute bits, plus the two layout bits of wide characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Attrs(pub u16);

impl Attrs {
    pub const BOLD: u16 = 1 << 0;
    pub const DIM: u16 = 1 << 1;
    pub const ITALIC: u16 = 1 << 2;
    pub const UNDERLINE: u16 = 1 << 3;
    pub const DOUBLE_UNDERLINE: u16 = 1 << 4;
    pub const CURLY_UNDERLINE: u16 = 1 << 5;
    pub const DOTTED_UNDERLINE: u16 = 1 << 6;
    pub const DASHED_UNDERLINE: u16 = 1 << 7;
    pub const BLINK: u16 = 1 << 8;
    pub const REVERSE: u16 = 1 << 9;
    pub const HIDDEN: u16 = 1 << 10;
    pub const STRIKE: u16 = 1 << 11;
    /// The cell holds a double-width character; the next cell is its spacer.
    pub const WIDE: u16 = 1 << 14;
    /// The right half of a double-width character.
    pub const WIDE_SPACER: u16 = 1 << 15;

    pub const ANY_UNDERLINE: u16 = Self::UNDERLINE
        | Self::DOUBLE_UNDERLINE
        | Self::CURLY_UNDERLINE
        | Self::DOTTED_UNDERLINE
        | Self::DASHED_UNDERLINE;
    pub const SGR_MASK: u16 = 0x0fff;

    #[inline]
    pub fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
    #[inline]
    pub fn set(&mut self, bit: u16, on: bool) {
        if on { self.0 |= bit } else { self.0 &= !bit }
    }
    #[inline]
    pub fn sgr(self) -> Attrs {
        Attrs(self.0 & Self::SGR_MASK)
    }
}

/// What SGR sets: the colours and attributes new characters are drawn with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pen {
    pub fg: Color,
    pub bg: Color,
    pub attrs: Attrs,
}

impl Pen {
    /// The pen an erase operation leaves behind: only the background colour survives
    /// (background colour erase, as xterm and tmux do).
    #[inline]
    pub fn erased(self) -> Pen {
        Pen {
            fg: Color::Default,
            bg: self.bg,
            attrs: Attrs::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub ch: char,
    pub fg: Color,
    pub bg: Color,
    pub attrs: Attrs,
}

impl Default for Cell {
    fn default() -> Self {
        Cell::blank(Pen::default())
    }
}

impl Cell {
    #[inline]
    pub fn blank(pen: Pen) -> Cell {
        Cell {
            ch: ' ',
            fg: pen.fg,
            bg: pen.bg,
            attrs: pen.attrs,
        }
    }
    #[inline]
    pub fn pen(&self) -> Pen {
        Pen {
            fg: self.fg,
            bg: self.bg,
            attrs: self.attrs.sgr(),
        }
    }
    #[inline]
    pub fn is_wide(&self) -> bool {
        self.attrs.has(Attrs::WIDE)
    }
    #[inline]
    pub fn is_spacer(&self) -> bool {
        self.attrs.has(Attrs::WIDE_SPACER)
    }
    /// A blank in the default pen: what trailing cells of a row may be trimmed to.
    #[inline]
    pub fn is_default_blank(&self) -> bool {
        // Field by field with the cheap tests first: this runs over every scrolled line.
        self.ch == ' '
            && self.attrs.0 == 0
            && matches!(self.fg, Color::Default)
            && matches!(self.bg, Color::Default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn cell_stays_small() {
        assert!(std::mem::size_of::<Cell>() <= 16);
    }
}
