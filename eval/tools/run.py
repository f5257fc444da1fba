"""Tool-call evaluation: sends each request of eval/tools/cases.jsonl, offering the ten tools of
eval/tools/tools.json, to a running Enclave server and prints JSON figures for two modes:

- constrained: `tools` on /v1/chat/completions (OpenAI SDK shape): the server writes the tools
  into the prompt and generates under its grammar, so calls are well-formed and name a declared
  tool by construction;
- unconstrained: the same prompt the server writes (Qwen's tool section in the system turn), sent
  as a plain chat; the text is read as llama-server reads it (`<tool_call>` tags), and also
  leniently (a fenced or bare JSON object with "name" and "arguments").

Figures per mode: tool_selection_accuracy (the right tool, or no call when no tool fits),
argument_exact_match (calls to the right tool whose expected arguments all match: strings equal
ignoring case and surrounding space, numbers equal as numbers, lists equal item by item),
parse_rate (the share of answers that are either text with no call attempt or calls that parse
as JSON naming a declared tool), invented_tools (calls naming a tool that was not offered), and
no_tool_accuracy (requests no tool fits, answered without a call).

    python eval/tools/run.py --base-url http://127.0.0.1:8080 --api-key KEY [--limit N] [--mode constrained]
"""

import argparse
import json
import os
import re
import sys
import time

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def load_tools():
    with open(os.path.join(HERE, "tools.json"), encoding="utf-8") as f:
        return json.load(f)


def load_cases():
    with open(os.path.join(HERE, "cases.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def openai_tools(tools):
    return [{"type": "function", "function": t} for t in tools]


def tool_system_prompt(tools):
    """The system turn the server writes for a Qwen-format model (docs/tools.md)."""
    lines = [json.dumps({"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": t["parameters"]}}) for t in tools]
    return (
        QWEN_SYSTEM
        + "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        + "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + "\n".join(lines)
        + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>"
    )


TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.S)


def strict_calls(text):
    """Calls in `<tool_call>` tags; None when a tag holds something that is not a call."""
    calls = []
    for body in TAGGED.findall(text):
        try:
            value = json.loads(body)
        except json.JSONDecodeError:
            return None
        if not isinstance(value, dict) or "name" not in value:
            return None
        calls.append({"name": value["name"], "arguments": value.get("arguments") or {}})
    return calls


def lenient_calls(text):
    """Also a fenced or bare JSON object with "name" and "arguments"."""
    calls = strict_calls(text) or []
    if calls:
        return calls
    candidates = FENCED.findall(text)
    stripped = text.strip()
    if stripped.startswith("{"):
        candidates.append(stripped)
    for body in candidates:
        try:
            value = json.loads(body)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "name" in value and "arguments" in value:
            calls.append({"name": value["name"], "arguments": value["arguments"] or {}})
    return calls


def attempted_call(text):
    return "<tool_call>" in text or bool(FENCED.search(text)) or text.strip().startswith("{")


def same(expected, got):
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected is got
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        return abs(expected - got) < 1e-9
    if isinstance(expected, str) and isinstance(got, str):
        return expected.strip().lower() == got.strip().lower()
    if isinstance(expected, list) and isinstance(got, list):
        return len(expected) == len(got) and all(same(a, b) for a, b in zip(expected, got))
    return expected == got


def arguments_match(expected, got):
    return isinstance(got, dict) and all(k in got and same(v, got[k]) for k, v in expected.items())


def ask_constrained(client, base_url, api_key, model, tools, case):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": case["request"]}],
        "tools": openai_tools(tools),
        "temperature": 0,
        "max_tokens": 200,
    }
    r = client.post(f"{base_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
    r.raise_for_status()
    message = r.json()["choices"][0]["message"]
    calls = []
    for call in message.get("tool_calls") or []:
        try:
            arguments = json.loads(call["function"]["arguments"])
        except json.JSONDecodeError:
            return {"parsed": False, "calls": [], "text": message.get("content") or ""}
        calls.append({"name": call["function"]["name"], "arguments": arguments})
    return {"parsed": True, "calls": calls, "text": message.get("content") or ""}


def ask_unconstrained(client, base_url, api_key, model, tools, case, lenient):
    body = {
        "model": model,
        "messages": [{"role": "system", "content": tool_system_prompt(tools)}, {"role": "user", "content": case["request"]}],
        "temperature": 0,
        "max_tokens": 200,
    }
    r = client.post(f"{base_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
    r.raise_for_status()
    text = r.json()["choices"][0]["message"]["content"] or ""
    calls = lenient_calls(text) if lenient else strict_calls(text)
    if calls is None:
        return {"parsed": False, "calls": [], "text": text}
    # A call attempt that could not be read is a parse failure.
    parsed = bool(calls) or not attempted_call(text)
    return {"parsed": parsed, "calls": calls, "text": text}


def score(cases, answers, tools):
    names = {t["name"] for t in tools}
    selected = args_ok = args_total = parsed = invented = no_tool_ok = no_tool_total = 0
    for case, answer in zip(cases, answers):
        calls = answer["calls"]
        parsed += answer["parsed"] and all(c["name"] in names for c in calls)
        invented += any(c["name"] not in names for c in calls)
        first = calls[0]["name"] if calls else None
        if case["tool"] is None:
            no_tool_total += 1
            no_tool_ok += first is None
            selected += first is None
        else:
            selected += first == case["tool"]
            if first == case["tool"]:
                args_total += 1
                args_ok += arguments_match(case["arguments"], calls[0]["arguments"])
    n = len(cases)
    return {
        "requests": n,
        "tool_selection_accuracy": round(selected / n, 3),
        "argument_exact_match": round(args_ok / max(args_total, 1), 3),
        "parse_rate": round(parsed / n, 3),
        "invented_tools": invented,
        "no_tool_accuracy": round(no_tool_ok / max(no_tool_total, 1), 3),
    }


def evaluate(base_url, api_key, model, modes=("constrained", "unconstrained"), limit=None, log=None, ids=None):
    tools = load_tools()
    cases = [c for c in load_cases() if ids is None or c["id"] in ids]
    cases = cases[:limit] if limit else cases
    figures = {"model": model, "tools": len(tools)}
    with httpx.Client(timeout=300) as client:
        for mode in modes:
            started = time.time()
            answers = []
            for case in cases:
                if mode == "constrained":
                    answer = ask_constrained(client, base_url, api_key, model, tools, case)
                else:
                    answer = ask_unconstrained(client, base_url, api_key, model, tools, case, lenient=False)
                answers.append(answer)
                if log:
                    log(json.dumps({"mode": mode, "id": case["id"], "calls": answer["calls"], "text": answer["text"][:120]}))
            figures[mode] = score(cases, answers, tools)
            figures[mode]["seconds"] = round(time.time() - started, 1)
            if mode == "unconstrained":
                lenient = []
                for case, answer in zip(cases, answers):
                    calls = lenient_calls(answer["text"])
                    lenient.append({"parsed": True, "calls": calls, "text": answer["text"]})
                figures["unconstrained_read_leniently"] = score(cases, lenient, tools)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", default=os.environ.get("ENCLAVE_API_KEY", ""))
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--mode", choices=["constrained", "unconstrained", "both"], default="both")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    modes = ("constrained", "unconstrained") if args.mode == "both" else (args.mode,)
    log = (lambda line: print(line, file=sys.stderr)) if args.verbose else None
    print(json.dumps(evaluate(args.base_url, args.api_key, args.model, modes, args.limit, log), indent=2))


if __name__ == "__main__":
    main()
