//! Grammars (llguidance's Lark dialect) that make an answer valid by construction: a tool call
//! names a declared tool and its arguments follow that tool's schema; a JSON answer follows its
//! schema. Free text stays free: it is only kept from opening a call in any other way.

use serde_json::{json, Map, Value};

use super::{ToolChoice, ToolUse, CALL_CLOSE, CALL_OPEN, FENCE_OPEN};

/// How constrained JSON is written: one line, a space after `:` and `,` (the form the templates
/// use), no free whitespace — a small model given free whitespace may write newlines forever.
fn json_options(strict: bool) -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
        "lenient": !strict,
    })
}

/// Free text: it does not start like JSON, a code fence or a tag, and never contains a call's
/// opener. A plan before calls is the same text, ended by the opener of the call that follows.
const TEXT_RULES: &str = r#"TEXT: /[^\s`{<](.|\n)*/ & ~/(.|\n)*(<tool_call>|```json)(.|\n)*/
plan_tag[suffix="<tool_call>"]: /[^\s`{<](.|\n)*/ & ~/(.|\n)*```json(.|\n)*/
plan_fence[suffix="```json"]: /[^\s`{<](.|\n)*/ & ~/(.|\n)*<tool_call>(.|\n)*/
"#;

/// The grammar of an answer that may (or must) call `tool_use`'s tools; `None` when no tool is
/// offered (the answer is free text). A call is written tagged (the model's own format), fenced
/// as ```json (how small models tend to write it), or as bare JSON when the answer opens with
/// `{`; every form holds `{"name": <a declared tool>, "arguments": <its schema>}`. Where the
/// model may answer in text, a call may also name a tool that was not declared (small models
/// invent `multiply` or `translate` when no tool fits): such a call is never returned — the
/// server asks again for text ([`ToolChoice::TextOnly`]).
pub fn tool_grammar(tool_use: &ToolUse) -> Option<String> {
    let tools: Vec<_> = match &tool_use.choice {
        ToolChoice::None => return None,
        ToolChoice::TextOnly if tool_use.tools.is_empty() => return None,
        ToolChoice::TextOnly => {
            return Some(format!("%llguidance {{}}\n\nstart: TEXT\n{TEXT_RULES}"));
        }
        ToolChoice::Named(name) => tool_use.tools.iter().filter(|t| &t.name == name).collect(),
        _ => tool_use.tools.iter().collect(),
    };
    if tools.is_empty() {
        return None;
    }
    let auto = tool_use.choice == ToolChoice::Auto;
    let more = if tool_use.parallel {
        " (SEP call)*"
    } else {
        " \"\""
    };
    let mut lark = String::from("%llguidance {}\n\n");
    lark.push_str(if auto {
        "start: TEXT | calls | bare | plan_tag tag_tail more | plan_fence fence_tail more\n"
    } else {
        "start: calls | bare\n"
    });
    lark.push_str(&format!("more:{more}\n"));
    lark.push_str("calls: call more\n");
    lark.push_str(&format!(
        "call: {} tag_tail | {} fence_tail\n",
        lark_string(CALL_OPEN),
        lark_string(FENCE_OPEN)
    ));
    lark.push_str(&format!(
        "tag_tail: \"\\n\" body \"\\n\" {}\n",
        lark_string(CALL_CLOSE)
    ));
    lark.push_str("fence_tail: \"\\n\" body \"\\n```\"\n");
    lark.push_str(&format!(
        "bare: body{}\n",
        if tool_use.parallel {
            " (SEP body)*"
        } else {
            ""
        }
    ));
    let mut alternatives: Vec<String> = (0..tools.len()).map(|i| format!("tool_{i}")).collect();
    if auto {
        alternatives.push("undeclared".into());
    }
    lark.push_str(&format!("body: {}\n", alternatives.join(" | ")));
    lark.push_str("SEP: /\\n\\n?/\n");
    lark.push_str("NAME_OPEN: \"{\\\"name\\\": \\\"\"\n");
    lark.push_str("ARGS_OPEN: \"\\\", \\\"arguments\\\": \"\n");
    for (i, tool) in tools.iter().enumerate() {
        let mut schema = closed(tool.parameters.clone());
        if let Some(obj) = schema.as_object_mut() {
            obj.insert("x-guidance".into(), json_options(tool_use.strict));
        }
        lark.push_str(&format!(
            "tool_{i}: NAME_OPEN {} ARGS_OPEN %json {schema} \"}}\"\n",
            lark_string(&tool.name)
        ));
    }
    if auto {
        let declared: Vec<String> = tools.iter().map(|t| lark_string(&t.name)).collect();
        let mut any = json!({ "type": "object" });
        any["x-guidance"] = json_options(false);
        lark.push_str(&format!(
            "undeclared: NAME_OPEN UNDECLARED ARGS_OPEN %json {any} \"}}\"\n"
        ));
        lark.push_str(&format!(
            "UNDECLARED: /[A-Za-z_][A-Za-z0-9_.\\-]{{0,63}}/ & ~({})\n",
            declared.join(" | ")
        ));
        lark.push_str(TEXT_RULES);
    }
    Some(lark)
}

/// The grammar of a JSON answer: an object following `schema`, or any object.
pub fn json_grammar(schema: Option<&Value>, strict: bool) -> String {
    let mut schema = match schema {
        Some(schema) => closed(schema.clone()),
        None => json!({ "type": "object" }),
    };
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("x-guidance".into(), json_options(strict));
    }
    format!("%llguidance {{}}\n\nstart: %json {schema}\n")
}

/// `schema` with `additionalProperties: false` on every object that lists its properties and
/// says nothing about others: what is generated stays valid under the caller's schema, and the
/// model cannot invent parameters.
fn closed(mut schema: Value) -> Value {
    close_in_place(&mut schema);
    schema
}

fn close_in_place(schema: &mut Value) {
    match schema {
        Value::Object(obj) => {
            if obj.contains_key("properties") && !obj.contains_key("additionalProperties") {
                obj.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (key, value) in obj.iter_mut() {
                // Constants and examples are data, not schemas; the branches of `allOf` each
                // name only part of an object's properties, so closing them would exclude the rest.
                if !matches!(
                    key.as_str(),
                    "const" | "enum" | "default" | "examples" | "allOf"
                ) {
                    close_in_place(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_in_place),
        _ => {}
    }
}

/// A Lark string literal.
fn lark_string(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

/// An empty object schema: the arguments of a tool that takes none.
pub fn no_parameters() -> Value {
    Value::Object(Map::from_iter([
        ("type".to_string(), json!("object")),
        ("properties".to_string(), json!({})),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::ToolSpec;

    fn tools() -> ToolUse {
        ToolUse {
            tools: vec![ToolSpec {
                name: "get_weather".into(),
                description: String::new(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }],
            choice: ToolChoice::Auto,
            parallel: true,
            strict: false,
        }
    }

    #[test]
    fn auto_allows_text_and_calls_required_only_calls() {
        let auto = tool_grammar(&tools()).expect("grammar");
        assert!(auto.starts_with("%llguidance {}\n\nstart: TEXT | calls | bare |"));
        assert!(auto.contains("tool_0: NAME_OPEN \"get_weather\" ARGS_OPEN %json"));
        assert!(auto.contains("UNDECLARED: /[A-Za-z_][A-Za-z0-9_.\\-]{0,63}/ & ~(\"get_weather\")"));
        // Parameters the caller left open are closed.
        assert!(auto.contains("\"additionalProperties\":false"));
        let mut required = tools();
        required.choice = ToolChoice::Required;
        let grammar = tool_grammar(&required).expect("grammar");
        assert!(grammar.contains("start: calls | bare\n"));
        assert!(!grammar.contains("TEXT"));
        assert!(!grammar.contains("undeclared"));
        required.choice = ToolChoice::None;
        assert!(tool_grammar(&required).is_none());
        required.choice = ToolChoice::Named("missing".into());
        assert!(tool_grammar(&required).is_none());
    }

    #[test]
    fn closing_leaves_constants_alone() {
        let schema = closed(json!({"properties": {"a": {"const": {"properties": {}}}}}));
        assert_eq!(schema["additionalProperties"], json!(false));
        assert!(schema["properties"]["a"]["const"]
            .get("additionalProperties")
            .is_none());
    }
}
