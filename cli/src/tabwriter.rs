//! A port of the column algorithm of Go's `text/tabwriter` (the subset ctr uses: left
//! alignment, space padding), so `berth … ls` tables line up exactly like `ctr … ls` and
//! scripts that cut columns by position keep working.
//!
//! Text is split into lines and cells at `\t`; a cell is part of a column only when it is
//! tab-terminated. A column block is a run of consecutive lines that have a cell in that
//! column; its width is the widest cell plus `padding`, at least `minwidth`.

use std::fmt::Write as _;

/// Buffers a table and formats it on [`TabWriter::finish`].
pub struct TabWriter {
    minwidth: usize,
    padding: usize,
    tabs: bool,
    buf: String,
}

impl TabWriter {
    /// `tabwriter.NewWriter(w, minwidth, 8, padding, ' ', 0)`.
    pub fn new(minwidth: usize, padding: usize) -> Self {
        TabWriter {
            minwidth,
            padding,
            tabs: false,
            buf: String::new(),
        }
    }

    /// `tabwriter.NewWriter(w, minwidth, 8, padding, '\t', 0)`: cells padded with tabs
    /// (`ctr content ls` uses this).
    pub fn with_tabs(minwidth: usize, padding: usize) -> Self {
        TabWriter {
            tabs: true,
            ..TabWriter::new(minwidth, padding)
        }
    }

    /// Appends one line (a trailing newline is added).
    pub fn line(&mut self, text: &str) {
        self.buf.push_str(text);
        self.buf.push('\n');
    }

    /// Formats everything written so far.
    pub fn finish(self) -> String {
        let text = self.buf.strip_suffix('\n').unwrap_or(&self.buf);
        if self.buf.is_empty() {
            return String::new();
        }
        let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
        let mut out = String::new();
        let mut widths = Vec::new();
        self.format(&lines, &mut widths, 0, lines.len(), &mut out);
        out
    }

    fn format(
        &self,
        lines: &[Vec<&str>],
        widths: &mut Vec<usize>,
        mut line0: usize,
        line1: usize,
        out: &mut String,
    ) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= lines[this].len() {
                this += 1;
                continue;
            }
            // A cell exists in this column: lines before it are printed with the widths known.
            self.write_lines(lines, widths, line0, this, out);
            line0 = this;
            let mut width = self.minwidth;
            while this < line1 && column + 1 < lines[this].len() {
                width = width.max(lines[this][column].chars().count() + self.padding);
                this += 1;
            }
            widths.push(width);
            self.format(lines, widths, line0, this, out);
            widths.pop();
            line0 = this;
        }
        self.write_lines(lines, widths, line0, line1, out);
    }

    fn write_lines(
        &self,
        lines: &[Vec<&str>],
        widths: &[usize],
        from: usize,
        to: usize,
        out: &mut String,
    ) {
        const TABWIDTH: usize = 8;
        for line in &lines[from..to] {
            for (j, cell) in line.iter().enumerate() {
                out.push_str(cell);
                if j < widths.len() {
                    let textw = cell.chars().count();
                    if self.tabs {
                        let cellw = widths[j].div_ceil(TABWIDTH) * TABWIDTH;
                        let n = cellw.saturating_sub(textw);
                        out.push_str(&"\t".repeat(n.div_ceil(TABWIDTH)));
                    } else {
                        let pad = widths[j].saturating_sub(textw);
                        let _ = write!(out, "{:pad$}", "");
                    }
                }
            }
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_with_trailing_tab_like_go() {
        let mut tw = TabWriter::new(1, 1);
        tw.line("NAME\tLABELS\t");
        tw.line("default\t\t");
        tw.line("k8s.io\ta=b\t");
        assert_eq!(
            tw.finish(),
            "NAME    LABELS \ndefault        \nk8s.io  a=b    \n"
        );
    }

    #[test]
    fn untermintated_last_cell_is_not_a_column() {
        let mut tw = TabWriter::new(4, 4);
        tw.line("TASK\tPID\tSTATUS\t");
        tw.line("c1\t1234\tRUNNING");
        assert_eq!(
            tw.finish(),
            "TASK    PID     STATUS    \nc1      1234    RUNNING\n"
        );
    }
}
