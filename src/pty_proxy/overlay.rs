//! What crterm itself draws over the session's screen: a one-line notice and the help box.
//! The daemon writes them (it is the only writer to the user's terminal, so nothing
//! interleaves with the session's output); a redraw from the model removes them.

use crate::config::key_name;

/// A notice on the bottom rows (one row per line of `text`), in reverse video, each line
/// cut to the width (a wrap on the last row would scroll the screen); the cursor stays
/// where it was.
pub fn notice(text: &str, cols: usize, rows: usize) -> Vec<u8> {
    // One row per line of `text`, a line too long for the screen going on in the rows
    // below it; on the last rows (as many as fit, the first lines first).
    let width = cols.saturating_sub(1).max(8);
    let mut rows_text: Vec<String> = Vec::new();
    for text in text.lines() {
        let mut line = format!(" crterm: {text} ");
        loop {
            let mut used = 0;
            let cut = line
                .char_indices()
                .find(|(_, c)| {
                    used += unicode_width::UnicodeWidthChar::width(*c).unwrap_or(0);
                    used > width
                })
                .map(|(i, _)| i);
            match cut {
                Some(i) => {
                    let rest = format!("   {}", &line[i..]);
                    line.truncate(i);
                    rows_text.push(std::mem::replace(&mut line, rest));
                }
                None => {
                    rows_text.push(line);
                    break;
                }
            }
        }
    }
    let shown = &rows_text[..rows_text.len().min(rows.max(1))];
    let first_row = rows + 1 - shown.len();
    let mut out = String::from("\x1b7");
    for (i, line) in shown.iter().enumerate() {
        out.push_str(&format!(
            "\x1b[{};1H\x1b[0;7m{line}\x1b[0m\x1b[K",
            first_row + i
        ));
    }
    out.push_str("\x1b8");
    out.into_bytes()
}

/// The prefix key's commands, in a box in the middle of the screen.
pub fn help(prefix: u8, cols: usize, rows: usize) -> Vec<u8> {
    let key = key_name(prefix);
    let lines = [
        "crterm keys, after the prefix".to_string(),
        String::new(),
        format!("  {key} d   checkpoint, then end the session"),
        format!("  {key} c   checkpoint and go on"),
        format!("  {key} x   detach (the session runs on)"),
        format!("  {key} {key} send {key} itself"),
        format!("  {key} ?   this help"),
        String::new(),
        "any key closes this".to_string(),
    ];
    let width = 46usize.min(cols);
    let top = rows.saturating_sub(lines.len()) / 2 + 1;
    let left = cols.saturating_sub(width) / 2 + 1;
    let mut s = String::from("\x1b7\x1b[0;7m");
    for (i, line) in lines.iter().enumerate() {
        let text: String = line.chars().take(width).collect();
        s.push_str(&format!("\x1b[{};{}H{:<width$}", top + i, left, text));
    }
    s.push_str("\x1b[0m\x1b8");
    s.into_bytes()
}
