//! XML-RPC as supervisord speaks it: encoding a method call, parsing a method response
//! (a value or a fault). Bounded: nesting deeper than `MAX_DEPTH` is refused.

use std::fmt;

use quick_xml::events::Event;
use quick_xml::Reader;

pub const MAX_DEPTH: usize = 16;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
    Double(f64),
    Array(Vec<Value>),
    Struct(Vec<(String, Value)>),
    Nil,
}

impl Value {
    pub fn member(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(number) => Some(*number),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Param<'a> {
    Str(&'a str),
    Bool(bool),
}

pub fn encode_call(method: &str, params: &[Param<'_>]) -> String {
    let mut body = String::from("<?xml version=\"1.0\"?>\n<methodCall><methodName>");
    push_escaped(&mut body, method);
    body.push_str("</methodName><params>");
    for param in params {
        body.push_str("<param><value>");
        match param {
            Param::Str(text) => {
                body.push_str("<string>");
                push_escaped(&mut body, text);
                body.push_str("</string>");
            }
            // supervisord reads anything but exactly "1" as false.
            Param::Bool(flag) => body.push_str(if *flag {
                "<boolean>1</boolean>"
            } else {
                "<boolean>0</boolean>"
            }),
        }
        body.push_str("</value></param>");
    }
    body.push_str("</params></methodCall>");
    body
}

fn push_escaped(out: &mut String, text: &str) {
    for character in text.chars() {
        match character {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            other => out.push(other),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub code: i64,
    pub string: String,
}

impl Fault {
    /// The symbolic name: supervisord writes `NAME` or `NAME: detail`.
    pub fn name(&self) -> &str {
        self.string.split(':').next().unwrap_or("").trim()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault {} {}", self.code, self.string)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum MethodResponse {
    Success(Value),
    Fault(Fault),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmlError(pub String);

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed XML-RPC response: {}", self.0)
    }
}

fn error(message: impl Into<String>) -> XmlError {
    XmlError(message.into())
}

/// A pull parser over the response that skips whitespace between elements.
struct Tokens<'a> {
    reader: Reader<&'a [u8]>,
}

#[derive(Debug, PartialEq)]
enum Token {
    Open(String),
    Close(String),
    /// `<tag/>`
    Empty(String),
    Text(String),
    End,
}

impl<'a> Tokens<'a> {
    fn new(body: &'a [u8]) -> Self {
        let mut reader = Reader::from_reader(body);
        reader.config_mut().trim_text(false);
        Self { reader }
    }

    fn next(&mut self) -> Result<Token, XmlError> {
        loop {
            let event = self.reader.read_event().map_err(|e| error(e.to_string()))?;
            return Ok(match event {
                Event::Start(tag) => Token::Open(tag_name(tag.name().as_ref())),
                Event::End(tag) => Token::Close(tag_name(tag.name().as_ref())),
                Event::Empty(tag) => Token::Empty(tag_name(tag.name().as_ref())),
                Event::Text(text) => {
                    let text = text.unescape().map_err(|e| error(e.to_string()))?;
                    Token::Text(text.into_owned())
                }
                Event::CData(data) => Token::Text(String::from_utf8_lossy(&data).into_owned()),
                Event::Eof => Token::End,
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => continue,
            });
        }
    }

    /// The next token that is not whitespace-only text.
    fn next_significant(&mut self) -> Result<Token, XmlError> {
        loop {
            match self.next()? {
                Token::Text(text) if text.trim().is_empty() => continue,
                token => return Ok(token),
            }
        }
    }

    fn expect_open(&mut self, name: &str) -> Result<(), XmlError> {
        match self.next_significant()? {
            Token::Open(tag) if tag == name => Ok(()),
            other => Err(error(format!("expected <{name}>, found {other:?}"))),
        }
    }

    fn expect_close(&mut self, name: &str) -> Result<(), XmlError> {
        match self.next_significant()? {
            Token::Close(tag) if tag == name => Ok(()),
            other => Err(error(format!("expected </{name}>, found {other:?}"))),
        }
    }

    /// Text up to the closing tag `name` (which is consumed).
    fn text_until_close(&mut self, name: &str) -> Result<String, XmlError> {
        let mut text = String::new();
        loop {
            match self.next()? {
                Token::Text(chunk) => text.push_str(&chunk),
                Token::Close(tag) if tag == name => return Ok(text),
                other => return Err(error(format!("unexpected {other:?} in <{name}>"))),
            }
        }
    }
}

fn tag_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

pub fn parse_method_response(body: &[u8]) -> Result<MethodResponse, XmlError> {
    let mut tokens = Tokens::new(body);
    tokens.expect_open("methodResponse")?;
    let response = match tokens.next_significant()? {
        Token::Open(tag) if tag == "params" => {
            tokens.expect_open("param")?;
            let value = parse_value_after_open(&mut tokens, 0, true)?;
            tokens.expect_close("param")?;
            tokens.expect_close("params")?;
            MethodResponse::Success(value)
        }
        Token::Open(tag) if tag == "fault" => {
            let value = parse_value_after_open(&mut tokens, 0, true)?;
            tokens.expect_close("fault")?;
            let code = value.member("faultCode").and_then(Value::as_int);
            let string = value.member("faultString").and_then(Value::as_str);
            match (code, string) {
                (Some(code), Some(string)) => MethodResponse::Fault(Fault {
                    code,
                    string: string.to_owned(),
                }),
                _ => return Err(error("fault without faultCode and faultString")),
            }
        }
        other => {
            return Err(error(format!(
                "expected <params> or <fault>, found {other:?}"
            )))
        }
    };
    tokens.expect_close("methodResponse")?;
    match tokens.next_significant()? {
        Token::End => Ok(response),
        other => Err(error(format!("trailing content after response: {other:?}"))),
    }
}

/// Parses `<value>...</value>`; when `expect_value_open` the `<value>` is still to be read.
fn parse_value_after_open(
    tokens: &mut Tokens<'_>,
    depth: usize,
    expect_value_open: bool,
) -> Result<Value, XmlError> {
    if depth > MAX_DEPTH {
        return Err(error("values nested too deeply"));
    }
    if expect_value_open {
        match tokens.next_significant()? {
            Token::Open(tag) if tag == "value" => {}
            Token::Empty(tag) if tag == "value" => return Ok(Value::Str(String::new())),
            other => return Err(error(format!("expected <value>, found {other:?}"))),
        }
    }
    // Untyped content is a string; whitespace around a typed element is not.
    let mut leading = String::new();
    let value = loop {
        match tokens.next()? {
            Token::Text(text) => leading.push_str(&text),
            Token::Close(tag) if tag == "value" => return Ok(Value::Str(leading)),
            Token::Empty(tag) => break empty_typed(&tag)?,
            Token::Open(tag) => break parse_typed(tokens, &tag, depth)?,
            other => return Err(error(format!("unexpected {other:?} in <value>"))),
        }
    };
    if !leading.trim().is_empty() {
        return Err(error("text mixed with a typed value"));
    }
    tokens.expect_close("value")?;
    Ok(value)
}

fn empty_typed(tag: &str) -> Result<Value, XmlError> {
    match tag {
        "string" => Ok(Value::Str(String::new())),
        "nil" => Ok(Value::Nil),
        "array" => Ok(Value::Array(Vec::new())),
        "struct" => Ok(Value::Struct(Vec::new())),
        other => Err(error(format!("empty <{other}/>"))),
    }
}

fn parse_typed(tokens: &mut Tokens<'_>, tag: &str, depth: usize) -> Result<Value, XmlError> {
    match tag {
        "int" | "i4" | "i8" => {
            let text = tokens.text_until_close(tag)?;
            text.trim()
                .parse()
                .map(Value::Int)
                .map_err(|_| error(format!("bad integer {text:?}")))
        }
        "boolean" => match tokens.text_until_close(tag)?.trim() {
            "1" => Ok(Value::Bool(true)),
            "0" => Ok(Value::Bool(false)),
            other => Err(error(format!("bad boolean {other:?}"))),
        },
        "string" | "dateTime.iso8601" | "base64" => Ok(Value::Str(tokens.text_until_close(tag)?)),
        "double" => {
            let text = tokens.text_until_close(tag)?;
            text.trim()
                .parse()
                .map(Value::Double)
                .map_err(|_| error(format!("bad double {text:?}")))
        }
        "nil" => {
            tokens.expect_close("nil")?;
            Ok(Value::Nil)
        }
        "array" => {
            let mut items = Vec::new();
            match tokens.next_significant()? {
                Token::Open(data) if data == "data" => loop {
                    match tokens.next_significant()? {
                        Token::Open(value) if value == "value" => {
                            items.push(parse_value_after_open(tokens, depth + 1, false)?)
                        }
                        Token::Empty(value) if value == "value" => {
                            items.push(Value::Str(String::new()))
                        }
                        Token::Close(data) if data == "data" => break,
                        other => return Err(error(format!("unexpected {other:?} in <data>"))),
                    }
                },
                Token::Empty(data) if data == "data" => {}
                other => return Err(error(format!("expected <data>, found {other:?}"))),
            }
            tokens.expect_close("array")?;
            Ok(Value::Array(items))
        }
        "struct" => {
            let mut members = Vec::new();
            loop {
                match tokens.next_significant()? {
                    Token::Open(member) if member == "member" => {
                        tokens.expect_open("name")?;
                        let name = tokens.text_until_close("name")?;
                        let value = parse_value_after_open(tokens, depth + 1, true)?;
                        tokens.expect_close("member")?;
                        members.push((name, value));
                    }
                    Token::Close(end) if end == "struct" => break,
                    other => return Err(error(format!("unexpected {other:?} in <struct>"))),
                }
            }
            Ok(Value::Struct(members))
        }
        other => Err(error(format!("unknown value type <{other}>"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_captured_client() {
        assert_eq!(
            encode_call(
                "supervisor.startProcess",
                &[Param::Str("backend0"), Param::Bool(true)]
            ),
            "<?xml version=\"1.0\"?>\n<methodCall><methodName>supervisor.startProcess</methodName>\
             <params><param><value><string>backend0</string></value></param>\
             <param><value><boolean>1</boolean></value></param></params></methodCall>"
        );
        assert!(encode_call("m", &[Param::Str("a<b&c")]).contains("a&lt;b&amp;c"));
    }

    #[test]
    fn parses_values_of_every_type() {
        let body = br#"<?xml version='1.0'?>
<methodResponse><params><param><value><struct>
<member><name>i</name><value><int>-5</int></value></member>
<member><name>b</name><value><boolean>1</boolean></value></member>
<member><name>s</name><value><string>a &amp; b</string></value></member>
<member><name>plain</name><value>untyped</value></member>
<member><name>empty</name><value><string></string></value></member>
<member><name>d</name><value><double>1.5</double></value></member>
<member><name>a</name><value><array><data>
<value><i4>1</i4></value><value><string>x</string></value></data></array></value></member>
</struct></value></param></params></methodResponse>
"#;
        let MethodResponse::Success(value) = parse_method_response(body).unwrap() else {
            panic!("not a success");
        };
        assert_eq!(value.member("i"), Some(&Value::Int(-5)));
        assert_eq!(value.member("b"), Some(&Value::Bool(true)));
        assert_eq!(value.member("s"), Some(&Value::Str("a & b".into())));
        assert_eq!(value.member("plain"), Some(&Value::Str("untyped".into())));
        assert_eq!(value.member("empty"), Some(&Value::Str(String::new())));
        assert_eq!(value.member("d"), Some(&Value::Double(1.5)));
        assert_eq!(
            value.member("a"),
            Some(&Value::Array(vec![Value::Int(1), Value::Str("x".into())]))
        );
    }

    #[test]
    fn parses_a_fault() {
        let body = b"<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n\
<member>\n<name>faultCode</name>\n<value><int>50</int></value>\n</member>\n<member>\n\
<name>faultString</name>\n<value><string>SPAWN_ERROR: crasher</string></value>\n</member>\n\
</struct></value>\n</fault>\n</methodResponse>\n";
        let MethodResponse::Fault(fault) = parse_method_response(body).unwrap() else {
            panic!("not a fault");
        };
        assert_eq!(fault.code, 50);
        assert_eq!(fault.name(), "SPAWN_ERROR");
        assert_eq!(fault.to_string(), "fault 50 SPAWN_ERROR: crasher");
    }

    #[test]
    fn refuses_malformed_documents() {
        for body in [
            &b""[..],
            b"<html><body>supervisor</body></html>",
            b"<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
            b"<methodResponse><params><param><value><boolean>true</boolean></value></param></params></methodResponse>",
            b"<methodResponse><params><param><value><int>1</int>",
            b"<methodResponse><fault><value><struct></struct></value></fault></methodResponse>",
            b"<methodResponse><params><param><value><blob>1</blob></value></param></params></methodResponse>",
            b"<methodResponse><params><param><value><int>1</int></value></param></params></methodResponse><x/>",
        ] {
            assert!(parse_method_response(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing_the_stack() {
        let mut body = String::from("<methodResponse><params><param><value>");
        for _ in 0..10_000 {
            body.push_str("<array><data><value>");
        }
        assert!(parse_method_response(body.as_bytes()).is_err());
    }

    #[test]
    fn never_panics_on_mutated_responses() {
        let base = b"<?xml version='1.0'?><methodResponse><params><param><value><array><data>\
<value><struct><member><name>name</name><value><string>b0</string></value></member>\
<member><name>state</name><value><int>20</int></value></member></struct></value>\
</data></array></value></param></params></methodResponse>";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut body = base.to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % body.len();
                match next() % 3 {
                    0 => body[at] = (next() % 256) as u8,
                    1 => {
                        body.remove(at);
                    }
                    _ => body.truncate(at),
                }
                if body.is_empty() {
                    break;
                }
            }
            let _ = parse_method_response(&body);
        }
    }
}
