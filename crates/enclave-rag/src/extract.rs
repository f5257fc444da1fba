//! Reading files into text that keeps its structure (headings as `#` lines, list items, tables
//! as `|` rows), which chunking then follows. Plain text and Markdown are read as they are;
//! HTML through `html2text` (maintained, renders headings, lists and tables as Markdown-like
//! text); PDF through `pdf-extract` (pure Rust over `lopdf`: no system library to install);
//! DOCX by reading `word/document.xml` from the zip with `quick-xml` (paragraphs, heading
//! styles, table rows); CSV through `csv` and JSON records through `serde_json`, both as a
//! table whose header row frames every chunk. A file that cannot be read is an error for that
//! file alone, never a panic.

use std::io::Read;

use quick_xml::events::Event;

/// The formats Enclave reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
    Csv,
    Json,
}

impl Format {
    /// The format a file name says (by extension), if Enclave reads it.
    pub fn of_name(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
        Some(match ext.as_str() {
            "txt" | "text" | "log" => Self::Text,
            "md" | "markdown" => Self::Markdown,
            "html" | "htm" => Self::Html,
            "pdf" => Self::Pdf,
            "docx" => Self::Docx,
            "csv" => Self::Csv,
            "json" | "jsonl" => Self::Json,
            _ => return None,
        })
    }
}

/// Largest file read, in bytes.
pub const MAX_FILE_BYTES: usize = 50 * 1024 * 1024;

/// The text of a file in `format`.
pub fn extract(bytes: &[u8], format: Format) -> Result<String, String> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(format!(
            "the file is larger than {} MB",
            MAX_FILE_BYTES / 1024 / 1024
        ));
    }
    let text = match format {
        Format::Text | Format::Markdown => utf8(bytes)?,
        Format::Html => {
            html2text::from_read(bytes, 10_000).map_err(|e| format!("unreadable HTML: {e}"))?
        }
        Format::Pdf => pdf(bytes)?,
        Format::Docx => docx(bytes)?,
        Format::Csv => csv_table(bytes)?,
        Format::Json => json_records(bytes)?,
    };
    let text = text.replace("\r\n", "\n").replace('\u{0}', "");
    if text.trim().is_empty() {
        return Err("the file has no text".into());
    }
    Ok(text)
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "the file is not UTF-8 text".to_string())
}

/// PDF text; a malformed file can make the parser panic, which is caught as an error.
fn pdf(bytes: &[u8]) -> Result<String, String> {
    let bytes = bytes.to_vec();
    let result = std::panic::catch_unwind(move || pdf_extract::extract_text_from_mem(&bytes));
    match result {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(format!("unreadable PDF: {e}")),
        Err(_) => Err("unreadable PDF: the file is malformed".into()),
    }
}

/// DOCX paragraphs as lines (headings as `#` lines, table cells as `|` rows).
fn docx(bytes: &[u8]) -> Result<String, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("unreadable DOCX: {e}"))?;
    let mut xml = String::new();
    archive
        .by_name("word/document.xml")
        .map_err(|_| "unreadable DOCX: no word/document.xml".to_string())?
        .take(MAX_FILE_BYTES as u64 * 4)
        .read_to_string(&mut xml)
        .map_err(|e| format!("unreadable DOCX: {e}"))?;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut out = String::new();
    let mut paragraph = String::new();
    let mut heading: Option<usize> = None;
    let mut in_text = false;
    let mut cells: Option<Vec<String>> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => match e.local_name().as_ref() {
                b"t" => in_text = true,
                b"tab" => paragraph.push('\t'),
                b"br" => paragraph.push('\n'),
                b"tr" => cells = Some(Vec::new()),
                b"pStyle" => {
                    for attr in e.attributes().flatten() {
                        if attr.key.local_name().as_ref() == b"val" {
                            let style = String::from_utf8_lossy(&attr.value).to_ascii_lowercase();
                            if let Some(level) =
                                style.strip_prefix("heading").and_then(|l| l.parse().ok())
                            {
                                heading = Some(level);
                            } else if style == "title" {
                                heading = Some(1);
                            }
                        }
                    }
                }
                _ => {}
            },
            Ok(Event::Text(t)) if in_text => {
                paragraph.push_str(&t.unescape().map_err(|e| format!("unreadable DOCX: {e}"))?);
            }
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    let text = std::mem::take(&mut paragraph);
                    match (&mut cells, heading.take()) {
                        (Some(row), _) => row.push(text.trim().to_string()),
                        (None, Some(level)) => out.push_str(&format!(
                            "\n{} {}\n\n",
                            "#".repeat(level.clamp(1, 6)),
                            text.trim()
                        )),
                        (None, None) if !text.trim().is_empty() => {
                            out.push_str(text.trim());
                            out.push_str("\n\n");
                        }
                        _ => {}
                    }
                }
                b"tr" => {
                    if let Some(row) = cells.take() {
                        let row: Vec<&str> = row
                            .iter()
                            .map(String::as_str)
                            .filter(|c| !c.is_empty())
                            .collect();
                        out.push_str(&format!("| {} |\n", row.join(" | ")));
                    }
                }
                b"tbl" => out.push('\n'),
                _ => {}
            },
            Ok(Event::Eof) => break,
            Err(e) => return Err(format!("unreadable DOCX: {e}")),
            _ => {}
        }
    }
    Ok(out)
}

/// One Markdown table row.
fn row(cells: &[String]) -> String {
    let cells: Vec<String> = cells
        .iter()
        .map(|c| c.replace('|', "/").replace('\n', " "))
        .collect();
    format!("| {} |\n", cells.join(" | "))
}

fn csv_table(bytes: &[u8]) -> Result<String, String> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("unreadable CSV: {e}"))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut out = row(&header);
    for record in reader.records() {
        let record = record.map_err(|e| format!("unreadable CSV: {e}"))?;
        out.push_str(&row(&record.iter().map(str::to_string).collect::<Vec<_>>()));
    }
    Ok(out)
}

/// A JSON array of records (or JSON Lines): flat records as a table, others as `key: value`
/// blocks.
fn json_records(bytes: &[u8]) -> Result<String, String> {
    let text = utf8(bytes)?;
    let records: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(items)) => items,
        Ok(other) => vec![other],
        Err(_) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("unreadable JSON: {e}"))?,
    };
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let flat = records.iter().all(|r| {
        r.as_object()
            .is_some_and(|o| o.values().all(|v| !v.is_object() && !v.is_array()))
    });
    let mut out = String::new();
    if flat && !records.is_empty() {
        let mut keys: Vec<String> = Vec::new();
        for r in &records {
            for k in r.as_object().into_iter().flat_map(|o| o.keys()) {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        out.push_str(&row(&keys));
        for r in &records {
            let cells: Vec<String> = keys
                .iter()
                .map(|k| r.get(k).map(show).unwrap_or_default())
                .collect();
            out.push_str(&row(&cells));
        }
    } else {
        for r in &records {
            match r.as_object() {
                Some(o) => {
                    for (k, v) in o {
                        out.push_str(&format!("{k}: {}\n", show(v)));
                    }
                }
                None => out.push_str(&show(r)),
            }
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(Format::of_name("a/Policy.PDF"), Some(Format::Pdf));
        assert_eq!(Format::of_name("notes.md"), Some(Format::Markdown));
        assert_eq!(Format::of_name("image.png"), None);
        assert_eq!(Format::of_name("README"), None);
    }

    #[test]
    fn csv_and_json_records_become_tables() {
        let csv = extract(b"city,limit\nLondon,$250\nParis,$200\n", Format::Csv).expect("csv");
        assert_eq!(
            csv,
            "| city | limit |\n| London | $250 |\n| Paris | $200 |\n"
        );
        let json = extract(
            br#"[{"city":"London","limit":250},{"city":"Paris","limit":200}]"#,
            Format::Json,
        )
        .expect("json");
        assert_eq!(
            json,
            "| city | limit |\n| London | 250 |\n| Paris | 200 |\n"
        );
    }

    #[test]
    fn html_keeps_headings_and_drops_markup() {
        let text = extract(b"<html><body><h1>Travel</h1><p>Meals: <b>$85</b> &amp; more.</p><script>x()</script></body></html>", Format::Html).expect("html");
        assert!(text.contains("# Travel"), "{text}");
        assert!(text.contains("$85") && text.contains("& more"), "{text}");
        assert!(!text.contains("<b>"), "{text}");
    }

    #[test]
    fn broken_files_are_errors_not_panics() {
        assert!(extract(b"%PDF-1.4 garbage that is not a pdf", Format::Pdf).is_err());
        assert!(extract(b"PK not a zip", Format::Docx).is_err());
        assert!(extract(&[0xff, 0xfe, 0x00], Format::Text).is_err());
        assert!(extract(b"   ", Format::Text).is_err());
    }
}
