//! Documents a caller hands a grounded chat: their fields, the one text the model reads and the
//! grounder aligns against, and the way back from a span of that text to a field.

use serde_json::{Map, Value};

use crate::grounding::{CitedSpan, Passage};

/// One document of a grounded chat.
#[derive(Debug, Clone)]
pub struct SourceDocument {
    pub id: String,
    /// The caller's fields, echoed in citations (with `id`).
    pub fields: Map<String, Value>,
    /// The text the model reads: one `name: value` line per field the model may see.
    pub passage: Passage,
    /// Each shown field's value as code points of the passage: (field, start, end).
    ranges: Vec<(String, usize, usize)>,
    /// Where the document came from when it is a retrieved chunk of a stored one.
    pub origin: Option<Origin>,
    /// A tool's output (already in the conversation as the tool's result, so it is not shown
    /// to the model again; cited as a tool source).
    pub from_tool: bool,
}

/// The stored document a retrieved chunk belongs to; its `text` field starts at `start` (code
/// points) of that document's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub collection_id: String,
    pub document_id: String,
    pub title: String,
    pub start: usize,
}

/// Where a cited span lies in a document's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpan {
    pub field: String,
    /// Code points into the field's value.
    pub start: usize,
    pub end: usize,
    /// The field's text there.
    pub text: String,
}

impl SourceDocument {
    /// A document from its fields; `hidden` fields are echoed but never shown to the model
    /// (Cohere v1's `_excludes`). Non-string values are shown as JSON.
    pub fn new(id: String, fields: Map<String, Value>, hidden: &[String]) -> Self {
        Self::build(id, fields, hidden, "\n", "")
    }

    /// A tool's output: the tool's name, then its fields on one line (`get_weather: name: value,
    /// name: value`), so that a claim joining several of them ("24°C and sunny in Madrid") is
    /// one unit its source can support, and the tool's subject ("weather") counts as named.
    pub fn record(id: String, fields: Map<String, Value>, tool: &str) -> Self {
        let lead = if tool.is_empty() {
            String::new()
        } else {
            format!("{tool}: ")
        };
        let mut doc = Self::build(id, fields, &[], ", ", &lead);
        doc.from_tool = true;
        doc
    }

    fn build(
        id: String,
        fields: Map<String, Value>,
        hidden: &[String],
        between: &str,
        lead: &str,
    ) -> Self {
        let mut text = lead.to_string();
        let mut ranges = Vec::new();
        let mut at = lead.chars().count();
        // The title first: it frames what follows for the model and the grounder alike.
        let ordered = fields
            .iter()
            .filter(|(name, _)| *name == "title")
            .chain(fields.iter().filter(|(name, _)| *name != "title"));
        for (name, value) in ordered {
            if hidden.contains(name) || name == "id" {
                continue;
            }
            let shown = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !ranges.is_empty() {
                text.push_str(between);
                at += between.chars().count();
            }
            let line = format!("{name}: ");
            text.push_str(&line);
            at += line.chars().count();
            let len = shown.chars().count();
            ranges.push((name.clone(), at, at + len));
            text.push_str(&shown);
            at += len;
        }
        text.push('\n');
        Self {
            id,
            fields,
            passage: Passage { text },
            ranges,
            origin: None,
            from_tool: false,
        }
    }

    /// Replaces parts of the passage the model reads (byte ranges of `passage.text`, in order,
    /// not overlapping) with other text, keeping each field's range in step; the fields
    /// echoed to the caller are left as they were.
    pub fn replace_in_passage(&mut self, parts: &[(usize, usize, String)]) {
        let old = std::mem::take(&mut self.passage.text);
        let mut text = String::with_capacity(old.len());
        let mut at = 0;
        // (code point where a replacement starts in the old text, change in code points)
        let mut shifts: Vec<(usize, isize)> = Vec::new();
        for (start, end, with) in parts {
            if *start < at
                || *end > old.len()
                || !old.is_char_boundary(*start)
                || !old.is_char_boundary(*end)
            {
                continue;
            }
            text.push_str(&old[at..*start]);
            text.push_str(with);
            let cp_start = old[..*start].chars().count();
            let removed = old[*start..*end].chars().count() as isize;
            shifts.push((cp_start, with.chars().count() as isize - removed));
            at = *end;
        }
        text.push_str(&old[at..]);
        let moved = |cp: usize| {
            let delta: isize = shifts.iter().filter(|(s, _)| *s < cp).map(|(_, d)| d).sum();
            cp.saturating_add_signed(delta)
        };
        for range in &mut self.ranges {
            range.1 = moved(range.1);
            range.2 = moved(range.2);
        }
        self.passage.text = text;
    }

    /// The field a cited span lies in (the one it overlaps most: a span may begin at the
    /// field's `name: ` prefix), with offsets into its value.
    pub fn locate(&self, span: &CitedSpan) -> Option<FieldSpan> {
        let overlap = |(_, start, end): &&(String, usize, usize)| {
            span.end.min(*end).saturating_sub(span.start.max(*start))
        };
        let best = self
            .ranges
            .iter()
            .max_by_key(overlap)
            .filter(|r| overlap(r) > 0)?;
        let (field, start, end) = best;
        let (from, to) = (span.start.max(*start), span.end.min(*end));
        Some(FieldSpan {
            field: field.clone(),
            start: from - start,
            end: to - start,
            text: self
                .passage
                .text
                .chars()
                .skip(from)
                .take(to - from)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grounding::{CitedSpan, Grounder};
    use serde_json::json;

    #[test]
    fn a_cited_span_maps_back_to_its_field() {
        let fields = json!({"title": "Penguins", "snippet": "Émperor penguins are the tallest. They live in Antarctica.", "url": "x"});
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        let doc = SourceDocument::new("100".into(), fields, &["url".to_string()]);
        assert!(!doc.passage.text.contains("url"));
        let grounding = Grounder::new(std::slice::from_ref(&doc.passage))
            .ground("They live in Antarctica.", None);
        let span = &grounding.citations[0].sources[0];
        let located = doc.locate(span).expect("inside a field");
        assert_eq!(located.text, "They live in Antarctica.");
        // A span that begins at a field's name is placed in that field's value.
        let first = doc
            .locate(&CitedSpan {
                passage: 0,
                start: 0,
                end: 15,
                text: String::new(),
            })
            .expect("title");
        assert_eq!(
            (first.field.as_str(), first.start, first.text.as_str()),
            ("title", 0, "Penguins")
        );
        assert_eq!(located.field, "snippet");
        let value: Vec<char> = fields_value(&doc, "snippet").chars().collect();
        assert_eq!(
            value[located.start..located.end].iter().collect::<String>(),
            "They live in Antarctica."
        );
    }

    fn fields_value(doc: &SourceDocument, name: &str) -> String {
        doc.fields[name].as_str().unwrap_or_default().to_string()
    }
}
