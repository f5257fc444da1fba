//! Cutting text into claim units — sentences, clauses after `;`, lines and list items — each a
//! span of code points, whole or as text streams in.

/// One unit: code-point offsets into the text, without surrounding space or list markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    pub start: usize,
    pub end: usize,
}

/// Words after which a full stop does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "mr", "mrs", "ms", "dr", "no", "vs", "approx", "inc", "ltd", "st", "fig",
    "art", "sec", "para", "cf", "al",
];

/// Cuts `text` into units, all of them (the text is complete).
pub fn units(text: &str) -> Vec<Unit> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(end) = boundary(&chars, from, true) {
        push_trimmed(&chars, from, end, &mut out);
        from = end;
    }
    out
}

/// Cuts streamed text into units as soon as each one is certainly complete.
#[derive(Debug, Default)]
pub struct UnitSplitter {
    chars: Vec<char>,
    from: usize,
}

impl UnitSplitter {
    /// Adds streamed text; returns the units it completed.
    pub fn push(&mut self, text: &str) -> Vec<Unit> {
        self.chars.extend(text.chars());
        self.take(false)
    }

    /// The text has ended: returns the units still open.
    pub fn finish(&mut self) -> Vec<Unit> {
        self.take(true)
    }

    /// Everything pushed so far.
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    fn take(&mut self, at_end: bool) -> Vec<Unit> {
        let mut out = Vec::new();
        while let Some(end) = boundary(&self.chars, self.from, at_end) {
            push_trimmed(&self.chars, self.from, end, &mut out);
            self.from = end;
        }
        out
    }
}

fn push_trimmed(chars: &[char], start: usize, end: usize, out: &mut Vec<Unit>) {
    let mut s = start;
    let mut e = end;
    while s < e && chars[s].is_whitespace() {
        s += 1;
    }
    // A list marker: `-`, `*`, `•`, or `12.` / `12)` followed by a space.
    if s < e
        && matches!(chars[s], '-' | '*' | '•')
        && chars.get(s + 1).is_some_and(|c| c.is_whitespace())
    {
        s += 1;
    } else {
        let mut d = s;
        while d < e && chars[d].is_ascii_digit() {
            d += 1;
        }
        if d > s && d + 1 < e && matches!(chars[d], '.' | ')') && chars[d + 1] == ' ' {
            s = d + 1;
        }
    }
    while s < e && chars[s].is_whitespace() {
        s += 1;
    }
    while e > s && chars[e - 1].is_whitespace() {
        e -= 1;
    }
    if chars[s..e].iter().any(|c| c.is_alphanumeric()) {
        out.push(Unit { start: s, end: e });
    }
}

/// The end (exclusive) of the unit that starts at `from`, if it is certain; with `at_end` the
/// text is complete, so its remainder is a unit too.
fn boundary(chars: &[char], from: usize, at_end: bool) -> Option<usize> {
    if from >= chars.len() {
        return None;
    }
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '\n' | ';' => return Some(i + 1),
            '.' | '!' | '?' => {
                // Closing quotes and brackets stay with their sentence.
                let mut j = i + 1;
                while j < chars.len()
                    && matches!(chars[j], '"' | '\'' | ')' | ']' | '”' | '’' | '*')
                {
                    j += 1;
                }
                match chars.get(j) {
                    None if at_end => return Some(j),
                    None => return None,
                    Some(c) if c.is_whitespace() => {
                        if chars[i] == '.'
                            && (is_abbreviation(chars, from, i) || is_list_number(chars, from, i))
                        {
                            i = j;
                            continue;
                        }
                        // The next word must have begun to rule out "e.g. lower case" runs.
                        let mut k = j;
                        while k < chars.len() && chars[k] == ' ' {
                            k += 1;
                        }
                        match chars.get(k) {
                            None if at_end => return Some(j),
                            None => return None,
                            Some(next) if next.is_lowercase() => i = k,
                            Some(_) => return Some(j),
                        }
                    }
                    Some(_) => i = j,
                }
            }
            _ => i += 1,
        }
    }
    at_end.then_some(chars.len())
}

/// Whether the full stop at `dot` ends a list number (`2.` opening a line).
fn is_list_number(chars: &[char], from: usize, dot: usize) -> bool {
    let before = &chars[from..dot];
    let digits = before
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .count();
    digits > 0
        && before[..before.len() - digits]
            .iter()
            .all(|c| c.is_whitespace())
}

/// Whether the word ending at the full stop at `dot` is an abbreviation or a single initial.
fn is_abbreviation(chars: &[char], from: usize, dot: usize) -> bool {
    let mut s = dot;
    while s > from && (chars[s - 1].is_alphanumeric() || chars[s - 1] == '.') {
        s -= 1;
    }
    let word: String = chars[s..dot].iter().collect::<String>().to_lowercase();
    (word.chars().count() == 1 && word.chars().all(char::is_alphabetic))
        || ABBREVIATIONS.contains(&word.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        units(text)
            .into_iter()
            .map(|u| chars[u.start..u.end].iter().collect())
            .collect()
    }

    #[test]
    fn sentences_clauses_and_list_items() {
        assert_eq!(
            texts("Meals cost $85.50 per day. Hotels, e.g. in London, cost more; taxis are extra.\n- First item\n2. Second item"),
            ["Meals cost $85.50 per day.", "Hotels, e.g. in London, cost more;", "taxis are extra.", "First item", "Second item"]
        );
    }

    #[test]
    fn streamed_units_match_whole_ones() {
        let text = "The limit is 14 days. Dr. Smith approves it! Is that all? Yes: ask HR.\nDone";
        let mut splitter = UnitSplitter::default();
        let mut streamed = Vec::new();
        for piece in text.split_inclusive([' ', '.']) {
            streamed.extend(splitter.push(piece));
        }
        streamed.extend(splitter.finish());
        assert_eq!(streamed, units(text));
        assert_eq!(splitter.text(), text);
    }
}
