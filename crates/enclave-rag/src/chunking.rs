//! Cutting a document's text into chunks that follow its structure — headings, paragraphs,
//! list items, table rows — each at most a token budget, overlapping by a block, and each
//! keeping its code-point offsets into the document so a citation can point at the exact span.

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Code-point offsets into the document's text; `text` is that span.
    pub start: usize,
    pub end: usize,
    pub text: String,
    /// What frames the chunk but lies outside it: the headings above it and, inside a table,
    /// the table's header row. Indexed and embedded with the chunk, never cited.
    pub context: String,
}

/// Chunk sizes, in tokens as the caller counts them.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Most tokens of one chunk (a single longer block is cut at sentence or word ends).
    pub max_tokens: usize,
    /// Most tokens repeated from the end of one chunk at the start of the next.
    pub overlap_tokens: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            overlap_tokens: 40,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Heading(usize),
    Paragraph,
    Item,
    TableRow,
}

#[derive(Debug, Clone)]
struct Block {
    kind: BlockKind,
    start: usize,
    end: usize,
    tokens: usize,
}

/// Cuts `text` into chunks; `count` tells how many tokens a piece of text is.
pub fn chunk(text: &str, limits: ChunkLimits, count: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let chars: Vec<char> = text.chars().collect();
    let slice = |s: usize, e: usize| -> String { chars[s..e].iter().collect() };
    let blocks = split_long(blocks(&chars), &chars, limits.max_tokens, count);
    let mut chunks = Vec::new();
    let mut headings: Vec<(usize, usize, usize)> = Vec::new(); // (level, start, end)
    let mut table_header: Option<(usize, usize)> = None;
    let mut current: Vec<&Block> = Vec::new();
    let mut context = String::new();
    let mut tokens = 0;
    // A new chunk has begun (possibly with carried blocks): its context is to be worked out.
    let mut fresh = false;
    let flush = |current: &mut Vec<&Block>, context: &str, chunks: &mut Vec<Chunk>| {
        if let (Some(first), Some(last)) = (current.first(), current.last()) {
            chunks.push(Chunk {
                start: first.start,
                end: last.end,
                text: slice(first.start, last.end),
                context: context.to_string(),
            });
        }
        current.clear();
    };
    for (i, block) in blocks.iter().enumerate() {
        match block.kind {
            BlockKind::Heading(level) => {
                // Headings frame the chunks below them (as context) rather than fill them.
                flush(&mut current, &context, &mut chunks);
                tokens = 0;
                headings.retain(|(l, _, _)| *l < level);
                headings.push((level, block.start, block.end));
                table_header = None;
                continue;
            }
            BlockKind::TableRow => {
                let starts_table = i == 0 || blocks[i - 1].kind != BlockKind::TableRow;
                if starts_table {
                    table_header = Some((block.start, block.end));
                }
            }
            _ => table_header = None,
        }
        if tokens + block.tokens > limits.max_tokens && !current.is_empty() {
            // Overlap: the last blocks of this chunk, up to the overlap budget, open the next.
            let mut carried: Vec<&Block> = Vec::new();
            let mut carried_tokens = 0;
            for b in current.iter().rev() {
                if carried_tokens + b.tokens > limits.overlap_tokens
                    || carried.len() + 1 == current.len()
                {
                    break;
                }
                carried_tokens += b.tokens;
                carried.insert(0, b);
            }
            flush(&mut current, &context, &mut chunks);
            if carried_tokens + block.tokens <= limits.max_tokens {
                current = carried;
                tokens = carried_tokens;
            } else {
                tokens = 0;
            }
            fresh = true;
        }
        if current.is_empty() || fresh {
            fresh = false;
            let first_start = current.first().map_or(block.start, |b| b.start);
            let mut ctx: Vec<String> = headings
                .iter()
                .map(|(_, s, e)| slice(*s, *e).trim_start_matches('#').trim().to_string())
                .collect();
            if let Some((s, e)) = table_header {
                if s < first_start {
                    ctx.push(slice(s, e));
                }
            }
            context = ctx.join(" > ");
        }
        current.push(block);
        tokens += block.tokens;
    }
    flush(&mut current, &context, &mut chunks);
    chunks
}

/// The document's blocks: headings, paragraphs, list items and table rows, in order.
fn blocks(chars: &[char]) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut line_start = 0;
    let mut paragraph: Option<(usize, usize)> = None;
    let close = |paragraph: &mut Option<(usize, usize)>, out: &mut Vec<Block>| {
        if let Some((s, e)) = paragraph.take() {
            out.push(Block {
                kind: BlockKind::Paragraph,
                start: s,
                end: e,
                tokens: 0,
            });
        }
    };
    while line_start < chars.len() {
        let line_end = chars[line_start..]
            .iter()
            .position(|c| *c == '\n')
            .map_or(chars.len(), |p| line_start + p);
        let mut s = line_start;
        while s < line_end && chars[s].is_whitespace() {
            s += 1;
        }
        let mut e = line_end;
        while e > s && chars[e - 1].is_whitespace() {
            e -= 1;
        }
        let line = &chars[s..e];
        if line.is_empty() {
            close(&mut paragraph, &mut out);
        } else if line[0] == '#' {
            close(&mut paragraph, &mut out);
            let level = line.iter().take_while(|c| **c == '#').count();
            out.push(Block {
                kind: BlockKind::Heading(level),
                start: s,
                end: e,
                tokens: 0,
            });
        } else if line[0] == '|' {
            close(&mut paragraph, &mut out);
            // A separator row (|---|---|) carries nothing.
            if !line.iter().all(|c| matches!(c, '|' | '-' | ':' | ' ')) {
                out.push(Block {
                    kind: BlockKind::TableRow,
                    start: s,
                    end: e,
                    tokens: 0,
                });
            }
        } else if is_item(line) {
            close(&mut paragraph, &mut out);
            out.push(Block {
                kind: BlockKind::Item,
                start: s,
                end: e,
                tokens: 0,
            });
        } else {
            paragraph = Some(match paragraph {
                Some((ps, _)) => (ps, e),
                None => (s, e),
            });
        }
        line_start = line_end + 1;
    }
    close(&mut paragraph, &mut out);
    out
}

fn is_item(line: &[char]) -> bool {
    if matches!(line[0], '-' | '*' | '•') {
        return line.get(1).is_some_and(|c| *c == ' ');
    }
    let digits = line.iter().take_while(|c| c.is_ascii_digit()).count();
    digits > 0
        && line.get(digits).is_some_and(|c| matches!(c, '.' | ')'))
        && line.get(digits + 1) == Some(&' ')
}

/// Counts each block's tokens and cuts a block over the budget at sentence ends (or, for one
/// overlong sentence, at word ends).
fn split_long(
    blocks: Vec<Block>,
    chars: &[char],
    max: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<Block> {
    let mut out = Vec::new();
    for mut block in blocks {
        let text: String = chars[block.start..block.end].iter().collect();
        block.tokens = count(&text);
        if block.tokens <= max {
            out.push(block);
            continue;
        }
        let mut pieces = Vec::new();
        for unit in crate::units::units(&text) {
            let piece: String = chars[block.start + unit.start..block.start + unit.end]
                .iter()
                .collect();
            let n = count(&piece);
            if n <= max {
                pieces.push((block.start + unit.start, block.start + unit.end, n));
            } else {
                // Word ends: cut every `max` tokens' worth of words.
                let mut s = block.start + unit.start;
                let end = block.start + unit.end;
                while s < end {
                    let mut e = s;
                    let mut last_fit = None;
                    while e < end {
                        e += 1;
                        if e == end || chars[e].is_whitespace() {
                            let t: String = chars[s..e].iter().collect();
                            if count(&t) > max && last_fit.is_some() {
                                break;
                            }
                            last_fit = Some(e);
                        }
                    }
                    let cut = last_fit.unwrap_or(end);
                    let t: String = chars[s..cut].iter().collect();
                    pieces.push((s, cut, count(&t)));
                    s = cut;
                    while s < end && chars[s].is_whitespace() {
                        s += 1;
                    }
                }
            }
        }
        // Sentences packed back together up to the budget.
        let mut acc: Option<(usize, usize, usize)> = None;
        for (s, e, n) in pieces {
            acc = match acc {
                Some((as_, _, an)) if an + n <= max => Some((as_, e, an + n)),
                Some(done) => {
                    out.push(Block {
                        kind: block.kind,
                        start: done.0,
                        end: done.1,
                        tokens: done.2,
                    });
                    Some((s, e, n))
                }
                None => Some((s, e, n)),
            };
        }
        if let Some((s, e, n)) = acc {
            out.push(Block {
                kind: block.kind,
                start: s,
                end: e,
                tokens: n,
            });
        }
    }
    out
}

/// Whitespace-separated words: a stand-in token count where no tokenizer is at hand.
pub fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# Travel policy\n\nIntro paragraph one line.\nSecond line of the intro.\n\n## Meals\n- Breakfast is covered.\n- Dinner is covered up to $85.\n\n## Hotels\n| City | Limit |\n|---|---|\n| London | $250 |\n| Paris | $200 |\n";

    fn check_offsets(text: &str, chunks: &[Chunk]) {
        let chars: Vec<char> = text.chars().collect();
        for c in chunks {
            assert_eq!(chars[c.start..c.end].iter().collect::<String>(), c.text);
        }
    }

    #[test]
    fn chunks_follow_headings_and_keep_offsets() {
        let chunks = chunk(
            DOC,
            ChunkLimits {
                max_tokens: 200,
                overlap_tokens: 0,
            },
            &count_words,
        );
        check_offsets(DOC, &chunks);
        assert_eq!(chunks.len(), 3, "{chunks:#?}");
        assert!(chunks[0].text.starts_with("Intro"));
        assert_eq!(chunks[0].context, "Travel policy");
        assert!(chunks[1].text.contains("$85"));
        assert_eq!(chunks[1].context, "Travel policy > Meals");
        assert!(chunks[2].text.contains("London") && chunks[2].text.contains("Paris"));
    }

    #[test]
    fn small_budgets_cut_between_blocks_with_overlap_and_table_headers_as_context() {
        let chunks = chunk(
            DOC,
            ChunkLimits {
                max_tokens: 5,
                overlap_tokens: 0,
            },
            &count_words,
        );
        check_offsets(DOC, &chunks);
        let paris = chunks
            .iter()
            .find(|c| c.text.contains("Paris"))
            .expect("paris chunk");
        assert!(!paris.text.contains("London"));
        assert_eq!(paris.context, "Travel policy > Hotels > | City | Limit |");
        assert!(
            chunks.iter().all(|c| count_words(&c.text) <= 5),
            "{chunks:#?}"
        );
        let overlapping = chunk(
            DOC,
            ChunkLimits {
                max_tokens: 8,
                overlap_tokens: 4,
            },
            &count_words,
        );
        check_offsets(DOC, &overlapping);
        let london: Vec<&Chunk> = overlapping
            .iter()
            .filter(|c| c.text.contains("London"))
            .collect();
        assert!(!london.is_empty());
    }

    #[test]
    fn an_overlong_paragraph_is_cut_at_sentence_ends() {
        let text = "One two three four. Five six seven eight. Nine ten eleven twelve.";
        let chunks = chunk(
            text,
            ChunkLimits {
                max_tokens: 8,
                overlap_tokens: 0,
            },
            &count_words,
        );
        check_offsets(text, &chunks);
        assert_eq!(chunks[0].text, "One two three four. Five six seven eight.");
        assert_eq!(chunks[1].text, "Nine ten eleven twelve.");
    }
}
