//! What `proxrt pods` and `proxrt ps` print: aligned columns, short ids, ages.

/// Ids are shown by their first 13 characters, as crictl does (any unique prefix works
/// as an argument).
pub const SHORT_ID: usize = 13;

pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(SHORT_ID)]
}

/// Rows of cells printed in columns, each as wide as its widest cell, three spaces apart.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c] - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// How long ago `created` (ns since the epoch) was, in words: "3 minutes ago".
pub fn age(now: i64, created: i64) -> String {
    if created <= 0 {
        return "unknown".into();
    }
    let secs = (now - created).max(0) / 1_000_000_000;
    let plural = |n: i64, unit: &str| format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" });
    match secs {
        0 => "Less than a second ago".into(),
        1..=59 => plural(secs, "second"),
        60..=119 => "About a minute ago".into(),
        120..=3_599 => plural(secs / 60, "minute"),
        3_600..=7_199 => "About an hour ago".into(),
        7_200..=172_799 => plural(secs / 3_600, "hour"),
        172_800..=1_209_599 => plural(secs / 86_400, "day"),
        1_209_600..=5_183_999 => plural(secs / 604_800, "week"),
        5_184_000..=63_071_999 => plural(secs / 2_592_000, "month"),
        _ => plural(secs / 31_536_000, "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn ages_read_like_crictl() {
        let now = 1_800_000_000 * S;
        assert_eq!(age(now, now), "Less than a second ago");
        assert_eq!(age(now, now - S), "1 second ago");
        assert_eq!(age(now, now - 42 * S), "42 seconds ago");
        assert_eq!(age(now, now - 90 * S), "About a minute ago");
        assert_eq!(age(now, now - 10 * 60 * S), "10 minutes ago");
        assert_eq!(age(now, now - 3_700 * S), "About an hour ago");
        assert_eq!(age(now, now - 5 * 3_600 * S), "5 hours ago");
        assert_eq!(age(now, now - 3 * 86_400 * S), "3 days ago");
        assert_eq!(age(now, now - 21 * 86_400 * S), "3 weeks ago");
        assert_eq!(age(now, now - 90 * 86_400 * S), "3 months ago");
        assert_eq!(age(now, now - 800 * 86_400 * S), "2 years ago");
        // A clock that went backwards is not a negative age.
        assert_eq!(age(now, now + 5 * S), "Less than a second ago");
        assert_eq!(age(now, 0), "unknown");
    }

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.row(vec!["abc".into(), "a-long-name".into(), "Ready".into()]);
        t.row(vec!["abcdef".into(), "x".into(), "NotReady".into()]);
        assert_eq!(
            t.render(),
            "ID       NAME          STATE\n\
             abc      a-long-name   Ready\n\
             abcdef   x             NotReady\n"
        );
    }

    #[test]
    fn short_ids_are_13_characters() {
        assert_eq!(short_id("0123456789abcdef0123"), "0123456789abc");
        assert_eq!(short_id("abc"), "abc");
    }
}
